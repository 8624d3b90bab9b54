//! The server API with `--redis` across nodes sharing one real `redis-server` (issue #17:
//! "With the Redis backend these act cluster-wide"): `disconnect` and `unsubscribe` called on
//! one node reach connections on the others (WebSocket closed with 4002 and the reason, SSE
//! ended, a `/ws` command-mode connection unsubscribed); a connection id from presence is
//! routed to its node; Redis down answers 503. `info` and `channels` survey every node: counts
//! by transport summed over the nodes, channels whose subscribers live on another node, and a
//! killed node drops out of the survey (the call still answers, first at the survey timeout,
//! then at once once the registry dropped it); a stalled node's reply after the timeout is
//! dropped and counted late; `--redis-survey-timeout`, `--redis-node-timeout` and
//! `--redis-heartbeat-interval` set those timings.

mod common;
mod redis_support;

use std::io::Write;
use std::time::{Duration, Instant};

use common::api::{call, jwt, wait_for, wait_info, wait_presence, KEY, SECRET};
use common::v1::V1;
use common::*;
use redis_support::{sigcont, sigstop, RedisServer};
use serde_json::{json, Value};

fn node(redis: &RedisServer) -> Server {
    let url = format!("redis://127.0.0.1:{}", redis.port);
    Server::start(&["--redis", &url, "--threads", "2", "--api-key", KEY, "--token-secret", SECRET])
}

/// A `pushwire_redis_NAME` figure from `/metrics`.
fn redis_metric(server: &Server, name: &str) -> u64 {
    metric(server, &format!("redis_{name}"))
}

#[test]
fn redis_api_disconnect_and_unsubscribe_called_on_one_node_reach_the_others() {
    let redis = RedisServer::start();
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    let alice = jwt("alice");
    // Alice on node B (/ws command mode) and node A (the node called), an SSE of hers on C.
    let mut ws_b = V1::connect(&b, Some(&alice));
    assert_eq!(ws_b.ask(json!({"type":"subscribe","channel":"d.ws","req":1}))["type"], "ok");
    let mut ws_a = V1::connect(&a, Some(&alice));
    assert_eq!(ws_a.ask(json!({"type":"subscribe","channel":"d.ws","req":1}))["type"], "ok");
    let mut sse_c = open_sse(&c, "d.sse", Some(&alice));
    // Carol on node B, in two rooms; Bob in one of them on node C.
    let mut carol = V1::connect(&b, Some(&jwt("carol")));
    for (i, channel) in ["u.a", "u.b"].iter().enumerate() {
        assert_eq!(carol.ask(json!({"type":"subscribe","channel":channel,"req":i}))["type"], "ok");
    }
    let mut bob = V1::connect(&c, Some(&jwt("bob")));
    assert_eq!(bob.ask(json!({"type":"subscribe","channel":"u.a","req":1}))["type"], "ok");

    // unsubscribe called on node A reaches carol's command-mode WebSocket on node B.
    let (status, json) = call(&a, "unsubscribe", json!({"user":"carol","channel":"u.a","reason":"kicked"}));
    assert_eq!((status, json), (202, json!({"sent":true})));
    assert_eq!(carol.next(), json!({"type":"unsubscribe","channel":"u.a","reason":"kicked"}));
    publish(&a, "u.a", "after");
    publish(&a, "u.b", "b after");
    let next = carol.message();
    assert_eq!(
        (next["channel"].clone(), next["data"].clone()),
        (json!("u.b"), json!("b after")),
        "u.a is gone"
    );
    let bobs = bob.message();
    assert_eq!((bobs["channel"].clone(), bobs["data"].clone()), (json!("u.a"), json!("after")), "bob stays");

    // disconnect called on node A: alice's WebSocket on B closed with 4002 and the reason, her
    // SSE on C ended, and her WebSocket on A itself closed once (applied here, its echo not).
    let (status, json) = call(&a, "disconnect", json!({"user":"alice","reason":"account closed"}));
    assert_eq!((status, json), (202, json!({"sent":true})));
    assert_eq!(ws_b.close_frame(), (4002, "account closed".to_string()));
    assert_eq!(ws_a.close_frame(), (4002, "account closed".to_string()));
    assert!(closed_by_server(&mut sse_c), "the SSE response on node C ended");
    // Carol and Bob are someone else.
    publish(&c, "u.b", "still");
    assert_eq!(carol.message()["data"], "still");
}

#[test]
fn redis_api_a_client_id_from_presence_reaches_its_node_only() {
    let redis = RedisServer::start();
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    let mut on_b = V1::connect(&b, None);
    assert_eq!(on_b.ask(json!({"type":"subscribe","channel":"room","req":1}))["type"], "ok");
    let (_, presence) = call(&a, "presence", json!({"channel":"room"}));
    let id_b = presence["members"][0]["id"].as_str().unwrap_or_else(|| panic!("{presence}")).to_string();
    // Node C's member holds the same loop, slot and generation as B's likely does (each node's
    // first connection): only the node part tells them apart.
    let mut on_c = V1::connect(&c, None);
    assert_eq!(on_c.ask(json!({"type":"subscribe","channel":"room","req":1}))["type"], "ok");
    let (_, presence) = call(&a, "presence", json!({"channel":"room"}));
    assert_eq!(presence["count"], 2, "{presence}");
    // Called on node A, which holds neither.
    let (status, json) = call(&a, "disconnect", json!({"client":id_b,"reason":"only you"}));
    assert_eq!((status, json), (202, json!({"sent":true})));
    assert_eq!(on_b.close_frame(), (4002, "only you".to_string()));
    publish(&a, "room", "still here");
    assert_eq!(on_c.message()["data"], "still here", "node C's connection stays");
    wait_presence(&a, "room", 1);
}

#[test]
fn redis_api_disconnect_answers_503_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let a = node(&redis);
    redis.kill9();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, json) = call(&a, "disconnect", json!({"user":"alice"}));
        if status == 503 {
            assert!(json["error"].as_str().unwrap().contains("redis"), "{json}");
            break;
        }
        assert_eq!(status, 202, "{json}");
        assert!(Instant::now() < deadline, "still {status} with redis down");
        std::thread::sleep(Duration::from_millis(50));
    }
    // info and channels too.
    let (status, json) = call(&a, "info", json!({"channel":"x"}));
    assert_eq!(status, 503, "{json}");
    let (status, json) = call(&a, "channels", json!({}));
    assert_eq!(status, 503, "{json}");
}

#[test]
fn redis_api_info_counts_subscribers_of_every_node_by_transport() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    let first = publish(&a, "i", "one");
    let last = publish(&b, "i", "two");
    // Node A: a single-channel WebSocket and a /ws command-mode one; node B: an SSE, a
    // stream and a parked long poll.
    let (_ws, head) = RawWs::connect(&a, "/channels/i", &[]);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut v1 = V1::connect(&a, None);
    assert_eq!(v1.ask(json!({"type":"subscribe","channel":"i","req":1}))["type"], "ok");
    let _sse = open_sse(&b, "i", None);
    let _stream =
        open_request(&b, "GET /channels/i HTTP/1.1\r\nHost: t\r\nAccept: application/x-ndjson\r\n\r\n");
    let mut long_poll = b.connect();
    let since = last.replace(':', "%3A");
    long_poll
        .write_all(format!("GET /channels/i?wait=30&since={since} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    let all = json!({"websocket":2,"sse":1,"stream":1,"long_poll":1});
    let info = wait_info(&a, "i", |info| info["transports"] == all);
    assert_eq!(info["subscribers"], 5, "{info}");
    assert_eq!(info["exists"], true);
    // The last cursor and the history length come from Redis; the bytes are not counted there.
    assert_eq!(info["last"], last.as_str(), "{info}");
    assert_eq!(first.split(':').next(), last.split(':').next());
    assert_eq!(info["history_messages"], 2);
    assert_eq!(info["history_bytes"], Value::Null);
    // Node B answers the same.
    wait_info(&b, "i", |info| info["transports"] == all);
    // A channel nobody has: exists false, zeros, null last.
    let (status, none) = call(&a, "info", json!({"channel":"nothing.here"}));
    assert_eq!(status, 200);
    assert_eq!(
        (none["exists"].clone(), none["subscribers"].clone(), none["last"].clone()),
        (json!(false), json!(0), Value::Null)
    );
}

#[test]
fn redis_api_channels_lists_channels_whose_subscribers_live_on_another_node() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    let _subscribers: Vec<_> =
        ["room.1", "room.2", "room.3", "lobby"].iter().map(|ch| open_sse(&b, ch, None)).collect();
    // Published to, but nobody subscribed: not listed (Centrifugo's `channels`).
    publish(&a, "room.0", "history only");
    let first_two = json!(["room.1", "room.2"]);
    let page =
        wait_for(&a, "channels", json!({"prefix":"room.","limit":2}), |page| page["channels"] == first_two);
    assert_eq!(page["next"], "room.2");
    let (_, rest) = call(&a, "channels", json!({"prefix":"room.","after":"room.2","limit":2}));
    assert_eq!((rest["channels"].clone(), rest["next"].clone()), (json!(["room.3"]), Value::Null));
    let (_, all) = call(&a, "channels", json!({}));
    assert_eq!(all["channels"], json!(["lobby", "room.1", "room.2", "room.3"]), "{all}");
    // A subscriber on node A too: listed once.
    let _here = open_sse(&a, "room.1", None);
    wait_info(&a, "room.1", |info| info["subscribers"] == 2);
    let (_, all) = call(&a, "channels", json!({"prefix":"room."}));
    assert_eq!(all["channels"], json!(["room.1", "room.2", "room.3"]), "{all}");
}

#[test]
fn redis_api_a_killed_node_drops_out_of_the_survey_after_the_timeout() {
    let redis = RedisServer::start();
    let a = node(&redis);
    let b = node(&redis);
    let mut doomed = node(&redis);
    let _on_b = open_sse(&b, "k", None);
    let _on_doomed = open_sse(&doomed, "k", None);
    wait_info(&a, "k", |info| info["transports"]["sse"] == 2);
    assert_eq!(redis_metric(&a, "nodes"), 2);
    let timeouts = redis_metric(&a, "survey_timeouts_total");
    doomed.kill9();
    // Still in A's registry: the survey waits for it until its timeout, then answers with B's.
    let info = wait_info(&a, "k", |info| info["transports"]["sse"] == 1);
    assert_eq!(info["subscribers"], 1, "{info}");
    assert!(redis_metric(&a, "survey_timeouts_total") > timeouts, "answered at the survey timeout");
    // After the node timeout it is dropped, and a survey waits for nobody dead.
    let deadline = Instant::now() + Duration::from_secs(20);
    while redis_metric(&a, "nodes") != 1 {
        assert!(Instant::now() < deadline, "the killed node never dropped out");
        std::thread::sleep(Duration::from_millis(100));
    }
    let timeouts = redis_metric(&a, "survey_timeouts_total");
    let (status, info) = call(&a, "info", json!({"channel":"k"}));
    assert_eq!((status, info["transports"]["sse"].clone()), (200, json!(1)), "{info}");
    let (status, page) = call(&a, "channels", json!({"prefix":"k"}));
    assert_eq!((status, page["channels"].clone()), (200, json!(["k"])), "{page}");
    assert_eq!(redis_metric(&a, "survey_timeouts_total"), timeouts, "B answered: no timeout");
}

#[test]
fn redis_api_a_stalled_nodes_reply_after_the_survey_timeout_is_counted_late() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    let _on_b = open_sse(&b, "s", None);
    wait_info(&a, "s", |info| info["transports"]["sse"] == 1);
    let late = redis_metric(&a, "survey_late_replies_total");
    // Node B stopped (still in A's registry): A answers at the survey timeout without it.
    sigstop(b.pid());
    let (status, info) = call(&a, "info", json!({"channel":"s"}));
    sigcont(b.pid());
    assert_eq!((status, info["transports"]["sse"].clone()), (200, json!(0)), "{info}");
    // B answers once it runs again: too late, dropped and counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    while redis_metric(&a, "survey_late_replies_total") == late {
        assert!(Instant::now() < deadline, "the late reply was never counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_info(&a, "s", |info| info["transports"]["sse"] == 1);
}

/// The control channel's timings follow their flags (every node given the same):
/// `--redis-survey-timeout 0.5` answers a survey waiting for a stopped node after half a
/// second (not the default 2 s), and `--redis-node-timeout 2` with
/// `--redis-heartbeat-interval 0.25` drops it from the registry within 2 s of its last
/// heartbeat (not the default 6 s).
#[test]
fn redis_api_control_timings_follow_their_flags() {
    let redis = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let timed = || {
        Server::start(&[
            "--redis",
            &url,
            "--threads",
            "1",
            "--api-key",
            KEY,
            "--redis-heartbeat-interval",
            "0.25",
            "--redis-node-timeout",
            "2",
            "--redis-survey-timeout",
            "0.5",
        ])
    };
    let (a, mut b) = (timed(), timed());
    let _on_b = open_sse(&b, "t", None);
    wait_info(&a, "t", |info| info["transports"]["sse"] == 1);
    let timeouts = redis_metric(&a, "survey_timeouts_total");
    sigstop(b.pid());
    let stopped = Instant::now();
    let (status, info) = call(&a, "info", json!({"channel":"t"}));
    let took = stopped.elapsed();
    assert_eq!((status, info["transports"]["sse"].clone()), (200, json!(0)), "{info}");
    assert_eq!(redis_metric(&a, "survey_timeouts_total"), timeouts + 1, "answered at the survey timeout");
    assert!(took < Duration::from_millis(1_500), "the survey took {took:?}");
    while redis_metric(&a, "nodes") != 0 {
        let waited = stopped.elapsed();
        assert!(waited < Duration::from_millis(3_500), "still in the registry after {waited:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.kill9();
}
