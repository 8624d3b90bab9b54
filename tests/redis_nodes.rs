//! Several `pushwire serve --redis` nodes on loopback sharing one real `redis-server`: a
//! publish on one node reaches subscribers on the others over all five transports with the
//! same cursor, a client resumes on another node with its last cursor, publishes answer 503
//! while Redis is down and get a new epoch after it restarts, and a cursor of an
//! epoch Redis never had is a gap.

mod common;
mod redis_support;

use common::*;
use redis_support::RedisServer;

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{}", server.addr, path)
}

fn node(redis: &RedisServer) -> Server {
    Server::start(&["--redis", &format!("redis://127.0.0.1:{}", redis.port), "--threads", "2"])
}

/// The tail cursor of a channel (creating it), via a short poll.
fn tail(server: &Server, channel: &str) -> String {
    json_field(&poll(server, channel, None).text(), "next").unwrap()
}

#[test]
fn redis_nodes_publish_on_one_reaches_every_transport_on_the_others_with_the_same_cursor() {
    let redis = RedisServer::start();
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    // Every subscriber starts from the same cursor, read on yet another node.
    let since = tail(&c, "x");
    let query = format!("since={}", since.replace(':', "%3A"));
    let sse = Lines::spawn(
        "curl",
        &[
            "-sN",
            "--max-time",
            "20",
            "-H",
            "Accept: text/event-stream",
            &url(&b, &format!("/channels/x?{query}")),
        ],
    );
    let stream = Lines::spawn(
        "curl",
        &[
            "-sN",
            "--max-time",
            "20",
            "-H",
            "Accept: application/x-ndjson",
            &url(&c, &format!("/channels/x?{query}")),
        ],
    );
    let long_poll =
        Lines::spawn("curl", &["-s", "--max-time", "20", &url(&b, &format!("/channels/x?wait=10&{query}"))]);
    let (mut ws, head) = RawWs::connect(&c, &format!("/channels/x?{query}"), &[]);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");

    let id = publish(&a, "x", "hello");
    assert_eq!(id.split(':').next(), since.split(':').next(), "one epoch on every node");
    // (The stream opens with the starting cursor as an id.)
    let opened = format!("id: {since}");
    assert_eq!(sse.until(|l| l.starts_with("id:") && l != opened), format!("id: {id}"));
    assert_eq!(sse.next().as_deref(), Some("data: hello"));
    let line = stream.until(|l| l.contains("hello"));
    assert_eq!(json_field(&line, "id").as_deref(), Some(id.as_str()), "{line}");
    assert_eq!(ws.recv_text(), "hello");
    let answer = long_poll.next().unwrap();
    assert_eq!(data_values(&answer), vec!["hello"]);
    assert!(answer.contains(&id), "{answer}");
    let short = poll(&c, "x", Some(&since)).text();
    assert_eq!(data_values(&short), vec!["hello"]);
    assert_eq!(json_field(&short, "next").as_deref(), Some(id.as_str()));
}

#[test]
fn redis_nodes_resume_on_another_node_with_the_last_cursor() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    let ids: Vec<String> = (1..=5).map(|i| publish(&a, "r", &format!("m{i}"))).collect();
    // A client saw m1 and m2 on node A, lost its connection, and resumes on node B.
    let res = poll(&b, "r", Some(&ids[1]));
    assert_eq!(data_values(&res.text()), vec!["m3", "m4", "m5"]);
    assert_eq!(json_field(&res.text(), "next").as_deref(), Some(ids[4].as_str()));
    // Resumed over SSE on node B with Last-Event-ID: exactly the missed ones, then live.
    let sse = Lines::spawn(
        "curl",
        &[
            "-sN",
            "--max-time",
            "20",
            "-H",
            "Accept: text/event-stream",
            "-H",
            &format!("Last-Event-ID: {}", ids[2]),
            &url(&b, "/channels/r"),
        ],
    );
    assert_eq!(sse.until(|l| l.starts_with("data:")), "data: m4");
    assert_eq!(sse.until(|l| l.starts_with("data:")), "data: m5");
    let six = publish(&a, "r", "m6");
    assert_eq!(sse.until(|l| l.starts_with("id:") && l.ends_with(":6")), format!("id: {six}"));
    // A cursor of an epoch this Redis never handed out is a gap.
    let res = poll(&b, "r", Some("0123456789abcdef:3"));
    assert!(res.text().contains("\"gap\":true"), "{}", res.text());
}

#[test]
fn redis_nodes_unreachable_redis_is_a_clear_error_at_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", &format!("redis://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", "http://x"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[test]
fn redis_nodes_redis_down_answers_503_and_a_restart_is_a_new_epoch() {
    let mut redis = RedisServer::start();
    let a = node(&redis);
    let before = publish(&a, "down", "m1");
    redis.kill9();
    // Once the node notices (at once, or at its next command), publishes answer 503.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let res = exchange(&a, publish_request("down", "lost").as_bytes());
        if res.status == 503 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {} with redis down", res.status);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    redis.restart();
    let after = loop {
        let res = exchange(&a, publish_request("down", "back").as_bytes());
        if res.status == 201 {
            break json_field(&res.text(), "id").unwrap();
        }
        assert!(std::time::Instant::now() < deadline + std::time::Duration::from_secs(10), "not back");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_ne!(after.split(':').next(), before.split(':').next(), "a new epoch after the restart");
    let res = poll(&a, "down", Some(&before));
    assert!(res.text().contains("\"gap\":true"), "{}", res.text());
}
