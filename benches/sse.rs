//! Server-sent events (HTML "Server-sent events"): the server's encoders, per data byte, next to
//! a plain copy of the data, and the client's parser, per event.
//!
//! `encode_message` is what a publish costs once per message for every SSE subscriber (the `id:`
//! cursor, the `data:` lines, the blank line); `encode_event` is the field writer under it.
//! The parser is fed a stream of such events whole and in 1,460-byte pieces (one TCP segment).

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pushwire::hub::{ChannelName, Cursor, Epoch, Message, Payload};
use pushwire::sse::{encode_event, EventStreamParser, ParseLimits};
use pushwire::transport::sse::encode_message;

const SEGMENT_BYTES: usize = 1460;

/// A JSON-ish line of `size` bytes, without line breaks.
fn line(size: usize) -> String {
    let sample = "{\"symbol\":\"ACME\",\"price\":123.45,\"volume\":1000,\"ts\":1700000000}";
    sample.chars().cycle().take(size).collect()
}

/// `size` bytes of text in lines of 64 bytes (63 plus LF).
fn lines(size: usize) -> String {
    let mut text = String::with_capacity(size);
    while text.len() < size {
        let n = (size - text.len()).min(64);
        text.push_str(&line(n - 1));
        text.push('\n');
    }
    text.pop();
    text
}

fn message(data: &str, offset: u64) -> Message {
    Message::new(
        ChannelName::parse("quotes").unwrap(),
        Cursor { epoch: Epoch(0x1234_5678_9abc), offset },
        None,
        Payload::Text(Arc::from(data)),
        Instant::now(),
    )
}

fn cases() -> [(&'static str, String); 3] {
    [("one_line", line(100)), ("one_line", line(1024)), ("multi_line_16", lines(1024))]
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse_encode");
    for (name, data) in cases() {
        group.throughput(Throughput::Bytes(data.len() as u64));
        let id = |what: &str| BenchmarkId::new(format!("{name}/{what}"), data.len());
        let msg = message(&data, 42);
        group
            .bench_with_input(id("encode_message"), &msg, |b, msg| b.iter(|| encode_message(black_box(msg))));
        let cursor = msg.id.to_string();
        let mut out = Vec::with_capacity(2 * data.len());
        group.bench_with_input(id("encode_event"), &data, |b, data| {
            b.iter(|| {
                out.clear();
                encode_event(Some(black_box(&cursor)), None, black_box(data), &mut out).unwrap();
                black_box(out.len())
            })
        });
        // Reference: copying the data alone into the same reused buffer.
        group.bench_with_input(id("copy"), &data, |b, data| {
            b.iter(|| {
                out.clear();
                out.extend_from_slice(black_box(data).as_bytes());
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    const EVENTS: usize = 100;
    let mut group = c.benchmark_group("sse_parse");
    group.throughput(Throughput::Elements(EVENTS as u64));
    for (name, data) in cases() {
        let mut stream = Vec::new();
        for offset in 1..=EVENTS as u64 {
            stream.extend_from_slice(&encode_message(&message(&data, offset)));
        }
        let mut events = Vec::with_capacity(EVENTS);
        EventStreamParser::new(ParseLimits::default()).feed(&stream, &mut events).unwrap();
        assert_eq!(events.len(), EVENTS);
        assert_eq!(events[0].data, data);
        for (how, piece) in [("whole", stream.len()), ("segments", SEGMENT_BYTES)] {
            let id = BenchmarkId::new(format!("{name}_{}B/{how}", data.len()), stream.len());
            group.bench_with_input(id, &stream, |b, stream| {
                b.iter(|| {
                    let mut parser = EventStreamParser::new(ParseLimits::default());
                    events.clear();
                    for bytes in black_box(stream).chunks(piece) {
                        let _ = parser.feed(bytes, &mut events);
                    }
                    black_box(events.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = encode, parse
}
criterion_main!(benches);
