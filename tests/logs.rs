//! Issue #17 item 3 (logs), against the real binary: `--log-format json` writes one JSON
//! object per line on stderr (every line parsed here), the startup line names the version,
//! addresses, backend, effective limits and features, each refused request or connection gets
//! one debug line naming the peer, the status and the reason, and deliveries log nothing;
//! `text` stays the default; a bad format is a clear CLI error.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use common::IO_TIMEOUT;
use serde_json::Value;

/// A server whose stderr is read line by line.
struct Logged {
    child: Child,
    addr: SocketAddr,
    stderr: Receiver<String>,
}

impl Logged {
    fn start(flags: &[&str], env: &[(&str, &str)]) -> Logged {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pushwire"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(flags)
            .env_remove("PUSHWIRE_LOG_FORMAT")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pushwire");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("listening line");
        let addr = line.trim().strip_prefix("pushwire listening on http://").expect("listening line").parse();
        Logged { child, addr: addr.expect("an address"), stderr: rx }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }

    /// Reads stderr lines until one satisfies `want` (all lines read are kept in `seen`);
    /// panics after `IO_TIMEOUT`.
    fn until(&self, seen: &mut Vec<String>, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if want(&line) => {
                    seen.push(line.clone());
                    return line;
                }
                Ok(line) => seen.push(line),
                Err(_) => panic!("line not found; saw {seen:#?}"),
            }
        }
    }

    /// Stops the server and returns the lines it wrote after those already read.
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = Vec::new();
        loop {
            match self.stderr.recv_timeout(IO_TIMEOUT) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => return rest,
                Err(RecvTimeoutError::Timeout) => panic!("stderr did not end; read {rest:?}"),
            }
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` on a new connection and reads one response; returns its status and the
/// client's own address.
fn exchange(server: &Logged, request: &str) -> (u16, SocketAddr) {
    let mut stream = server.connect();
    let local = stream.local_addr().unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let response = common::read_response(&mut BufReader::new(stream), false);
    (response.status, local)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`: RFC 3339 §5.6 `date-time` in UTC.
fn is_rfc3339_utc(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && text.ends_with('Z')
        && (b[19] == b'Z' || (b[19] == b'.' && digits(20..b.len() - 1)))
}

/// Parses every line as one JSON object with the five members; returns them.
fn parse_all(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let timestamp = v["timestamp"].as_str().unwrap_or_else(|| panic!("no timestamp: {line}"));
            assert!(is_rfc3339_utc(timestamp), "not RFC 3339 UTC: {line}");
            let level = v["level"].as_str().unwrap_or_else(|| panic!("no level: {line}"));
            assert!(["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level), "{line}");
            assert!(v["target"].as_str().is_some_and(|t| !t.is_empty()), "no target: {line}");
            assert!(v["message"].is_string(), "no message: {line}");
            assert!(v["fields"].is_object(), "no fields object: {line}");
            v
        })
        .collect()
}

fn refusals(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|v| v["target"] == "pushwire::refused").collect()
}

#[test]
fn json_lines_parse_and_carry_the_startup_line_and_one_line_per_refusal() {
    let server = Logged::start(
        &[
            "--log-format",
            "json",
            "--subscribe-token",
            "s3cret",
            "--max-connections-per-ip",
            "77",
            "--api-key",
            "a-key-of-at-least-some-length-0123456789",
        ],
        &[("RUST_LOG", "debug")],
    );
    let mut seen = Vec::new();
    server.until(&mut seen, |l| l.contains("started"));

    // 401: a poll without the subscribe token.
    let (status, peer_401) = exchange(&server, "GET /channels/a?mode=poll HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 401);
    // 400: both Content-Length and Transfer-Encoding (RFC 9112 §6.1).
    let (status, peer_400) = exchange(
        &server,
        "POST /channels/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    );
    assert_eq!(status, 400);
    // 404 on a refused WebSocket upgrade of an unknown path.
    let (status, peer_404) = exchange(
        &server,
        "GET /nowhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!(status, 404);
    // 403: the server API with a wrong key.
    let (status, peer_api) = exchange(
        &server,
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: apikey wrong-key-wrong-key\r\n\
         Content-Length: 2\r\n\r\n{}",
    );
    assert!([401, 403].contains(&status), "{status}");

    // Deliveries log nothing: 100 messages published and received over SSE on kept-alive
    // connections, authorized.
    let mut sse = server.connect();
    sse.write_all(b"GET /channels/news?mode=sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n")
        .unwrap();
    let mut sse = BufReader::new(sse);
    let mut line = String::new();
    sse.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut publisher = server.connect();
    let mut publisher_in = BufReader::new(publisher.try_clone().unwrap());
    for i in 0..100 {
        let body = format!("m{i}");
        let request = format!(
            "POST /channels/news HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        publisher.write_all(request.as_bytes()).unwrap();
        let response = common::read_response(&mut publisher_in, false);
        assert!((200..300).contains(&response.status), "{response:?}");
    }
    let mut received = 0;
    while received < 100 {
        line.clear();
        assert!(sse.read_line(&mut line).unwrap() > 0, "the event stream ended");
        if line.starts_with("data:") {
            received += 1;
        }
    }
    // Wait for the three refusal lines, then stop and read the rest.
    let refused_peers = [peer_401, peer_400, peer_404, peer_api].map(|p| p.to_string());
    for peer in &refused_peers {
        server.until(&mut seen, |l| l.contains("pushwire::refused") && l.contains(peer.as_str()));
    }
    seen.extend(server.stop());
    let lines = parse_all(&seen);

    let startup: Vec<&Value> =
        lines.iter().filter(|v| v["message"].as_str().unwrap().contains("started")).collect();
    assert_eq!(startup.len(), 1, "one startup line: {seen:#?}");
    let (startup, fields) = (startup[0], &startup[0]["fields"]);
    assert_eq!(startup["level"], "INFO");
    assert_eq!(fields["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(fields["listen_http"], format!("http://{}", server_addr(&seen)));
    assert!(fields["listen_https"].is_null());
    assert_eq!(fields["backend"], "memory");
    assert_eq!(fields["max_connections_per_ip"], 77);
    assert!(fields["max_connections"].as_u64().is_some_and(|n| n > 0));
    assert!(fields["open_files"].as_u64().is_some_and(|n| n > 0));
    assert!(fields["threads"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(fields["history_messages"], 1000);
    assert_eq!(fields["max_body_bytes"], 65536);
    assert_eq!(fields["subscribe_token"], true);
    assert_eq!(fields["publish_token"], false);
    assert_eq!(fields["tls"], false);
    assert_eq!(fields["deflate"], true);
    assert_eq!(fields["redis"], false);
    assert_eq!(fields["api_key"], true);

    let refused = refusals(&lines);
    assert_eq!(refused.len(), 4, "one line per refused request: {refused:#?}");
    let api_status = status;
    for (peer, status, reason) in [
        (0, 401, "token"),
        (1, 400, "Content-Length and Transfer-Encoding"),
        (2, 404, "not found"),
        (3, api_status, "key"),
    ] {
        let peer = refused_peers[peer].as_str();
        let line = refused.iter().find(|l| l["fields"]["peer"] == peer).unwrap_or_else(|| panic!("{peer}"));
        assert_eq!(line["level"], "DEBUG");
        assert_eq!(line["fields"]["status"], status, "{line}");
        assert!(line["fields"]["reason"].as_str().unwrap().contains(reason), "{line}");
    }
    // 100 publishes and 100 deliveries: a line for each would be 200 more.
    assert!(lines.len() < 60, "{} lines: {seen:#?}", lines.len());
}

/// The address in the startup line's message (`started on http://ADDR (…)`).
fn server_addr(lines: &[String]) -> String {
    let line = lines.iter().find(|l| l.contains("started on http://")).expect("startup line");
    let after = &line[line.find("started on http://").unwrap() + "started on http://".len()..];
    after.split([' ', '"']).next().unwrap().to_string()
}

#[test]
fn connection_limit_refusals_name_the_limit() {
    let server = Logged::start(
        &["--log-format", "json", "--max-connections-per-ip", "1"],
        &[("RUST_LOG", "pushwire::refused=debug")],
    );
    // Admitted first for sure (the event loops accept in parallel): answered before the next.
    let mut held = server.connect();
    held.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut held = BufReader::new(held);
    assert_eq!(common::read_response(&mut held, false).status, 200);
    let mut seen = Vec::new();
    // The second connection from the same address: 503 and close.
    let mut second = server.connect();
    let peer = second.local_addr().unwrap().to_string();
    let mut answer = String::new();
    let _ = second.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let line = server.until(&mut seen, |l| l.contains(&peer));
    drop(held);
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["fields"]["status"], 503);
    assert!(line["fields"]["reason"].as_str().unwrap().contains("--max-connections-per-ip"), "{line}");
    // Only the refusal lines pass this filter: no startup line at info.
    let all = parse_all(&seen);
    assert!(all.iter().all(|v| v["target"] == "pushwire::refused"), "{seen:#?}");
}

#[test]
fn text_is_the_default_and_refusals_stay_quiet_at_info() {
    let server = Logged::start(&[], &[("RUST_LOG", "info")]);
    let mut seen = Vec::new();
    let line = server.until(&mut seen, |l| l.contains("started"));
    assert!(line.starts_with('['), "{line}");
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains(&format!("pushwire {} started on http://", env!("CARGO_PKG_VERSION"))), "{line}");
    assert!(line.contains(" backend=memory "), "{line}");
    assert!(serde_json::from_str::<Value>(&line).is_err(), "{line}");
    let (status, _) = exchange(&server, "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 404);
    let rest = server.stop();
    assert!(rest.iter().all(|l| !l.contains("refused")), "{rest:#?}");
}

#[test]
fn json_format_comes_from_the_environment_and_the_config_file() {
    let server = Logged::start(&[], &[("RUST_LOG", "info"), ("PUSHWIRE_LOG_FORMAT", "json")]);
    let line = server.until(&mut Vec::new(), |l| l.contains("started"));
    assert_eq!(parse_all(&[line])[0]["fields"]["backend"], "memory");
    drop(server);

    let path = std::env::temp_dir().join(format!("pushwire-logs-{}.toml", std::process::id()));
    std::fs::write(&path, "log_format = \"json\"\n").unwrap();
    let server = Logged::start(&["--config", path.to_str().unwrap()], &[("RUST_LOG", "info")]);
    let line = server.until(&mut Vec::new(), |l| l.contains("started"));
    assert_eq!(parse_all(&[line])[0]["level"], "INFO");
    drop(server);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_bad_log_format_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "xml"])
        .env_remove("PUSHWIRE_LOG_FORMAT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'xml' for '--log-format <FORMAT>'"), "{stderr}");
    assert!(stderr.contains("[possible values: text, json]"), "{stderr}");

    let path = std::env::temp_dir().join(format!("pushwire-logs-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "\nlog_format = \"xml\"\n").unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_pushwire")).args(["config", "check"]).arg(&path).output().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":2:14: log_format: invalid value 'xml'"), "{stderr}");
    assert!(stderr.lines().count() == 1, "{stderr}");
}
