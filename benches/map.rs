//! What a `map` call costs: the overhead of small maps (fork, hand out, collect, reap) and
//! the throughput of 1,000,000 fine-grained tasks reading a shared array.
//!
//! `cargo bench --bench map -- --quick` for a short run; CI only compiles this. The side by
//! side comparison with rayon, Python and a copying baseline is
//! `cargo run --release --example compare` (results in `bench/RESULTS.md`).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use forkmap::ndarray::Array2;
use forkmap::{Pool, SharedArray};

fn pool() -> Pool {
    Pool::new().workers(2).progress(false)
}

/// Small maps: the fixed cost of one call, from 1 to 256 trivial tasks.
fn small_maps(c: &mut Criterion) {
    let mut group = c.benchmark_group("map_overhead");
    for n in [1usize, 16, 256] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let pool = pool();
            b.iter(|| pool.map(0..n, |i| i as u64 * 2).expect("map"));
        });
    }
    group.finish();
}

/// 1,000,000 tasks, each reading one element of a frozen shared array: the per-task cost
/// of forkmap's machinery (scheduling, result batches, progress counters).
fn fine_grained(c: &mut Criterion) {
    let n = 1_000_000;
    let table = SharedArray::from_array(&Array2::from_shape_fn((1000, 1000), |(i, j)| {
        (i * 1000 + j) as f64
    }))
    .and_then(SharedArray::freeze)
    .expect("shared array");
    let mut group = c.benchmark_group("fine_grained");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("1M_reads_2_workers", |b| {
        let pool = pool();
        b.iter(|| {
            pool.map(0..n, |i| table[[i % 1000, i / 1000]])
                .expect("map")
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = small_maps, fine_grained
}
criterion_main!(benches);
