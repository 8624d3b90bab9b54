//! Several `pushwire serve --redis` nodes on loopback sharing one real `redis-server`: a
//! publish on one node reaches subscribers on the others over all five transports with the
//! same cursor, a client resumes on another node with its last cursor, publishes answer 503
//! while Redis is down and get a new epoch after it restarts, and a cursor of an
//! epoch Redis never had is a gap. Presence is cluster-wide: members on one node are listed
//! on the others, join and leave reach watchers on every node, and a killed node's members
//! expire.

mod common;
mod redis_support;

use std::time::{Duration, Instant};

use common::v1::V1;
use common::*;
use redis_support::RedisServer;
use serde_json::{json, Value};

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

fn node_with(redis: &RedisServer, flags: &[&str]) -> Server {
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let mut all = vec!["--redis", url.as_str(), "--threads", "2"];
    all.extend_from_slice(flags);
    Server::start(&all)
}

/// Member ids of a presence answer, sorted.
fn member_ids(presence: &Value) -> Vec<String> {
    let mut ids: Vec<String> = presence["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {presence}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// `GET /channels/NAME/presence` on `server`: status and body.
fn http_presence(server: &Server, channel: &str) -> (u16, Value) {
    let raw = format!("GET /channels/{channel}/presence HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = exchange(server, raw.as_bytes());
    (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

#[test]
fn redis_nodes_presence_is_cluster_wide_with_join_leave_and_expiry_of_a_killed_node() {
    let redis = RedisServer::start();
    // A short member ttl, so the killed node's member expires within the test.
    let flags = ["--presence-ttl", "3"];
    let (a, b) = (node_with(&redis, &flags), node_with(&redis, &flags));
    let mut doomed = node_with(&redis, &flags);

    let mut watcher = V1::connect(&b, None);
    let ok =
        watcher.ask(json!({"type":"subscribe","channel":"room","joins":true,"info":{"name":"w"},"req":1}));
    assert_eq!(ok["type"], "ok", "{ok}");

    // A member on node A: the watcher on node B hears the join, with its info.
    let mut on_a = V1::connect(&a, None);
    assert_eq!(
        on_a.ask(json!({"type":"subscribe","channel":"room","info":{"name":"a"},"req":1}))["type"],
        "ok"
    );
    let join = watcher.next();
    assert_eq!((join["type"].as_str(), join["channel"].as_str()), (Some("join"), Some("room")), "{join}");
    assert_eq!(join["member"]["info"], json!({"name":"a"}));
    let a_id = join["member"]["id"].as_str().unwrap().to_string();

    // Every node lists both members, with the same ids; presence_stats and HTTP agree.
    let from_b = watcher.ask(json!({"type":"presence","channel":"room","req":2}));
    assert_eq!(from_b["count"], 2, "{from_b}");
    assert!(member_ids(&from_b).contains(&a_id), "{from_b}");
    let from_a = on_a.ask(json!({"type":"presence","channel":"room","req":2}));
    assert_eq!(member_ids(&from_a), member_ids(&from_b), "one table for every node");
    let stats = on_a.ask(json!({"type":"presence_stats","channel":"room","req":3}));
    assert_eq!(stats["count"], 2, "{stats}");
    let (status, http) = http_presence(&a, "room");
    assert_eq!((status, member_ids(&http)), (200, member_ids(&from_b)), "{http}");

    // A member on the node about to die: joins, is listed everywhere.
    let mut on_doomed = V1::connect(&doomed, None);
    assert_eq!(on_doomed.ask(json!({"type":"subscribe","channel":"room","req":1}))["type"], "ok");
    let join = watcher.next();
    assert_eq!(join["type"], "join", "{join}");
    let doomed_id = join["member"]["id"].as_str().unwrap().to_string();
    assert_ne!(doomed_id[..16], a_id[..16], "ids carry their node");
    assert_eq!(http_presence(&a, "room").1["count"], 3);

    // The member on A closes: the watcher hears its leave, every node lists it no more.
    drop(on_a);
    let leave = watcher.next();
    assert_eq!(
        (leave["type"].as_str(), leave["member"]["id"].as_str()),
        (Some("leave"), Some(a_id.as_str()))
    );
    assert!(!member_ids(&http_presence(&b, "room").1).contains(&a_id));

    // The doomed node is killed (SIGKILL: no unsubscribe, no remove): its member stops being
    // refreshed and is gone within the ttl (3 s) plus a refresh round of a live node.
    let killed_at = Instant::now();
    doomed.kill9();
    let leave = watcher.next();
    assert_eq!(
        (leave["type"].as_str(), leave["member"]["id"].as_str()),
        (Some("leave"), Some(doomed_id.as_str()))
    );
    assert!(killed_at.elapsed() < Duration::from_secs(15), "expired after {:?}", killed_at.elapsed());
    let (status, left) = http_presence(&a, "room");
    assert_eq!((status, left["count"].as_u64()), (200, Some(1)), "{left}");
    drop(on_doomed);
}
