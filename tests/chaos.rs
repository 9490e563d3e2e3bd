//! Chaos and soak: maps keep giving complete, correct results while workers are killed
//! at random, and thousands of consecutive maps leak nothing. `FORKMAP_STRESS=<n>`
//! multiplies the rounds (default 1 keeps the run short).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use forkmap::ndarray::Ix1;
use forkmap::{Pool, SharedArray};

fn stress() -> usize {
    std::env::var("FORKMAP_STRESS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

fn rss_kb() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn random_kills_never_lose_or_corrupt_a_result() {
    let _d = common::deadline(300);
    let _s = common::serial();
    let shared = SharedArray::<u64, Ix1>::zeros(1).unwrap();
    let fds = common::open_fds();
    let shm = common::shm_entries();
    let stop = AtomicBool::new(false);
    let kills = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        // The killer: SIGKILLs a random worker every few milliseconds.
        scope.spawn(|| {
            let mut rng = fastrand::Rng::with_seed(7);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(rng.u64(1..6)));
                let kids = common::children();
                if !kids.is_empty() {
                    let victim = kids[rng.usize(..kids.len())];
                    // SAFETY: kill with integer arguments; the victim is our own worker.
                    if unsafe { libc::kill(victim, libc::SIGKILL) } == 0 {
                        kills.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        let pool = Pool::new().workers(3).max_retries(50).progress(false);
        // At least 10 rounds, and on until the killer has struck a few times, so the test
        // always exercises what it is about however fast the machine is.
        let mut round = 0;
        while round < 10 * stress() || (kills.load(Ordering::Relaxed) < 5 && round < 500) {
            let got = pool
                .map(0..1000, |i| {
                    // Some lock traffic, so kills also land while a lock is held.
                    if i % 97 == 0 {
                        shared.write()[0] += 1;
                    }
                    // About 10 us of work, so a map lasts a few milliseconds.
                    std::hint::black_box(
                        (0..5000).fold(i as u64, |a, b| a.wrapping_mul(31).wrapping_add(b)),
                    );
                    (i as u64) * 7 + 1
                })
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert!(
                got.iter().enumerate().all(|(i, &v)| v == i as u64 * 7 + 1),
                "round {round}: wrong results"
            );
            round += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        kills.load(Ordering::Relaxed) > 0,
        "the killer never hit a worker"
    );
    // The lock still works after kills that may have landed while it was held.
    shared.write()[0] += 1;
    assert!(
        common::wait_until(5, || common::children().is_empty()),
        "children left: {:?}",
        common::children()
    );
    assert_eq!(common::open_fds(), fds, "file descriptors leaked");
    assert_eq!(common::shm_entries(), shm, "/dev/shm entries leaked");
}

#[test]
fn ten_thousand_small_maps_are_stable() {
    let _d = common::deadline(600);
    let _s = common::serial();
    let pool = Pool::new().workers(2).progress(false);
    let rounds = 10_000 * stress();
    // Warm up, then measure.
    for _ in 0..100 {
        pool.map(0..4, |i| i).unwrap();
    }
    let fds = common::open_fds();
    let rss = rss_kb();
    for round in 0..rounds {
        let got = pool.map(0..4, |i| i + round).unwrap();
        assert_eq!(got, vec![round, round + 1, round + 2, round + 3]);
    }
    assert_eq!(common::open_fds(), fds, "file descriptors leaked");
    let grown = rss_kb().saturating_sub(rss);
    assert!(
        grown < 8 * 1024,
        "resident memory grew by {grown} kB over {rounds} maps"
    );
    assert!(common::children().is_empty());
}
