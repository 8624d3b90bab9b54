//! `/readyz` (readiness) against `/healthz` (liveness) over loopback: 200 when the server can
//! take clients; 503 on a connection still open while the server drains after SIGTERM, and
//! while a real `redis-server` behind `--redis` is down, 200 again once it is back; `/healthz`
//! answers 200 throughout.

mod common;
mod redis_support;

use std::io::{BufReader, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use redis_support::RedisServer;

const READYZ: &[u8] = b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// Asks `/readyz` until it answers `status`, for at most a generous bound.
fn wait_ready_status(server: &Server, status: u16) -> Response {
    common::readyz_until(server, status, Duration::from_secs(30))
}

#[test]
fn readyz_is_200_in_memory_and_healthz_stays_liveness() {
    let server = Server::start(&["--threads", "1"]);
    let ready = exchange(&server, READYZ);
    assert_eq!((ready.status, ready.text().as_str()), (200, "ready\n"));
    assert_eq!(ready.header("Cache-Control"), Some("no-store"));
    assert_eq!(exchange(&server, HEALTHZ).status, 200);
    let post = exchange(&server, b"POST /readyz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.status, 405);
}

#[test]
fn readyz_is_503_on_open_connections_while_draining() {
    let mut server = Server::start(&["--threads", "1", "--drain-seconds", "30"]);
    // Keep-alive connections open before the drain (new ones are no longer accepted then).
    let mut open: Vec<BufReader<std::net::TcpStream>> = (0..3)
        .map(|_| {
            let mut stream = server.connect();
            stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let mut reader = BufReader::new(stream);
            assert_eq!(read_response(&mut reader, false).status, 200);
            reader
        })
        .collect();
    let killed = Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
    assert!(killed.success());
    // The drain spreads the connections' ends over 30 s: most are still open for a while.
    // Asking until the drain is seen: each answer is 200 before it and 503 after it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refused = 0;
    while refused == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        for reader in open.iter_mut() {
            if reader.get_mut().write_all(b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n").is_err() {
                continue;
            }
            // A connection the drain already closed reads EOF (no response): skip it.
            if std::io::BufRead::fill_buf(reader).map(|b| b.is_empty()).unwrap_or(true) {
                continue;
            }
            let answer = read_response(reader, false);
            if answer.status == 503 {
                assert_eq!(answer.text(), "not ready: draining\n");
                refused += 1;
            } else {
                assert_eq!(answer.status, 200);
            }
        }
    }
    assert!(refused > 0, "no open connection answered 503 while draining");
    drop(open);
    assert!(server.wait_exit(Duration::from_secs(60)).is_some(), "the server did not exit after draining");
}

#[test]
fn readyz_is_503_while_redis_is_down_and_200_once_it_is_back() {
    let mut redis = RedisServer::start();
    let node = Server::start(&["--redis", &format!("redis://127.0.0.1:{}", redis.port), "--threads", "1"]);
    wait_ready_status(&node, 200);
    redis.kill9();
    let answer = wait_ready_status(&node, 503);
    assert!(answer.text().starts_with("not ready: "), "{}", answer.text());
    assert_eq!(exchange(&node, HEALTHZ).status, 200, "liveness does not depend on Redis");
    redis.restart();
    assert_eq!(wait_ready_status(&node, 200).text(), "ready\n");
}
