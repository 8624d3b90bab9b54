//! Interop with real WebSocket peers, on loopback only:
//!
//! | peer | role | against | cases |
//! |---|---|---|---|
//! | Python `websockets` (sync API) | client | `pushwire serve` | echo text/binary incl. 1 MiB, ping, close (over ws:// and over wss:// with `--tls-cert`, ALPN http/1.1); channel subscription (plain and `pushwire.v1`) receiving HTTP publishes |
//! | Python `websockets` | server | `client::WsClient` | echo incl. 1 MiB, ping, close; a masked server frame makes the client fail with 1002 |
//! | Node `ws` | client | `pushwire serve` | echo text/binary, ping, close; channel message with `pushwire.v1` |
//! | Node `ws` | server | `client::WsClient` | echo of text, binary and 1 MiB, ping/pong, closing handshake 1000 |
//! | Python `sseclient` (with `requests`) | SSE reader | `pushwire serve`, through a proxy that cuts the stream | reconnects with `Last-Event-ID` and gets exactly the messages it missed |
//! | Python `websockets` over `ssl` | `wss://` server | `client::WsClient` | echo and close over TLS (test CA via `extra_roots_pem`, by name and by IP); an untrusted CA or a certificate for another name fails with `Error::Tls` |
//! | Python `ssl` TLS terminator | `https://` proxy | `client::Publisher`, `client::Subscriber`, `pushwire pub --ca-file` | publish over `https://`, subscribe over `wss://` and SSE over `https://` to `pushwire serve` behind it |
//!
//! The peers are installed by `scripts/setup-interop.sh` (a venv at `.venv/`, `ws` in
//! `tests/interop/node_modules/`); `scripts/test.sh` runs it first. When they are missing these
//! tests fail and say so: they never skip. Every peer process is killed when its test ends (also
//! on panic), and every wait has a deadline.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pushwire::client::{
    Error, Item, Payload, PublishOptions, Publisher, SubscribeOptions, Subscriber, TlsOptions, Transport,
    WsClient, WsOptions,
};
use pushwire::ws::{self, CloseCode, Event, Message};

use common::pki::TestPki;
use common::{metrics_text, Server, IO_TIMEOUT};

/// How long one peer script may run before the test kills it and fails.
const PEER_LIMIT: Duration = Duration::from_secs(60);

const SETUP_HINT: &str = "run `bash scripts/setup-interop.sh` (scripts/test.sh does it before cargo test)";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, which has `websockets`; fails the test when it is missing.
fn python() -> Command {
    let python = root().join(".venv/bin/python3");
    assert!(python.exists(), "{} is missing: {SETUP_HINT}", python.display());
    let mut cmd = Command::new(python);
    // Unbuffered, so a peer's lines arrive as it prints them.
    cmd.arg("-u").env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// `node` in `tests/interop/`, where `require('ws')` resolves; fails the test when `ws` is
/// missing.
fn node() -> Command {
    let dir = root().join("tests/interop");
    let modules = dir.join("node_modules");
    assert!(modules.join("ws/package.json").exists(), "{} has no `ws`: {SETUP_HINT}", modules.display());
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir).env("NODE_PATH", modules);
    cmd
}

fn script(name: &str) -> PathBuf {
    root().join("tests/interop").join(name)
}

/// A peer process, killed and reaped when dropped (also when the test panics).
struct Peer {
    child: Child,
    /// The peer's stdout, line by line, read on a thread so waits can have deadlines.
    lines: mpsc::Receiver<String>,
    what: String,
}

impl Peer {
    fn spawn(mut cmd: Command, what: &str) -> Peer {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}; {SETUP_HINT}"));
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer { child, lines, what: what.to_string() }
    }

    /// The next line the peer prints, within `limit`.
    fn line(&self, limit: Duration) -> String {
        self.lines
            .recv_timeout(limit)
            .unwrap_or_else(|e| panic!("{} printed no line within {limit:?}: {e}", self.what))
    }

    /// Waits for the peer to exit within [`PEER_LIMIT`]; returns its success and everything it
    /// printed.
    fn finish(mut self) -> (bool, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < PEER_LIMIT, "{} still running after {PEER_LIMIT:?}", self.what);
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        // The reader thread ends at EOF, which came with the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            out.push_str(&line);
            out.push('\n');
        }
        (status.success(), out)
    }

    /// Starts a server script and reads the port from its first line, `listening PORT`.
    fn server(cmd: Command, what: &str) -> (Peer, u16) {
        let peer = Peer::spawn(cmd, what);
        let line = peer.line(IO_TIMEOUT);
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{what}: unexpected first line {line:?}"));
        (peer, port)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client script to its end and asserts it passed every check.
fn run_client(cmd: Command, what: &str, expected_checks: &[&str]) {
    let (ok, out) = Peer::spawn(cmd, what).finish();
    assert!(ok, "{what} failed:\n{out}");
    assert!(out.lines().last() == Some("ok"), "{what} did not finish:\n{out}");
    for check in expected_checks {
        assert!(out.contains(check), "{what} did not check {check:?}:\n{out}");
    }
}

// ----- Python `websockets` as a client of our server -----

#[test]
fn python_websockets_client_echo_text_binary_and_1_mib() {
    let server = Server::start(&[]);
    let mut cmd = python();
    cmd.arg(script("py_client.py")).args(["echo", &server.addr.to_string()]);
    run_client(
        cmd,
        "python websockets client (echo)",
        &["1 MiB binary", "1 MiB text", "pong for a ping", "answered with 1000"],
    );
}

#[test]
fn rfc6455_4_1_python_websockets_client_echoes_over_wss() {
    let pki = TestPki::new("py-wss", &["localhost"]);
    let flags = pki.flags();
    let (_server, tls) = Server::start_tls(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let mut cmd = python();
    cmd.arg(script("py_client.py")).args(["echo", &format!("localhost:{}", tls.port())]).arg(pki.ca());
    run_client(
        cmd,
        "python websockets client (wss echo)",
        &["TLS handshake", "ALPN http/1.1", "1 MiB binary", "1 MiB text", "answered with 1000"],
    );
}

#[test]
fn python_websockets_client_channel_receives_http_publish() {
    let server = Server::start(&[]);
    let mut cmd = python();
    cmd.arg(script("py_client.py")).args(["channel", &server.addr.to_string(), "x"]);
    run_client(
        cmd,
        "python websockets client (channel)",
        &["plain subscriber gets a text frame", "envelope carries the message id", "binary frame"],
    );
}

#[test]
fn rfc7692_node_ws_client_deflate_rsv1_on_the_wire_and_broadcast_compressed_once() {
    let server = Server::start(&[]);
    let mut cmd = node();
    cmd.arg(script("node_client.js")).args(["deflate", &server.addr.to_string(), "nz"]);
    run_client(
        cmd,
        "node ws client (deflate)",
        &[
            "RSV1 on ws's text frame to pushwire",
            "RSV1 on pushwire's echo",
            "subscriber 4 inflated the broadcast",
            "RSV1 on all 5 broadcast frames on the wire",
        ],
    );
    // One publish to five deflate subscribers: compressed once, sent five times.
    let metrics = metrics_text(&server);
    let metric = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    assert_eq!(metric("pushwire_ws_deflate_compressions_total"), Some(1), "{metrics}");
    assert_eq!(metric("pushwire_ws_deflate_frames_sent_total"), Some(5), "{metrics}");
}

// ----- A Python SSE reader (sseclient) through a proxy that cuts the stream -----

#[test]
fn rfc7692_python_websockets_client_deflate_echo_and_broadcast() {
    let server = Server::start(&[]);
    let mut cmd = python();
    cmd.arg(script("py_client.py")).args(["deflate", &server.addr.to_string(), "z"]);
    run_client(
        cmd,
        "python websockets client (deflate)",
        &[
            "permessage-deflate negotiated",
            "compressed 1 KiB echoed",
            "compressed broadcast inflated",
            "server_max_window_bits=15 offered and answered",
            "echoed within a 10-bit window",
        ],
    );
    // RSV1 on the wire: the broadcast went out compressed, and Python inflated it.
    let metrics = metrics_text(&server);
    let sent = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pushwire_ws_deflate_frames_sent_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(sent, Some(1), "{metrics}");
}

#[test]
fn html_sse_python_reader_reconnects_with_last_event_id_and_resumes_exactly() {
    let server = Server::start(&[]);
    let mut cmd = python();
    cmd.arg(script("py_sse.py")).args([&server.addr.to_string(), "sse"]);
    run_client(
        cmd,
        "python sseclient reader",
        &[
            "first two messages",
            "exactly the missed messages after the cut",
            "reconnect carried Last-Event-ID",
        ],
    );
}

// ----- Node `ws` as a client of our server -----

#[test]
fn node_ws_client_echo() {
    let server = Server::start(&[]);
    let mut cmd = node();
    cmd.arg(script("node_client.js")).args(["echo", &server.addr.to_string()]);
    run_client(cmd, "node ws client (echo)", &["echo of text", "262144 binary bytes", "pong", "1000"]);
}

#[test]
fn node_ws_client_channel_message() {
    let server = Server::start(&[]);
    let mut cmd = node();
    cmd.arg(script("node_client.js")).args(["channel", &server.addr.to_string(), "x"]);
    run_client(cmd, "node ws client (channel)", &["pushwire.v1 selected", "envelope carries the message id"]);
}

// ----- our client against Python `websockets` as a server -----

fn client_options() -> WsOptions {
    let one_mib = 1 << 20;
    WsOptions {
        read_timeout: Some(IO_TIMEOUT),
        limits: ws::Limits { max_frame_payload_bytes: one_mib, max_message_bytes: one_mib },
        ..WsOptions::default()
    }
}

#[test]
fn our_client_against_python_websockets_echo_server() {
    let mut cmd = python();
    cmd.arg(script("py_server.py")).arg("echo");
    let (_peer, port) = Peer::server(cmd, "python websockets server (echo)");
    let mut ws =
        WsClient::connect(&format!("ws://127.0.0.1:{port}/any/path?q=1"), &client_options()).unwrap();
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 256) as u8).collect();
    for msg in [
        Message::Text("héllo ✓".into()),
        Message::Text(String::new()),
        Message::Binary(vec![0, 1, 2, 255]),
        Message::Binary(big),
    ] {
        ws.send(&msg).unwrap();
        assert_eq!(ws.recv().unwrap(), Event::Message(msg));
    }
    ws.send_ping(b"from rust").unwrap();
    assert_eq!(ws.recv().unwrap(), Event::Pong(b"from rust".to_vec()));
    ws.close(CloseCode::NORMAL, "done").unwrap();
    assert!(matches!(ws.recv(), Err(Error::Closed)));
}

#[test]
fn our_client_against_node_ws_server_echo_ping_close() {
    let mut cmd = node();
    cmd.arg(script("node_server.js"));
    let (peer, port) = Peer::server(cmd, "node ws server (echo)");
    let mut ws = WsClient::connect(&format!("ws://127.0.0.1:{port}/"), &client_options()).unwrap();
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i * 13 % 256) as u8).collect();
    for msg in [Message::Text("héllo ✓".into()), Message::Binary(vec![0, 1, 2, 255]), Message::Binary(big)]
    {
        ws.send(&msg).unwrap();
        assert_eq!(ws.recv().unwrap(), Event::Message(msg));
    }
    // `ws` answers pings by itself (RFC 6455 §5.5.2).
    ws.send_ping(b"from rust").unwrap();
    assert_eq!(ws.recv().unwrap(), Event::Pong(b"from rust".to_vec()));
    ws.close(CloseCode::NORMAL, "done").unwrap();
    assert_eq!(peer.line(IO_TIMEOUT), "client closed with 1000");
}

#[test]
fn rfc6455_5_1_our_client_fails_a_masked_frame_from_python_server_with_1002() {
    let mut cmd = python();
    cmd.arg(script("py_server.py")).arg("masked");
    let (peer, port) = Peer::server(cmd, "python websockets server (masked frame)");
    let mut ws = WsClient::connect(&format!("ws://127.0.0.1:{port}/"), &client_options()).unwrap();
    match ws.recv() {
        Err(Error::Protocol(ws::Error::MaskedServerFrame)) => {}
        other => panic!("expected the masked frame to fail the connection, got {other:?}"),
    }
    assert!(matches!(ws.recv(), Err(Error::Closed)));
    // What the server saw: our close frame with 1002 (RFC 6455 §7.4.1, protocol error).
    assert_eq!(peer.line(IO_TIMEOUT), "client closed with 1002");
}

// ----- TLS: our client against Python `ssl` servers (wss://, https://) -----

/// Starts `py_tls.py MODE` with the server certificate of `pki`; returns it and its port.
fn tls_peer(pki: &TestPki, mode: &str, extra: &[&str]) -> (Peer, u16) {
    let mut cmd = python();
    cmd.arg(script("py_tls.py")).arg(mode).arg(pki.cert()).arg(pki.key());
    cmd.args(extra);
    Peer::server(cmd, &format!("python TLS server ({mode})"))
}

#[test]
fn rfc6455_4_1_wss_client_echoes_through_python_websockets_over_tls() {
    let pki = TestPki::new("echo", &["localhost", "127.0.0.1"]);
    let (_peer, port) = tls_peer(&pki, "ws-echo", &[]);
    let options = WsOptions { tls: pki.tls(), ..client_options() };
    // By name (SNI "localhost") and by IP address (checked against the IP address SAN).
    for host in ["localhost", "127.0.0.1"] {
        let mut ws = WsClient::connect(&format!("wss://{host}:{port}/any?q=1"), &options).unwrap();
        let big: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 256) as u8).collect();
        for msg in [Message::Text("héllo ✓".into()), Message::Binary(big)] {
            ws.send(&msg).unwrap();
            assert_eq!(ws.recv().unwrap(), Event::Message(msg), "{host}");
        }
        ws.send_ping(b"tls").unwrap();
        assert_eq!(ws.recv().unwrap(), Event::Pong(b"tls".to_vec()));
        ws.close(CloseCode::NORMAL, "done").unwrap();
        assert!(matches!(ws.recv(), Err(Error::Closed)));
    }
}

#[test]
fn untrusted_or_misnamed_server_certificates_fail_with_the_tls_error() {
    let pki = TestPki::new("untrusted", &["localhost"]);
    let other = TestPki::new("other-ca", &["localhost"]);
    let (_peer, port) = tls_peer(&pki, "ws-echo", &[]);
    let expect_tls = |url: String, tls: TlsOptions, why: &str| match WsClient::connect(
        &url,
        &WsOptions { tls, ..client_options() },
    ) {
        Err(Error::Tls(text)) => {
            assert!(text.contains(why), "{url}: {text}");
            assert!(!Error::Tls(text).is_retryable());
        }
        other => panic!("{url}: expected Error::Tls, got {other:?}"),
    };
    // Mozilla's roots only, and another CA: the issuer is unknown.
    expect_tls(format!("wss://localhost:{port}/"), TlsOptions::default(), "UnknownIssuer");
    expect_tls(format!("wss://localhost:{port}/"), other.tls(), "UnknownIssuer");
    // Trusted CA, but the certificate names "localhost", not 127.0.0.1.
    expect_tls(format!("wss://127.0.0.1:{port}/"), pki.tls(), "not valid for name");
    // The same over https:// for the HTTP client.
    match Publisher::connect(&format!("https://localhost:{port}/channels/c"), PublishOptions::default()) {
        Err(Error::Tls(text)) => assert!(text.contains("UnknownIssuer"), "{text}"),
        other => panic!("expected Error::Tls, got {other:?}"),
    }
    // A CA file that is missing or holds no certificate is refused before connecting.
    let missing = TlsOptions { extra_roots_pem: Some(pki.dir.join("nope.pem")) };
    let no_cert = TlsOptions { extra_roots_pem: Some(pki.dir.join("server.key")) };
    for tls in [missing, no_cert] {
        match WsClient::connect(&format!("wss://localhost:{port}/"), &WsOptions { tls, ..client_options() }) {
            Err(Error::InvalidOptions(text)) => assert!(text.contains("CA file"), "{text}"),
            other => panic!("expected Error::InvalidOptions, got {other:?}"),
        }
    }
}

#[test]
fn https_publish_and_wss_and_sse_subscribe_through_a_tls_terminator() {
    let server = Server::start(&[]);
    let pki = TestPki::new("proxy", &["localhost"]);
    let (_proxy, port) = tls_peer(&pki, "proxy", &[&server.addr.port().to_string()]);
    let url = format!("https://localhost:{port}/channels/tls");
    let publish_options = PublishOptions { tls: pki.tls(), ..PublishOptions::default() };
    let mut publisher = Publisher::connect(&url, publish_options.clone()).unwrap();
    let start = publisher.publish(&Payload::Text("m0".into()), None).unwrap();
    for transport in [Transport::WebSocket, Transport::Sse] {
        let options =
            SubscribeOptions { transport, since: Some(start), tls: pki.tls(), ..SubscribeOptions::default() };
        let mut sub = Subscriber::connect(&url, options).unwrap();
        let text = format!("over {transport:?}");
        let id = publisher.publish(&Payload::Text(text.clone()), None).unwrap();
        // Bounded: a few items at most (the SSE pass also gets the WebSocket pass's message),
        // each within the subscriber's read timeout.
        let got = (0..3)
            .find_map(|_| match sub.recv().unwrap() {
                Item::Message { id: got, payload: Payload::Text(t), .. } if t == text => Some((got, t)),
                _ => None,
            })
            .expect("the message within 3 items");
        assert_eq!(got, (id, text));
    }
    publisher.close().unwrap();
    // `pushwire pub --ca-file` publishes over https:// too.
    let out = Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .args(["pub", "--ca-file"])
        .arg(pki.ca())
        .args([&url, "from the CLI"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "pushwire pub: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).trim().contains(':'), "{out:?}");
}
