//! Nodes given two real `redis-server`s as shards (`--redis A --redis B`, the same order on
//! every node): each channel lives on the shard `shard_of` names (its keys there and not on the
//! other), publishes on any node reach subscribers on every node once, in order, with the same
//! cursor, a client resumes on another node; one WebSocket connection publishing to channels
//! on both shards gets its acks in the order of its publishes even when one shard is slow; the
//! server API's `channels` merges both shards and `info` finds a shard-1 channel; presence
//! works per shard; one shard down fails only its channels (503) and `/readyz`, and they come
//! back with it.

mod common;
mod redis_support;

use std::io::Write;
use std::time::{Duration, Instant};

use common::api::{call, wait_for, KEY};
use common::v1::V1;
use common::*;
use pushwire::hub::ChannelName;
use pushwire::redis::shard::shard_of;
use redis_support::RedisServer;
use serde_json::{json, Value};

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{}", server.addr, path)
}

fn redis_url(redis: &RedisServer) -> String {
    format!("redis://127.0.0.1:{}", redis.port)
}

/// A node given both servers, in order.
fn node(shards: &[RedisServer; 2]) -> Server {
    let (first, second) = (redis_url(&shards[0]), redis_url(&shards[1]));
    Server::start(&["--redis", &first, "--redis", &second, "--threads", "2", "--api-key", KEY])
}

/// The first name `PREFIX-N` that lives on `shard` of two.
fn on_shard(prefix: &str, shard: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|name| shard_of(&ChannelName::parse(name).unwrap(), 2) == shard)
        .unwrap()
}

/// The tail cursor of a channel (creating it), via a short poll.
fn tail(server: &Server, channel: &str) -> String {
    json_field(&poll(server, channel, None).text(), "next").unwrap()
}

fn epoch(id: &str) -> &str {
    id.split(':').next().unwrap()
}

/// How many of `keys` exist on `redis`.
fn existing(redis: &RedisServer, keys: &[String]) -> i64 {
    let mut checker = redis.checker();
    redis::cmd("EXISTS").arg(keys).query(&mut checker).unwrap()
}

/// `POST /channels/CHANNEL`: the status.
fn publish_status(server: &Server, channel: &str, body: &str) -> u16 {
    let raw = publish_request(channel, body).replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1);
    exchange(server, raw.as_bytes()).status
}

/// Waits (bounded) until `/readyz` answers `status`.
fn readyz_until(server: &Server, status: u16) {
    common::readyz_until(server, status, Duration::from_secs(20));
}

/// `pushwire serve --redis URL...` run to its end (it must fail at start): its stderr.
fn refused_at_start(urls: &[&String]) -> String {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    for url in urls {
        args.extend(["--redis", url.as_str()]);
    }
    let output = output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_pushwire")).args(&args).env("RUST_LOG", "warn"),
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{err}");
    err
}

/// Each broker claims its server's place in the list and the list's length: a node listing
/// the servers in another order than the node before it, or fewer or more of them, is refused
/// at start, naming both places (with `n` and `n + 1` shards the nodes would send about
/// `1 / (n + 1)` of the channels to different servers); one listing them the same starts, and
/// after `DEL pushwire:shard` on every server a longer list starts.
#[test]
fn redis_shards_a_node_listing_other_servers_or_another_order_is_refused_at_start() {
    let shards = [RedisServer::start(), RedisServer::start(), RedisServer::start()];
    let (first, second, third) = (redis_url(&shards[0]), redis_url(&shards[1]), redis_url(&shards[2]));
    let node = Server::start(&["--redis", &first, "--redis", &second]);
    let err = refused_at_start(&[&second, &first]);
    assert!(err.contains("shard 1 (counting from 0) of 2") && err.contains("shard 0 of 2 here"), "{err}");
    let err = refused_at_start(&[&first]);
    assert!(err.contains("shard 0 (counting from 0) of 2") && err.contains("shard 0 of 1 here"), "{err}");
    let err = refused_at_start(&[&first, &second, &third]);
    assert!(err.contains("of 2") && err.contains("of 3 here") && err.contains("DEL pushwire:shard"), "{err}");
    let _same = Server::start(&["--redis", &first, "--redis", &second]);
    drop((node, _same));
    for shard in &shards[..2] {
        let deleted: i64 = redis::cmd("DEL").arg("pushwire:shard").query(&mut shard.checker()).unwrap();
        assert_eq!(deleted, 1);
    }
    let _grown = Server::start(&["--redis", &first, "--redis", &second, "--redis", &third]);
}

#[test]
fn redis_shards_publish_on_any_node_reaches_every_node_once_in_order_from_the_channels_shard() {
    let shards = [RedisServer::start(), RedisServer::start()];
    let nodes = [node(&shards), node(&shards), node(&shards)];
    for shard in 0..2 {
        let channel = on_shard("fan", shard);
        // Every subscriber starts from the same cursor, read on yet another node.
        let since = tail(&nodes[2], &channel);
        let query = format!("since={}", since.replace(':', "%3A"));
        let sse = Lines::curl_sse(&url(&nodes[1], &format!("/channels/{channel}?{query}")));
        let (mut ws, head) = RawWs::connect(&nodes[2], &format!("/channels/{channel}?{query}"), &[]);
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        let opened = format!("id: {since}");
        let mut ids = Vec::new();
        for (i, publisher) in nodes.iter().enumerate() {
            let body = format!("m{i}");
            let id = publish(publisher, &channel, &body);
            assert_eq!(epoch(&id), epoch(&since), "one epoch on every node");
            assert_eq!(sse.until(|l| l.starts_with("id:") && l != opened), format!("id: {id}"));
            assert_eq!(sse.next(), Some(format!("data: {body}")));
            assert_eq!(ws.recv_text(), body);
            ids.push(id);
        }
        let short = poll(&nodes[0], &channel, Some(&since)).text();
        assert_eq!(data_values(&short), vec!["m0", "m1", "m2"], "{short}");
        assert_eq!(json_field(&short, "next").as_deref(), Some(ids[2].as_str()));
        // Resumed on another node with the first cursor: exactly the rest.
        let resumed = poll(&nodes[1], &channel, Some(&ids[0])).text();
        assert_eq!(data_values(&resumed), vec!["m1", "m2"], "{resumed}");
        // Its keys are on its shard, and not on the other.
        let keys = [format!("pushwire:{{{channel}}}:meta"), format!("pushwire:{{{channel}}}:hist")];
        assert_eq!(existing(&shards[shard], &keys), 2, "{channel} on shard {shard}");
        assert_eq!(existing(&shards[1 - shard], &keys), 0, "{channel} not on shard {}", 1 - shard);
    }
}

/// One `pushwire.v1` connection publishes to a channel on shard 0, frozen, then to channels on
/// shard 1, which answer at once: the acks still come in the order of the publishes, each with
/// its own channel's cursor (the loop matches a connection's answers to its commands in order;
/// without the answer order, the first ack would carry a shard-1 cursor).
#[test]
fn redis_shards_ws_acks_keep_the_order_of_publishes_across_a_slow_shard() {
    let shards = [RedisServer::start(), RedisServer::start()];
    let server = node(&shards);
    let slow = on_shard("order", 0);
    let fast = on_shard("order", 1);
    let slow_epoch = epoch(&tail(&server, &slow)).to_string();
    let fast_epoch = epoch(&tail(&server, &fast)).to_string();
    // A subscriber of the fast channel on the same connection: its messages come after their
    // acks, never before.
    let mut v1 = V1::connect(&server, None);
    assert_eq!(v1.ask(json!({"type":"subscribe","channel":fast,"req":"s"}))["type"], "ok");
    shards[0].freeze();
    v1.send(&json!({"type":"publish","channel":slow,"data":"slow","req":0}));
    for i in 1..=4 {
        // The second one skips its sender: its delivery arrives while its ack waits for the
        // slow shard's, and must wait too.
        let except_self = i == 2;
        v1.send(&json!({"type":"publish","channel":fast,"data":format!("fast-{i}"),"except_self":except_self,"req":i}));
    }
    // Shard 1 answers meanwhile; the answers wait for shard 0's.
    std::thread::sleep(Duration::from_millis(600));
    shards[0].thaw();
    for i in 0..=4u64 {
        let reply = v1.reply();
        assert_eq!(reply["type"], "ok", "{reply}");
        assert_eq!(reply["req"], i, "{reply}");
        let id = reply["id"].as_str().unwrap();
        let (channel, want_epoch, offset) =
            if i == 0 { (&slow, &slow_epoch, 1) } else { (&fast, &fast_epoch, i) };
        assert_eq!(reply["channel"], channel.as_str(), "{reply}");
        assert_eq!(id, format!("{want_epoch}:{offset}"), "ack {i} carries its own publish's cursor: {reply}");
    }
    // The subscription got the fast messages, in order, after their acks, but its own
    // except_self one.
    for i in [1, 3, 4] {
        let message = v1.message();
        assert_eq!(message["data"], format!("fast-{i}"), "{message}");
    }
}

/// A short poll of two channels, one on frozen shard 0 and one on shard 1, on one request: the
/// two reads are answered by different brokers, the shard-1 one first, and each channel still
/// gets its own messages and cursor (without the answer order they were swapped).
#[test]
fn redis_shards_a_poll_of_channels_on_both_shards_gets_each_its_own_answer() {
    let shards = [RedisServer::start(), RedisServer::start()];
    let server = node(&shards);
    let slow = on_shard("multi", 0);
    let fast = on_shard("multi", 1);
    let slow_id = publish(&server, &slow, "s1");
    let fast_id = publish(&server, &fast, "f1");
    let since = format!("{}:0,{}:0", epoch(&slow_id), epoch(&fast_id));
    shards[0].freeze();
    let answer = std::thread::scope(|scope| {
        let poll = scope.spawn(|| {
            let raw = format!("GET /channels/{slow},{fast}?since={since} HTTP/1.1\r\nHost: t\r\n\r\n");
            exchange(&server, raw.as_bytes())
        });
        std::thread::sleep(Duration::from_millis(600));
        shards[0].thaw();
        poll.join().unwrap()
    });
    assert_eq!(answer.status, 200, "{}", answer.text());
    let json: Value = serde_json::from_slice(&answer.body).unwrap();
    let want = json!([
        {"channel": slow, "id": slow_id, "data": "s1"},
        {"channel": fast, "id": fast_id, "data": "f1"},
    ]);
    assert_eq!(json["messages"], want, "{json}");
    assert_eq!(json["next"], format!("{slow_id},{fast_id}"), "{json}");
}

#[test]
fn redis_shards_server_api_channels_merges_both_shards_and_info_finds_a_shard_1_channel() {
    let shards = [RedisServer::start(), RedisServer::start()];
    let (a, b) = (node(&shards), node(&shards));
    let mut names: Vec<String> =
        (0..2).flat_map(|shard| [on_shard("room.a", shard), on_shard("room.b", shard)]).collect();
    names.sort();
    let _subscribers: Vec<Lines> =
        names.iter().map(|ch| Lines::curl_sse(&url(&b, &format!("/channels/{ch}")))).collect();
    let all = wait_for(&a, "channels", json!({"prefix":"room."}), |all| all["channels"] == json!(names));
    assert_eq!(all["next"], Value::Null, "{all}");
    // Pages across the shards: `limit` and `after` over the merged order.
    let (_, first) = call(&a, "channels", json!({"prefix":"room.","limit":3}));
    assert_eq!(first["channels"], json!(names[..3]), "{first}");
    assert_eq!(first["next"], names[2].as_str(), "{first}");
    let (_, rest) = call(&a, "channels", json!({"prefix":"room.","after":names[2],"limit":3}));
    assert_eq!(rest["channels"], json!(names[3..]), "{rest}");
    assert_eq!(rest["next"], Value::Null, "{rest}");
    // `info` of a channel on shard 1, asked on the node without its subscriber.
    let channel = on_shard("room.b", 1);
    let id = publish(&a, &channel, "one");
    let (status, info) = call(&a, "info", json!({"channel":channel}));
    assert_eq!(status, 200, "{info}");
    assert_eq!((info["exists"].clone(), info["subscribers"].clone()), (json!(true), json!(1)), "{info}");
    assert_eq!(info["last"], id.as_str(), "{info}");
    assert_eq!(info["history_messages"], 1, "{info}");
}

/// Presence per shard as on one server: a member of channels on both shards is listed on
/// every node, its keys on each channel's shard, and its node killed, it leaves both.
#[test]
fn redis_shards_presence_on_both_shards_and_a_killed_nodes_members_leave_both() {
    let shards = [RedisServer::start(), RedisServer::start()];
    let (first, second) = (redis_url(&shards[0]), redis_url(&shards[1]));
    let flags = ["--redis", &first, "--redis", &second, "--threads", "2", "--presence-ttl", "3"];
    let (a, mut doomed) = (Server::start(&flags), Server::start(&flags));
    let rooms = [on_shard("room", 0), on_shard("room", 1)];
    let mut watcher = V1::connect(&a, None);
    let mut member = V1::connect(&doomed, None);
    for (req, room) in rooms.iter().enumerate() {
        let ok = watcher.ask(json!({"type":"subscribe","channel":room,"joins":true,"req":req}));
        assert_eq!(ok["type"], "ok", "{ok}");
    }
    for (req, room) in rooms.iter().enumerate() {
        let ok = member.ask(json!({"type":"subscribe","channel":room,"info":{"name":"m"},"req":req}));
        assert_eq!(ok["type"], "ok", "{ok}");
    }
    let heard = |watcher: &mut V1, kind: &str| {
        let mut channels: Vec<String> = (0..2)
            .map(|_| {
                let frame = watcher.next();
                assert_eq!(frame["type"], kind, "{frame}");
                frame["channel"].as_str().unwrap().to_string()
            })
            .collect();
        channels.sort();
        channels
    };
    let mut sorted = rooms.to_vec();
    sorted.sort();
    assert_eq!(heard(&mut watcher, "join"), sorted);
    for (shard, room) in rooms.iter().enumerate() {
        let listed = watcher.ask(json!({"type":"presence","channel":room,"req":"p"}));
        assert_eq!(listed["count"], 2, "{listed}");
        let keys = [format!("pushwire:{{{room}}}:pres")];
        assert_eq!(existing(&shards[shard], &keys), 1, "{room} presence on shard {shard}");
        assert_eq!(existing(&shards[1 - shard], &keys), 0, "{room} presence not on the other");
    }
    let killed_at = Instant::now();
    doomed.kill9();
    assert_eq!(heard(&mut watcher, "leave"), sorted);
    assert!(killed_at.elapsed() < Duration::from_secs(15), "left after {:?}", killed_at.elapsed());
    drop(member);
}

#[test]
fn redis_shards_one_shard_down_fails_only_its_channels_until_it_is_back() {
    let mut shards = [RedisServer::start(), RedisServer::start()];
    let server = node(&shards);
    readyz_until(&server, 200);
    let (up, down) = (on_shard("out", 0), on_shard("out", 1));
    let before = publish(&server, &down, "before");
    let mut subscriber = server.connect();
    let since = before.replace(':', "%3A");
    subscriber
        .write_all(
            format!(
                "GET /channels/{down}?since={since} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    shards[1].kill9();
    readyz_until(&server, 503);
    assert_eq!(publish_status(&server, &down, "lost"), 503);
    assert_eq!(publish_status(&server, &up, "fine"), 201, "the other shard keeps working");
    shards[1].restart();
    readyz_until(&server, 200);
    // Back, with a new epoch (no persistence): resuming from before is a gap, never wrong data.
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let raw = publish_request(&down, "after").replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1);
        let res = exchange(&server, raw.as_bytes());
        if res.status == 201 {
            break json_field(&res.text(), "id").unwrap();
        }
        assert!(Instant::now() < deadline, "{down} never back: {} {}", res.status, res.text());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(epoch(&after), epoch(&before), "{after}");
    let resumed = poll(&server, &down, Some(&before)).text();
    assert!(resumed.contains("\"gap\":true"), "{resumed}");
    assert_eq!(data_values(&resumed), vec!["after"], "{resumed}");
}
