//! `SharedArray` seen from workers: reads, lock-guarded writes, freeze.

mod common;

use forkmap::ndarray::{Array2, Array3, Ix1};
use forkmap::{Pool, SharedArray};

#[test]
fn workers_read_what_the_parent_wrote() {
    let _d = common::deadline(30);
    // Forks in other tests' maps would inherit this file's arrays (and block a freeze).
    let _s = common::serial();
    let n = 300;
    let src = Array2::from_shape_fn((n, n), |(i, j)| (i * n + j) as f64 * 0.5);
    let b = SharedArray::from_array(&src).unwrap();
    assert_eq!(b.shape(), &[n, n]);
    let diag: Vec<f64> = Pool::new()
        .workers(3)
        .progress(false)
        .map(0..n, |a| b.read()[[a, a]])
        .unwrap();
    assert_eq!(diag, (0..n).map(|a| src[[a, a]]).collect::<Vec<_>>());
}

#[test]
fn locked_increments_are_never_lost() {
    let _d = common::deadline(60);
    // Forks in other tests' maps would inherit this file's arrays (and block a freeze).
    let _s = common::serial();
    let counter = SharedArray::<i64, Ix1>::zeros(1).unwrap();
    Pool::new()
        .workers(2)
        .chunk_size(1)
        .progress(false)
        .map(0..2000, |_| {
            let mut g = counter.write();
            let v = g[0];
            std::hint::black_box(&v);
            g[0] = v + 1;
        })
        .unwrap();
    assert_eq!(counter.read()[0], 2000);
    assert_eq!(counter.lock_recoveries(), 0);
}

#[test]
fn writes_in_workers_are_seen_by_the_parent() {
    let _d = common::deadline(30);
    // Forks in other tests' maps would inherit this file's arrays (and block a freeze).
    let _s = common::serial();
    let a = SharedArray::<u32, _>::zeros((4, 5, 6)).unwrap();
    Pool::new()
        .workers(4)
        .progress(false)
        .map(0..4, |i| {
            let mut g = a.write();
            g.index_axis_mut(forkmap::ndarray::Axis(0), i)
                .fill(i as u32 + 1);
        })
        .unwrap();
    let expect = Array3::from_shape_fn((4, 5, 6), |(i, _, _)| i as u32 + 1);
    assert_eq!(a.read().view(), expect.view());
}

#[test]
fn readers_and_writers_interleave_consistently() {
    let _d = common::deadline(60);
    // Forks in other tests' maps would inherit this file's arrays (and block a freeze).
    let _s = common::serial();
    // A writer always writes a whole row with one value; a reader must never see a mixed row.
    let a = SharedArray::<u64, _>::zeros((8, 256)).unwrap();
    let torn: Vec<bool> = Pool::new()
        .workers(3)
        .chunk_size(4)
        .progress(false)
        .map(0..600, |t| {
            let row = t % 8;
            if t % 3 == 0 {
                a.write().row_mut(row).fill(t as u64);
                false
            } else {
                let g = a.read();
                let r = g.row(row);
                r.iter().any(|&x| x != r[0])
            }
        })
        .unwrap();
    assert!(torn.iter().all(|&t| !t), "a reader saw a half-written row");
}

#[test]
fn frozen_arrays_read_without_a_lock_and_refuse_writes() {
    let _d = common::deadline(30);
    // Forks in other tests' maps would inherit this file's arrays (and block a freeze).
    let _s = common::serial();
    let a =
        SharedArray::from_array(&Array2::from_shape_fn((50, 50), |(i, j)| (i + j) as i32)).unwrap();
    let f = a.freeze().unwrap();
    assert!(f.is_sealed());
    let sums: Vec<i32> = Pool::new()
        .workers(2)
        .progress(false)
        .map(0..50, |i| f.row(i).sum())
        .unwrap();
    assert_eq!(
        sums,
        (0..50)
            .map(|i| (0..50).map(|j| i + j).sum())
            .collect::<Vec<i32>>()
    );
    assert_eq!(f.view()[[3, 4]], 7);
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
struct Row {
    chr: [u8; 10],
    _pad: [u8; 2],
    pos: i32,
    pct: f32,
    c: i32,
    t: i32,
}

#[test]
fn record_elements() {
    let _d = common::deadline(30);
    // Forks in other tests' maps would inherit this file's arrays (and block a freeze).
    let _s = common::serial();
    let a = SharedArray::<Row, Ix1>::zeros(10).unwrap();
    Pool::new()
        .workers(2)
        .progress(false)
        .map(0..10, |i| {
            let mut g = a.write();
            g[i].chr[..4].copy_from_slice(b"chr1");
            g[i].pos = i as i32 * 100;
            g[i].pct = 0.5;
        })
        .unwrap();
    let g = a.read();
    assert_eq!(&g[7].chr[..4], b"chr1");
    assert_eq!(g[7].pos, 700);
    assert_eq!(g[7].pct, 0.5);
}

#[test]
fn impossible_sizes_are_errors() {
    // Forks in other tests' maps would inherit this file's arrays (and block a freeze).
    let _s = common::serial();
    let err = SharedArray::<f64, _>::zeros((usize::MAX / 4, 3)).unwrap_err();
    assert!(matches!(err, forkmap::Error::Shm { .. }), "{err}");
    // More than the machine can hold: refused up front (fallocate), no SIGBUS later.
    let err = SharedArray::<u8, _>::zeros(1usize << 46).unwrap_err();
    assert!(matches!(err, forkmap::Error::Shm { .. }), "{err}");
}

#[test]
fn empty_arrays_work() {
    // Forks in other tests' maps would inherit this file's arrays (and block a freeze).
    let _s = common::serial();
    let a = SharedArray::<f32, _>::zeros((0, 4)).unwrap();
    assert!(a.is_empty());
    assert_eq!(a.read().len(), 0);
}
