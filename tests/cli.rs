//! The client subcommands of the real binary, on loopback: `pushwire sub` / `pushwire pub`
//! round trips on every transport, `pushwire ws` against `/echo` and against a Python
//! `websockets` echo server, and a `pushwire sub` that outlives a server restart on the same
//! port and reports the gap (new epoch) on stderr; a `pushwire token` taken by a server with
//! the same secret.
//!
//! Every child is killed when its test ends, and every read has a deadline.

mod common;
mod redis_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Server, IO_TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_pushwire");

/// A running `pushwire` client whose stdout and stderr lines arrive on channels.
struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn lines_of(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    fn spawn(args: &[&str]) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pushwire");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        Running { child, stdout, stderr }
    }

    /// The next stdout line, within the deadline.
    fn line(&self) -> String {
        self.stdout.recv_timeout(IO_TIMEOUT).unwrap_or_else(|e| panic!("no stdout line: {e}"))
    }

    /// Reads stderr until a line contains `needle`; panics with what was seen otherwise.
    fn stderr_until(&self, needle: &str) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut seen = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if line.contains(needle) {
                return line;
            }
            seen.push(line);
        }
        panic!("no stderr line with {needle:?}; saw {seen:#?}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `pushwire ARGS` with `input` on stdin; kills it after `IO_TIMEOUT`.
fn run(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pushwire");
    child.stdin.take().unwrap().write_all(input).unwrap(); // dropped: EOF
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(IO_TIMEOUT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("pushwire {args:?} did not finish in time");
        }
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `pushwire pub URL DATA`: the id it prints.
fn publish(url: &str, data: &str) -> String {
    let out = run(&["pub", url, data], b"");
    assert!(out.status.success(), "pub failed: {}", String::from_utf8_lossy(&out.stderr));
    let id = stdout(&out).trim().to_string();
    assert!(pushwire::hub::Cursor::parse(&id).is_ok(), "not an id: {id:?}");
    id
}

/// Publishes "zero", subscribes after it with `transport`, publishes two lines from stdin
/// (through `pub_url`: HTTP or WebSocket) and a binary message, and expects them in order.
fn round_trip(transport: &str, pub_url_scheme: &str) {
    let server = Server::start(&["--threads", "1"]);
    let url = format!("http://{}/channels/c", server.addr);
    let zero = publish(&url, "zero");
    let sub =
        Running::spawn(&["sub", &url, "--transport", transport, "--since", &zero, "--poll-interval", "0.05"]);
    let pub_url = format!("{pub_url_scheme}://{}/channels/c", server.addr);
    let out = run(&["pub", &pub_url, "-"], b"one\ntwo\r\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = stdout(&out);
    let ids: Vec<&str> = printed.lines().collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let out = run(&["pub", &pub_url, "-", "--binary"], b"\x00\x01\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sub.line(), "one");
    assert_eq!(sub.line(), "two");
    assert_eq!(sub.line(), "AAE=", "binary messages print as base64");

    // The same with --json: the envelope, with the ids `pub` printed.
    let json =
        Running::spawn(&["sub", &url, "--transport", transport, "--since", &zero, "--json", "--count", "2"]);
    assert_eq!(json.line(), format!("{{\"id\":\"{}\",\"data\":\"one\"}}", ids[0]));
    assert_eq!(json.line(), format!("{{\"id\":\"{}\",\"data\":\"two\"}}", ids[1]));
}

#[test]
fn cli_sub_pub_round_trip_websocket() {
    round_trip("ws", "ws");
}

#[test]
fn cli_sub_pub_round_trip_sse() {
    round_trip("sse", "http");
}

#[test]
fn cli_sub_pub_round_trip_stream() {
    round_trip("stream", "http");
}

#[test]
fn cli_sub_pub_round_trip_long_poll() {
    round_trip("longpoll", "http");
}

#[test]
fn cli_sub_pub_round_trip_short_poll() {
    round_trip("poll", "http");
}

#[test]
fn cli_pub_event_names_reach_json_subscribers() {
    let server = Server::start(&["--threads", "1"]);
    let url = format!("http://{}/channels/e", server.addr);
    let zero = publish(&url, "zero");
    let out = run(&["pub", &url, "tick-tock", "--event", "clock"], b"");
    assert!(out.status.success());
    let id = stdout(&out).trim().to_string();
    let sub = Running::spawn(&["sub", &url, "--transport", "sse", "--since", &zero, "--json"]);
    assert_eq!(sub.line(), format!("{{\"id\":\"{id}\",\"event\":\"clock\",\"data\":\"tick-tock\"}}"));
}

#[test]
fn cli_errors_are_one_line_with_a_failing_exit_code() {
    let server = Server::start(&["--threads", "1", "--publish-token", "secret"]);
    let url = format!("http://{}/channels/c", server.addr);
    // TLS spoken to a plain-HTTP server: it waits for the end of a request head that never
    // comes, and the client for a ServerHello, until the connect deadline.
    let wss = format!("wss://{}/echo", server.addr);
    for (args, needle) in [
        // The reason of the server's JSON error body, not the JSON.
        (vec!["pub", url.as_str(), "x"], "the server answered 401: a bearer token is required\n"),
        (vec!["pub", url.as_str(), "x", "--token", "wrong"], "403"),
        (vec!["sub", "https://127.0.0.1:1/channels/c", "--ca-file", "/nonexistent/ca.pem"], "CA file"),
        (vec!["ws", wss.as_str(), "--timeout", "0.3"], "timed out waiting for the TLS handshake"),
        (vec!["sub", "http://127.0.0.1:1/channels/c", "--transport", "sse"], "refused"),
    ] {
        let out = run(&args, b"");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = run(&["pub", &url, "x", "--token", "secret"], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `serve --redis A --redis B`: the same server twice (even another database of it), more
/// than 64 servers, or one that does not answer is a one-line error and a failing exit, the
/// unreachable one named.
#[test]
fn cli_serve_redis_shards_refuse_a_server_twice_too_many_and_an_unreachable_one() {
    let redis = redis_support::RedisServer::start();
    let good = format!("redis://127.0.0.1:{}", redis.port);
    let other_db = format!("{good}/1");
    // Nothing listens there once the listener is dropped.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = format!("redis://127.0.0.1:{dead_port}");
    let many: Vec<String> = (0..65).map(|i| format!("redis://127.0.0.1:{}", 20_000 + i)).collect();
    let mut too_many = vec!["serve", "--listen", "127.0.0.1:0"];
    for url in &many {
        too_many.extend(["--redis", url.as_str()]);
    }
    let serve = |urls: &[&str]| {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--redis-request-timeout", "1"];
        for url in urls {
            args.extend(["--redis", url]);
        }
        args.iter().map(|a| a.to_string()).collect::<Vec<String>>()
    };
    for (args, needle) in [
        (serve(&[&good, &good]), format!("{good}/0 again")),
        (serve(&[&good, &other_db]), "distinct server".to_string()),
        (too_many.iter().map(|a| a.to_string()).collect(), "65 servers given; at most 64".to_string()),
        (serve(&[&good, &dead]), format!("{dead}/0")),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args, b"");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{needle}: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("pushwire: ") && last.contains(&needle), "{needle}: {err}");
    }
}

#[test]
fn cli_ws_echo_prints_what_comes_back() {
    let server = Server::start(&["--threads", "1"]);
    let out = run(&["ws", &format!("ws://{}/echo", server.addr)], b"hi\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out), "hi\n");
    let out = run(&["ws", &format!("ws://{}/echo", server.addr), "--binary"], b"hi\nthere\n");
    assert_eq!(stdout(&out), "aGk=\ndGhlcmU=\n");
    let out = run(&["ws", &format!("ws://{}/echo", server.addr), "--binary", "--raw"], b"hi\n");
    assert_eq!(stdout(&out), "hi");
}

#[test]
fn cli_ws_against_python_websockets_echo_server() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python3");
    assert!(python.exists(), "{} is missing: run `bash scripts/setup-interop.sh`", python.display());
    let mut peer = Command::new(python)
        .arg("-u")
        .arg(root.join("tests/interop/py_server.py"))
        .arg("echo")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the Python websockets server");
    let lines = lines_of(peer.stdout.take().unwrap());
    let first = lines.recv_timeout(IO_TIMEOUT).expect("the peer's listening line");
    let port = first.strip_prefix("listening ").expect("listening PORT").trim().to_string();
    let url = format!("ws://127.0.0.1:{port}/");
    let out = run(&["ws", &url, "--protocol", "chat", "--header", "X-Test: 1"], b"hi\nthere\n");
    let text = run(&["ws", &url, "--binary"], b"hi\n");
    let _ = peer.kill();
    let _ = peer.wait();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out), "hi\nthere\n");
    assert_eq!(stdout(&text), "aGk=\n");
}

/// `pushwire sub` keeps running while the server stops (SIGTERM) and starts again on the same
/// port with a new epoch: it reports the gap on stderr and receives what is published next.
fn survives_restart(transport: &str) {
    let flags = ["--threads", "1", "--drain-seconds", "0.1", "--sse-retry", "0.05"];
    let mut server = Server::start(&flags);
    let addr = server.addr;
    let url = format!("http://{addr}/channels/r");
    let zero = publish(&url, "zero");
    let sub = Running::spawn(&[
        "sub",
        &url,
        "--transport",
        transport,
        "--since",
        &zero,
        "--backoff-base",
        "0.05",
        "--backoff-cap",
        "0.2",
        "--poll-interval",
        "0.05",
    ]);
    publish(&url, "before");
    assert_eq!(sub.line(), "before");

    let ok = Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
    assert!(ok.success());
    assert!(server.wait_exit(IO_TIMEOUT).is_some(), "the server did not stop");
    drop(server);
    std::thread::sleep(Duration::from_millis(300)); // the subscriber retries meanwhile
    let deadline = Instant::now() + IO_TIMEOUT;
    let _server = loop {
        match Server::try_start_at(&addr.to_string(), &flags) {
            Ok(server) => break server,
            Err(e) if Instant::now() < deadline => {
                eprintln!("restart on {addr}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("cannot restart on {addr}: {e}"),
        }
    };
    let gap = sub.stderr_until("gap");
    assert!(gap.contains("messages were lost"), "{gap}");
    publish(&url, "after");
    assert_eq!(sub.line(), "after");
}

#[test]
fn cli_sub_survives_server_restart_websocket() {
    survives_restart("ws");
}

#[test]
fn cli_sub_survives_server_restart_sse() {
    survives_restart("sse");
}

#[test]
fn cli_sub_survives_server_restart_long_poll() {
    survives_restart("longpoll");
}

#[test]
fn cli_sub_survives_server_restart_stream() {
    survives_restart("stream");
}

#[test]
fn cli_sub_survives_server_restart_short_poll() {
    survives_restart("poll");
}

/// Issue #13 item 6: `pushwire presence URL CHANNEL` prints `CHANNEL COUNT` and one line per
/// member (`ID<TAB>USER<TAB>INFO`), follows a leave, and fails with one line on a bad name or
/// a refusal.
#[test]
fn cli_presence_lists_members_and_count() {
    let server = Server::start(&["--threads", "1", "--subscribe-token", "s3cret"]);
    let mut ann = common::v1::V1::connect(&server, Some("s3cret"));
    let mut bob = common::v1::V1::connect(&server, Some("s3cret"));
    let sub = |info: serde_json::Value| {
        let mut command = serde_json::json!({"type":"subscribe","channel":"lobby","req":1});
        if !info.is_null() {
            command["info"] = info;
        }
        command
    };
    assert_eq!(ann.ask(sub(serde_json::json!({"name":"ann"})))["type"], "ok");
    assert_eq!(bob.ask(sub(serde_json::Value::Null))["type"], "ok");
    let url = format!("http://{}", server.addr);
    let listed = |channel: &str| {
        let out = run(&["presence", &url, channel, "--token", "s3cret"], b"");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        stdout(&out)
    };
    let text = listed("lobby");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "lobby 2");
    let mut members: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split('\t').collect()).collect();
    members.sort_by_key(|m| m[2] == "-");
    assert_eq!(&members[0][1..], ["-", r#"{"name":"ann"}"#], "{text}");
    assert_eq!(&members[1][1..], ["-", "-"], "{text}");
    assert_ne!(members[0][0], members[1][0], "{text}");
    // Bob leaves (his connection closes): the list follows, within a bounded wait.
    drop(bob);
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut text = listed("lobby");
    while text.lines().next() != Some("lobby 1") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        text = listed("lobby");
    }
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with("lobby 1\n") && text.contains(r#"{"name":"ann"}"#), "{text}");
    assert_eq!(listed("empty"), "empty 0\n");
    for (args, needle) in [
        (vec!["presence", url.as_str(), "not a name"], "not a channel name"),
        (vec!["presence", url.as_str(), "lobby"], "401"),
        (vec!["presence", url.as_str(), "lobby", "--token", "wrong"], "403"),
    ] {
        let out = run(&args, b"");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    drop(ann);
}

/// `pushwire token` mints what a server with the same `--token-secret-file` takes: each grant
/// holds for its action and channels only, and the user shows in presence. A bad pattern, a
/// short secret, a zero TTL, no secret or a token past the server's length limit is one line on
/// stderr with a failing exit code.
#[test]
fn cli_token_is_taken_by_a_server_with_the_same_secret_for_what_it_grants() {
    let secret = "0123456789abcdef0123456789abcdef";
    let secret_file = std::env::temp_dir().join(format!("pushwire-cli-token-{}", std::process::id()));
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let file = secret_file.to_str().unwrap();
    let server = Server::start(&[
        "--threads",
        "1",
        "--token-secret-file",
        file,
        "--channel-policy",
        "private.*=token",
    ]);
    let grants = ["--subscribe", "private.*", "--publish", "private.a", "--presence", "private.a"];
    let out = run(
        &[&["token", "--token-secret-file", file, "--user", "alice", "--ttl", "60"][..], &grants].concat(),
        b"",
    );
    std::fs::remove_file(&secret_file).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = stdout(&out).trim().to_string();
    let url = |channel: &str| format!("http://{}/channels/{channel}", server.addr);

    let mut alice = common::v1::V1::connect(&server, Some(&token));
    let subscribe = serde_json::json!({"type":"subscribe","channel":"private.a","req":1});
    assert_eq!(alice.ask(subscribe)["type"], "ok");
    let out = run(&["pub", &url("private.a"), "hi", "--token", &token], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(alice.message()["data"], "hi");
    let out = run(&["pub", &url("private.b"), "hi", "--token", &token], b"");
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "private.b is not granted");
    let address = format!("http://{}", server.addr);
    let out = run(&["presence", &address, "private.a", "--token", &token], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = stdout(&out);
    assert!(listed.starts_with("private.a 1\n") && listed.contains("\talice\t"), "{listed}");

    // 200 grants of 30 bytes each: past the server's 4,096-byte token limit.
    let mut many_patterns: Vec<String> = ["token", "--token-secret", secret].map(String::from).to_vec();
    for i in 0..200 {
        many_patterns.extend(["--subscribe".to_string(), format!("private.room-{i:0>16}")]);
    }
    for (args, needle) in [
        (vec!["token", "--token-secret", "short"], "32 bytes"),
        (vec!["token", "--token-secret", secret, "--subscribe", "a b"], "--subscribe \"a b\""),
        (vec!["token", "--token-secret", secret, "--ttl", "0"], "--ttl"),
        (vec!["token", "--user", "alice"], "--token-secret-file"),
        (many_patterns.iter().map(String::as_str).collect(), "token too long"),
    ] {
        let out = run(&args, b"");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
