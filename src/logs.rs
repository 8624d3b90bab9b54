//! The binary's logger: `env_logger`'s `RUST_LOG` filter with one of two line formats,
//! `--log-format text` (env_logger's own, the default) or `json` (one JSON object per line).
//!
//! Implements: a JSON line per record, `{"timestamp","level","target","message","fields"}`:
//! the timestamp in RFC 3339 UTC with microseconds
//! (<https://www.rfc-editor.org/rfc/rfc3339#section-5.6>), the level in capitals, the target
//! (the module path unless the call names one), the formatted message, and the record's
//! key-value pairs (the `log` crate's `kv`: `log::debug!(peer:% = addr, status = 401; "…")`)
//! as an object, numbers and booleans as JSON numbers and booleans, anything else as a string.
//! In the text format the same pairs follow the message as ` key=value` (a value with spaces
//! or quotes is written quoted).
//!
//! Does not: write anywhere but stderr, rotate, sample, or buffer across records (each line
//! is written whole, with one write per record).

use std::io::{self, Write};

use log::kv::{Key, Source, Value, VisitSource, VisitValue};

/// How log lines look (`--log-format`, `PUSHWIRE_LOG_FORMAT`, `log_format` in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// env_logger's lines: `[TIME LEVEL target] message key=value…`.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message, fields.
    Json,
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Installs the logger: `RUST_LOG` filters as env_logger reads it (default `info`), lines in
/// `format`. Call once, before anything logs.
pub fn init(format: LogFormat) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match format {
        LogFormat::Text => {
            builder.format_key_values(text_fields);
        }
        LogFormat::Json => {
            builder.format(|buf, record| {
                let timestamp = buf.timestamp_micros().to_string();
                let line = json_line(&timestamp, record);
                buf.write_all(line.as_bytes())
            });
        }
    }
    builder.init();
}

/// One record as a JSON object and a newline.
pub fn json_line(timestamp: &str, record: &log::Record<'_>) -> String {
    let mut fields = serde_json::Map::new();
    // A pair that cannot be visited is left out, not the line.
    let _ = record.key_values().visit(&mut JsonFields(&mut fields));
    // Written in this order (a `serde_json::Map` would sort the keys): the timestamp first.
    let string = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        "{{\"timestamp\":{},\"level\":{},\"target\":{},\"message\":{},\"fields\":{}}}\n",
        string(timestamp),
        string(record.level().as_str()),
        string(record.target()),
        string(&record.args().to_string()),
        serde_json::Value::Object(fields)
    )
}

/// Collects a record's pairs into a JSON object.
struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let mut json = JsonValue(serde_json::Value::Null);
        value.visit(&mut json)?;
        self.0.insert(key.as_str().to_owned(), json.0);
        Ok(())
    }
}

/// One value as JSON: numbers and booleans keep their type.
struct JsonValue(serde_json::Value);

impl<'v> VisitValue<'v> for JsonValue {
    fn visit_any(&mut self, value: Value<'_>) -> Result<(), log::kv::Error> {
        self.0 = serde_json::Value::String(value.to_string());
        Ok(())
    }
    fn visit_null(&mut self) -> Result<(), log::kv::Error> {
        self.0 = serde_json::Value::Null;
        Ok(())
    }
    fn visit_u64(&mut self, value: u64) -> Result<(), log::kv::Error> {
        self.0 = value.into();
        Ok(())
    }
    fn visit_i64(&mut self, value: i64) -> Result<(), log::kv::Error> {
        self.0 = value.into();
        Ok(())
    }
    fn visit_f64(&mut self, value: f64) -> Result<(), log::kv::Error> {
        // NaN and infinities have no JSON number: null.
        self.0 = serde_json::Number::from_f64(value).map_or(serde_json::Value::Null, Into::into);
        Ok(())
    }
    fn visit_bool(&mut self, value: bool) -> Result<(), log::kv::Error> {
        self.0 = value.into();
        Ok(())
    }
    fn visit_str(&mut self, value: &str) -> Result<(), log::kv::Error> {
        self.0 = value.into();
        Ok(())
    }
}

/// The text format's pairs: ` key=value`, quoted (Rust string syntax) when the value has
/// spaces, quotes or `=`, or is empty.
fn text_fields(buf: &mut env_logger::fmt::Formatter, fields: &dyn Source) -> io::Result<()> {
    let mut line = String::new();
    fields.visit(&mut TextFields(&mut line)).map_err(io::Error::other)?;
    buf.write_all(line.as_bytes())
}

struct TextFields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for TextFields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        // An absent value (`None`) is left out.
        let mut json = JsonValue(serde_json::Value::Bool(false));
        value.visit(&mut json)?;
        if json.0.is_null() {
            return Ok(());
        }
        let text = value.to_string();
        let plain = !text.is_empty() && !text.chars().any(|c| c.is_whitespace() || c == '"' || c == '=');
        if plain {
            self.0.push_str(&format!(" {key}={text}"));
        } else {
            self.0.push_str(&format!(" {key}={text:?}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_record<R>(f: impl FnOnce(&log::Record<'_>) -> R) -> R {
        let kvs: [(&str, Value<'_>); 5] = [
            ("peer", Value::from_display(&"127.0.0.1:4000")),
            ("none", Value::null()),
            ("status", 401u16.into()),
            ("tls", true.into()),
            ("reason", "missing \"token\"".into()),
        ];
        let args = format_args!("refused {}", "request");
        let record = log::Record::builder()
            .args(args)
            .level(log::Level::Debug)
            .target("pushwire::refused")
            .key_values(&kvs)
            .build();
        f(&record)
    }

    #[test]
    fn json_line_is_one_object_with_typed_fields() {
        let line = with_record(|r| json_line("2026-12-05T12:00:00.000001Z", r));
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["timestamp"], "2026-12-05T12:00:00.000001Z");
        assert_eq!(v["level"], "DEBUG");
        assert_eq!(v["target"], "pushwire::refused");
        assert_eq!(v["message"], "refused request");
        assert_eq!(v["fields"]["peer"], "127.0.0.1:4000");
        assert_eq!(v["fields"]["status"], 401);
        assert_eq!(v["fields"]["tls"], true);
        assert_eq!(v["fields"]["reason"], "missing \"token\"");
        assert!(v["fields"]["none"].is_null());
        assert!(line.starts_with("{\"timestamp\":"));
    }

    #[test]
    fn text_fields_quote_values_with_spaces() {
        let mut line = String::new();
        with_record(|r| r.key_values().visit(&mut TextFields(&mut line)).unwrap());
        assert_eq!(line, " peer=127.0.0.1:4000 status=401 tls=true reason=\"missing \\\"token\\\"\"");
    }
}
