//! `pushwire bench` against a real pushwire on a free loopback port: short runs with small
//! counts, checking the JSON report (every message echoed or delivered, none missing).

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::Server;

/// Runs `pushwire bench ARGS --json`, killing it if it outlives `limit`.
fn bench(args: &[&str], limit: Duration) -> (Output, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start pushwire bench");
    let began = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if began.elapsed() > limit {
            let _ = child.kill();
            panic!("pushwire bench {args:?} took longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (output, stdout)
}

/// The number after `"name":` in a flat JSON object.
fn number(json: &str, name: &str) -> f64 {
    let key = format!("\"{name}\":");
    let start = json.find(&key).unwrap_or_else(|| panic!("no {name} in {json}")) + key.len();
    let end = json[start..].find([',', '}']).unwrap() + start;
    json[start..end].parse().unwrap_or_else(|_| panic!("{name} is not a number in {json}"))
}

#[test]
fn bench_echo_reports_every_message_echoed() {
    let server = Server::start(&[]);
    let url = format!("ws://{}/echo", server.addr);
    let (output, json) = bench(
        &["echo", "--url", &url, "-c", "2", "-s", "64", "-w", "4", "--duration", "1"],
        Duration::from_secs(30),
    );
    assert!(output.status.success(), "{json} {}", String::from_utf8_lossy(&output.stderr));
    assert!(json.starts_with("{\"mode\":\"echo\"") && json.ends_with('}'), "{json}");
    assert!(json.contains("\"ok\":true"), "{json}");
    assert!(number(&json, "messages") > 0.0, "{json}");
    assert!(number(&json, "messages_per_s") > 0.0, "{json}");
    assert_eq!(number(&json, "lost"), 0.0, "{json}");
    assert_eq!(number(&json, "changed"), 0.0, "{json}");
    assert!(number(&json, "latency_p50_us") <= number(&json, "latency_p99_us"), "{json}");
    assert!(number(&json, "latency_p99_us") <= number(&json, "latency_max_us"), "{json}");
}

#[test]
fn bench_fanout_sse_delivers_every_message_to_every_subscriber() {
    let server = Server::start(&[]);
    let url = format!("http://{}/channels/smoke", server.addr);
    let args = [
        "fanout",
        "--url",
        &url,
        "--transport",
        "sse",
        "-c",
        "3",
        "-k",
        "50",
        "--size",
        "64",
        "--rate",
        "100",
    ];
    let (output, json) = bench(&args, Duration::from_secs(30));
    assert!(output.status.success(), "{json} {}", String::from_utf8_lossy(&output.stderr));
    assert!(json.starts_with("{\"mode\":\"fanout\""), "{json}");
    assert_eq!(number(&json, "messages"), 50.0, "{json}");
    assert_eq!(number(&json, "deliveries"), 150.0, "{json}");
    assert_eq!(number(&json, "missing"), 0.0, "{json}");
    assert_eq!(number(&json, "duplicates"), 0.0, "{json}");
    assert!(json.contains("\"ok\":true"), "{json}");
}

#[test]
fn bench_fanout_with_three_channels_per_subscriber_delivers_every_message_once() {
    let server = Server::start(&[]);
    let url = format!("http://{}/channels/rooms", server.addr);
    for transport in ["sse", "longpoll"] {
        // Each subscriber on rooms, rooms.1 and rooms.2 on one connection; the 30 messages go
        // to the three channels in turn.
        let args = [
            "fanout",
            "--url",
            &url,
            "--transport",
            transport,
            "-c",
            "3",
            "-k",
            "30",
            "--channels-per-subscriber",
            "3",
        ];
        let (output, json) = bench(&args, Duration::from_secs(60));
        assert!(output.status.success(), "{json} {}", String::from_utf8_lossy(&output.stderr));
        assert!(
            json.contains("\"subscribe_url\":\"http://")
                && json.contains("/channels/rooms,rooms.1,rooms.2\""),
            "{json}"
        );
        assert_eq!(number(&json, "channels_per_subscriber"), 3.0, "{json}");
        assert_eq!(number(&json, "deliveries"), 90.0, "{transport}: {json}");
        assert_eq!(number(&json, "missing"), 0.0, "{json}");
        assert_eq!(number(&json, "duplicates"), 0.0, "{json}");
    }
    // A stream or a WebSocket opens each channel with its own line: refused, clearly.
    let (output, _) = bench(
        &["fanout", "--url", &url, "--transport", "ws", "--channels-per-subscriber", "2"],
        Duration::from_secs(30),
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("needs --transport sse or longpoll"));
}

#[test]
fn bench_fanout_on_several_threads_counts_every_delivery_once() {
    let server = Server::start(&[]);
    let url = format!("http://{}/channels/threads", server.addr);
    // 7 WebSocket subscribers over 3 client threads (3, 2 and 2): every delivery counted, once.
    let args = ["fanout", "--url", &url, "--transport", "ws", "-c", "7", "-k", "40", "--threads", "3"];
    let (output, json) = bench(&args, Duration::from_secs(60));
    assert!(output.status.success(), "{json} {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(number(&json, "threads"), 3.0, "{json}");
    assert_eq!(number(&json, "deliveries"), 280.0, "{json}");
    assert_eq!(number(&json, "missing"), 0.0, "{json}");
    assert_eq!(number(&json, "duplicates"), 0.0, "{json}");
    assert!(number(&json, "latency_p50_us") <= number(&json, "latency_p99_us"), "{json}");
    assert!(number(&json, "latency_p99_us") <= number(&json, "latency_max_us"), "{json}");
}

#[test]
fn bench_fanout_fails_when_messages_go_missing() {
    let server = Server::start(&[]);
    // Subscribers on one channel, the publisher on another: nothing arrives.
    let subscribe = format!("http://{}/channels/quiet", server.addr);
    let publish = format!("http://{}/channels/elsewhere", server.addr);
    let args = [
        "fanout",
        "--subscribe-url",
        &subscribe,
        "--publish-url",
        &publish,
        "--transport",
        "ws",
        "-c",
        "2",
        "-k",
        "3",
        "--timeout",
        "0.3",
    ];
    let (output, json) = bench(&args, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(1), "{json}");
    assert_eq!(number(&json, "missing"), 6.0, "{json}");
    assert!(json.contains("\"ok\":false"), "{json}");
}

/// A plain TCP echo on a free loopback port, one thread per connection, for `--protocol raw`;
/// it stops echoing a connection at its EOF (every read times out after 10 s).
fn tcp_echo() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn bench_echo_raw_reports_every_length_prefixed_message_echoed() {
    let url = format!("tcp://{}", tcp_echo());
    let (output, json) = bench(
        &[
            "echo",
            "--protocol",
            "raw",
            "--url",
            &url,
            "-c",
            "2",
            "-s",
            "5000",
            "-w",
            "3",
            "--duration",
            "0.5",
        ],
        Duration::from_secs(30),
    );
    assert!(output.status.success(), "{json} {}", String::from_utf8_lossy(&output.stderr));
    assert!(json.contains("\"protocol\":\"raw\""), "{json}");
    assert!(json.contains("\"ok\":true"), "{json}");
    assert!(number(&json, "messages") > 0.0, "{json}");
    assert_eq!(number(&json, "lost"), 0.0, "{json}");
    assert_eq!(number(&json, "changed"), 0.0, "{json}");
}
