//! Configuration sources of the real binary (README "Configuration"): the `--config` TOML file,
//! `PUSHWIRE_*` environment variables and flags, with precedence flags > environment > file >
//! defaults; `pushwire config defaults` / `check` / `show`; the exact one-line message of each
//! kind of bad file; secrets read from files.
//!
//! Every child runs with the `PUSHWIRE_*` variables of the test's own environment removed, and
//! is bounded (the servers are killed when their test ends).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{exchange, Server};

const BIN: &str = env!("CARGO_BIN_EXE_pushwire");

/// A file in the temp directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(text: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("pushwire-config-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Scratch(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the binary with `env` as its only `PUSHWIRE_*` variables.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).env("RUST_LOG", "warn");
    for (name, _) in std::env::vars() {
        if name.starts_with("PUSHWIRE_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("run pushwire")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// `key = value` lines of a rendered configuration (comments dropped).
fn settings(toml_text: &str) -> BTreeMap<String, String> {
    toml_text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(" = "))
        .map(|l| {
            let (k, v) = l.split_once(" = ").unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The effective settings `pushwire config show` reports.
fn shown(args: &[&str], env: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut all = vec!["config", "show"];
    all.extend_from_slice(args);
    let output = run(&all, env);
    assert!(output.status.success(), "config show failed: {}", stderr(&output));
    settings(&stdout(&output))
}

#[test]
fn config_defaults_round_trips_through_config_check_and_show() {
    let defaults = run(&["config", "defaults"], &[]);
    assert!(defaults.status.success());
    let text = stdout(&defaults);
    assert!(text.contains("\n# --max-head-bytes, PUSHWIRE_MAX_HEAD_BYTES\nmax_head_bytes = "));
    let file = Scratch::new(&text);
    let check = run(&["config", "check", file.path()], &[]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert_eq!(stdout(&check), format!("{}: ok\n", file.path()));
    // The file of defaults changes nothing: the same effective settings as no file at all.
    assert_eq!(shown(&["--config", file.path()], &[]), shown(&[], &[]));
    assert_eq!(settings(&text), shown(&[], &[]));
}

#[test]
fn config_precedence_is_flags_then_environment_then_file_then_defaults() {
    let file = Scratch::new(
        "max_headers = 11\nhistory_age = 1.5\nallow_origin = [\"https://file.example\"]\n\
         ws_no_client_publish = true\nlisten = \"127.0.0.1:1111\"\n",
    );
    let env: &[(&str, &str)] = &[
        ("PUSHWIRE_MAX_HEADERS", "22"),
        ("PUSHWIRE_HISTORY_AGE", "2.5"),
        ("PUSHWIRE_ALLOW_ORIGIN", "https://env.example"),
        ("PUSHWIRE_LISTEN", "127.0.0.1:2222"),
    ];
    let flags = ["--max-headers", "33", "--allow-origin", "https://flag.example"];
    let expect = |got: &BTreeMap<String, String>, want: [&str; 5]| {
        let keys = ["max_headers", "history_age", "allow_origin", "ws_no_client_publish", "listen"];
        for (key, want) in keys.iter().zip(want) {
            assert_eq!(got[*key], want, "{key}");
        }
    };
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut args = vec!["--config", file.path()];
        args.extend_from_slice(extra);
        args
    };
    // Defaults only.
    expect(&shown(&[], &[]), ["64", "300", "[]", "false", "\"127.0.0.1:8080\""]);
    // File over defaults.
    expect(
        &shown(&with(&[]), &[]),
        ["11", "1.5", "[\"https://file.example\"]", "true", "\"127.0.0.1:1111\""],
    );
    // Environment over file (where set), file where not.
    expect(&shown(&with(&[]), env), ["22", "2.5", "[\"https://env.example\"]", "true", "\"127.0.0.1:2222\""]);
    // Flags over environment over file.
    let mut args = with(&[]);
    args.extend_from_slice(&flags);
    expect(&shown(&args, env), ["33", "2.5", "[\"https://flag.example\"]", "true", "\"127.0.0.1:2222\""]);
    // Flags over file, without environment.
    expect(&shown(&args, &[]), ["33", "1.5", "[\"https://flag.example\"]", "true", "\"127.0.0.1:1111\""]);
    // Environment over defaults, without a file; flags accept yes/no style values there.
    expect(
        &shown(&[], &[("PUSHWIRE_WS_NO_CLIENT_PUBLISH", "yes"), ("PUSHWIRE_MAX_HEADERS", "5")]),
        ["5", "300", "[]", "true", "\"127.0.0.1:8080\""],
    );
    // The file itself can come from the environment.
    expect(
        &shown(&[], &[("PUSHWIRE_CONFIG", file.path())]),
        ["11", "1.5", "[\"https://file.example\"]", "true", "\"127.0.0.1:1111\""],
    );
}

/// Runs `config check` on `text` and returns its one stderr line with the file's path as FILE.
fn refusal(text: &str) -> String {
    let file = Scratch::new(text);
    let output = run(&["config", "check", file.path()], &[]);
    assert_eq!(output.status.code(), Some(2), "accepted: {text}");
    let message = stderr(&output).replace(file.path(), "FILE");
    assert_eq!(message.lines().count(), 1, "not one line: {message}");
    message.trim_end().to_string()
}

#[test]
fn config_check_names_key_position_and_what_is_allowed() {
    let cases = [
        (
            "max_headers = 64\nbogus = 3\n",
            "pushwire config check: FILE:2:1: unknown key `bogus`; the keys are `pushwire serve`'s flags without `--` and with `_` for `-` (`pushwire config defaults` lists them)",
        ),
        (
            "[http]\nmax_headers = 3\n",
            "pushwire config check: FILE:1:2: unknown key `http`; the file has no tables, every key is at the top level",
        ),
        (
            "max_headers = \"many\"\n",
            "pushwire config check: FILE:1:15: max_headers: expected a whole number (0 or more), found a string",
        ),
        // Two faults: the first in the file is named (README's example), whatever the keys' order.
        (
            "max_headers = \"many\"\nbogus = 1\n",
            "pushwire config check: FILE:1:15: max_headers: expected a whole number (0 or more), found a string",
        ),
        (
            "zz = 1\nmax_headers = \"many\"\n",
            "pushwire config check: FILE:1:1: unknown key `zz`; the keys are `pushwire serve`'s flags without `--` and with `_` for `-` (`pushwire config defaults` lists them)",
        ),
        (
            "max_headers = 1.5\n",
            "pushwire config check: FILE:1:15: max_headers: expected a whole number (0 or more), found a float",
        ),
        (
            "history_age = \"5\"\n",
            "pushwire config check: FILE:1:15: history_age: expected a number of seconds (fractions allowed), found a string",
        ),
        (
            "ws_no_deflate = \"yes\"\n",
            "pushwire config check: FILE:1:17: ws_no_deflate: expected true or false, found a string",
        ),
        (
            "disable = \"ws\"\n",
            "pushwire config check: FILE:1:11: disable: expected an array of strings, found a string",
        ),
        (
            "disable = [\"ws\", 3]\n",
            "pushwire config check: FILE:1:18: disable: expected an array of strings, found an integer in it",
        ),
        (
            "max_headers = -1\n",
            "pushwire config check: FILE:1:15: max_headers: -1 is out of range; allowed: a whole number (0 or more)",
        ),
        (
            "# comment\n\nmax_headers = 0\n",
            "pushwire config check: FILE:3:1: max_headers: out of range: max headers must be between 1 and 256",
        ),
        (
            "max_head_bytes = 100\n",
            "pushwire config check: FILE:1:1: max_head_bytes: out of range: max head bytes must be at least 256",
        ),
        (
            "listen = \"nowhere\"\n",
            "pushwire config check: FILE:1:10: listen: invalid value 'nowhere' for '--listen <LISTEN>': invalid socket address syntax",
        ),
        (
            "disable = [\"ws\", \"carrier-pigeon\"]\n",
            "pushwire config check: FILE:1:11: disable: invalid value 'carrier-pigeon' for '--disable <MODE>': `carrier-pigeon` is not one of ws, sse, stream, longpoll, poll",
        ),
        (
            "max_headers = \n",
            "pushwire config check: FILE:1:15: not valid TOML: string values must be quoted, expected literal string",
        ),
        (
            "redis_ping_interval = 0\n",
            "pushwire config check: FILE:1:23: redis_ping_interval: invalid value '0' for '--redis-ping-interval <SECONDS>': `0` is not a positive number of seconds",
        ),
        (
            "redis_survey_timeout = 0\n",
            "pushwire config check: FILE:1:24: redis_survey_timeout: invalid value '0' for '--redis-survey-timeout <SECONDS>': `0` is not a positive number of seconds",
        ),
        (
            "redis_heartbeat_interval = 6\n",
            "pushwire config check: invalid configuration: --redis-node-timeout must be longer than --redis-heartbeat-interval",
        ),
        (
            "tls_cert = \"/nonexistent.pem\"\n",
            "pushwire config check: FILE: the following required arguments were not provided: --tls-key <PATH>",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(refusal(text), want, "for {text:?}");
    }
}

#[test]
fn config_errors_from_the_environment_and_flags_exit_non_zero() {
    let output = run(&["config", "show"], &[("PUSHWIRE_MAX_HEADERS", "0")]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stderr(&output), "pushwire: invalid configuration: max headers must be between 1 and 256\n");
    let output = run(&["config", "show"], &[("PUSHWIRE_MAX_HEADERS", "lots")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("invalid value 'lots' for '--max-headers <COUNT>'"),
        "{}",
        stderr(&output)
    );
    let output = run(&["serve", "--config", "/nonexistent/pushwire.toml"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).starts_with("pushwire: /nonexistent/pushwire.toml: "), "{}", stderr(&output));
}

#[test]
fn config_file_environment_and_secret_file_reach_the_running_server() {
    let token = Scratch::new("s3cret\n");
    let file = Scratch::new(&format!("max_body_bytes = 10\npublish_token_file = \"{}\"\n", token.path()));
    // The environment raises the file's body limit; the token comes from its file.
    let server = Server::start_with_env(&["--config", file.path()], &[("PUSHWIRE_MAX_BODY_BYTES", "20")]);
    let post = |body: &str, token: Option<&str>| {
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let raw = format!(
            "POST /channels/c HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        exchange(&server, raw.as_bytes()).status
    };
    assert_eq!(post("fifteen bytes..", Some("s3cret")), 201);
    assert_eq!(post("twenty-five bytes........", Some("s3cret")), 413);
    assert_eq!(post("fifteen bytes..", Some("wrong")), 403);
    assert_eq!(post("fifteen bytes..", None), 401);
}

/// `--redis` servers (several, as shards) from a file: `config show` lists them in order with
/// any password redacted (a Redis URL carries its password).
#[test]
fn config_show_lists_redis_shards_in_order_with_passwords_redacted() {
    let file =
        Scratch::new("redis = [\"redis://:hunter2@10.0.0.1:6379\", \"redis://alice:pw@10.0.0.2:6380/1\"]\n");
    let shown = shown(&["--config", file.path()], &[]);
    assert_eq!(
        shown["redis"],
        "[\"redis://:(redacted)@10.0.0.1:6379/0\", \"redis://alice:(redacted)@10.0.0.2:6380/1\"]"
    );
    let file = Scratch::new("redis = \"redis://10.0.0.1\"\n");
    let check = run(&["config", "check", file.path()], &[]);
    assert!(!check.status.success());
    assert!(
        stderr(&check).contains("redis: expected an array of strings, found a string"),
        "{}",
        stderr(&check)
    );
}
