//! The price of a `read()` guard (a cross-process reader-writer lock in the segment)
//! against a lock-free read of a `FrozenArray` and of a plain ndarray, in one process.
//!
//! `cargo bench --bench read -- --quick` for a short run; CI only compiles this.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use forkmap::SharedArray;
use forkmap::ndarray::Array2;

fn reads(c: &mut Criterion) {
    let plain = Array2::from_shape_fn((1000, 1000), |(i, j)| (i * 1000 + j) as f64);
    let shared = SharedArray::from_array(&plain).expect("shared array");
    let frozen = SharedArray::from_array(&plain)
        .and_then(SharedArray::freeze)
        .expect("frozen array");
    let mut group = c.benchmark_group("read_one_element");
    let mut i = 0usize;
    group.bench_function("plain_ndarray", |b| {
        b.iter(|| {
            i = (i + 7) % 1000;
            black_box(plain[[i, i]])
        })
    });
    group.bench_function("frozen", |b| {
        b.iter(|| {
            i = (i + 7) % 1000;
            black_box(frozen[[i, i]])
        })
    });
    group.bench_function("read_guard", |b| {
        b.iter(|| {
            i = (i + 7) % 1000;
            black_box(shared.read()[[i, i]])
        })
    });
    group.bench_function("write_guard", |b| {
        b.iter(|| {
            i = (i + 7) % 1000;
            let mut g = shared.write();
            g[[i, i]] += 1.0;
            black_box(g[[i, i]])
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = reads
}
criterion_main!(benches);
