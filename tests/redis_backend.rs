//! The pure Redis pieces of `pushwire::redis` against a real `redis-server` (Redis 7): the
//! RESP codec on real replies, the channel script (offsets, epochs, history, expiry, pub/sub),
//! cursors resuming across connections, the incarnation rule across a restart from an older
//! RDB snapshot, presence expiry, and bad replies from a fake peer. What the scripts wrote is
//! checked with the `redis` crate, an independent client.
//!
//! Each test starts its own server on a free loopback port and kills it at the end.

mod redis_support;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pushwire::hub::{ChannelName, Cursor, Epoch, Message, Payload, Since};
use pushwire::redis::frame::{encode_join, encode_leave, encode_message, parse_frame, Frame, FrameLimits};
use pushwire::redis::history::{parse_entries, xrange_command};
use pushwire::redis::info::{info_command, parse_info, Incarnation};
use pushwire::redis::keys::{ChannelKeys, Namespace};
use pushwire::redis::presence::{
    add_command, list_command, parse_count_reply, parse_list_reply, remove_command, PresenceMember,
    PresenceValue,
};
use pushwire::redis::pubsub::{
    parse_pubsub, ping_command, subscribe_command, unsubscribe_command, PubSubEvent,
};
use pushwire::redis::resp::{Command, RespError, Value};
use pushwire::redis::script::{
    channel_script_sha1, epoch_candidate, load_commands, parse_publish_reply, parse_read_reply,
    presence_script_sha1, publish_command, read_command, Invoke, PublishReply, ReadReply, ScriptContext,
};
use pushwire::redis::sequence::{ChannelSequence, SequenceAction};
use pushwire::redis::url::RedisUrl;
use pushwire::redis::ReplyError;
use redis::Commands;
use redis_support::{Client, Persistence, RedisServer};

const TTL: Duration = Duration::from_secs(300);

fn channel(name: &str) -> ChannelName {
    ChannelName::parse(name).unwrap()
}

fn text(s: &str) -> Payload {
    Payload::Text(Arc::from(s))
}

/// What a broker does for one node, minimally and blocking: the handshake (INFO for the
/// incarnation, SCRIPT LOAD), then script calls with the EVALSHA → EVAL fallback.
struct Node {
    client: Client,
    incarnation: Incarnation,
    /// Drawn per call by a real node; a counter here, distinct per node.
    next_candidate: u64,
}

impl Node {
    fn connect(server: &RedisServer, node_index: u64) -> Node {
        Node::from_client(server.client(), node_index)
    }

    fn from_client(mut client: Client, node_index: u64) -> Node {
        let url = RedisUrl::parse("redis://127.0.0.1/0").unwrap();
        let mut commands = url.handshake_commands(&format!("pushwire-test-{node_index}"));
        commands.push(info_command());
        commands.extend(load_commands());
        let replies = client.pipeline(&commands);
        let n = replies.len();
        for ok in &replies[..n - 3] {
            assert_eq!(ok, &Value::SimpleString(b"OK".to_vec()));
        }
        let info = parse_info(&replies[n - 3]).unwrap();
        assert!(info.is_master());
        // SCRIPT LOAD answers the SHA-1 pushwire computed itself.
        assert_eq!(replies[n - 2].as_bytes(), Some(channel_script_sha1().as_bytes()));
        assert_eq!(replies[n - 1].as_bytes(), Some(presence_script_sha1().as_bytes()));
        Node { client, incarnation: info.incarnation(), next_candidate: node_index << 32 | 1 }
    }

    fn context(&mut self) -> ScriptContext {
        self.next_candidate += 1;
        ScriptContext {
            incarnation: self.incarnation,
            epoch_candidate: epoch_candidate(self.next_candidate, self.incarnation),
            history_ttl: TTL,
        }
    }

    /// Runs a script command built for `invoke`, retrying with EVAL on NOSCRIPT.
    fn eval(&mut self, build: impl Fn(Invoke) -> Command) -> Value {
        let reply = self.client.call(&build(Invoke::Sha));
        match ReplyError::check(&reply) {
            Err(ReplyError::NoScript) => self.client.call(&build(Invoke::Source)),
            _ => reply,
        }
    }

    fn publish(&mut self, keys: &ChannelKeys, max_history: usize, body: &str) -> PublishReply {
        let context = self.context();
        let payload = text(body);
        let reply = self.eval(|invoke| publish_command(keys, &context, max_history, None, &payload, invoke));
        parse_publish_reply(&reply).unwrap()
    }

    fn read(&mut self, name: &ChannelName, keys: &ChannelKeys, since: Since, max: usize) -> ReadReply {
        let context = self.context();
        let reply = self.eval(|invoke| read_command(keys, &context, since, max, invoke));
        parse_read_reply(name, since, &reply, &FrameLimits::default(), Instant::now()).unwrap()
    }
}

fn offsets(read: &ReadReply) -> Vec<u64> {
    read.replay.messages.iter().map(|m| m.id.offset).collect()
}

fn bodies(read: &ReadReply) -> Vec<String> {
    read.replay
        .messages
        .iter()
        .map(|m| match &m.payload {
            Payload::Text(t) => t.to_string(),
            Payload::Binary(b) => format!("{b:?}"),
        })
        .collect()
}

/// The meta hash as the `redis` crate reads it.
fn meta(checker: &mut redis::Connection, keys: &ChannelKeys) -> HashMap<String, String> {
    checker.hgetall(&keys.meta).unwrap()
}

/// The history stream as the `redis` crate reads it: (id, [field, value, ...]).
fn stream(checker: &mut redis::Connection, keys: &ChannelKeys) -> Vec<(String, Vec<Vec<u8>>)> {
    redis::cmd("XRANGE").arg(&keys.history).arg("-").arg("+").query(checker).unwrap()
}

#[test]
fn resp_codec_reads_real_replies_of_every_type() {
    let server = RedisServer::start();
    let mut client = server.client();
    let replies = client.pipeline(&[
        Command::new("PING"),
        Command::new("SET").arg("k").arg(b"a\r\nb\0".as_slice()),
        Command::new("GET").arg("k"),
        Command::new("GET").arg("missing"),
        Command::new("INCRBY").arg("n").arg("-7"),
        Command::new("NOSUCHCOMMAND"),
        Command::new("RPUSH").arg("l").arg("x").arg("").arg("z"),
        Command::new("LRANGE").arg("l").arg("0").arg("-1"),
        Command::new("BLPOP").arg("empty").arg("0.01"),
        Command::new("MGET").arg("k").arg("missing"),
    ]);
    assert_eq!(replies[0], Value::SimpleString(b"PONG".to_vec()));
    assert_eq!(replies[1], Value::SimpleString(b"OK".to_vec()));
    assert_eq!(replies[2], Value::BulkString(b"a\r\nb\0".to_vec()));
    assert_eq!(replies[3], Value::NullBulkString);
    assert_eq!(replies[4], Value::Integer(-7));
    assert!(replies[5].as_error().unwrap().starts_with(b"ERR unknown command"));
    assert_eq!(replies[6], Value::Integer(3));
    assert_eq!(
        replies[7],
        Value::Array(vec![
            Value::BulkString(b"x".to_vec()),
            Value::BulkString(vec![]),
            Value::BulkString(b"z".to_vec())
        ])
    );
    // RESP2's null array: a blocking pop that timed out.
    assert_eq!(replies[8], Value::NullArray);
    assert_eq!(
        replies[9],
        Value::Array(vec![Value::BulkString(b"a\r\nb\0".to_vec()), Value::NullBulkString])
    );

    // A 1 MiB value arrives in many reads; the `redis` crate wrote it.
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let mut checker = server.checker();
    let () = checker.set("big", &big).unwrap();
    assert_eq!(client.call(&Command::new("GET").arg("big")), Value::BulkString(big));

    // 1 000 pipelined commands, replies in order.
    let commands: Vec<Command> = (0..1000).map(|i| Command::new("ECHO").arg(i.to_string())).collect();
    for (i, reply) in client.pipeline(&commands).into_iter().enumerate() {
        assert_eq!(reply, Value::BulkString(i.to_string().into_bytes()));
    }
}

#[test]
fn redis_channel_script_writes_meta_stream_expiry_and_cursor() {
    let server = RedisServer::start();
    let mut node = Node::connect(&server, 1);
    let name = channel("news");
    let keys = ChannelKeys::new(&Namespace::default(), &name);
    let first = node.publish(&keys, 1000, "m1");
    assert!(first.new_epoch);
    assert_eq!(first.id.offset, 1);
    let epoch = first.id.epoch;
    for i in 2..=3 {
        let published = node.publish(&keys, 1000, &format!("m{i}"));
        assert_eq!(published, PublishReply { id: Cursor { epoch, offset: i }, new_epoch: false });
    }

    let mut checker = server.checker();
    let stored = meta(&mut checker, &keys);
    assert_eq!(stored["epoch"], epoch.to_string());
    assert_eq!(stored["offset"], "3");
    assert_eq!(stored["inc"], node.incarnation.to_string());
    let entries = stream(&mut checker, &keys);
    assert_eq!(entries.len(), 3);
    for (i, (id, fields)) in entries.iter().enumerate() {
        let offset = i as u64 + 1;
        assert_eq!(id, &format!("{offset}-0"));
        let frame = encode_message(Cursor { epoch, offset }, None, &text(&format!("m{offset}")));
        // The frame Lua built is the frame Rust builds, byte for byte.
        assert_eq!(fields, &vec![b"m".to_vec(), frame]);
    }
    for key in [&keys.meta, &keys.history] {
        let pttl: i64 = checker.pttl(key).unwrap();
        assert!(pttl > 0 && pttl <= TTL.as_millis() as i64, "{key}: pttl {pttl}");
    }
    // The stream read directly, through pushwire's codec and parser.
    let reply = node.client.call(&xrange_command(&keys, 1, 10));
    let messages = parse_entries(&name, &reply, &FrameLimits::default(), Instant::now()).unwrap();
    assert_eq!(messages.iter().map(|m| m.id.offset).collect::<Vec<_>>(), [2, 3]);
}

#[test]
fn redis_read_script_creates_the_epoch_a_poller_is_given() {
    let server = RedisServer::start();
    let mut node = Node::connect(&server, 1);
    let name = channel("polled");
    let keys = ChannelKeys::new(&Namespace::default(), &name);
    let read = node.read(&name, &keys, Since::Tail, 10);
    assert!(read.new_epoch);
    assert_eq!(read.replay.next.offset, 0);
    assert!(!read.replay.gap);
    let epoch = read.replay.next.epoch;
    // The cursor the poller got stays valid: the next publish is offset 1 of that epoch.
    let published = node.publish(&keys, 1000, "first");
    assert_eq!(published, PublishReply { id: Cursor { epoch, offset: 1 }, new_epoch: false });
    let after = node.read(&name, &keys, Since::After(read.replay.next), 10);
    assert_eq!((offsets(&after), after.replay.gap, after.last_offset), (vec![1], false, 1));
}

#[test]
fn redis_script_noscript_falls_back_to_eval() {
    let server = RedisServer::start();
    let mut node = Node::connect(&server, 1);
    let keys = ChannelKeys::new(&Namespace::default(), &channel("c"));
    assert_eq!(node.client.call(&Command::new("SCRIPT").arg("FLUSH")), Value::SimpleString(b"OK".to_vec()));
    let context = node.context();
    let payload = text("x");
    let by_sha = node.client.call(&publish_command(&keys, &context, 10, None, &payload, Invoke::Sha));
    assert_eq!(parse_publish_reply(&by_sha), Err(ReplyError::NoScript));
    let by_source = node.client.call(&publish_command(&keys, &context, 10, None, &payload, Invoke::Source));
    assert_eq!(parse_publish_reply(&by_source).unwrap().id.offset, 1);
    // EVAL loaded it again: EVALSHA works.
    let again = node.client.call(&publish_command(&keys, &context, 10, None, &payload, Invoke::Sha));
    assert_eq!(parse_publish_reply(&again).unwrap().id.offset, 2);
}

#[test]
fn redis_cursor_from_one_connection_resumes_on_another() {
    let server = RedisServer::start();
    let name = channel("shared");
    let keys = ChannelKeys::new(&Namespace::default(), &name);
    let mut node_a = Node::connect(&server, 1);
    let mut node_b = Node::connect(&server, 2);
    let ids: Vec<Cursor> = (1..=5).map(|i| node_a.publish(&keys, 1000, &format!("a{i}")).id).collect();
    // A client of node A saw up to offset 2, then resumes on node B.
    let resumed = node_b.read(&name, &keys, Since::After(ids[1]), 100);
    assert_eq!(offsets(&resumed), [3, 4, 5]);
    assert_eq!(bodies(&resumed), ["a3", "a4", "a5"]);
    assert!(!resumed.replay.gap);
    assert_eq!(resumed.replay.next, ids[4]);
    // Node B publishes into the same sequence (its own epoch candidate is not used).
    let b6 = node_b.publish(&keys, 1000, "b6");
    assert_eq!(b6, PublishReply { id: Cursor { epoch: ids[0].epoch, offset: 6 }, new_epoch: false });
    // Paging: two at a time from the start, as a subscriber catching up does.
    let mut since = Since::After(Cursor { epoch: ids[0].epoch, offset: 0 });
    let mut seen = Vec::new();
    loop {
        let page = node_a.read(&name, &keys, since, 2);
        assert!(!page.replay.gap);
        seen.extend(offsets(&page));
        since = Since::After(page.replay.next);
        if page.replay.next.offset >= page.last_offset {
            break;
        }
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
    // A cursor of another epoch, or from the future, is a gap.
    let foreign = node_b.read(&name, &keys, Since::After(Cursor { epoch: Epoch(42), offset: 3 }), 100);
    assert_eq!((offsets(&foreign), foreign.replay.gap), (vec![1, 2, 3, 4, 5, 6], true));
    let future = node_b.read(&name, &keys, Since::After(Cursor { epoch: ids[0].epoch, offset: 99 }), 100);
    assert_eq!((offsets(&future), future.replay.gap, future.replay.next.offset), (vec![], true, 6));
}

#[test]
fn redis_history_maxlen_trims_approximately_and_reads_report_the_gap() {
    let server = RedisServer::start();
    let mut node = Node::connect(&server, 1);
    let name = channel("busy");
    let keys = ChannelKeys::new(&Namespace::default(), &name);
    let first = node.publish(&keys, 50, "m1");
    for i in 2..=1000 {
        node.publish(&keys, 50, &format!("m{i}"));
    }
    let mut checker = server.checker();
    let len: usize = redis::cmd("XLEN").arg(&keys.history).query(&mut checker).unwrap();
    // MAXLEN ~ keeps at least 50 and trims whole macro nodes (100 entries each by default).
    assert!((50..=250).contains(&len), "XLEN {len}");
    let read = node.read(&name, &keys, Since::After(first.id), 1000);
    assert!(read.replay.gap, "messages 2.. were trimmed");
    assert_eq!(offsets(&read), (1001 - len as u64..=1000).collect::<Vec<_>>());
}

#[test]
fn redis_pubsub_delivers_frames_in_offset_order() {
    let server = RedisServer::start();
    let name = channel("live");
    let namespace = Namespace::default();
    let keys = ChannelKeys::new(&namespace, &name);
    let mut subscriber = server.client();
    let confirmed = parse_pubsub(subscriber.call(&subscribe_command([keys.pubsub.as_str()]))).unwrap();
    assert_eq!(confirmed, PubSubEvent::Subscribed { channel: keys.pubsub.clone().into_bytes(), count: 1 });

    let mut node = Node::connect(&server, 1);
    let ids: Vec<Cursor> = (1..=20).map(|i| node.publish(&keys, 1000, &format!("p{i}")).id).collect();
    for (i, id) in ids.iter().enumerate() {
        let PubSubEvent::Message { channel: pubsub_name, payload } = parse_pubsub(subscriber.read()).unwrap()
        else {
            panic!("a message");
        };
        assert_eq!(namespace.channel_of_pubsub(&pubsub_name), Some(name.clone()));
        let frame = parse_frame(&payload, &FrameLimits::default()).unwrap();
        assert_eq!(frame, Frame::Message { id: *id, event: None, payload: text(&format!("p{}", i + 1)) });
    }
    // PING on a subscribed connection: a pong push, after every message before it.
    subscriber.send(&[ping_command(b"t1")]);
    assert_eq!(parse_pubsub(subscriber.read()).unwrap(), PubSubEvent::Pong(b"t1".to_vec()));
    let left = parse_pubsub(subscriber.call(&unsubscribe_command([keys.pubsub.as_str()]))).unwrap();
    assert_eq!(left, PubSubEvent::Unsubscribed { channel: keys.pubsub.clone().into_bytes(), count: 0 });
}

#[test]
fn redis_restart_from_an_older_snapshot_gets_a_new_epoch_not_reused_offsets() {
    let mut server = RedisServer::start_with(Persistence::Rdb);
    let name = channel("durable");
    let keys = ChannelKeys::new(&Namespace::default(), &name);
    let mut node = Node::connect(&server, 1);
    let old_incarnation = node.incarnation;
    for i in 1..=3 {
        node.publish(&keys, 1000, &format!("saved{i}"));
    }
    assert_eq!(node.client.call(&Command::new("SAVE")), Value::SimpleString(b"OK".to_vec()));
    // Published after the snapshot: clients hold cursors up to 5.
    node.publish(&keys, 1000, "lost4");
    let lost = node.publish(&keys, 1000, "lost5").id;
    let old_epoch = lost.epoch;

    server.kill9();
    server.restart();
    let mut checker = server.checker();
    // The rollback is real: the meta says offset 3 under the old epoch.
    let rolled_back = meta(&mut checker, &keys);
    assert_eq!(
        (rolled_back["epoch"].as_str(), rolled_back["offset"].as_str()),
        (old_epoch.to_string().as_str(), "3")
    );

    let mut node = Node::connect(&server, 1);
    assert_ne!(node.incarnation, old_incarnation, "a new process is a new incarnation");
    // A client resuming from the lost cursor gets a gap, not someone else's offsets 4 and 5.
    let resumed = node.read(&name, &keys, Since::After(lost), 100);
    assert!(resumed.new_epoch && resumed.replay.gap);
    assert_ne!(resumed.replay.next.epoch, old_epoch);
    assert_eq!(offsets(&resumed), Vec::<u64>::new());
    let new_epoch = resumed.replay.next.epoch;
    let next = node.publish(&keys, 1000, "new1");
    assert_eq!(next, PublishReply { id: Cursor { epoch: new_epoch, offset: 1 }, new_epoch: false });
    // Even a cursor the snapshot covered is a gap now (a false gap, the documented cost).
    let covered = node.read(&name, &keys, Since::After(Cursor { epoch: old_epoch, offset: 3 }), 100);
    assert_eq!((offsets(&covered), covered.replay.gap), (vec![1], true));
    // What Redis holds: only the new epoch's entry.
    let stored = meta(&mut checker, &keys);
    assert_eq!(stored["epoch"], new_epoch.to_string());
    assert_eq!(stored["inc"], node.incarnation.to_string());
    let entries = stream(&mut checker, &keys);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1[1], encode_message(next.id, None, &text("new1")));
}

#[test]
fn redis_restart_without_persistence_gets_a_new_epoch() {
    let mut server = RedisServer::start();
    let name = channel("volatile");
    let keys = ChannelKeys::new(&Namespace::default(), &name);
    let mut node = Node::connect(&server, 1);
    let before = node.publish(&keys, 1000, "x").id;
    server.kill9();
    server.restart();
    let mut node = Node::connect(&server, 1);
    let read = node.read(&name, &keys, Since::After(before), 100);
    assert!(read.replay.gap && read.new_epoch);
    assert_ne!(read.replay.next.epoch, before.epoch);
}

#[test]
fn redis_incarnation_change_starts_a_new_epoch_and_collisions_are_refused() {
    let server = RedisServer::start();
    let name = channel("failover");
    let keys = ChannelKeys::new(&Namespace::default(), &name);
    let mut node = Node::connect(&server, 1);
    let first = node.publish(&keys, 1000, "a");
    // What a failover looks like to the script: another incarnation calls it.
    let promoted = Incarnation::from_raw(node.incarnation.raw() ^ 1);
    let collide = ScriptContext { incarnation: promoted, epoch_candidate: first.id.epoch, history_ttl: TTL };
    let reply = node.client.call(&publish_command(&keys, &collide, 1000, None, &text("b"), Invoke::Sha));
    assert_eq!(parse_publish_reply(&reply), Err(ReplyError::EpochCollision));
    let fresh = ScriptContext { incarnation: promoted, epoch_candidate: Epoch(0xfeed), history_ttl: TTL };
    let reply = node.client.call(&publish_command(&keys, &fresh, 1000, None, &text("b"), Invoke::Sha));
    assert_eq!(
        parse_publish_reply(&reply),
        Ok(PublishReply { id: Cursor { epoch: Epoch(0xfeed), offset: 1 }, new_epoch: true })
    );
    // The stream restarted with the epoch.
    let mut checker = server.checker();
    assert_eq!(stream(&mut checker, &keys).len(), 1);
}

#[test]
fn redis_stream_ahead_of_meta_starts_a_new_epoch_instead_of_failing() {
    let server = RedisServer::start();
    let name = channel("tampered");
    let keys = ChannelKeys::new(&Namespace::default(), &name);
    let mut node = Node::connect(&server, 1);
    let epoch = node.publish(&keys, 1000, "1").id.epoch;
    node.publish(&keys, 1000, "2");
    node.publish(&keys, 1000, "3");
    // Something else rolled the meta back while the stream kept 3 entries.
    let mut checker = server.checker();
    let () = checker.hset(&keys.meta, "offset", "1").unwrap();
    let next = node.publish(&keys, 1000, "after");
    assert!(next.new_epoch);
    assert_ne!(next.id.epoch, epoch);
    assert_eq!(next.id.offset, 1);
    assert_eq!(stream(&mut checker, &keys).len(), 1);
}

#[test]
fn redis_presence_members_expire_and_every_node_hears_join_and_leave() {
    let server = RedisServer::start();
    let name = channel("room");
    let keys = ChannelKeys::new(&Namespace::default(), &name);
    let mut listener = server.client();
    parse_pubsub(listener.call(&subscribe_command([keys.pubsub.as_str()]))).unwrap();
    let mut node = Node::connect(&server, 1);
    let short = PresenceMember { node: 0xdead, conn: 1 };
    let long = PresenceMember { node: 0xbeef, conn: 2 };
    let alice = PresenceValue { user: Arc::from("alice"), info: Arc::from(&b"{\"x\":1}"[..]) };
    let bob = PresenceValue { user: Arc::from(""), info: Arc::from(&[][..]) };
    let limits = FrameLimits::default();

    // A node that will die adds `short` with a 300 ms ttl; another adds `long` with 60 s.
    let added = node.eval(|i| add_command(&keys, &[(short, alice.clone())], Duration::from_millis(300), i));
    assert_eq!(parse_count_reply(&added), Ok(1));
    let added = node.eval(|i| add_command(&keys, &[(long, bob.clone())], Duration::from_secs(60), i));
    assert_eq!(parse_count_reply(&added), Ok(1));
    // A refresh is not a join.
    let refreshed = node.eval(|i| add_command(&keys, &[(long, bob.clone())], Duration::from_secs(60), i));
    assert_eq!(parse_count_reply(&refreshed), Ok(0));
    let heard = |listener: &mut Client| {
        let PubSubEvent::Message { payload, .. } = parse_pubsub(listener.read()).unwrap() else {
            panic!("a frame")
        };
        payload
    };
    assert_eq!(heard(&mut listener), encode_join(&short, &alice));
    assert_eq!(heard(&mut listener), encode_join(&long, &bob));
    let listed = parse_list_reply(&node.eval(|i| list_command(&keys, 100, i)), &limits).unwrap();
    assert_eq!((listed.count, listed.members.len()), (2, 2));
    // At most one listed, both counted.
    let one = parse_list_reply(&node.eval(|i| list_command(&keys, 1, i)), &limits).unwrap();
    assert_eq!((one.count, one.members.len()), (2, 1));

    let mut checker = server.checker();
    let score: f64 = checker.zscore(&keys.presence, short.to_string()).unwrap();
    assert!(score > 1.0e12, "expiry in ms of Redis's clock: {score}");

    // `short`'s node stops refreshing: gone after its ttl, and a leave is published.
    std::thread::sleep(Duration::from_millis(600));
    let listed = parse_list_reply(&node.eval(|i| list_command(&keys, 100, i)), &limits).unwrap();
    assert_eq!(listed.members, [(long, bob.clone())]);
    assert_eq!(listed.count, 1);
    // (With its value, which Redis still held: watchers learn who left.)
    assert_eq!(
        parse_frame(&heard(&mut listener), &limits),
        Ok(Frame::Leave { member: short, value: Some(alice.clone()) })
    );
    assert!(!checker.hexists::<_, _, bool>(&keys.presence_info, short.to_string()).unwrap());

    // An explicit remove publishes a leave; the empty set and hash vanish.
    let removed = node.eval(|i| remove_command(&keys, &[long, short], i));
    assert_eq!(parse_count_reply(&removed), Ok(1));
    assert_eq!(heard(&mut listener), encode_leave(&long, Some(&bob)));
    let exists: usize = checker.exists(&[&keys.presence, &keys.presence_info]).unwrap();
    assert_eq!(exists, 0);

    // If every node dies, the keys themselves expire.
    node.eval(|i| add_command(&keys, &[(short, alice.clone())], Duration::from_millis(200), i));
    std::thread::sleep(Duration::from_millis(500));
    let exists: usize = checker.exists(&[&keys.presence, &keys.presence_info]).unwrap();
    assert_eq!(exists, 0, "presence keys expired without any node touching them");
}

#[test]
fn redis_info_of_a_real_server_gives_run_id_and_replid() {
    let server = RedisServer::start();
    let mut client = server.client();
    let info = parse_info(&client.call(&info_command())).unwrap();
    assert_eq!(info.run_id.len(), 40);
    assert!(info.run_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(info.master_replid.len(), 40);
    assert!(info.redis_version.starts_with('7'), "Redis 7 expected, got {}", info.redis_version);
    // The `redis` crate reads the same run_id.
    let mut checker = server.checker();
    let text: String = redis::cmd("INFO").arg("server").query(&mut checker).unwrap();
    assert!(text.contains(&format!("run_id:{}", info.run_id)));
}

#[test]
fn redis_bad_replies_from_a_fake_peer_get_a_clear_error() {
    let cases: &[(&[u8], RespError)] = &[
        (b"$99999999999\r\n", RespError::BulkTooLarge { len: 99_999_999_999, max_bytes: 8 << 20 }),
        (b"%1\r\n+a\r\n+b\r\n", RespError::UnknownType(b'%')),
        (b"+OK\n", RespError::LineNotCrlf),
        (b":12x\r\n", RespError::InvalidInteger),
        (b"$3\r\nabcXY", RespError::BulkMissingCrlf),
    ];
    for (garbage, expected) in cases {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let garbage = garbage.to_vec();
        let peer = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // Whatever was asked, answer with garbage, a byte at a time.
            for byte in garbage {
                stream.write_all(&[byte]).unwrap();
                stream.flush().unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        });
        let mut client = Client::connect(port);
        client.send(&[Command::new("PING")]);
        assert_eq!(&client.read_error(), expected);
        peer.join().unwrap();
    }
}

/// The pieces a broker combines, end to end: a pub/sub connection killed by Redis
/// (`CLIENT KILL TYPE pubsub`) while another node publishes; after re-subscribing,
/// [`ChannelSequence`] repairs from the history, and every message arrives once, in order.
#[test]
fn redis_pubsub_connection_killed_while_publishing_loses_nothing() {
    const MESSAGES: u64 = 300;
    let server = RedisServer::start();
    let name = channel("repair");
    let namespace = Namespace::default();
    let keys = ChannelKeys::new(&namespace, &name);
    let subscribe = |server: &RedisServer| {
        let mut client = server.client();
        let confirmed = parse_pubsub(client.call(&subscribe_command([keys.pubsub.as_str()]))).unwrap();
        assert!(matches!(confirmed, PubSubEvent::Subscribed { count: 1, .. }));
        client
    };
    let mut subscriber = subscribe(&server);
    let mut reader = Node::connect(&server, 1);
    let (mut sequence, first) = ChannelSequence::new(64);
    let mut delivered: Vec<Cursor> = Vec::new();
    // Carries out a sequence's actions (reads answered at once); returns how many messages
    // came from history reads.
    let run = |sequence: &mut ChannelSequence,
               actions: Vec<SequenceAction>,
               reader: &mut Node,
               delivered: &mut Vec<Cursor>| {
        let mut queue = actions;
        let mut from_history = 0;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for action in queue {
                match action {
                    SequenceAction::Deliver(message) => delivered.push(message.id),
                    SequenceAction::Read(since) => {
                        let page = reader.read(&name, &keys, since, 50);
                        let before = next.len();
                        sequence.handle_read(&page, &mut next);
                        from_history +=
                            next[before..].iter().filter(|a| matches!(a, SequenceAction::Deliver(_))).count();
                    }
                }
            }
            queue = next;
        }
        from_history
    };
    run(&mut sequence, vec![first], &mut reader, &mut delivered);

    let port = server.port;
    let publisher = std::thread::spawn(move || {
        let server_view = Client::connect(port);
        let mut node = Node::from_client(server_view, 2);
        let keys = ChannelKeys::new(&Namespace::default(), &ChannelName::parse("repair").unwrap());
        for i in 1..=MESSAGES {
            node.publish(&keys, 10_000, &format!("r{i}"));
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    let mut killer = server.client();
    let mut killed = false;
    let mut repaired = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sequence.delivered().map_or(0, |c| c.offset) < MESSAGES {
        assert!(Instant::now() < deadline, "stuck at {:?}", sequence.delivered());
        if !killed && delivered.len() >= 50 {
            let count = killer.call(&Command::new("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"));
            assert_eq!(count, Value::Integer(1));
            killed = true;
        }
        match subscriber.try_read() {
            Ok(value) => {
                let PubSubEvent::Message { payload, .. } = parse_pubsub(value).unwrap() else { continue };
                let Frame::Message { id, event, payload } =
                    parse_frame(&payload, &FrameLimits::default()).unwrap()
                else {
                    panic!("a message frame")
                };
                let message = Arc::new(Message::new(name.clone(), id, event, payload, Instant::now()));
                let mut actions = Vec::new();
                sequence.handle_live(message, &mut actions);
                repaired += run(&mut sequence, actions, &mut reader, &mut delivered);
            }
            Err(_) => {
                // The connection was killed: re-subscribe, then catch up from the history.
                assert!(killed, "only the kill cuts the connection");
                // Messages published now never reach this node over pub/sub.
                std::thread::sleep(Duration::from_millis(20));
                subscriber = subscribe(&server);
                let mut actions = Vec::new();
                sequence.handle_resubscribed(&mut actions);
                repaired += run(&mut sequence, actions, &mut reader, &mut delivered);
            }
        }
    }
    publisher.join().unwrap();
    assert!(killed);
    assert!(repaired > 0, "messages lost on pub/sub came from the history");
    let offsets: Vec<u64> = delivered.iter().map(|c| c.offset).collect();
    assert_eq!(offsets, (1..=MESSAGES).collect::<Vec<_>>(), "every message once, in order");
    assert!(delivered.iter().all(|c| c.epoch == delivered[0].epoch));
}
