//! Late answers and the subscription counts of one loop (issue #14), end to end: a
//! `pushwire serve --redis` node with one event loop on a real `redis-server` frozen with
//! SIGSTOP, so every subscribe's answer arrives late, after the clients have acted.
//!
//! The broker counts subscriptions per loop and channel and `UNSUBSCRIBE`s a channel from
//! pub/sub [`LINGER`] after its count reaches zero. While Redis is frozen, connections on the
//! node's one loop subscribe the channel and go away before their answers (one after
//! unsubscribing, one without), another unsubscribes and stays, and a last one subscribes and
//! stays. After SIGCONT every answer arrives; the loop must end exactly the subscriptions that
//! started. One `Unsubscribe` too many (before the fix: the one a `/ws` sent at its
//! `unsubscribe`, then the loop's own for the late answer to the removed connection) took the
//! staying subscriber's count, the node unsubscribed the channel from pub/sub after the linger,
//! and messages published after that never reached it. Here they must.
//!
//! Time bounds detect hangs, with room for a loaded machine; they are not performance claims.

mod common;
mod redis_support;

use std::thread;
use std::time::Duration;

use common::v1::V1;
use common::*;
use pushwire::ws::OpCode;
use redis_support::RedisServer;
use serde_json::json;

const CHANNEL: &str = "races";
/// The broker's `Limits::unsubscribe_linger` (3 s by default, no flag): a channel left with no
/// subscriber on the node is unsubscribed from pub/sub this long after.
const LINGER: Duration = Duration::from_secs(3);
/// `--redis-request-timeout`: far longer than the freeze, so no request fails meanwhile (the
/// answers are late, not refused).
const REQUEST_TIMEOUT: &str = "20";
/// Longest wait for a state the node reaches by itself.
const SETTLE: Duration = Duration::from_secs(20);

fn node(redis: &RedisServer) -> Server {
    Server::start(&[
        "--redis",
        &format!("redis://127.0.0.1:{}", redis.port),
        "--threads",
        "1",
        "--redis-request-timeout",
        REQUEST_TIMEOUT,
    ])
}

fn readyz_until_ready(server: &Server) {
    common::readyz_until(server, 200, SETTLE);
}

/// A `/ws` client that subscribed the channel (answer still to come) and, if `unsubscribe`,
/// unsubscribed it (applied at once; its `ok` follows the subscribe's, as replies keep the
/// order of the commands).
fn ws_subscribing(server: &Server, unsubscribe: bool) -> V1 {
    let mut ws = V1::connect(server, None);
    ws.send(&json!({"type":"subscribe","channel":CHANNEL,"req":1}));
    if unsubscribe {
        ws.send(&json!({"type":"unsubscribe","channel":CHANNEL,"req":2}));
    }
    ws
}

/// Closes a WebSocket (close handshake, then EOF), so the loop removes its connection.
fn close(mut ws: V1) {
    ws.ws.send(OpCode::Close, &1000u16.to_be_bytes());
    let (code, _) = ws.close_frame();
    assert_eq!(code, 1000);
    while ws.ws.recv().is_some() {}
}

#[test]
fn redis_races_late_answers_to_gone_and_unsubscribed_connections_leave_a_staying_subscriber_subscribed() {
    let redis = RedisServer::start();
    let node = node(&redis);
    readyz_until_ready(&node);
    // The channel exists and is delivered before the freeze.
    publish(&node, CHANNEL, "before");

    redis.freeze();
    // Removed after unsubscribing: its Unsubscribe waited for the answer and went with it.
    close(ws_subscribing(&node, true));
    // Removed with its subscribe unanswered.
    close(ws_subscribing(&node, false));
    // Unsubscribed and staying: its Unsubscribe waits for the answer.
    let mut stays_unsubscribed = ws_subscribing(&node, true);
    // The subscriber that stays: its response head waits for its subscribe's answer.
    let addr = node.addr;
    let subscriber = thread::spawn(move || {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        SseClient::on(stream, &format!("/channels/{CHANNEL}"), "")
    });
    // Every request above reached the node's loop, which submitted it to the broker.
    thread::sleep(Duration::from_millis(500));
    redis.thaw();

    let mut subscriber = subscriber.join().expect("the subscriber's head and opening cursor");
    for req in [1, 2] {
        // The subscribe's late answer, then the unsubscribe's ok held behind it.
        let ok = stays_unsubscribed.reply();
        assert_eq!((ok["type"].as_str(), ok["req"].as_i64()), (Some("ok"), Some(req)), "{ok}");
    }
    // Past the linger: had the loop ended one subscription too many, the channel is no longer
    // subscribed on pub/sub now.
    thread::sleep(LINGER + Duration::from_millis(1500));
    for i in 0..3 {
        let body = format!("after-{i}");
        publish(&node, CHANNEL, &body);
        let event = subscriber.next_event(Duration::from_secs(5));
        assert_eq!(
            event.as_ref().map(|e| e.data.as_str()),
            Some(body.as_str()),
            "the staying subscriber lost its channel: {event:?}"
        );
    }
    assert!(stays_unsubscribed.others_is_empty());
}
