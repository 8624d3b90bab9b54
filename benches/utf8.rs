//! Incremental UTF-8 validation (RFC 6455 §8.1) next to `std::str::from_utf8`, per byte.
//!
//! `feed_whole` is one `feed` plus `finish`; `feed_pieces` feeds 100-byte pieces, which cut
//! multi-byte code points, so the validator stitches them. The references are `from_utf8` on
//! the whole text and `from_utf8` on each 100-byte piece (accepting an incomplete code point
//! at a piece's end: the same scanning without the stitching, not a validator).

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pushwire::ws::Utf8Validator;

const PIECE_BYTES: usize = 100;

/// `sample` repeated up to at most `size` bytes, cut at a character boundary.
fn text(sample: &str, size: usize) -> String {
    let mut s = String::with_capacity(size + sample.len());
    while s.len() < size {
        s.push_str(sample);
    }
    let mut end = size;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

fn utf8(c: &mut Criterion) {
    let samples = [
        ("ascii", "{\"type\":\"quote\",\"symbol\":\"ACME\",\"price\":123.45,\"ts\":1700000000} "),
        // Latin-1 supplement (2 bytes), CJK (3 bytes) and ASCII mixed.
        ("latin_cjk", "Grüße aus Köln, ça va? 東京の天気は晴れです。 Señor Øster "),
        // Emoji (4 bytes) with ASCII between them.
        ("emoji", "ok 😀 🚀 party 🎉🎉 👍🏽 fire 🔥 "),
    ];
    let mut group = c.benchmark_group("utf8");
    for (name, sample) in samples {
        for size in [1024usize, 64 * 1024] {
            let text = text(sample, size);
            let bytes = text.as_bytes();
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            let id = |what: &str| BenchmarkId::new(format!("{name}/{what}"), size);
            group.bench_with_input(id("from_utf8_whole"), bytes, |b, bytes| {
                b.iter(|| std::str::from_utf8(black_box(bytes)).is_ok())
            });
            group.bench_with_input(id("feed_whole"), bytes, |b, bytes| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    v.feed(black_box(bytes)).and_then(|()| v.finish()).is_ok()
                })
            });
            group.bench_with_input(id("from_utf8_pieces"), bytes, |b, bytes| {
                b.iter(|| {
                    let mut ok = true;
                    for piece in black_box(bytes).chunks(PIECE_BYTES) {
                        ok &= match std::str::from_utf8(piece) {
                            Ok(_) => true,
                            Err(e) => e.error_len().is_none(),
                        };
                    }
                    ok
                })
            });
            group.bench_with_input(id("feed_pieces"), bytes, |b, bytes| {
                let mut v = Utf8Validator::new();
                for piece in bytes.chunks(PIECE_BYTES) {
                    v.feed(piece).unwrap();
                }
                v.finish().unwrap();
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    let mut ok = true;
                    for piece in black_box(bytes).chunks(PIECE_BYTES) {
                        ok &= v.feed(piece).is_ok();
                    }
                    ok && v.finish().is_ok()
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = utf8
}
criterion_main!(benches);
