//! The Redis broker (`pushwire::net::redis_broker`) against a real `redis-server`: publishes
//! and deliveries in order, two brokers ("nodes") on one Redis handing out the same cursors, a
//! subscriber resuming on another node, subscribe-then-read-then-merge while publishes flow,
//! repair after `CLIENT KILL TYPE pubsub`, a gap after a Redis restart without persistence and
//! after history eviction, 503 while Redis is down, and a clear error when it is unreachable.
//!
//! Each test starts its own server on a free loopback port and its own brokers.

mod redis_support;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pushwire::hub::{ChannelName, Cursor, Payload, Replay, Since, SinkId};
use pushwire::net::redis_broker::{
    Broker, BrokerClient, BrokerConfig, BrokerError, BrokerEvent, BrokerOutbox, BrokerRequest, Limits,
};
use pushwire::protocol::Transport;
use pushwire::redis::keys::Namespace;
use pushwire::redis::resp::{Command, Value};
use pushwire::redis::url::RedisUrl;
use redis_support::RedisServer;

const WAIT: Duration = Duration::from_secs(20);

/// The loops' side in these tests: every event pushed, in order, per sink.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(SinkId, BrokerEvent)>>,
    changed: Condvar,
}

impl BrokerOutbox for Recorder {
    fn deliver(&self, sink: SinkId, events: Vec<BrokerEvent>) {
        let mut all = self.events.lock().unwrap();
        all.extend(events.into_iter().map(|e| (sink, e)));
        self.changed.notify_all();
    }

    // These tests make no server API calls.
    fn disconnect(&self, _: Arc<pushwire::hub::backend::Disconnect>) {}
}

impl Recorder {
    /// Waits until `found` finds something in the events (it may remove what it takes).
    fn wait<T>(&self, what: &str, mut found: impl FnMut(&mut Vec<(SinkId, BrokerEvent)>) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        let mut events = self.events.lock().unwrap();
        loop {
            if let Some(t) = found(&mut events) {
                return t;
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("timed out: {what}"));
            events = self.changed.wait_timeout(events, left).unwrap().0;
        }
    }

    fn published(&self, token: u64) -> Result<Cursor, BrokerError> {
        self.wait(&format!("publish {token}"), |events| {
            let i = events
                .iter()
                .position(|(_, e)| matches!(e, BrokerEvent::Published { token: t, .. } if *t == token))?;
            match events.remove(i).1 {
                BrokerEvent::Published { result, .. } => Some(result),
                _ => unreachable!(),
            }
        })
    }

    fn subscribed(&self, token: u64) -> Result<Replay, BrokerError> {
        self.wait(&format!("subscribe {token}"), |events| {
            let i = events
                .iter()
                .position(|(_, e)| matches!(e, BrokerEvent::Subscribed { token: t, .. } if *t == token))?;
            match events.remove(i).1 {
                BrokerEvent::Subscribed { result, .. } => Some(result),
                _ => unreachable!(),
            }
        })
    }

    fn read(&self, token: u64) -> Result<Replay, BrokerError> {
        self.wait(&format!("read {token}"), |events| {
            let i = events
                .iter()
                .position(|(_, e)| matches!(e, BrokerEvent::Read { token: t, .. } if *t == token))?;
            match events.remove(i).1 {
                BrokerEvent::Read { result, .. } => Some(result),
                _ => unreachable!(),
            }
        })
    }

    /// Waits for `count` deliveries to `sink` and returns them (cursor, text), leaving them.
    fn deliveries(&self, sink: SinkId, count: usize) -> Vec<(Cursor, String)> {
        self.wait(&format!("{count} deliveries"), |events| {
            let got: Vec<(Cursor, String)> = events
                .iter()
                .filter(|(s, _)| *s == sink)
                .filter_map(|(_, e)| match e {
                    BrokerEvent::Delivery(m) => Some((m.id, body(&m.payload))),
                    _ => None,
                })
                .collect();
            (got.len() >= count).then_some(got)
        })
    }
}

fn body(payload: &Payload) -> String {
    match payload {
        Payload::Text(text) => text.to_string(),
        Payload::Binary(bytes) => format!("{bytes:?}"),
    }
}

fn channel(name: &str) -> ChannelName {
    ChannelName::parse(name).unwrap()
}

fn sink(index: u8) -> SinkId {
    SinkId::new(index).unwrap()
}

fn fast_limits() -> Limits {
    Limits {
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        unsubscribe_linger: Duration::from_millis(200),
        info_interval: Duration::from_millis(200),
        ping_interval: Duration::from_millis(200),
        request_timeout: Duration::from_secs(3),
        ..Limits::default()
    }
}

fn config(port: u16, node: &str, max_history_messages: usize) -> BrokerConfig {
    BrokerConfig {
        url: RedisUrl::parse(&format!("redis://127.0.0.1:{port}")).unwrap(),
        tls: Default::default(),
        pubsub_shards: 1,
        namespace: Namespace::default(),
        history_ttl: Duration::from_secs(300),
        max_history_messages,
        node_name: node.into(),
        node_id: 1 + node.len() as u64,
        shard_index: 0,
        shard_count: 1,
        limits: fast_limits(),
    }
}

struct Node {
    /// Stopped when the node is dropped.
    _broker: Broker,
    client: BrokerClient,
    events: Arc<Recorder>,
}

fn node(server: &RedisServer, name: &str) -> Node {
    node_with(server, name, 1_000)
}

fn node_with(server: &RedisServer, name: &str, max_history_messages: usize) -> Node {
    let events = Arc::new(Recorder::default());
    let broker = Broker::start(config(server.port, name, max_history_messages), events.clone()).unwrap();
    let client = broker.client();
    Node { _broker: broker, client, events }
}

impl Node {
    fn publish(&self, token: u64, channel_name: &str, text: &str) {
        self.client
            .submit(BrokerRequest::Publish {
                sink: sink(0),
                token,
                channel: channel(channel_name),
                event: None,
                payload: Payload::Text(Arc::from(text)),
            })
            .unwrap();
    }

    fn subscribe(
        &self,
        to: SinkId,
        token: u64,
        channel_name: &str,
        since: Since,
    ) -> Result<Replay, BrokerError> {
        self.client
            .submit(BrokerRequest::Subscribe {
                sink: to,
                token,
                channel: channel(channel_name),
                since,
                transport: Transport::Sse,
                member: None,
            })
            .unwrap();
        self.events.subscribed(token)
    }
}

fn offsets(items: &[(Cursor, String)]) -> Vec<u64> {
    items.iter().map(|(c, _)| c.offset).collect()
}

#[test]
fn redis_broker_publishes_and_delivers_in_order() {
    let server = RedisServer::start();
    let a = node(&server, "a");
    let start = a.subscribe(sink(1), 1, "news", Since::Tail).unwrap();
    assert!(start.messages.is_empty() && !start.gap);
    assert_eq!(start.next.offset, 0, "a new channel starts at offset 0");
    for i in 1..=200 {
        a.publish(1000 + i, "news", &format!("m{i}"));
    }
    let cursors: Vec<Cursor> = (1..=200).map(|i| a.events.published(1000 + i).unwrap()).collect();
    assert_eq!(cursors.iter().map(|c| c.offset).collect::<Vec<_>>(), (1..=200).collect::<Vec<_>>());
    assert!(cursors.iter().all(|c| c.epoch == start.next.epoch));
    let got = a.events.deliveries(sink(1), 200);
    assert_eq!(got.len(), 200, "once each");
    assert_eq!(
        got.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        cursors,
        "in order, with the published cursors"
    );
    assert!(got.iter().enumerate().all(|(i, (_, text))| *text == format!("m{}", i + 1)));
    assert!(a.events.deliveries(sink(0), 0).is_empty(), "only the subscribed sink gets deliveries");
    let stats = a.client.stats();
    assert!(stats.command_up.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(stats.published.load(std::sync::atomic::Ordering::Relaxed), 200);
}

#[test]
fn redis_broker_two_nodes_share_channels_and_cursors() {
    let server = RedisServer::start();
    let (a, b) = (node(&server, "a"), node(&server, "b"));
    a.subscribe(sink(0), 1, "shared", Since::Tail).unwrap();
    b.subscribe(sink(0), 1, "shared", Since::Tail).unwrap();
    for i in 1..=100u64 {
        let publisher = if i % 2 == 0 { &a } else { &b };
        publisher.publish(i, "shared", &format!("s{i}"));
    }
    let mut published = Vec::new();
    for i in 1..=100u64 {
        let publisher = if i % 2 == 0 { &a } else { &b };
        published.push(publisher.events.published(i).unwrap());
    }
    let on_a = a.events.deliveries(sink(0), 100);
    let on_b = b.events.deliveries(sink(0), 100);
    assert_eq!(on_a, on_b, "both nodes deliver the same messages with the same cursors, in the same order");
    assert_eq!(offsets(&on_a), (1..=100).collect::<Vec<_>>());
    let mut sorted = published.clone();
    sorted.sort_by_key(|c| c.offset);
    assert_eq!(
        on_a.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        sorted,
        "the cursors the publishers were given"
    );
}

#[test]
fn redis_broker_subscriber_resumes_on_another_node_with_its_cursor() {
    let server = RedisServer::start();
    let (a, b) = (node(&server, "a"), node(&server, "b"));
    for i in 1..=10 {
        a.publish(i, "resume", &format!("r{i}"));
    }
    let cursors: Vec<Cursor> = (1..=10).map(|i| a.events.published(i).unwrap()).collect();
    // A client saw up to 4 on node A, then resumes on node B.
    let replay = b.subscribe(sink(2), 50, "resume", Since::After(cursors[3])).unwrap();
    assert!(!replay.gap);
    assert_eq!(replay.messages.iter().map(|m| m.id).collect::<Vec<_>>(), cursors[4..].to_vec());
    assert_eq!(replay.next, cursors[9]);
    a.publish(11, "resume", "r11");
    let eleven = a.events.published(11).unwrap();
    let live = b.events.deliveries(sink(2), 1);
    assert_eq!(live, vec![(eleven, "r11".to_string())], "then live, from where the replay ended");
    // A plain read on node A with node B's cursor.
    a.client
        .submit(BrokerRequest::Read {
            sink: sink(0),
            token: 99,
            channel: channel("resume"),
            since: Since::After(cursors[7]),
            max_messages: 100,
        })
        .unwrap();
    let read = a.events.read(99).unwrap();
    assert_eq!(read.messages.iter().map(|m| m.id.offset).collect::<Vec<_>>(), vec![9, 10, 11]);
}

/// Subscribe first, then read, then merge: a subscriber joining while another node publishes
/// gets, from its replay and the deliveries after the answer (skipping those at or before the
/// replay's `next`, as the feeds do), every message after its cursor exactly once, in order.
#[test]
fn redis_broker_subscribe_while_publishing_misses_nothing() {
    const MESSAGES: u64 = 2_000;
    let server = RedisServer::start();
    let (a, b) = (node(&server, "a"), node(&server, "b"));
    b.publish(1, "merge", "m1");
    let first = b.events.published(1).unwrap();
    let publisher = std::thread::spawn(move || {
        for i in 2..=MESSAGES {
            b.publish(i, "merge", &format!("m{i}"));
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for i in 2..=MESSAGES {
            b.events.published(i).unwrap();
        }
        b
    });
    std::thread::sleep(Duration::from_millis(30));
    a.client
        .submit(BrokerRequest::Subscribe {
            sink: sink(3),
            token: 7,
            channel: channel("merge"),
            since: Since::After(first),
            transport: Transport::Sse,
            member: None,
        })
        .unwrap();
    // The answer, and the deliveries to its sink pushed before it.
    let (replay, before) = a.events.wait("the subscribe answer", |events| {
        let i = events.iter().position(|(_, e)| matches!(e, BrokerEvent::Subscribed { .. }))?;
        let earlier: Vec<(SinkId, BrokerEvent)> = events.drain(..=i).collect();
        let mut earlier = earlier.into_iter().rev();
        let Some((_, BrokerEvent::Subscribed { result, .. })) = earlier.next() else { unreachable!() };
        Some((result.unwrap(), earlier.collect::<Vec<_>>()))
    });
    assert!(!replay.gap);
    for (_, event) in before {
        if let BrokerEvent::Delivery(m) = event {
            assert!(
                m.id.offset <= replay.next.offset,
                "{:?} went out before the answer ending at {:?}",
                m.id,
                replay.next
            );
        }
    }
    let mut seen: Vec<u64> = replay.messages.iter().map(|m| m.id.offset).collect();
    let mut cursor = replay.next;
    let _b = publisher.join().unwrap();
    // The events after the answer (the recorder removed it): deliveries to sink 3 after it.
    let events = a.events.wait("all deliveries", |events| {
        let last = events.iter().rev().find_map(|(s, e)| match e {
            BrokerEvent::Delivery(m) if *s == sink(3) => Some(m.id.offset),
            _ => None,
        });
        (last == Some(MESSAGES)).then(|| std::mem::take(events))
    });
    // Deliveries at or before `next` are skipped by the feed.
    for (_, event) in events {
        if let BrokerEvent::Delivery(m) = event {
            if m.id.epoch == cursor.epoch && m.id.offset <= cursor.offset {
                continue;
            }
            assert_eq!(m.id.offset, cursor.offset + 1, "no hole after {cursor:?}");
            seen.push(m.id.offset);
            cursor = m.id;
        }
    }
    assert_eq!(seen, (2..=MESSAGES).collect::<Vec<_>>());
}

#[test]
fn redis_broker_pubsub_killed_while_publishing_loses_nothing() {
    const MESSAGES: u64 = 1_500;
    let server = RedisServer::start();
    let (a, b) = (node(&server, "a"), node(&server, "b"));
    a.subscribe(sink(0), 1, "repair", Since::Tail).unwrap();
    let publisher = std::thread::spawn(move || {
        for i in 1..=MESSAGES {
            b.publish(i, "repair", &format!("k{i}"));
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for i in 1..=MESSAGES {
            b.events.published(i).unwrap();
        }
        b
    });
    let mut killer = server.client();
    let mut kills = 0;
    for target in [200, 700] {
        a.events.deliveries(sink(0), target);
        let killed = killer.call(&Command::new("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"));
        assert!(matches!(killed, Value::Integer(n) if n >= 1), "{killed:?}");
        kills += 1;
    }
    let _b = publisher.join().unwrap();
    let got = a.events.deliveries(sink(0), MESSAGES as usize);
    assert_eq!(kills, 2);
    assert_eq!(offsets(&got), (1..=MESSAGES).collect::<Vec<_>>(), "every message once, in order");
    assert!(got.iter().all(|(c, _)| c.epoch == got[0].0.epoch));
    let stats = a.client.stats();
    assert!(stats.disconnects.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    let repairs = stats.repair_reads.load(std::sync::atomic::Ordering::Relaxed);
    assert!(repairs >= 2, "each re-subscription read the history ({repairs} reads)");
}

#[test]
fn redis_broker_restart_without_persistence_is_a_gap_and_503_while_down() {
    let mut server = RedisServer::start();
    let a = node(&server, "a");
    a.subscribe(sink(0), 1, "restart", Since::Tail).unwrap();
    for i in 1..=5 {
        a.publish(i, "restart", &format!("before{i}"));
    }
    let before: Vec<Cursor> = (1..=5).map(|i| a.events.published(i).unwrap()).collect();
    a.events.deliveries(sink(0), 5);
    server.kill9();
    // Redis down: a publish is answered with 503, never left hanging.
    let down = Instant::now();
    let mut token = 100;
    loop {
        token += 1;
        a.publish(token, "restart", "lost");
        match a.events.published(token) {
            Err(e) => {
                assert_eq!(e.status_hint(), 503, "{e}");
                break;
            }
            Ok(c) => assert!(down.elapsed() < Duration::from_secs(2), "published {c:?} long after the kill"),
        }
    }
    server.restart();
    // Publish until the broker is back.
    let after = loop {
        token += 1;
        std::thread::sleep(Duration::from_millis(50));
        a.publish(token, "restart", "after");
        if let Ok(cursor) = a.events.published(token) {
            break cursor;
        }
        assert!(down.elapsed() < WAIT, "the broker did not reconnect");
    };
    assert_ne!(after.epoch, before[0].epoch, "a new epoch: old cursors are a gap");
    assert_eq!(after.offset, 1);
    // The subscriber stayed; the new epoch's first message reaches it (the feed sees a gap).
    let got = a.events.deliveries(sink(0), 6);
    assert_eq!(got[5], (after, "after".to_string()));
    // A resume from an old cursor: a gap.
    a.client
        .submit(BrokerRequest::Read {
            sink: sink(0),
            token: 7,
            channel: channel("restart"),
            since: Since::After(before[4]),
            max_messages: 10,
        })
        .unwrap();
    let read = a.events.read(7).unwrap();
    assert!(read.gap);
    assert_eq!(read.next.epoch, after.epoch);
}

#[test]
fn redis_broker_history_eviction_is_a_gap() {
    let server = RedisServer::start();
    let a = node_with(&server, "a", 10);
    for i in 1..=500 {
        a.publish(i, "evict", &format!("e{i}"));
    }
    let cursors: Vec<Cursor> = (1..=500).map(|i| a.events.published(i).unwrap()).collect();
    let replay = a.subscribe(sink(0), 9, "evict", Since::After(cursors[0])).unwrap();
    assert!(replay.gap, "messages after offset 1 were trimmed");
    assert!(replay.messages.len() >= 10 && replay.messages.len() < 499, "{}", replay.messages.len());
    assert_eq!(replay.messages.last().unwrap().id, cursors[499]);
    assert_eq!(replay.next, cursors[499]);
}

#[test]
fn redis_broker_unreachable_redis_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let error = Broker::start(config(port, "x", 10), Arc::new(Recorder::default())).unwrap_err();
    assert_eq!(error.status_hint(), 503);
    let text = error.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A sink that publishes to a channel it subscribes to gets the publish's answer before the
/// message's delivery, whichever connection Redis answers on first (the answer comes on the
/// command connection, the message on pub/sub): `except_self` relies on it. Forced here: a
/// large read sits before the publishes on the command connection and the broker reads it
/// 4 KiB per turn, while the messages arrive on pub/sub at once.
#[test]
fn redis_broker_answers_a_publish_before_delivering_its_message_to_the_same_sink() {
    let server = RedisServer::start();
    let mut slow = config(server.port, "slow-reader", 1_000);
    slow.limits.read_budget_bytes = 4096;
    let events = Arc::new(Recorder::default());
    let broker = Broker::start(slow, events.clone()).unwrap();
    let client = broker.client();
    let a = Node { _broker: broker, client, events };
    let big = "b".repeat(60_000);
    for i in 0..40 {
        a.publish(i, "big", &big);
    }
    let first = a.events.published(0).unwrap();
    for i in 1..40 {
        a.events.published(i).unwrap();
    }
    a.subscribe(sink(0), 100, "x", Since::Tail).unwrap();
    let read = BrokerRequest::Read {
        sink: sink(0),
        token: 200,
        channel: channel("big"),
        since: Since::After(Cursor { epoch: first.epoch, offset: 0 }),
        max_messages: 40,
    };
    a.client.submit(read).unwrap();
    for i in 0..20 {
        a.publish(300 + i, "x", &format!("x{i}"));
    }
    // Every answer and every delivery, in the order the sink got them.
    let order: Vec<(bool, Cursor)> = a.events.wait("20 answers and 20 deliveries", |events| {
        let order: Vec<(bool, Cursor)> = events
            .iter()
            .filter(|(s, _)| *s == sink(0))
            .filter_map(|(_, e)| match e {
                BrokerEvent::Published { token, result: Ok(c) } if *token >= 300 => Some((true, *c)),
                BrokerEvent::Delivery(m) if m.channel.as_str() == "x" => Some((false, m.id)),
                _ => None,
            })
            .collect();
        (order.len() == 40).then_some(order)
    });
    for (i, (answer, cursor)) in order.iter().enumerate() {
        if !answer {
            let answered = order[..i].iter().any(|(a, c)| *a && c == cursor);
            assert!(answered, "{cursor} delivered before its publish was answered: {order:?}");
        }
    }
    assert!(a.events.read(200).unwrap().messages.len() == 40);
}

/// `CLIENT LIST TYPE pubsub` lines of `node`'s connections.
fn pubsub_clients(server: &RedisServer, node: &str) -> Vec<String> {
    let list = server.client().call(&Command::new("CLIENT").arg("LIST").arg("TYPE").arg("pubsub"));
    let Value::BulkString(list) = list else { panic!("CLIENT LIST is a bulk string: {list:?}") };
    let name = format!(" name=pushwire-sub-{node}-");
    String::from_utf8(list).unwrap().lines().filter(|l| l.contains(&name)).map(String::from).collect()
}

/// The value of `field=` in a `CLIENT LIST` line.
fn client_field<'a>(line: &'a str, field: &str) -> &'a str {
    let key = format!("{field}=");
    line.split(' ').find_map(|f| f.strip_prefix(key.as_str())).unwrap_or_else(|| panic!("{field} in {line}"))
}

#[test]
fn redis_broker_pubsub_shards_spread_channels_and_a_killed_shard_loses_nothing() {
    const CHANNELS: usize = 24;
    const ROUNDS: u64 = 60;
    let server = RedisServer::start();
    let events = Arc::new(Recorder::default());
    let sharded = BrokerConfig { pubsub_shards: 4, ..config(server.port, "sharded", 1_000) };
    let broker = Broker::start(sharded, events.clone()).unwrap();
    let a = Node { client: broker.client(), _broker: broker, events };
    let names: Vec<String> = (0..CHANNELS).map(|i| format!("shard-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        a.subscribe(sink(0), 1 + i as u64, name, Since::Tail).unwrap();
    }
    // Four pub/sub connections, every channel on exactly one, each carrying some.
    let clients = pubsub_clients(&server, "sharded");
    assert_eq!(clients.len(), 4, "{clients:#?}");
    let counts: Vec<usize> = clients.iter().map(|l| client_field(l, "sub").parse().unwrap()).collect();
    // Plus the control channel and this node's reply channel, on shard 0.
    assert_eq!(counts.iter().sum::<usize>(), CHANNELS + 2, "{clients:#?}");
    assert!(counts.iter().all(|&n| n > 0), "every shard carries channels: {counts:?}");

    let b = node(&server, "b");
    let publisher = {
        let names = names.clone();
        std::thread::spawn(move || {
            let mut token = 0;
            for round in 1..=ROUNDS {
                for name in &names {
                    token += 1;
                    b.publish(token, name, &format!("{name}/{round}"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            for t in 1..=token {
                b.events.published(t).unwrap();
            }
            b
        })
    };
    // Cut one shard's connection mid-stream: its channels are caught up from the history.
    a.events.deliveries(sink(0), CHANNELS * 10);
    let victim = &clients[1];
    let killed =
        server.client().call(&Command::new("CLIENT").arg("KILL").arg("ID").arg(client_field(victim, "id")));
    assert_eq!(killed, Value::Integer(1), "{killed:?}");
    let _b = publisher.join().unwrap();
    let all = CHANNELS * ROUNDS as usize;
    let got = a.events.wait("every delivery", |events| {
        let got: Vec<(String, u64, String)> = events
            .iter()
            .filter_map(|(_, e)| match e {
                BrokerEvent::Delivery(m) => {
                    Some((m.channel.as_str().to_string(), m.id.offset, body(&m.payload)))
                }
                _ => None,
            })
            .collect();
        (got.len() >= all).then_some(got)
    });
    assert_eq!(got.len(), all, "no duplicates");
    for name in &names {
        let mine: Vec<&(String, u64, String)> = got.iter().filter(|(c, _, _)| c == name).collect();
        let offsets: Vec<u64> = mine.iter().map(|(_, o, _)| *o).collect();
        assert_eq!(offsets, (1..=ROUNDS).collect::<Vec<_>>(), "{name}: every message once, in order");
        assert!(mine.iter().enumerate().all(|(i, (_, _, text))| *text == format!("{name}/{}", i + 1)));
    }
    let stats = a.client.stats();
    assert!(stats.disconnects.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    // The killed shard came back: four connections again, the same channels on them.
    let deadline = Instant::now() + WAIT;
    loop {
        let clients = pubsub_clients(&server, "sharded");
        let sum: usize = clients.iter().map(|l| client_field(l, "sub").parse::<usize>().unwrap()).sum();
        if clients.len() == 4 && sum == CHANNELS + 2 {
            break;
        }
        assert!(Instant::now() < deadline, "shard not back: {clients:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
