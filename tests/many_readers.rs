//! More processes than reader slots read one array: slots come back with the guards, so
//! nothing waits for a process to exit. Forks hundreds of workers, so it runs alone.

mod common;

use std::time::{Duration, Instant};

use forkmap::ndarray;
use forkmap::{Error, Pool, SharedArray};

#[test]
fn more_readers_than_slots_never_deadlock() {
    let _d = common::deadline(240);
    let a = SharedArray::<u64, _>::from_array(&ndarray::Array1::from_iter(0..64u64)).unwrap();
    let arrived = SharedArray::<u64, _>::zeros(1).unwrap();
    // The coordinator holds a few descriptors per worker: with a hard limit too low for
    // 1,100 workers, 300 still shows the old limit of 256 gone.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let workers = if lim.rlim_max >= 8192 { 1100 } else { 300 };
    // Every worker reads, then waits at a barrier until all of them have read, so all
    // are alive at once: more processes than slots (1,024), and far more than the 256
    // that used to deadlock (there, the 257th blocked in `read` until the others
    // exited, and the barrier was never reached).
    let out = Pool::new()
        .workers(workers)
        .chunk_size(1)
        .progress(false)
        .map(0..workers, |i| {
            let g = a.read();
            let v = g[i % 64];
            drop(g);
            arrived.write()[0] += 1;
            let end = Instant::now() + Duration::from_secs(60);
            while arrived.read()[0] < workers as u64 {
                if Instant::now() > end {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            // A guard after the first is gone takes a slot again.
            Some(v + a.read()[0])
        })
        .unwrap();
    assert_eq!(out.len(), workers);
    let missed = out.iter().filter(|v| v.is_none()).count();
    assert_eq!(missed, 0, "{missed} workers never saw all {workers} read");
    assert!(
        out.iter()
            .enumerate()
            .all(|(i, &v)| v == Some((i % 64) as u64))
    );
    // Every slot is free again: a writer gets in at once, and nobody was "recovered".
    let w = a.write();
    assert!(!w.recovered());
    drop(w);
    assert_eq!(a.lock_recoveries(), 0);
    assert!(a.try_read().is_ok());
}

#[test]
fn a_killed_reader_does_not_block_later_processes() {
    let _d = common::deadline(120);
    let a = SharedArray::<u64, _>::zeros(4).unwrap();
    // Each of these workers dies by SIGKILL while holding a read guard.
    for round in 0..3 {
        let err = Pool::new()
            .workers(2)
            .max_retries(0)
            .progress(false)
            .map(0..2, |_| -> u8 {
                let _g = a.read();
                // SAFETY: kill with integer arguments, on this process.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                unreachable!()
            })
            .unwrap_err();
        assert!(
            matches!(err, Error::WorkerDied { .. }),
            "round {round}: {err}"
        );
        // Later processes (new workers, possibly given a dead one's pid) write and read.
        let seen = Pool::new()
            .workers(2)
            .progress(false)
            .map(0..8, |i| {
                a.write()[i % 4] += 1;
                a.read()[i % 4]
            })
            .unwrap();
        assert!(seen.iter().all(|&v| v >= 1));
    }
    assert!(a.lock_recoveries() >= 1);
    assert!(a.try_read().is_ok());
}
