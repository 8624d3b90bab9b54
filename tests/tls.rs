//! Server TLS end to end (issue #15): `pushwire serve --tls-cert --tls-key` against real clients
//! over loopback, with a test CA made at test time (rcgen).
//!
//! | check | clients |
//! |---|---|
//! | https:// publish, wss:// and SSE over https:// subscribe, wss:// echo of 1 MiB | `client::Publisher`, `Subscriber`, `WsClient` |
//! | TLS 1.3 and 1.2, ALPN `http/1.1` chosen when `h2` is offered too, session resumption | curl `--cacert` |
//! | plain HTTP and TLS served at once (`--tls-listen`), one hub | curl, `Subscriber` |
//! | plain HTTP to the TLS port: a plain `400` saying so | curl `http://` |
//! | SIGHUP reload under live connections; a failed reload keeps the pair (counted) | `Subscriber`, `Publisher`, curl |
//! | bad certificate or key at start: one clear line, exit code 2 | the binary |
//! | `pushwire bench echo` over wss://, and refused without the test CA | the binary |
//! | handshake timeout; a handshake flood (stalled and completing) while an established client keeps its latency | raw TCP, `WsClient` |
//!
//! Python `websockets` over wss:// is in `tests/interop.rs`, Chromium over https:// in
//! `tests/browser/`, garbage and truncated ClientHellos in `tests/bad_input_matrix.rs`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pushwire::client::{
    Error, Item, Payload, PublishOptions, Publisher, SubscribeOptions, Subscriber, TlsOptions, Transport,
    WsClient, WsOptions,
};
use pushwire::ws::{self, Event, Message};

use common::pki::TestPki;
use common::{Server, IO_TIMEOUT};

fn start(pki: &TestPki, extra: &[&str]) -> (Server, SocketAddr) {
    let mut flags = pki.flags();
    flags.extend(extra.iter().map(|s| s.to_string()));
    Server::start_tls(&flags.iter().map(String::as_str).collect::<Vec<_>>())
}

/// curl against the TLS port, trusting `pki`'s CA; returns (exit success, stdout, stderr).
fn curl(pki: &TestPki, port: u16, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(pki.ca())
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl is installed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A counter from `/metrics`, read over https://.
fn metric(pki: &TestPki, port: u16, name: &str) -> u64 {
    let (ok, text, err) = curl(pki, port, &[&format!("https://localhost:{port}/metrics")]);
    assert!(ok, "{err}");
    common::sample(&text, &format!("pushwire_{name}"))
}

fn ws_options(tls: TlsOptions) -> WsOptions {
    let one_mib = 1 << 20;
    WsOptions {
        read_timeout: Some(IO_TIMEOUT),
        limits: ws::Limits { max_frame_payload_bytes: one_mib, max_message_bytes: one_mib },
        tls,
        ..WsOptions::default()
    }
}

/// Receives until the text message `want`, within a few items.
fn recv_text(sub: &mut Subscriber, want: &str) {
    for _ in 0..5 {
        if let Item::Message { payload: Payload::Text(t), .. } = sub.recv().unwrap() {
            if t == want {
                return;
            }
        }
    }
    panic!("{want:?} not received within 5 items");
}

#[test]
fn rfc2818_https_publish_wss_and_sse_subscribe_and_wss_echo() {
    let pki = TestPki::new("e2e", &["localhost"]);
    let (_server, tls) = start(&pki, &[]);
    let url = format!("https://localhost:{}/channels/secure", tls.port());
    let mut publisher =
        Publisher::connect(&url, PublishOptions { tls: pki.tls(), ..PublishOptions::default() }).unwrap();
    let start = publisher.publish(&Payload::Text("m0".into()), None).unwrap();
    for transport in [Transport::WebSocket, Transport::Sse, Transport::LongPoll] {
        let options =
            SubscribeOptions { transport, since: Some(start), tls: pki.tls(), ..SubscribeOptions::default() };
        let mut sub = Subscriber::connect(&url, options).unwrap();
        let text = format!("over {transport:?}");
        publisher.publish(&Payload::Text(text.clone()), None).unwrap();
        recv_text(&mut sub, &text);
    }
    publisher.close().unwrap();
    let mut echo =
        WsClient::connect(&format!("wss://localhost:{}/echo", tls.port()), &ws_options(pki.tls())).unwrap();
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i * 13 % 251) as u8).collect();
    for msg in [Message::Text("héllo ✓".into()), Message::Binary(big)] {
        echo.send(&msg).unwrap();
        assert_eq!(echo.recv().unwrap(), Event::Message(msg));
    }
    // Untrusted by default (Mozilla's roots only): the client's TLS error, not a hang.
    match WsClient::connect(
        &format!("wss://localhost:{}/echo", tls.port()),
        &ws_options(TlsOptions::default()),
    ) {
        Err(Error::Tls(text)) => assert!(text.contains("UnknownIssuer"), "{text}"),
        other => panic!("expected Error::Tls, got {other:?}"),
    }
}

#[test]
fn rfc8446_rfc5246_and_rfc7301_curl_over_tls13_and_tls12_gets_http11_and_resumes() {
    let pki = TestPki::new("curl", &["localhost"]);
    let (_server, tls) = start(&pki, &[]);
    let port = tls.port();
    let url = format!("https://localhost:{port}/channels/c");
    // curl offers h2 and http/1.1 by ALPN: the server picks http/1.1.
    let (ok, out, err) = curl(&pki, port, &["-w", "\n%{http_version} %{http_code}", "-d", "hi", &url]);
    assert!(ok, "{err}");
    assert!(out.ends_with("\n1.1 201"), "{out}");
    let (ok, out, err) = curl(&pki, port, &["--tlsv1.2", "--tls-max", "1.2", "-w", "\n%{http_code}", &url]);
    assert!(ok, "{err}");
    assert!(out.contains("\"next\":") && out.ends_with("\n200"), "{out}");
    // Two requests in one curl run, each on its own connection (`Connection: close`; `--next`
    // resets every option, so they are given twice): the second resumes the first's session,
    // by ticket (TLS 1.3, RFC 8446 §2.2) or session id or ticket (TLS 1.2, RFC 5077).
    let resolve = format!("localhost:{port}:127.0.0.1");
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();
    for version in [&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"][..]] {
        let before = metric(&pki, port, "tls_handshakes_resumed_total");
        let mut args: Vec<&str> = Vec::new();
        for i in 0..2 {
            if i > 0 {
                args.extend(["--next", "-sS", "--cacert", ca, "--resolve", &resolve]);
            }
            args.extend(version);
            args.extend(["-H", "Connection: close", &url]);
        }
        let (ok, _, err) = curl(&pki, port, &args);
        assert!(ok, "{err}");
        assert_eq!(metric(&pki, port, "tls_handshakes_resumed_total"), before + 1, "{version:?}");
    }
}

#[test]
fn plain_and_tls_listeners_serve_one_hub_at_once() {
    let pki = TestPki::new("both", &["localhost"]);
    let (server, tls) = start(&pki, &["--tls-listen", "127.0.0.1:0"]);
    assert_ne!(server.addr, tls);
    let options = SubscribeOptions { tls: pki.tls(), ..SubscribeOptions::default() };
    let mut sub =
        Subscriber::connect(&format!("wss://localhost:{}/channels/both", tls.port()), options).unwrap();
    let id = common::publish(&server, "both", "from plain HTTP");
    assert!(id.contains(':'), "{id}");
    recv_text(&mut sub, "from plain HTTP");
    // Each port speaks only its own protocol.
    let (ok, out, _) =
        curl(&pki, tls.port(), &["-w", "%{http_code}", &format!("http://localhost:{}/", tls.port())]);
    assert!(ok && out.ends_with("400"), "{out}");
    let (ok, _, _) = curl(&pki, server.addr.port(), &[&format!("https://localhost:{}/", server.addr.port())]);
    assert!(!ok, "TLS to the plain port must fail");
}

#[test]
fn plain_http_to_the_tls_port_gets_a_plain_400_saying_so() {
    let pki = TestPki::new("plain400", &["localhost"]);
    let (_server, tls) = start(&pki, &[]);
    let mut stream = TcpStream::connect(tls).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(b"GET /channels/x HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("This port speaks TLS: use https:// (or wss://).\n"), "{answer}");
    assert_eq!(metric(&pki, tls.port(), "tls_plain_http_refused_total"), 1);
}

#[test]
fn sighup_reloads_the_certificate_under_live_connections_and_a_bad_pair_keeps_the_old() {
    let one = TestPki::new("reload-one", &["localhost"]);
    let two = TestPki::new("reload-two", &["localhost"]);
    let (server, tls) = start(&one, &[]);
    let port = tls.port();
    let url = format!("wss://localhost:{port}/channels/live");
    let options = |pki: &TestPki| SubscribeOptions { tls: pki.tls(), ..SubscribeOptions::default() };
    let publish_with = |pki: &TestPki, text: &str| {
        let options = PublishOptions { tls: pki.tls(), ..PublishOptions::default() };
        let mut publisher = Publisher::connect(&url.replace("wss://", "https://"), options)?;
        publisher.publish(&Payload::Text(text.into()), None)?;
        publisher.close()
    };
    let mut old = Subscriber::connect(&url, options(&one)).unwrap();
    let hup = || {
        let status = Command::new("kill").args(["-HUP", &server.pid().to_string()]).status().unwrap();
        assert!(status.success());
    };
    // Before: only CA one is trusted by the server's certificate.
    assert!(matches!(publish_with(&two, "x"), Err(Error::Tls(_))));
    // Renew in place (the files the server was started with), then SIGHUP.
    std::fs::copy(two.cert(), one.cert()).unwrap();
    std::fs::copy(two.key(), one.key()).unwrap();
    hup();
    let deadline = Instant::now() + IO_TIMEOUT;
    while metric(&two, port, "tls_reloads_total") == 0 {
        assert!(Instant::now() < deadline, "the reload was not counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    // New connections get the new certificate; the old CA no longer verifies it.
    publish_with(&two, "after the reload").unwrap();
    assert!(matches!(publish_with(&one, "x"), Err(Error::Tls(_))));
    // The connection opened before keeps its session and gets the message.
    recv_text(&mut old, "after the reload");
    // A broken key: the reload fails, is counted, and the current pair stays.
    std::fs::write(one.key(), "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n")
        .unwrap();
    hup();
    while metric(&two, port, "tls_reload_failures_total") == 0 {
        assert!(Instant::now() < deadline, "the failed reload was not counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    publish_with(&two, "still the new pair").unwrap();
    recv_text(&mut old, "still the new pair");
    assert_eq!(metric(&two, port, "tls_reloads_total"), 1);
}

#[test]
fn bad_certificate_or_key_at_start_is_one_clear_line_and_exit_2() {
    let pki = TestPki::new("badstart", &["localhost"]);
    let other = TestPki::new("badstart-other", &["localhost"]);
    let missing = pki.dir.join("missing.pem");
    let run = |cert: &std::path::Path, key: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_pushwire"))
            .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    for (cert, key, why) in [
        (&missing, &pki.key(), "cannot read"),
        (&pki.key(), &pki.key(), "no CERTIFICATE"),
        (&pki.cert(), &pki.cert(), "no private key"),
        (&pki.cert(), &other.key(), "private key was refused"),
    ] {
        let out = run(cert, key);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.starts_with("pushwire: TLS: ") && stderr.contains(why), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(out.stdout.is_empty(), "it must not say it is listening");
    }
    // --tls-listen or a lone --tls-key without a certificate: a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
}

/// The first half of a real ClientHello (from a rustls client), so the server waits for more.
fn partial_client_hello() -> Vec<u8> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello.truncate(hello.len() / 2);
    hello
}

#[test]
fn a_stalled_handshake_is_closed_at_the_handshake_timeout() {
    let pki = TestPki::new("hstimeout", &["localhost"]);
    let (_server, tls) = start(&pki, &["--tls-handshake-timeout", "0.3"]);
    for first in [Vec::new(), partial_client_hello()] {
        let mut stream = TcpStream::connect(tls).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.write_all(&first).unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "closed after {took:?}");
    }
    assert_eq!(metric(&pki, tls.port(), "tls_handshake_timeouts_total"), 2);
}

/// Echoes `count` messages 10 ms apart; returns the slowest round trip.
fn echo_worst(echo: &mut WsClient, count: usize) -> Duration {
    let mut worst = Duration::ZERO;
    for i in 0..count {
        let started = Instant::now();
        let msg = Message::Text(format!("ping {i}"));
        echo.send(&msg).unwrap();
        assert_eq!(echo.recv().unwrap(), Event::Message(msg));
        worst = worst.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    worst
}

#[test]
fn a_handshake_flood_does_not_starve_an_established_client() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let pki = TestPki::new("flood", &["localhost"]);
    let (server, tls) =
        start(&pki, &["--tls-listen", "127.0.0.1:0", "--threads", "1", "--max-tls-handshakes", "16"]);
    let port = tls.port();
    let mut echo =
        WsClient::connect(&format!("wss://localhost:{port}/echo"), &ws_options(pki.tls())).unwrap();
    // Stalled handshakes: 200 connections that send half a ClientHello and wait. 16 are kept
    // (until the handshake timeout); the rest are closed at once.
    let hello = partial_client_hello();
    let stalled: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(tls).unwrap();
            s.write_all(&hello).unwrap();
            s
        })
        .collect();
    let worst = echo_worst(&mut echo, 50);
    assert!(worst < Duration::from_secs(1), "an echo took {worst:?} during the stalled flood");
    assert_eq!(common::metric(&server, "tls_handshakes_in_progress"), 16);
    assert_eq!(common::metric(&server, "tls_handshakes_refused_total"), 200 - 16);
    drop(stalled);
    let deadline = Instant::now() + IO_TIMEOUT;
    while common::metric(&server, "tls_handshakes_in_progress") > 0 {
        assert!(Instant::now() < deadline, "stalled handshakes were not released on close");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Completing handshakes: three threads doing full TLS and WebSocket handshakes back to back.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            let options = ws_options(pki.tls());
            std::thread::spawn(move || {
                let mut done = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    if WsClient::connect(&format!("wss://localhost:{port}/echo"), &options).is_ok() {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let worst = echo_worst(&mut echo, 100);
    stop.store(true, Ordering::Relaxed);
    let completed: u32 = flooders.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(worst < Duration::from_secs(1), "an echo took {worst:?} during the handshake flood");
    assert!(completed > 10, "only {completed} flooding handshakes completed");
    assert!(common::metric(&server, "tls_handshakes_total") > u64::from(completed));
}

#[test]
fn rfc6455_4_1_bench_echo_over_wss_echoes_every_message_and_checks_the_certificate() {
    // `pushwire bench echo` with a wss:// URL: the TLS handshake before the opening handshake
    // (RFC 6455 §4.1), every message echoed through TLS records, in both message sizes the
    // comparison uses; without the test CA the certificate is refused.
    let pki = TestPki::new("bench", &["localhost"]);
    let (_server, tls) = start(&pki, &[]);
    let url = format!("wss://localhost:{}/echo", tls.port());
    let ca = pki.ca().display().to_string();
    let bench = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pushwire"));
        command
            .args(["bench", "echo", "--url", &url, "-c", "3", "-w", "4", "--duration", "1", "--json"])
            .args(args);
        let output = common::output_within(&mut command, Duration::from_secs(60));
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    for size in ["32", "16384"] {
        let (ok, json, err) = bench(&["--cacert", &ca, "-s", size]);
        assert!(ok, "{json} {err}");
        assert!(json.contains("\"protocol\":\"wss\""), "{json}");
        assert!(json.contains("\"ok\":true") && json.contains("\"lost\":0,"), "{json}");
        assert!(!json.contains("\"messages\":0,"), "{json}");
    }
    let (ok, json, err) = bench(&["-s", "32"]);
    assert!(!ok && err.contains("certificate"), "{json} {err}");
}
