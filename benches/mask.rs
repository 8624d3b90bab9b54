//! Masking throughput (RFC 6455 §5.3) next to a plain copy of the same size: the copy is the
//! ceiling a word-at-a-time XOR can hope to approach.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pushwire::ws::mask::apply_mask;

fn mask_vs_copy(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in [16usize, 1024, 64 * 1024, 1024 * 1024] {
        group.throughput(Throughput::Bytes(size as u64));
        let source = vec![0x5Au8; size];
        let mut buf = vec![0u8; size];
        group.bench_with_input(BenchmarkId::new("mask", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box([1, 2, 3, 4]), 0))
        });
        group.bench_with_input(BenchmarkId::new("copy", size), &size, |b, _| {
            b.iter(|| black_box(&mut buf).copy_from_slice(black_box(&source)))
        });
    }
    group.finish();
}

criterion_group!(benches, mask_vs_copy);
criterion_main!(benches);
