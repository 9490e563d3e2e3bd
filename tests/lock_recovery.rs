//! A worker that dies holding the array's lock does not hang the next locker.

mod common;

use forkmap::ndarray::Ix1;
use forkmap::{Error, Pool, SharedArray};

fn die_now() -> ! {
    // SAFETY: raise only sends a signal to this (worker) process.
    unsafe { libc::raise(libc::SIGKILL) };
    unreachable!("SIGKILL returned");
}

#[test]
fn writer_killed_holding_the_write_lock() {
    let _d = common::deadline(60);
    let a = SharedArray::<i64, Ix1>::zeros(4).unwrap();
    let err = Pool::new()
        .workers(2)
        .max_retries(0)
        .progress(false)
        .map(0..4, |i| {
            if i == 2 {
                let mut g = a.write();
                g[0] = 42;
                die_now();
            }
            i
        })
        .unwrap_err();
    match err {
        Error::WorkerDied { status, task, .. } => {
            assert_eq!(status, forkmap::ExitKind::Signal(libc::SIGKILL));
            assert_eq!(task, Some((2, 2)));
        }
        other => panic!("unexpected {other}"),
    }
    // The next writer gets through, and is told the lock was recovered.
    let g = a.write();
    assert!(g.recovered());
    assert_eq!(g[0], 42);
    drop(g);
    assert_eq!(a.lock_recoveries(), 1);
    assert!(a.last_dead_holder().is_some());
    // And the array is fully usable by a new pool.
    let seen: Vec<i64> = Pool::new()
        .workers(2)
        .progress(false)
        .map(0..4, |i| {
            a.write()[i] += 1;
            a.read()[0]
        })
        .unwrap();
    assert!(seen.iter().all(|&v| v >= 42));
}

#[test]
fn reader_killed_holding_a_read_lock() {
    let _d = common::deadline(60);
    let a = SharedArray::<i64, Ix1>::zeros(1).unwrap();
    let err = Pool::new()
        .workers(1)
        .max_retries(0)
        .progress(false)
        .map(0..1, |_| -> u8 {
            let _g = a.read();
            die_now()
        })
        .unwrap_err();
    assert!(matches!(err, Error::WorkerDied { .. }), "{err}");
    let mut g = a.write();
    g[0] = 7;
    assert!(
        g.recovered(),
        "the dead reader's hold should have been released"
    );
    drop(g);
    assert_eq!(a.read()[0], 7);
}

#[test]
fn retries_recover_the_lock_each_time() {
    let _d = common::deadline(60);
    let a = SharedArray::<i64, Ix1>::zeros(1).unwrap();
    // Dies holding the write lock on every attempt: 3 attempts, each later one (and then
    // the parent) finds the lock owner dead and recovers it.
    let err = Pool::new()
        .workers(2)
        .progress(false)
        .map(0..2, |i| {
            if i == 1 {
                let mut g = a.write();
                g[0] += 1;
                die_now();
            }
            i
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WorkerDied {
                task: Some((1, 1)),
                ..
            }
        ),
        "{err}"
    );
    let g = a.write();
    assert!(g.recovered());
    assert_eq!(g[0], 3, "three attempts, each wrote once");
    drop(g);
    assert_eq!(a.lock_recoveries(), 3);
}
