//! A stalled Redis (issue 14, "Faults": "A slow Redis must not stall the event loops (bounded
//! queues, timeouts, counted)"): two `pushwire serve --redis` nodes on one real `redis-server`
//! that is frozen with SIGSTOP. The TCP connections stay open and nothing answers, which is
//! what a Redis stuck in a long `KEYS *`, a fork on a huge dataset or a paused VM looks like,
//! and unlike a killed server no connection is refused or reset.
//!
//! While Redis is frozen: `/healthz` answers 200, `/readyz` 503 once the broker gave up on the
//! connections (`--redis-request-timeout`), `/echo` echoes, `/metrics` answers with the timeout
//! counted and the connections down; every subscriber stays connected; every publish (HTTP and
//! WebSocket) gets an answer, 503 / an `unavailable` error; a publish flood is refused at the
//! pipeline bound `--redis-max-pending` (`pushwire_redis_commands_in_flight` never above it),
//! not buffered. After SIGCONT: both nodes reconnect, publishes succeed, and every subscriber
//! (WebSocket and SSE, on both nodes) gets the same sequence: consecutive offsets in one epoch,
//! no gap (Redis lost nothing), every acknowledged publish once and in order.
//!
//! And with the pipeline full on a live Redis (frozen, then thawed before the timeout): each
//! WebSocket reply names its own command, a refused publish never takes the answer (and the
//! cursor) of an earlier publish of the same connection still in the pipeline.
//!
//! And with Redis's script cache flushed again and again (`SCRIPT FLUSH`) under a pipelined
//! WebSocket publisher: publishes re-sent after `NOSCRIPT` keep every reply in its place.
//!
//! And a pub/sub connection alone stalled (`RedisProxy` stops forwarding it): noticed within
//! the bounds README "Many nodes" documents, then caught up after the reconnect.
//!
//! Time bounds here detect hangs, with room for a loaded machine; they are not performance
//! claims. Redis is killed by its guard (SIGKILL also ends a stopped process) and the nodes by
//! theirs, even when an assertion fails.

mod common;
mod redis_support;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::v1::V1;
use common::*;
use pushwire::ws::OpCode;
use redis_support::RedisServer;
use serde_json::{json, Value};

/// `--redis-request-timeout`: how long the broker waits for Redis.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// `--redis-max-pending`: the pipeline bound.
const MAX_PENDING: u64 = 16;
/// Publishes sent over WebSocket at once while Redis is frozen: well past the pipeline bound.
const FLOOD_PER_CONNECTION: usize = 40;
/// An answer that takes longer than this is a hang: the design answers a publish within one
/// request timeout (when it waited in the pipeline) or at once, and a page at once.
const HANG: Duration = Duration::from_secs(3 * 3 + 10);
/// Longest wait for a state the broker reaches by itself (a reconnect after backoff).
const SETTLE: Duration = Duration::from_secs(40);
const CHANNEL: &str = "stall";

fn node(redis: &RedisServer) -> Server {
    Server::start(&[
        "--redis",
        &format!("redis://127.0.0.1:{}", redis.port),
        "--threads",
        "1",
        "--redis-request-timeout",
        &REQUEST_TIMEOUT.as_secs().to_string(),
        "--redis-max-pending",
        &MAX_PENDING.to_string(),
    ])
}

/// `GET path` on a new connection; the answer and how long it took.
fn get(server: &Server, path: &str) -> (Response, Duration) {
    let start = Instant::now();
    let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let res = exchange(server, raw.as_bytes());
    (res, start.elapsed())
}

fn metrics(server: &Server) -> String {
    let (res, took) = get(server, "/metrics");
    assert_eq!(res.status, 200);
    assert!(took < HANG, "/metrics took {took:?}");
    res.text()
}

const COMMAND_UP: &str = "pushwire_redis_up{connection=\"command\"}";
const PUBSUB_UP: &str = "pushwire_redis_up{connection=\"pubsub\"}";
const TIMEOUTS: &str = "pushwire_redis_timeouts_total";
const IN_FLIGHT: &str = "pushwire_redis_commands_in_flight";

/// Waits (bounded) until the node's `/metrics` satisfies `check`.
fn metrics_until(server: &Server, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + SETTLE;
    loop {
        let text = metrics(server);
        if check(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never {what}:\n{text}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until `/readyz` answers `status`; each answer itself within [`HANG`].
fn readyz_until(server: &Server, status: u16) -> Response {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (res, took) = get(server, "/readyz");
        assert!(took < HANG, "/readyz took {took:?}");
        if res.status == status {
            return res;
        }
        assert!(Instant::now() < deadline, "/readyz never {status}: {} {}", res.status, res.text());
        thread::sleep(Duration::from_millis(100));
    }
}

/// `POST /channels/stall`: the status, the body, and how long the answer took.
fn publish_timed(server: &Server, body: &str) -> (u16, String, Duration) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(HANG + Duration::from_secs(5))).unwrap();
    let raw = publish_request(CHANNEL, body).replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1);
    stream.write_all(raw.as_bytes()).unwrap();
    let res = read_response(&mut BufReader::new(stream), false);
    (res.status, res.text(), start.elapsed())
}

/// One item a subscriber received.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Message { id: String, data: String },
    Gap { next: String },
}

/// What a subscriber thread saw: its items, and whether its connection ended early.
#[derive(Default)]
struct Seen {
    items: Mutex<Vec<Got>>,
    closed: AtomicBool,
}

impl Seen {
    fn messages(&self) -> usize {
        self.items.lock().unwrap().iter().filter(|g| matches!(g, Got::Message { .. })).count()
    }
}

fn done(got: &Got) -> bool {
    matches!(got, Got::Message { data, .. } if data == "end")
}

/// A `/ws` command-mode subscriber that answers pings (so the server's heartbeat never closes
/// it for silence) and records messages and gaps until `end`.
fn ws_subscriber(server: &Server) -> (Arc<Seen>, thread::JoinHandle<()>) {
    let mut v1 = V1::connect(server, None);
    let ok = v1.ask(json!({"type":"subscribe","channel":CHANNEL,"req":"s"}));
    assert_eq!(ok["type"], "ok", "{ok}");
    // Generous: the stall leaves the channel silent for a while.
    v1.ws.stream.set_read_timeout(Some(SETTLE * 3)).unwrap();
    let seen = Arc::new(Seen::default());
    let out = seen.clone();
    let handle = thread::spawn(move || loop {
        let (op, payload) = match v1.ws.recv() {
            Some(frame) => frame,
            None => {
                out.closed.store(true, Ordering::SeqCst);
                return;
            }
        };
        match op {
            OpCode::Ping => v1.ws.send(OpCode::Pong, &payload),
            OpCode::Text => {
                let frame: Value = serde_json::from_slice(&payload).unwrap();
                let got = match (frame["type"].as_str(), frame["id"].as_str()) {
                    (Some("gap"), _) => Got::Gap { next: frame["next"].as_str().unwrap().into() },
                    (None, Some(id)) => {
                        Got::Message { id: id.into(), data: frame["data"].as_str().unwrap().into() }
                    }
                    _ => continue, // open
                };
                let end = done(&got);
                out.items.lock().unwrap().push(got);
                if end {
                    return;
                }
            }
            OpCode::Close => {
                out.closed.store(true, Ordering::SeqCst);
                return;
            }
            _ => {}
        }
    });
    (seen, handle)
}

/// An SSE subscriber recording messages and gaps until `end`.
fn sse_subscriber(server: &Server) -> (Arc<Seen>, thread::JoinHandle<()>) {
    let mut sse = SseClient::connect(server, &format!("/channels/{CHANNEL}"), "");
    let seen = Arc::new(Seen::default());
    let out = seen.clone();
    let handle = thread::spawn(move || loop {
        let Some(event) = sse.next_event(SETTLE * 3) else {
            out.closed.store(true, Ordering::SeqCst);
            return;
        };
        let id = event.id.expect("every event has an id");
        let got = match event.event.as_deref() {
            Some("gap") => Got::Gap { next: id },
            None | Some("message") => Got::Message { id, data: event.data },
            Some(other) => panic!("unexpected event {other}"),
        };
        let end = done(&got);
        out.items.lock().unwrap().push(got);
        if end {
            return;
        }
    });
    (seen, handle)
}

fn offset(id: &str) -> u64 {
    id.rsplit(':').next().unwrap().parse().unwrap()
}

fn epoch(id: &str) -> &str {
    id.split(':').next().unwrap()
}

/// A WebSocket echo round trip on `/echo`, within [`HANG`].
fn echo(server: &Server, text: &str) {
    let start = Instant::now();
    let (mut ws, head) = RawWs::connect(server, "/echo", &[]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    ws.send(OpCode::Text, text.as_bytes());
    assert_eq!(ws.recv_text(), text);
    assert!(start.elapsed() < HANG, "/echo took {:?}", start.elapsed());
}

#[test]
fn redis_stall_sigstop_keeps_loops_serving_bounds_the_pipeline_and_recovers_in_order() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    readyz_until(&a, 200);
    readyz_until(&b, 200);
    let subscribers = [ws_subscriber(&a), sse_subscriber(&a), ws_subscriber(&b), sse_subscriber(&b)];

    // Before the stall: messages flow from both nodes to all four subscribers.
    let mut acked: Vec<(String, String)> = Vec::new();
    for i in 0..6 {
        let body = format!("before-{i}");
        acked.push((publish(if i % 2 == 0 { &a } else { &b }, CHANNEL, &body), body));
    }
    let deadline = Instant::now() + SETTLE;
    while subscribers.iter().any(|(seen, _)| seen.messages() < 6) {
        assert!(Instant::now() < deadline, "the messages before the stall did not arrive");
        thread::sleep(Duration::from_millis(20));
    }
    let before = metrics(&a);
    assert_eq!(sample(&before, COMMAND_UP), 1, "{before}");
    let timeouts_before = sample(&before, TIMEOUTS);

    // Freeze Redis: its sockets stay open, nothing is answered.
    redis.freeze();

    // A flood of WebSocket publishes on node A. The first connection's burst fills the
    // pipeline (MAX_PENDING commands: its publishes and the broker's own); its publishes
    // beyond the bound are refused, answered after its earlier ones (each connection's answers
    // come in the order of its commands). The second connection, with nothing in flight, is
    // then refused at once (`unavailable`) while the connection to Redis still counts as up.
    let burst = |n: usize| {
        let mut burst = Vec::new();
        for i in 0..FLOOD_PER_CONNECTION {
            let command = json!({"type":"publish","channel":CHANNEL,"data":format!("flood-{n}-{i}"),"req":i});
            let text = command.to_string();
            pushwire::ws::frame::encode_frame(
                true,
                OpCode::Text,
                text.as_bytes(),
                Some([1, 2, 3, 4]),
                &mut burst,
            );
        }
        burst
    };
    let flood_total = 2 * FLOOD_PER_CONNECTION;
    let flood_start = Instant::now();
    // (connection, reply, when)
    let replies: Arc<Mutex<Vec<(usize, Value, Duration)>>> = Arc::default();
    let mut readers = Vec::new();
    for n in 0..2 {
        let mut flood = V1::connect(&a, None);
        flood.ws.stream.write_all(&burst(n)).unwrap();
        if n == 0 {
            metrics_until(&a, "a full pipeline", |t| sample(t, IN_FLIGHT) == MAX_PENDING);
        }
        let replies = replies.clone();
        readers.push(thread::spawn(move || {
            flood.ws.stream.set_read_timeout(Some(HANG + Duration::from_secs(5))).unwrap();
            for _ in 0..FLOOD_PER_CONNECTION {
                let reply = flood.reply();
                replies.lock().unwrap().push((n, reply, flood_start.elapsed()));
            }
        }));
    }
    let second = |replies: &[(usize, Value, Duration)]| replies.iter().filter(|(n, ..)| *n == 1).count();
    let full = loop {
        let text = metrics(&a);
        if second(&replies.lock().unwrap()) == FLOOD_PER_CONNECTION
            || sample(&text, TIMEOUTS) != timeouts_before
        {
            break text;
        }
        thread::sleep(Duration::from_millis(20));
    };
    // The pipeline is full, not over, and the connection has not timed out yet: the refusals
    // came from the bound, not from a lost connection.
    assert_eq!(
        sample(&full, TIMEOUTS),
        timeouts_before,
        "the refusals did not come before the request timeout (or the flood reached the broker \
         after it: machine too loaded?): {:?}\n{full}",
        replies.lock().unwrap()
    );
    assert_eq!(sample(&full, IN_FLIGHT), MAX_PENDING, "the pipeline at its bound:\n{full}");
    // The publishes that got into the pipeline are answered when the request timeout closes
    // the connection; meanwhile the gauge never passes the bound.
    let mut max_in_flight = 0;
    while replies.lock().unwrap().len() < flood_total {
        assert!(flood_start.elapsed() < HANG, "flood publishes unanswered after {HANG:?}");
        max_in_flight = max_in_flight.max(sample(&metrics(&a), IN_FLIGHT));
        thread::sleep(Duration::from_millis(20));
    }
    for reader in readers {
        reader.join().unwrap();
    }
    let replies = std::mem::take(&mut *replies.lock().unwrap());
    assert!(max_in_flight <= MAX_PENDING, "{max_in_flight} commands in flight");
    for (_, reply, took) in &replies {
        assert_eq!(reply["type"], "error", "every flood publish fails while Redis is frozen: {reply}");
        assert!(*took < HANG, "a flood publish answered after {took:?}");
    }
    assert_eq!(replies.len(), flood_total);

    // The broker gives up on the frozen connections: /readyz 503 on both nodes, the timeout
    // counted, the connections shown down.
    for node in [&a, &b] {
        let res = readyz_until(node, 503);
        assert!(res.text().contains("not ready"), "{}", res.text());
        metrics_until(node, "the command connection timed out and the pub/sub one too", |t| {
            sample(t, COMMAND_UP) == 0 && sample(t, PUBSUB_UP) == 0 && sample(t, TIMEOUTS) >= 1
        });
    }
    let after_stall = metrics(&a);
    assert!(sample(&after_stall, TIMEOUTS) > timeouts_before, "{after_stall}");
    // Every flood publish is counted as failed (the refusals and the timed-out ones).
    assert!(sample(&after_stall, "pushwire_redis_failed_total") >= flood_total as u64, "{after_stall}");

    // The event loops keep serving: liveness, pages, the echo WebSocket.
    for node in [&a, &b] {
        let (res, took) = get(node, "/healthz");
        assert_eq!(res.status, 200);
        assert!(took < HANG, "/healthz took {took:?}");
        echo(node, "still here");
    }

    // Publishes while frozen: a clear 503 with the reason over HTTP, an error reply over
    // WebSocket, never a hang (a few at once on each node).
    for (n, node) in [&a, &b].into_iter().enumerate() {
        for i in 0..4 {
            let (status, text, took) = publish_timed(node, &format!("frozen-{n}-{i}"));
            assert_eq!(status, 503, "{text}");
            assert!(text.contains("redis"), "the reason names Redis: {text}");
            assert!(took < HANG, "a publish answered after {took:?}");
        }
        let mut v1 = V1::connect(node, None);
        let start = Instant::now();
        let reply = v1.ask(json!({"type":"publish","channel":CHANNEL,"data":"frozen-ws","req":"p"}));
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("unavailable")),
            "{reply}"
        );
        assert!(start.elapsed() < HANG, "a WebSocket publish answered after {:?}", start.elapsed());
    }
    for (i, (seen, _)) in subscribers.iter().enumerate() {
        assert!(!seen.closed.load(Ordering::SeqCst), "subscriber {i} was disconnected by the stall");
    }

    // Thaw: both nodes reconnect (backoff), publishes succeed again.
    redis.thaw();
    for node in [&a, &b] {
        readyz_until(node, 200);
        let text = metrics_until(node, "a reconnect", |t| {
            sample(t, COMMAND_UP) == 1
                && sample(t, PUBSUB_UP) == 1
                && sample(t, "pushwire_redis_reconnects_total") >= 2
        });
        assert_eq!(sample(&text, "pushwire_redis_epoch_changes_total"), 0, "Redis lost nothing: {text}");
    }
    for i in 0..6 {
        let body = format!("after-{i}");
        acked.push((publish(if i % 2 == 0 { &b } else { &a }, CHANNEL, &body), body));
    }
    acked.push((publish(&a, CHANNEL, "end"), "end".into()));

    let mut sequences = Vec::new();
    for (i, (seen, handle)) in subscribers.into_iter().enumerate() {
        handle.join().unwrap();
        assert!(!seen.closed.load(Ordering::SeqCst), "subscriber {i} ended before `end`");
        sequences.push(seen.items.lock().unwrap().clone());
    }
    // Every subscriber: consecutive offsets in one epoch, no gap (Redis lost nothing), every
    // acknowledged publish once with its body. A publish answered 503 may still have run (its
    // command reached Redis before the broker gave up on the connection): it then shows as
    // one more message, in its place, on every subscriber alike.
    let mut by_id: HashMap<&str, &str> = HashMap::new();
    for (i, items) in sequences.iter().enumerate() {
        let mut previous: Option<&str> = None;
        for item in items {
            let Got::Message { id, data } = item else {
                panic!("subscriber {i}: a gap although Redis lost nothing: {items:?}");
            };
            if let Some(prev) = previous {
                assert_eq!(epoch(prev), epoch(id), "subscriber {i}: the epoch changed at {id}");
                assert_eq!(offset(id), offset(prev) + 1, "subscriber {i}: {prev} then {id}");
            }
            previous = Some(id);
            let seen = by_id.entry(id).or_insert(data);
            assert_eq!(seen, data, "subscriber {i}: {id} carries another message elsewhere");
        }
        for (id, body) in &acked {
            let count =
                items.iter().filter(|g| matches!(g, Got::Message { id: got, .. } if got == id)).count();
            assert_eq!(count, 1, "subscriber {i}: {id} ({body}) seen {count} times: {items:?}");
            assert_eq!(by_id.get(id.as_str()).copied(), Some(body.as_str()));
        }
        assert_eq!(items, &sequences[0], "subscriber {i} saw another sequence than subscriber 0");
    }
    let extra = sequences[0].len() - acked.len();
    eprintln!(
        "{} messages per subscriber: {} acknowledged, {extra} answered 503 but run by Redis after the thaw",
        sequences[0].len(),
        acked.len()
    );
}

/// A full pipeline on a live Redis: a frozen Redis fills it, the WebSocket publishes beyond
/// the bound are refused at once, then Redis thaws before the request timeout and answers the
/// ones in the pipeline. Each reply must name its own command (`req`): the refusals must not
/// overtake the earlier publishes of the same connection, which succeed.
#[test]
fn redis_stall_a_refused_publish_never_takes_the_answer_of_an_earlier_one() {
    const SENT: usize = 40;
    let redis = RedisServer::start();
    let a = Server::start(&[
        "--redis",
        &format!("redis://127.0.0.1:{}", redis.port),
        "--threads",
        "1",
        // Long enough for the thaw to come before it.
        "--redis-request-timeout",
        "30",
        "--redis-max-pending",
        &MAX_PENDING.to_string(),
    ]);
    readyz_until(&a, 200);
    let first = publish(&a, CHANNEL, "first");
    redis.freeze();
    let mut v1 = V1::connect(&a, None);
    let burst: Vec<Value> = (0..SENT)
        .map(|i| json!({"type":"publish","channel":CHANNEL,"data":format!("p-{i}"),"req":i}))
        .collect();
    v1.send_in_one_write(&burst);
    metrics_until(&a, "a full pipeline", |t| sample(t, IN_FLIGHT) == MAX_PENDING);
    // Let the refusals reach the connection before Redis answers anything.
    thread::sleep(Duration::from_millis(300));
    redis.thaw();
    v1.ws.stream.set_read_timeout(Some(SETTLE)).unwrap();
    let replies: Vec<Value> = (0..SENT).map(|_| v1.reply()).collect();
    // What Redis holds, from the first message on.
    let history = poll(&a, CHANNEL, Some(&first)).text();
    let stored: Vec<String> = data_values(&history);
    let ids: Vec<String> =
        history.split("\"id\":\"").skip(1).map(|s| s[..s.find('"').unwrap()].to_string()).collect();
    let by_id: HashMap<&str, &str> =
        ids.iter().map(String::as_str).zip(stored.iter().map(String::as_str)).collect();
    let (mut ok, mut refused) = (0, 0);
    for reply in &replies {
        let req = reply["req"].as_u64().unwrap_or_else(|| panic!("{reply}"));
        match reply["type"].as_str() {
            Some("ok") => {
                ok += 1;
                let id = reply["id"].as_str().unwrap();
                assert_eq!(
                    by_id.get(id).copied(),
                    Some(format!("p-{req}").as_str()),
                    "reply {reply} names another publish's message: {history}"
                );
            }
            Some("error") => {
                refused += 1;
                assert!(
                    !stored.contains(&format!("p-{req}")),
                    "req {req} answered {reply} but stored: {history}"
                );
            }
            _ => panic!("{reply}"),
        }
    }
    assert!(ok >= 1 && refused >= SENT - MAX_PENDING as usize, "{ok} ok, {refused} refused: {replies:?}");
}

/// Redis loses its script cache (`SCRIPT FLUSH`, as a restart or a failover also does) again
/// and again while one WebSocket connection pipelines publishes: the broker re-sends each
/// publish answered `NOSCRIPT` with `EVAL`, and later publishes of the same connection already
/// in the pipeline may run (and be answered by Redis) before it. Every ack must still come in
/// the order of the connection's publishes and name its own message, the publisher (itself
/// subscribed) is sent none of its `except_self` messages, and another subscriber gets every
/// message once, in offset order.
#[test]
fn redis_stall_script_flush_keeps_each_connections_answers_in_order() {
    const SENT: usize = 10_000;
    /// Publishes in flight on the connection (the loop refuses beyond 64).
    const WINDOW: usize = 32;
    let redis = RedisServer::start();
    let a = Server::start(&["--redis", &format!("redis://127.0.0.1:{}", redis.port), "--threads", "1"]);
    readyz_until(&a, 200);
    let (seen, subscriber) = ws_subscriber(&a);

    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let stop = stop.clone();
        let mut client = redis.client();
        thread::spawn(move || {
            let mut flushes = 0u64;
            while !stop.load(Ordering::SeqCst) {
                client.call(&pushwire::redis::resp::Command::new("SCRIPT").arg("FLUSH"));
                flushes += 1;
                thread::sleep(Duration::from_micros(200));
            }
            flushes
        })
    };

    // The publisher is subscribed too, and never sent its own messages (`except_self`): the
    // broker holds a channel's deliveries while an answer of this node waits for an earlier
    // one, so the loop has each id before its message.
    let mut v1 = V1::connect(&a, None);
    let ok = v1.ask(json!({"type":"subscribe","channel":CHANNEL,"req":"s"}));
    assert_eq!(ok["type"], "ok", "{ok}");
    v1.ws.stream.set_read_timeout(Some(SETTLE)).unwrap();
    let publish = |v1: &mut V1, i: usize| {
        let data = format!("p-{i}");
        v1.send(&json!({"type":"publish","channel":CHANNEL,"data":data,"except_self":true,"req":i}));
    };
    for i in 0..WINDOW {
        publish(&mut v1, i);
    }
    let mut acks: Vec<String> = Vec::with_capacity(SENT);
    for i in 0..SENT {
        let reply = v1.reply();
        assert_eq!(
            (reply["type"].as_str(), reply["req"].as_u64()),
            (Some("ok"), Some(i as u64)),
            "reply {i} out of turn (after {} acks): {reply}",
            acks.len()
        );
        acks.push(reply["id"].as_str().unwrap().to_string());
        if i + WINDOW < SENT {
            publish(&mut v1, i + WINDOW);
        }
    }
    stop.store(true, Ordering::SeqCst);
    let flushes = flusher.join().unwrap();
    let end = v1.ask(json!({"type":"publish","channel":CHANNEL,"data":"end","req":"end"}));
    assert_eq!(end["type"], "ok", "{end}");
    assert_eq!(v1.message()["data"], "end", "the publisher got none of its except_self messages");
    subscriber.join().unwrap();
    assert!(!seen.closed.load(Ordering::SeqCst), "the subscriber ended before `end`");

    let items = seen.items.lock().unwrap().clone();
    let mut by_id: HashMap<&str, &str> = HashMap::new();
    let mut previous: Option<&str> = None;
    for item in &items {
        let Got::Message { id, data } = item else { panic!("a gap although Redis lost nothing: {items:?}") };
        if let Some(prev) = previous {
            assert_eq!(epoch(prev), epoch(id), "the epoch changed at {id}");
            assert_eq!(offset(id), offset(prev) + 1, "{prev} then {id}");
        }
        previous = Some(id);
        assert!(by_id.insert(id, data).is_none(), "{id} delivered twice");
    }
    assert_eq!(items.len(), SENT + 1, "every message once");
    for (i, id) in acks.iter().enumerate() {
        assert_eq!(by_id.get(id.as_str()).copied(), Some(format!("p-{i}").as_str()), "ack {i} names {id}");
    }
    // Acks whose message Redis stored before an earlier publish's: that one was re-sent.
    let overtaken = acks.windows(2).filter(|w| offset(&w[1]) < offset(&w[0])).count();
    eprintln!(
        "{flushes} script flushes during {SENT} publishes; {overtaken} acks overtook an earlier publish"
    );
    assert!(flushes > 0);
}

/// Waits until the node counts one more Redis timeout than `before`; how long after `since`.
fn timeout_counted(server: &Server, before: u64, since: Instant, bound: Duration) -> Duration {
    loop {
        let text = metrics(server);
        if sample(&text, TIMEOUTS) > before {
            return since.elapsed();
        }
        assert!(since.elapsed() < bound, "no timeout counted within {bound:?}:\n{text}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A subscriber's items are the messages `want`, in order, once each, with consecutive
/// offsets in one epoch and no gap.
fn assert_exactly(items: &[Got], want: &[String]) {
    let mut data = Vec::new();
    let mut previous: Option<&str> = None;
    for item in items {
        let Got::Message { id, data: d } = item else {
            panic!("a gap although Redis lost nothing: {items:?}")
        };
        if let Some(prev) = previous {
            assert_eq!(
                (epoch(prev), offset(id)),
                (epoch(id), offset(prev) + 1),
                "{prev} then {id}: {items:?}"
            );
        }
        previous = Some(id);
        data.push(d.clone());
    }
    assert_eq!(data, want);
}

/// Slack for a loaded machine on top of a documented detection bound.
const DETECTION_SLACK: Duration = Duration::from_millis(1_500);

/// A pub/sub connection stalled on its path (the proxy stops forwarding it; the command
/// connection still works) is noticed within `--redis-request-timeout` of the first publish
/// of this node to one of its channels answered on the command connection (that answer sends
/// a `PING` at once), not at the next periodic `PING` (`--redis-ping-interval 60` here); the
/// broker reconnects and the subscriber gets what was published meanwhile, once, in order.
#[test]
fn redis_stall_a_stalled_pubsub_connection_is_noticed_at_the_next_publish_answered() {
    const REQUEST: Duration = Duration::from_secs(1);
    let redis = RedisServer::start();
    let proxy = redis_support::RedisProxy::start(redis.port);
    let a = Server::start(&[
        "--redis",
        &format!("redis://127.0.0.1:{}", proxy.port),
        "--threads",
        "1",
        "--redis-request-timeout",
        "1",
        "--redis-ping-interval",
        "60",
    ]);
    readyz_until(&a, 200);
    let (seen, subscriber) = ws_subscriber(&a);
    let mut want = vec!["before".to_string()];
    publish(&a, CHANNEL, "before");
    let deadline = Instant::now() + SETTLE;
    while seen.messages() < 1 {
        assert!(Instant::now() < deadline, "the first message did not arrive");
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(proxy.pubsub_connections(), 1);
    let timeouts = sample(&metrics(&a), TIMEOUTS);

    assert_eq!(proxy.stall_pubsub(), 1);
    // Past the probes' least gap (100 ms) after the last one, that of `before`.
    thread::sleep(Duration::from_millis(200));
    let answered = Instant::now();
    for i in 0..3 {
        want.push(format!("during-{i}"));
        publish(&a, CHANNEL, &want[want.len() - 1]);
    }
    let took = timeout_counted(&a, timeouts, answered, REQUEST + DETECTION_SLACK);
    eprintln!("the stalled pub/sub connection was noticed {took:?} after the publish was answered");
    assert_eq!(seen.messages(), 1, "nothing came through the stalled connection");

    let deadline = Instant::now() + SETTLE;
    while proxy.pubsub_connections() < 2 {
        assert!(Instant::now() < deadline, "no new pub/sub connection");
        thread::sleep(Duration::from_millis(10));
    }
    readyz_until(&a, 200);
    for body in ["after", "end"] {
        want.push(body.to_string());
        publish(&a, CHANNEL, body);
    }
    subscriber.join().unwrap();
    assert!(!seen.closed.load(Ordering::SeqCst), "the subscriber ended before `end`");
    assert_exactly(&seen.items.lock().unwrap(), &want);
}

/// With no publish of this node to notice it sooner (the messages come from another node),
/// a stalled pub/sub connection is noticed within `--redis-ping-interval` +
/// `--redis-request-timeout` of the stall, and its channel is caught up after the reconnect.
#[test]
fn redis_stall_a_stalled_pubsub_connection_is_noticed_within_the_ping_interval_and_timeout() {
    const BOUND: Duration = Duration::from_secs(1 + 1);
    let redis = RedisServer::start();
    let proxy = redis_support::RedisProxy::start(redis.port);
    let a = Server::start(&[
        "--redis",
        &format!("redis://127.0.0.1:{}", proxy.port),
        "--threads",
        "1",
        "--redis-request-timeout",
        "1",
        "--redis-ping-interval",
        "1",
    ]);
    let b = node(&redis);
    readyz_until(&a, 200);
    readyz_until(&b, 200);
    let (seen, subscriber) = ws_subscriber(&a);
    let mut want = vec!["before".to_string()];
    publish(&b, CHANNEL, "before");
    let deadline = Instant::now() + SETTLE;
    while seen.messages() < 1 {
        assert!(Instant::now() < deadline, "the first message did not arrive");
        thread::sleep(Duration::from_millis(10));
    }
    let timeouts = sample(&metrics(&a), TIMEOUTS);

    let stalled = Instant::now();
    assert_eq!(proxy.stall_pubsub(), 1);
    for i in 0..3 {
        want.push(format!("during-{i}"));
        publish(&b, CHANNEL, &want[want.len() - 1]);
    }
    let took = timeout_counted(&a, timeouts, stalled, BOUND + DETECTION_SLACK);
    eprintln!("the stalled pub/sub connection was noticed {took:?} after it stalled");

    let deadline = Instant::now() + SETTLE;
    while proxy.pubsub_connections() < 2 {
        assert!(Instant::now() < deadline, "no new pub/sub connection");
        thread::sleep(Duration::from_millis(10));
    }
    readyz_until(&a, 200);
    for body in ["after", "end"] {
        want.push(body.to_string());
        publish(&b, CHANNEL, body);
    }
    subscriber.join().unwrap();
    assert!(!seen.closed.load(Ordering::SeqCst), "the subscriber ended before `end`");
    assert_exactly(&seen.items.lock().unwrap(), &want);
}
