//! Publishing and fan-out: `Hub::publish` alone, then the whole pure path of one publish to 1,
//! 100 and 10,000 subscribers, per delivery, and the shared encoding next to re-encoding the
//! message for every subscriber.
//!
//! `fanout` builds one `Conn` per subscriber as the event loop would (a real request head, the
//! `Subscribe` command applied to a real `Hub`, the reply handed back), then per iteration
//! publishes one message and gives it to every connection with `handle_delivery`, and marks each
//! connection's output as written (`consume_output`), as the loop does after `writev`. Before
//! measuring it checks that a delivery adds exactly one segment, the message's shared encoding
//! (same address, one more reference), so fan-out copies nothing per subscriber.
//!
//! `encode_per_subscriber` isolates the encoding: one fresh message per iteration pushed to N
//! outputs, `shared` through `Message::encoded` (encoded once, then a reference count) and, as
//! the reference, `reencoded` by calling the SSE encoder once per subscriber.

mod common;

use std::hint::black_box;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pushwire::config::Config;
use pushwire::conn::Conn;
use pushwire::hub::{ChannelName, Cursor, Encoding, Epoch, Hub, Message, Payload, SinkId};
use pushwire::metrics::{Metrics, Transport};
use pushwire::output::Output;
use pushwire::transport::{sse, stream, websocket};

const SUBSCRIBERS: [usize; 3] = [1, 100, 10_000];
const DATA: &str =
    "{\"symbol\":\"ACME\",\"price\":123.45,\"volume\":1000,\"ts\":1700000000,\"venue\":\"XNAS\"}";

fn payload() -> Payload {
    Payload::Text(Arc::from(DATA))
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_publish");
    group.throughput(Throughput::Elements(1));
    let config = Config::default();
    let now = Instant::now();
    let channel = ChannelName::parse("quotes").unwrap();
    let mut hub = Hub::new(config.hub, 7);
    // Fill the history so every measured publish also evicts the oldest message.
    for _ in 0..config.hub.max_history_messages {
        hub.publish(&channel, None, payload(), now).unwrap();
    }
    let p = payload();
    group.bench_function("history_full", |b| {
        b.iter(|| hub.publish(black_box(&channel), None, p.clone(), now).unwrap())
    });
    group.finish();
}

/// One transport's subscription request and how its messages are encoded.
struct Subscriber {
    name: &'static str,
    request: &'static str,
    transport: Transport,
    encoding: Encoding,
    /// The transport's encoder for `encoding`.
    encoder: fn(&Message) -> Vec<u8>,
}

const SUBSCRIBER_KINDS: [Subscriber; 3] = [
    Subscriber {
        name: "sse",
        request: "GET /channels/quotes HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
        transport: Transport::Sse,
        encoding: Encoding::SseEvent,
        encoder: sse::encode_message,
    },
    Subscriber {
        name: "websocket",
        request: "GET /channels/quotes HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        transport: Transport::WebSocket,
        encoding: Encoding::WsFrame,
        encoder: websocket::encode_plain_frame,
    },
    Subscriber {
        name: "stream",
        request: "GET /channels/quotes HTTP/1.1\r\nHost: localhost\r\nAccept: application/x-ndjson\r\n\r\n",
        transport: Transport::Stream,
        encoding: Encoding::NdjsonChunk,
        encoder: stream::encode_message,
    },
];

/// A hub and `n` connections subscribed to `quotes`, their response heads already written.
struct Fanout {
    hub: Hub,
    conns: Vec<Conn>,
    channel: ChannelName,
    now: Instant,
}

impl Fanout {
    fn new(kind: &Subscriber, n: usize) -> Fanout {
        let config = Arc::new(Config::default());
        let metrics = Arc::new(Metrics::default());
        let now = Instant::now();
        let mut hub = Hub::new(config.hub, 7);
        let sink = SinkId::new(0).unwrap();
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let from =
                pushwire::hub::backend::ConnAddr { sink, conn: pushwire::hub::backend::ConnId::new(i, 0) };
            let mut conn = Conn::new(Arc::clone(&config), Arc::clone(&metrics), now);
            conn.handle_input(&mut kind.request.as_bytes().to_vec(), now);
            while let Some(command) = conn.poll_command() {
                if let Some(reply) = command.apply(&mut hub, from, now).reply {
                    conn.handle_reply(reply, now);
                }
            }
            assert_eq!(conn.transport(), Some(kind.transport), "{}", conn.pending_output().len_bytes());
            conns.push(conn);
        }
        let mut fanout = Fanout { hub, conns, channel: ChannelName::parse("quotes").unwrap(), now };
        fanout.written();
        assert_eq!(fanout.hub.stats().subscriptions, n);
        fanout
    }

    /// Publishes one message and delivers it to every connection.
    fn publish(&mut self) -> Arc<Message> {
        let published = self.hub.publish(&self.channel, None, payload(), self.now).unwrap();
        for conn in &mut self.conns {
            conn.handle_delivery(&published.message, self.now);
        }
        published.message
    }

    /// Marks every connection's output as written.
    fn written(&mut self) {
        for conn in &mut self.conns {
            let n = conn.pending_output().len_bytes();
            conn.consume_output(n, self.now);
        }
    }

    /// Checks that the delivery of `msg` queued its one shared encoding on every connection.
    fn check_shared(&self, msg: &Message, kind: &Subscriber) {
        let shared = msg.encoded(kind.encoding, |_| panic!("the delivery did not encode the message"));
        assert_eq!(shared[..], (kind.encoder)(msg)[..]);
        for conn in &self.conns {
            let mut slices = [IoSlice::new(&[]); 4];
            let n = conn.pending_output().io_slices(&mut slices);
            assert_eq!(n, 1, "a delivery adds one segment");
            assert_eq!(slices[0].as_ptr(), shared.as_ptr(), "the segment is the shared encoding");
            assert_eq!(slices[0].len(), shared.len());
        }
        // The message's cache, `shared` itself and one reference per connection's output.
        assert_eq!(Arc::strong_count(&shared), 2 + self.conns.len());
    }
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for kind in &SUBSCRIBER_KINDS {
        for n in SUBSCRIBERS {
            let mut fanout = Fanout::new(kind, n);
            let msg = fanout.publish();
            fanout.check_shared(&msg, kind);
            fanout.written();
            drop(msg);
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::new(kind.name, n), |b| {
                b.iter(|| {
                    black_box(fanout.publish());
                    fanout.written();
                })
            });
        }
    }
    group.finish();
}

fn encode_per_subscriber(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_per_subscriber");
    let channel = ChannelName::parse("quotes").unwrap();
    let now = Instant::now();
    let mut offset = 0;
    let mut message = move || {
        offset += 1;
        Message::new(channel.clone(), Cursor { epoch: Epoch(7), offset }, None, payload(), now)
    };
    for n in SUBSCRIBERS {
        let mut outputs: Vec<Output> = (0..n).map(|_| Output::new()).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("shared", n), |b| {
            b.iter(|| {
                let msg = message();
                for out in &mut outputs {
                    out.push_shared(msg.encoded(Encoding::SseEvent, sse::encode_message));
                }
                for out in &mut outputs {
                    out.consume(out.len_bytes());
                }
            })
        });
        group.bench_function(BenchmarkId::new("reencoded", n), |b| {
            b.iter(|| {
                let msg = message();
                for out in &mut outputs {
                    out.push_owned(sse::encode_message(&msg));
                }
                for out in &mut outputs {
                    out.consume(out.len_bytes());
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = publish, fanout, encode_per_subscriber
}
criterion_main!(benches);
