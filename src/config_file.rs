//! Where `pushwire serve` takes its settings from: flags, `PUSHWIRE_*` environment variables, a
//! TOML file (`--config FILE`) and the built-in defaults, in that order of precedence.
//!
//! Implements: one name per setting in all three sources, derived from the clap definition of
//! `serve` so that a flag added there is at once an environment variable and a file key:
//! `--max-head-bytes` is `PUSHWIRE_MAX_HEAD_BYTES` and `max_head_bytes = …` in the file.
//! `pushwire config defaults` renders the file of defaults from the same definition (whose
//! defaults come from each layer's `Default`), so the file cannot drift from the code.
//! A file is checked key by key (TOML 1.0, <https://toml.io/en/v1.0.0>): unknown keys, wrong
//! types and values the flag's parser or `Config::validate` refuses are reported as one line,
//! `FILE:LINE:COL: KEY: problem; allowed: …`.
//!
//! Does not: support tables (every key is top level), include other files, or reload on SIGHUP.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;

use clap::builder::{BoolishValueParser, Resettable};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::de::{DeTable, DeValue};

/// Arguments of `serve` that are not settings.
const NOT_SETTINGS: &[&str] = &["help", "version", "config"];

/// The environment variable of a setting: `PUSHWIRE_` and the id in capitals.
pub fn env_name(id: &str) -> String {
    format!("PUSHWIRE_{}", id.to_ascii_uppercase())
}

/// Gives every setting of `serve` (and of `config show`, which takes the same flags) its
/// environment variable; flags accept `true/false/yes/no/1/0/on/off` there.
pub fn with_env(command: Command) -> Command {
    command.mut_args(|arg| {
        let id = arg.get_id().as_str().to_string();
        if id == "help" || id == "version" {
            return arg;
        }
        let arg = if matches!(arg.get_action(), ArgAction::SetTrue) {
            arg.value_parser(BoolishValueParser::new())
        } else {
            arg
        };
        // clap keeps `'static` names; these are made once per process.
        arg.env(&*Box::leak(env_name(&id).into_boxed_str()))
    })
}

/// The TOML type a setting takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A flag: `true` or `false`.
    Flag,
    /// A repeatable flag: an array of strings.
    List,
    /// A whole number (bytes, counts).
    Integer,
    /// Seconds: an integer or a float.
    Seconds,
    /// Anything else: a string.
    Text,
}

impl Kind {
    fn of(arg: &Arg, seconds: std::any::TypeId) -> Kind {
        match arg.get_action() {
            ArgAction::SetTrue => return Kind::Flag,
            ArgAction::Append => return Kind::List,
            _ => {}
        }
        let parser = arg.get_value_parser().type_id();
        use std::any::TypeId;
        if parser == seconds {
            Kind::Seconds
        } else if [TypeId::of::<usize>(), TypeId::of::<u64>(), TypeId::of::<u32>(), TypeId::of::<u16>()]
            .iter()
            .any(|t| parser == *t)
        {
            Kind::Integer
        } else {
            Kind::Text
        }
    }

    fn allowed(self) -> &'static str {
        match self {
            Kind::Flag => "true or false",
            Kind::List => "an array of strings",
            Kind::Integer => "a whole number (0 or more)",
            Kind::Seconds => "a number of seconds (fractions allowed)",
            Kind::Text => "a string",
        }
    }
}

fn toml_type(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// One setting read from a file: its id, where its key is, and the flags that say the same.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The setting's id (the key).
    pub id: String,
    /// Where the key is in the file.
    pub at: Position,
    /// `--key=value` arguments equivalent to the entry (none for `false` flags).
    pub flags: Vec<OsString>,
}

/// A line and column in a file, both from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl Position {
    fn of(text: &str, offset: usize) -> Position {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        Position { line, column }
    }
}

/// A problem in a configuration file, at a place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// Where the problem is (`None` when it is not one key's, e.g. two keys that disagree).
    pub at: Option<Position>,
    /// The one-line description.
    pub message: String,
}

impl FileError {
    /// `FILE:LINE:COL: message`.
    pub fn render(&self, file: &Path) -> String {
        match self.at {
            Some(at) => format!("{}:{}:{}: {}", file.display(), at.line, at.column, self.message),
            None => format!("{}: {}", file.display(), self.message),
        }
    }
}

fn error_at(text: &str, span: Range<usize>, message: String) -> FileError {
    FileError { at: Some(Position::of(text, span.start)), message }
}

/// The first line of a clap error, without its `error: ` prefix.
pub fn clap_reason(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first: Vec<&str> = rendered.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
    let first = first.join(" ");
    first.strip_prefix("error: ").unwrap_or(&first).to_string()
}

/// Reads the settings of a TOML file against `serve`'s definition (`command`), in file order.
/// `seconds` is the type id of the binary's seconds value.
pub fn parse(text: &str, command: &Command, seconds: std::any::TypeId) -> Result<Vec<Entry>, FileError> {
    let table = DeTable::parse(text).map_err(|e| FileError {
        at: e.span().map(|span| Position::of(text, span.start)),
        message: format!("not valid TOML: {}", e.message().trim()),
    })?;
    // The table is sorted by key: take its entries in file order, so the first fault reported
    // is the first in the file.
    let mut in_file_order: Vec<_> = table.get_ref().iter().collect();
    in_file_order.sort_by_key(|(key, _)| key.span().start);
    let mut entries = Vec::new();
    for (key, value) in in_file_order {
        let id: &str = key.get_ref();
        let arg = command.get_arguments().find(|a| a.get_id().as_str() == id && !NOT_SETTINGS.contains(&id));
        let Some(arg) = arg else {
            let hint = if matches!(value.get_ref(), DeValue::Table(_)) {
                "the file has no tables, every key is at the top level"
            } else {
                "the keys are `pushwire serve`'s flags without `--` and with `_` for `-` (`pushwire config defaults` lists them)"
            };
            return Err(error_at(text, key.span(), format!("unknown key `{id}`; {hint}")));
        };
        let kind = Kind::of(arg, seconds);
        let wrong = || {
            error_at(
                text,
                value.span(),
                format!("{id}: expected {}, found {}", kind.allowed(), toml_type(value.get_ref())),
            )
        };
        let long = format!("--{}", arg.get_long().unwrap_or(id));
        let values: Vec<String> = match (kind, value.get_ref()) {
            (Kind::Flag, DeValue::Boolean(true)) => {
                entries.push(Entry {
                    id: id.into(),
                    at: Position::of(text, key.span().start),
                    flags: vec![long.into()],
                });
                continue;
            }
            (Kind::Flag, DeValue::Boolean(false)) => {
                entries.push(Entry {
                    id: id.into(),
                    at: Position::of(text, key.span().start),
                    flags: vec![],
                });
                continue;
            }
            (Kind::List, DeValue::Array(items)) => {
                let mut values = Vec::new();
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => values.push(s.to_string()),
                        other => {
                            return Err(error_at(
                                text,
                                item.span(),
                                format!(
                                    "{id}: expected an array of strings, found {} in it",
                                    toml_type(other)
                                ),
                            ))
                        }
                    }
                }
                values
            }
            (Kind::Integer, DeValue::Integer(n)) => {
                let parsed = i128::from_str_radix(n.as_str(), n.radix()).ok();
                match parsed {
                    Some(v) if v >= 0 => vec![v.to_string()],
                    _ => {
                        return Err(error_at(
                            text,
                            value.span(),
                            format!("{id}: {n} is out of range; allowed: {}", kind.allowed()),
                        ))
                    }
                }
            }
            (Kind::Seconds, DeValue::Integer(n)) => vec![n.as_str().to_string()],
            (Kind::Seconds, DeValue::Float(f)) => vec![f.as_str().to_string()],
            (Kind::Text, DeValue::String(s)) => vec![s.to_string()],
            _ => return Err(wrong()),
        };
        // The flag's own parser decides what the value may be (addresses, modes, ranges): run
        // it alone, without the rules that tie it to other flags.
        let flags: Vec<OsString> = values.iter().map(|v| OsString::from(format!("{long}={v}"))).collect();
        let alone = arg.clone().env(None).requires(Resettable::Reset).conflicts_with(Resettable::Reset);
        let check = Command::new("serve").no_binary_name(true).arg(alone);
        if let Err(e) = check.try_get_matches_from(&flags) {
            return Err(error_at(text, value.span(), format!("{id}: {}", clap_reason(&e))));
        }
        entries.push(Entry { id: id.into(), at: Position::of(text, key.span().start), flags });
    }
    Ok(entries)
}

/// The entries that count under the command line `given` already parsed: those whose setting
/// neither a flag nor an environment variable set.
pub fn underlay(entries: Vec<Entry>, given: &ArgMatches) -> Vec<Entry> {
    entries
        .into_iter()
        .filter(|e| {
            !matches!(given.value_source(&e.id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
        })
        .collect()
}

/// How a value is written in TOML.
fn toml_value(kind: Kind, value: &str) -> String {
    match kind {
        Kind::Integer | Kind::Seconds | Kind::Flag => value.to_string(),
        Kind::Text | Kind::List => toml_string(value),
    }
}

fn toml_string(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

/// Widest comment line `render` writes, in characters.
const COMMENT_COLUMNS: usize = 96;

/// `text` as `# ` comment lines, words wrapped at [`COMMENT_COLUMNS`].
fn comment(out: &mut String, text: &str) {
    for paragraph in text.lines() {
        let mut line = String::from("#");
        for word in paragraph.split_whitespace() {
            if line.len() > 1 && line.len() + 1 + word.len() > COMMENT_COLUMNS {
                let _ = writeln!(out, "{line}");
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        let _ = writeln!(out, "{line}");
    }
}

/// A complete TOML file of `command`'s settings: each one with its help as a comment, its flag
/// and environment variable, and its value in `values` (`None`: commented out, unset).
/// `values` gives each setting's raw values by id.
pub fn render(
    command: &Command,
    seconds: std::any::TypeId,
    header: &str,
    values: impl Fn(&Arg) -> Option<Vec<String>>,
) -> String {
    let mut out = String::new();
    comment(&mut out, header);
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if NOT_SETTINGS.contains(&id) {
            continue;
        }
        out.push('\n');
        if let Some(help) = arg.get_long_help().or(arg.get_help()) {
            comment(&mut out, &help.to_string());
        }
        let _ = writeln!(out, "# --{}, {}", arg.get_long().unwrap_or(id), env_name(id));
        let kind = Kind::of(arg, seconds);
        let placeholder = arg
            .get_value_names()
            .and_then(|names| names.first())
            .map(|name| name.to_string())
            .unwrap_or_else(|| id.to_ascii_uppercase());
        match (kind, values(arg)) {
            (Kind::List, Some(items)) => {
                let items: Vec<String> = items.iter().map(|v| toml_string(v)).collect();
                let _ = writeln!(out, "{id} = [{}]", items.join(", "));
            }
            (Kind::Flag, Some(items)) => {
                let on =
                    items.first().is_some_and(|v| matches!(v.as_str(), "true" | "yes" | "1" | "on" | "y"));
                let _ = writeln!(out, "{id} = {on}");
            }
            (Kind::Flag, None) => {
                let _ = writeln!(out, "{id} = false");
            }
            (Kind::List, None) => {
                let _ = writeln!(out, "{id} = []");
            }
            (_, Some(items)) if !items.is_empty() => {
                let _ = writeln!(out, "{id} = {}", toml_value(kind, &items[0]));
            }
            (Kind::Text, _) => {
                let _ = writeln!(out, "# {id} = \"{placeholder}\"  (unset by default)");
            }
            _ => {
                let _ = writeln!(out, "# {id} = {placeholder}  (unset by default)");
            }
        }
    }
    out
}

/// Whether a setting holds a secret (tokens, signing keys, API keys), which `config show`
/// does not print; their `_file` variants hold paths and are printed.
pub fn is_secret(id: &str) -> bool {
    !id.ends_with("_file") && (id.ends_with("token") || id.ends_with("secret") || id == "api_key")
}

/// The raw values of a setting in `matches` (what `config show` prints), secrets redacted.
pub fn raw_values(matches: &ArgMatches, arg: &Arg) -> Option<Vec<String>> {
    let id = arg.get_id().as_str();
    let raw = matches.get_raw(id)?;
    if is_secret(id) {
        return Some(vec!["(redacted)".into()]);
    }
    let values = raw.map(|v| v.to_string_lossy().into_owned());
    if id == "redis" {
        // A Redis URL may carry a password: shown redacted, the rest as given.
        let redact = |v: String| pushwire::redis::url::RedisUrl::parse(&v).map_or(v, |url| url.redacted());
        return Some(values.map(redact).collect());
    }
    Some(values.collect())
}

/// A setting's default values, as `--help` shows them.
pub fn default_values(arg: &Arg) -> Option<Vec<String>> {
    let defaults = arg.get_default_values();
    if defaults.is_empty() {
        return None;
    }
    Some(defaults.iter().map(|v| v.to_string_lossy().into_owned()).collect())
}
