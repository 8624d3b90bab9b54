//! Several `pushwire serve --redis` nodes on loopback sharing one real `redis-server`: a
//! publish on any node reaches subscribers on all of them over all five transports, once and
//! in order, with the same cursor, a client resumes on another node with its last cursor (long polls answered
//! by alternating nodes, no stickiness), publishes answer 503
//! while Redis is down and get a new epoch after it restarts, and a cursor of an
//! epoch Redis never had is a gap. Presence is cluster-wide: members on one node are listed
//! on the others, join and leave reach watchers on every node, and a killed node's members
//! expire. A node killed mid-stream: its subscriber resumes exactly on another node; Redis
//! restarted from an older snapshot: a gap, never wrong data.

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
fn redis_nodes_publish_on_any_node_reaches_every_transport_once_in_order_with_the_same_cursor() {
    let redis = RedisServer::start();
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    // Every subscriber starts from the same cursor, read on yet another node.
    let since = tail(&c, "x");
    let query = format!("since={}", since.replace(':', "%3A"));
    let sse = Lines::curl_sse(&url(&b, &format!("/channels/x?{query}")));
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

    // Published on the other nodes too (B holds the SSE subscriber, C the stream and the
    // WebSocket): each message once, in offset order, with the id every node hands out.
    let two = publish(&b, "x", "two");
    let three = publish(&c, "x", "three");
    for (id, body) in [(&two, "two"), (&three, "three")] {
        assert_eq!(sse.until(|l| l.starts_with("id:")), format!("id: {id}"));
        assert_eq!(sse.next(), Some(format!("data: {body}")));
        let line = stream.until(|l| l.contains("\"data\""));
        assert_eq!(json_field(&line, "id").as_deref(), Some(id.as_str()), "{line}");
        assert_eq!(ws.recv_text(), body);
    }
    let short = poll(&a, "x", Some(&since)).text();
    assert_eq!(data_values(&short), vec!["hello", "two", "three"]);
    assert_eq!(json_field(&short, "next").as_deref(), Some(three.as_str()));
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
fn redis_nodes_long_poll_answered_by_alternating_nodes_gets_every_message_once_in_order() {
    // No stickiness: each long poll goes to the next of three nodes with the previous answer's
    // `next`, while a publisher posts to the nodes in turn.
    let redis = RedisServer::start();
    let nodes = [node(&redis), node(&redis), node(&redis)];
    let mut cursor = tail(&nodes[0], "lp");
    let sent: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    let mut got = Vec::new();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for (i, body) in sent.iter().enumerate() {
                publish(&nodes[i % 3], "lp", body);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut turn = 0;
        while got.len() < sent.len() && Instant::now() < deadline {
            let since = cursor.replace(':', "%3A");
            let request = format!("GET /channels/lp?wait=5&since={since} HTTP/1.1\r\nHost: t\r\n\r\n");
            let answer = exchange(&nodes[turn % 3], request.as_bytes()).text();
            assert!(answer.contains("\"gap\":false"), "node {}: {answer}", turn % 3);
            got.extend(data_values(&answer));
            cursor = json_field(&answer, "next").expect("next in a long poll answer");
            turn += 1;
        }
        assert!(turn >= 3, "answered by every node at least once ({turn} polls)");
    });
    assert_eq!(got, sent, "every message once, in order, whichever node answered");
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

    // The member on A closes: the watcher hears its leave, with its info as without Redis,
    // and every node lists it no more.
    drop(on_a);
    let leave = watcher.next();
    assert_eq!(
        (leave["type"].as_str(), leave["member"]["id"].as_str()),
        (Some("leave"), Some(a_id.as_str()))
    );
    assert_eq!(leave["member"]["info"], json!({"name":"a"}), "{leave}");
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

/// `except_self` over Redis: the sender's own message comes back to its node twice over (the
/// script's reply on the command connection, the message on pub/sub), in either order; it
/// must never reach the sender, while every other node's message does, once, in order.
#[test]
fn redis_nodes_except_self_never_reaches_the_sender_whatever_arrives_first() {
    const OWN: usize = 300;
    const OTHERS: usize = 60;
    let redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    let mut sender = V1::connect(&a, None);
    assert_eq!(sender.ask(json!({"type":"subscribe","channel":"es","req":"s"}))["type"], "ok");
    let mut observer = V1::connect(&b, None);
    assert_eq!(observer.ask(json!({"type":"subscribe","channel":"es","req":"s"}))["type"], "ok");

    // Another node publishes meanwhile, so the sender's own messages and others interleave.
    let b_addr = b.addr;
    let others = std::thread::spawn(move || {
        for i in 0..OTHERS {
            let raw = publish_request("es", &format!("other-{i}"));
            let mut stream = std::net::TcpStream::connect(b_addr).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            std::io::Write::write_all(&mut stream, raw.as_bytes()).unwrap();
            let res = read_response(&mut std::io::BufReader::new(stream), false);
            assert_eq!(res.status, 201, "{}", res.text());
        }
    });
    // Pipelined: up to 32 publishes in flight at once (a connection may have 64 commands
    // awaiting answers).
    let own = |i: usize| json!({"type":"publish","channel":"es","data":format!("self-{i}"),"except_self":true,"req":i});
    for i in 0..32 {
        sender.send(&own(i));
    }
    let mut sent = 32;
    let (mut oks, mut got) = (0, Vec::new());
    let mut others = Some(others);
    loop {
        let frame = sender.next();
        match frame["type"].as_str() {
            Some("ok") => {
                oks += 1;
                if sent < OWN {
                    sender.send(&own(sent));
                    sent += 1;
                }
            }
            Some("error") => panic!("{frame}"),
            _ => {
                let data = frame["data"].as_str().unwrap_or_else(|| panic!("{frame}")).to_string();
                if data == "end" {
                    break;
                }
                got.push(data);
            }
        }
        if oks == OWN {
            if let Some(others) = others.take() {
                // Every publish is answered: a last message from the other node ends the run.
                others.join().unwrap();
                publish(&b, "es", "end");
            }
        }
    }
    let own: Vec<&String> = got.iter().filter(|d| d.starts_with("self-")).collect();
    assert!(own.is_empty(), "the sender got its own except_self messages: {own:?}");
    let expected: Vec<String> = (0..OTHERS).map(|i| format!("other-{i}")).collect();
    assert_eq!(got, expected, "every other message once, in order");
    // The other node's subscriber got everything once.
    let mut seen = 0;
    while observer.message()["data"] != "end" {
        seen += 1;
    }
    assert_eq!(seen, OWN + OTHERS);
}

#[test]
fn redis_nodes_metrics_show_the_connections_publish_latency_reconnects_repairs_and_epoch_changes() {
    let redis = RedisServer::start();
    let a = node(&redis);
    // The node starts serving once its command connection is ready; the pub/sub connection
    // may still be finishing its handshake (a loaded machine).
    let text = metrics_until(&a, "both connections up", Duration::from_secs(20), |t| {
        sample(t, "pushwire_redis_up{connection=\"pubsub\"}") == 1
    });
    assert_eq!(sample(&text, "pushwire_redis_up{connection=\"command\"}"), 1);
    assert_eq!(sample(&text, "pushwire_redis_reconnects_total"), 0);
    assert!(!metrics_text(&Server::start(&[])).contains("pushwire_redis_"), "only with --redis");

    // A live channel on the pub/sub connection, and publishes timed.
    let mut sub = V1::connect(&a, None);
    assert_eq!(sub.ask(json!({"type":"subscribe","channel":"m","req":1}))["type"], "ok");
    for i in 0..3 {
        publish(&a, "m", &format!("m{i}"));
        assert_eq!(sub.message()["data"], format!("m{i}"));
    }
    let text = metrics_text(&a);
    assert_eq!(sample(&text, "pushwire_redis_published_total"), 3);
    assert_eq!(sample(&text, "pushwire_redis_publish_seconds_count"), 3);
    assert_eq!(sample(&text, "pushwire_redis_publish_seconds_bucket{le=\"+Inf\"}"), 3);
    assert_eq!(sample(&text, "pushwire_redis_pubsub_channels"), 1);
    assert_eq!(sample(&text, "pushwire_redis_commands_in_flight"), 0, "all answered");

    // The pub/sub connection is killed: a reconnect, then the channel is caught up by a read.
    let mut admin = redis.client();
    let killed =
        admin.call(&pushwire::redis::resp::Command::new("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"));
    assert_eq!(killed, pushwire::redis::resp::Value::Integer(1));
    let text = metrics_until(&a, "a reconnect and a repair read", Duration::from_secs(20), |t| {
        sample(t, "pushwire_redis_reconnects_total") >= 1
            && sample(t, "pushwire_redis_repair_reads_total") >= 1
    });
    assert!(sample(&text, "pushwire_redis_disconnects_total") >= 1);

    // The channel's keys vanish (as after an expiry or a restart without persistence): the
    // next publish starts a new epoch, a gap for the subscriber and an epoch change counted.
    let channel = pushwire::hub::ChannelName::parse("m").unwrap();
    let keys = pushwire::redis::keys::ChannelKeys::new(&Default::default(), &channel);
    admin.call(&pushwire::redis::resp::Command::new("DEL").arg(&keys.meta).arg(&keys.history));
    publish(&a, "m", "after");
    let mut frame = sub.next();
    while frame["data"] != "after" {
        frame = sub.next();
    }
    metrics_until(&a, "an epoch change", Duration::from_secs(20), |t| {
        sample(t, "pushwire_redis_epoch_changes_total") == 1
    });
}

/// Node death: a subscriber's node is killed (SIGKILL) mid-stream while another node
/// publishes; the client resumes on a third node with its last `Last-Event-ID` and gets
/// every message exactly once, in order, without a gap.
#[test]
fn redis_nodes_a_killed_nodes_subscriber_resumes_exactly_on_another_node() {
    const MESSAGES: usize = 400;
    let redis = RedisServer::start();
    let (mut doomed, publisher, survivor) = (node(&redis), node(&redis), node(&redis));
    let since = tail(&publisher, "death");
    let mut client =
        SseClient::connect(&doomed, &format!("/channels/death?since={}", since.replace(':', "%3A")), "");
    let publisher_addr = publisher.addr;
    let publishing = std::thread::spawn(move || {
        for i in 0..MESSAGES {
            let raw = publish_request("death", &format!("d{i}"));
            let mut stream = std::net::TcpStream::connect(publisher_addr).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            std::io::Write::write_all(&mut stream, raw.as_bytes()).unwrap();
            let res = read_response(&mut std::io::BufReader::new(stream), false);
            assert_eq!(res.status, 201, "{}", res.text());
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let mut got: Vec<(String, String)> = Vec::new();
    while got.len() < MESSAGES / 4 {
        let event = client.next_event(Duration::from_secs(20)).expect("an event before the kill");
        assert_eq!(event.event, None, "no gap: {event:?}");
        got.push((event.id.unwrap(), event.data));
    }
    doomed.kill9();
    // Whatever was read up to the end of the stream counts; a torn last event does not.
    while let Some(event) = client.next_event(Duration::from_secs(5)) {
        got.push((event.id.unwrap(), event.data));
    }
    let last = got.last().unwrap().0.clone();
    let mut client = SseClient::connect(&survivor, "/channels/death", &format!("Last-Event-ID: {last}\r\n"));
    while got.len() < MESSAGES {
        let event = client.next_event(Duration::from_secs(20)).expect("the rest after resuming");
        assert_eq!(event.event, None, "no gap: {event:?}");
        got.push((event.id.unwrap(), event.data));
    }
    publishing.join().unwrap();
    let data: Vec<&str> = got.iter().map(|(_, d)| d.as_str()).collect();
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("d{i}")).collect();
    assert_eq!(data, expected, "every message once, in order, across the kill");
    let offsets: Vec<u64> =
        got.iter().map(|(id, _)| id.rsplit(':').next().unwrap().parse().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "consecutive cursors");
    assert!(client.next_event(Duration::from_millis(300)).is_none(), "nothing more");
}

/// Redis restarted from an older snapshot (RDB saved at m3, m4 and m5 lost) comes back as a
/// new incarnation: a live subscriber gets a gap and then the new epoch's messages, and an
/// old cursor is a gap, never another message under a reused offset.
#[test]
fn redis_nodes_restart_from_an_older_snapshot_is_a_gap_never_wrong_data() {
    let mut redis = RedisServer::start_with(redis_support::Persistence::Rdb);
    let a = node(&redis);
    let since = tail(&a, "snap");
    let mut live = SseClient::connect(&a, &format!("/channels/snap?since={}", since.replace(':', "%3A")), "");
    let ids: Vec<String> = (1..=3).map(|i| publish(&a, "snap", &format!("m{i}"))).collect();
    let mut admin = redis.client();
    assert_eq!(
        admin.call(&pushwire::redis::resp::Command::new("SAVE")),
        pushwire::redis::resp::Value::SimpleString("OK".into())
    );
    let lost: Vec<String> = (4..=5).map(|i| publish(&a, "snap", &format!("m{i}"))).collect();
    for i in 1..=5 {
        assert_eq!(live.next_event(Duration::from_secs(10)).unwrap().data, format!("m{i}"));
    }
    redis.kill9();
    redis.restart();
    // The node reconnects; the first publish that succeeds is under a new epoch.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let res = exchange(&a, publish_request("snap", "n1").as_bytes());
        if res.status == 201 {
            break json_field(&res.text(), "id").unwrap();
        }
        assert!(Instant::now() < deadline, "not back: {}", res.status);
        std::thread::sleep(Duration::from_millis(100));
    };
    let old_epoch = ids[0].split(':').next().unwrap();
    assert_ne!(after.split(':').next().unwrap(), old_epoch, "a new epoch, not offset 4 reused");
    // The live subscriber: a gap, then n1 (never a message of the old epoch again).
    let gap = live.next_event(Duration::from_secs(20)).unwrap();
    assert_eq!(gap.event.as_deref(), Some("gap"), "{gap:?}");
    let next = live.next_event(Duration::from_secs(20)).unwrap();
    assert_eq!((next.id.as_deref(), next.data.as_str()), (Some(after.as_str()), "n1"));
    // Old cursors, saved or lost: a gap and the new epoch's messages only.
    for old in [&ids[2], &lost[1]] {
        let text = poll(&a, "snap", Some(old)).text();
        assert!(text.contains("\"gap\":true"), "{text}");
        assert_eq!(data_values(&text), vec!["n1"], "{text}");
    }
}

#[test]
fn redis_nodes_pubsub_shards_flag_spreads_a_nodes_channels_over_connections() {
    let redis = RedisServer::start();
    let a = node(&redis);
    let b = Server::start(&[
        "--redis",
        &format!("redis://127.0.0.1:{}", redis.port),
        "--redis-pubsub-shards",
        "3",
    ]);
    let channels: Vec<String> = (0..9).map(|i| format!("spread{i}")).collect();
    let streams: Vec<Lines> = channels
        .iter()
        .map(|channel| {
            let since = json_field(&poll(&b, channel, None).text(), "next").unwrap();
            let query = format!("since={}", since.replace(':', "%3A"));
            let sse = Lines::curl_sse(&url(&b, &format!("/channels/{channel}?{query}")));
            // Opened with its cursor: the subscription is live.
            assert_eq!(sse.until(|l| l.starts_with("id:")), format!("id: {since}"));
            sse
        })
        .collect();
    for (channel, sse) in channels.iter().zip(&streams) {
        let id = publish(&a, channel, &format!("to {channel}"));
        assert_eq!(sse.until(|l| l.starts_with("id:")), format!("id: {id}"));
        assert_eq!(sse.next(), Some(format!("data: to {channel}")));
    }
    // Node b's pub/sub connections: three, carrying the nine channels between them; each
    // node's first connection also carries its control and reply channels (so node a's one
    // connection carries those two only: it has no subscriber).
    let mut client = redis.client();
    let list =
        client.call(&pushwire::redis::resp::Command::new("CLIENT").arg("LIST").arg("TYPE").arg("pubsub"));
    let pushwire::redis::resp::Value::BulkString(list) = list else { panic!("{list:?}") };
    let list = String::from_utf8(list).unwrap();
    let subs: Vec<usize> = list
        .lines()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("sub=")))
        .map(|n| n.parse().unwrap())
        .filter(|&n| n > 0)
        .collect();
    assert_eq!(subs.len(), 4, "{list}");
    assert_eq!(subs.iter().sum::<usize>(), channels.len() + 2 * 2, "{list}");
    // Out of range: a usage error.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis",
            "redis://127.0.0.1:1",
            "--redis-pubsub-shards",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn redis_nodes_pipelined_ws_commands_are_answered_in_order_on_one_server() {
    // One broker answers a subscribe once its channel is live (SUBSCRIBE confirmed, then a
    // read), after a later publish of the same connection; the /ws session matches replies to
    // commands in order, so the node must hand them over in order. Before the fix a
    // publish's cursor answered the subscribe before it ("internal" errors) and the next
    // publish got its neighbour's id.
    let redis = RedisServer::start();
    let a = node(&redis);
    let mut ws = V1::connect(&a, None);
    const ROUNDS: usize = 5;
    for i in 0..ROUNDS {
        ws.send(&json!({"type":"subscribe","channel":format!("fresh{i}"),"req":format!("s{i}")}));
        ws.send(&json!({"type":"publish","channel":"busy","data":format!("m{i}"),"req":format!("p{i}")}));
    }
    let replies: Vec<Value> = (0..2 * ROUNDS).map(|_| ws.reply()).collect();
    let reqs: Vec<&str> = replies.iter().map(|r| r["req"].as_str().unwrap_or("?")).collect();
    let asked: Vec<String> = (0..ROUNDS).flat_map(|i| [format!("s{i}"), format!("p{i}")]).collect();
    assert_eq!(reqs, asked, "{replies:#?}");
    assert!(replies.iter().all(|r| r["type"] == "ok"), "{replies:#?}");
    // Each publish's id is the one its message has in the history.
    let history = poll(&a, "busy", Some(&format!("{}:0", epoch_of(&replies[1])))).text();
    let stored: Vec<(String, String)> = serde_json::from_str::<Value>(&history).unwrap()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["data"].as_str().unwrap().to_string(), m["id"].as_str().unwrap().to_string()))
        .collect();
    let acked: Vec<(String, String)> = (0..ROUNDS)
        .map(|i| (format!("m{i}"), replies[2 * i + 1]["id"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(acked, stored, "{history}");
}

fn epoch_of(reply: &Value) -> String {
    let id = reply["id"].as_str().unwrap_or_else(|| panic!("{reply}"));
    id.split(':').next().unwrap().to_string()
}

#[test]
fn redis_nodes_a_channel_with_subscribers_keeps_its_epoch_past_the_history_age() {
    // Without Redis a channel with subscribers keeps its epoch however long it stays quiet;
    // on Redis its meta would expire --history-age after the last publish, and the next
    // publish would start a new epoch: a gap where nothing was lost. The node with
    // subscribers refreshes the meta every third of the age.
    let redis = RedisServer::start();
    let a = Server::start(&["--redis", &format!("redis://127.0.0.1:{}", redis.port), "--history-age", "2"]);
    let mut ws = V1::connect(&a, None);
    assert_eq!(ws.ask(json!({"type":"subscribe","channel":"quiet","req":1}))["type"], "ok");
    let first = publish(&a, "quiet", "one");
    assert_eq!(ws.message()["id"].as_str(), Some(first.as_str()));
    std::thread::sleep(Duration::from_millis(3_500));
    let second = publish(&a, "quiet", "two");
    let (epoch, offset) = first.split_once(':').unwrap();
    assert_eq!(
        second,
        format!("{epoch}:{}", offset.parse::<u64>().unwrap() + 1),
        "the same epoch, the next offset"
    );
    let next = ws.next();
    assert_eq!((next["type"].as_str(), next["id"].as_str()), (None, Some(second.as_str())), "no gap: {next}");
}

#[test]
fn redis_nodes_presence_counts_every_member_past_the_most_listed() {
    // --max-presence-members bounds what one answer lists; the count is every member's, as
    // presence_stats promises (a subscribe is not refused for it with --redis: see README).
    let redis = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let a = Server::start(&["--redis", &url, "--max-presence-members", "2"]);
    let mut members: Vec<V1> = (0..3).map(|_| V1::connect(&a, None)).collect();
    for ws in &mut members {
        assert_eq!(ws.ask(json!({"type":"subscribe","channel":"crowd","req":1}))["type"], "ok");
    }
    let stats = members[0].ask(json!({"type":"presence_stats","channel":"crowd","req":2}));
    assert_eq!(stats["count"], 3, "{stats}");
    let list = members[0].ask(json!({"type":"presence","channel":"crowd","req":3}));
    assert_eq!(
        (list["count"].as_u64(), list["members"].as_array().map(Vec::len)),
        (Some(3), Some(2)),
        "{list}"
    );
}

#[test]
fn redis_nodes_replies_follow_command_order_in_one_write() {
    // Subscribes wait for Redis; the replies made by the connection itself wait behind them.
    let redis = RedisServer::start();
    common::v1::assert_replies_follow_command_order(&node(&redis));
}
