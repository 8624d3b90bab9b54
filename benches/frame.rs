//! WebSocket framing (RFC 6455 §5.2): header parse and encode, whole-frame encode next to a plain
//! copy of the payload, and a server-role `WsConn` consuming a buffer of masked client frames.
//!
//! Header parse and encode are per header (headers/s); the header of a 16 B, 1 KiB and 64 KiB
//! payload uses the 7-bit, 16-bit and 64-bit length forms. `encode_frame` is per payload byte,
//! next to `extend_from_slice` of the same payload, the ceiling a frame encoder can approach.
//! `ws_conn` is per message: each message is one masked, final text or binary frame, taken
//! message by message as `transport::websocket` does (each message dropped before the next is
//! read; holding all 100 messages of 64 KiB at once measures the allocator returning 6 MiB to
//! the kernel and faulting it back in on every iteration instead).

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use pushwire::output::Output;
use pushwire::ws::deflate::Codec;
use pushwire::ws::frame::encode_frame;
use pushwire::ws::{Event, FrameHeader, Limits, OpCode, Role, WsConn};

const SIZES: [usize; 3] = [16, 1024, 64 * 1024];
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn header(payload_len: usize, mask: Option<[u8; 4]>) -> FrameHeader {
    FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask, payload_len: payload_len as u64 }
}

fn frame_header(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_header");
    group.throughput(Throughput::Elements(1));
    for size in SIZES {
        // A client frame as a server reads it: masked.
        let mut wire = Vec::new();
        header(size, Some(KEY)).encode(&mut wire);
        assert_eq!(FrameHeader::parse(&wire).unwrap().unwrap().0, header(size, Some(KEY)));
        group.bench_with_input(BenchmarkId::new("parse", size), &wire, |b, wire| {
            b.iter(|| FrameHeader::parse(black_box(wire)))
        });
        // A server frame as the server writes it: unmasked.
        let server = header(size, None);
        let mut out = Vec::with_capacity(16);
        group.bench_with_input(BenchmarkId::new("encode", size), &server, |b, h| {
            b.iter(|| {
                out.clear();
                black_box(h).encode(&mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn frame_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_frame");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let payload = vec![b'x'; size];
        let mut out = Vec::with_capacity(size + 16);
        group.bench_with_input(BenchmarkId::new("server_unmasked", size), &payload, |b, p| {
            b.iter(|| {
                out.clear();
                encode_frame(true, OpCode::Binary, black_box(p), None, &mut out);
                black_box(out.len())
            })
        });
        group.bench_with_input(BenchmarkId::new("client_masked", size), &payload, |b, p| {
            b.iter(|| {
                out.clear();
                encode_frame(true, OpCode::Binary, black_box(p), Some(KEY), &mut out);
                black_box(out.len())
            })
        });
        // Reference: the payload copy alone, into the same reused buffer.
        group.bench_with_input(BenchmarkId::new("copy", size), &payload, |b, p| {
            b.iter(|| {
                out.clear();
                out.extend_from_slice(black_box(p));
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// `count` masked final frames of `size` bytes each, text (ASCII) or binary, back to back.
fn masked_frames(count: usize, size: usize, opcode: OpCode) -> Vec<u8> {
    let payload = vec![b'a'; size];
    let mut wire = Vec::new();
    for i in 0..count {
        let key = [i as u8, 0x5a, 0xc3, 0x0f];
        encode_frame(true, opcode, &payload, Some(key), &mut wire);
    }
    wire
}

fn ws_conn(c: &mut Criterion) {
    const FRAMES: usize = 100;
    let mut group = c.benchmark_group("ws_conn_server");
    group.throughput(Throughput::Elements(FRAMES as u64));
    let limits = Limits::default();
    for (name, opcode, size) in [
        ("text", OpCode::Text, 16),
        ("text", OpCode::Text, 1024),
        ("binary", OpCode::Binary, 1024),
        ("text", OpCode::Text, 64 * 1024),
        ("binary", OpCode::Binary, 64 * 1024),
    ] {
        let wire = masked_frames(FRAMES, size, opcode);
        let mut events = Vec::with_capacity(FRAMES);
        let mut codec = Codec::default();
        // Check once that every frame becomes a message and nothing is written back.
        let mut out = Output::new();
        let mut conn = WsConn::new(Role::Server, limits);
        conn.handle_input(
            &wire,
            &mut || unreachable!("the server never masks"),
            &mut codec,
            &mut events,
            &mut out,
        )
        .unwrap();
        assert_eq!(events.len(), FRAMES);
        assert!(matches!(&events[0], Event::Message(_)));
        assert!(out.is_empty());
        group.bench_with_input(
            BenchmarkId::new(format!("{name}_{FRAMES}_frames"), size),
            &wire,
            |b, wire| {
                // As `WsSession` does: message by message, each handled (here dropped) before the
                // next frame is read; whole frames are unmasked in place, so each run gets a fresh
                // copy of the input (made outside the measurement, as a socket read would be).
                b.iter_batched_ref(
                    || wire.clone(),
                    |input| {
                        let mut conn = WsConn::new(Role::Server, limits);
                        let mut pos = 0;
                        let mut messages = 0;
                        while let Ok((used, message)) = conn.handle_input_until_message(
                            black_box(&mut input[pos..]),
                            &mut || [0; 4],
                            &mut codec,
                            &mut events,
                            &mut out,
                        ) {
                            messages += usize::from(message.is_some());
                            pos += used;
                            if pos == input.len() {
                                break;
                            }
                        }
                        messages
                    },
                    BatchSize::LargeInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = frame_header, frame_encode, ws_conn
}
criterion_main!(benches);
