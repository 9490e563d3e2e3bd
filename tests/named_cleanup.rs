//! Named segments leave nothing in /dev/shm. This file counts /dev/shm entries, so it
//! is its own test binary; each test counts only names with its own prefix, so tests
//! running at the same time (here or in other processes) do not disturb the counts.
//! Nothing here panics on purpose: a panic in one test thread while another forks
//! workers is a separate hazard, kept out of this file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use forkmap::{Pool, SharedArray};

/// A prefix no other test or process uses.
fn prefix(test: &str) -> String {
    format!("forkmap-cleanup-{}-{test}-", std::process::id())
}

/// How many /dev/shm entries start with `prefix`.
fn count(prefix: &str) -> usize {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(prefix))
        })
        .count()
}

/// Aborts the test binary if it is still alive at the deadline (its workers die with
/// it), so a hung pool fails the run instead of stalling it.
struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    fn new(limit: Duration) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let seen = done.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while !seen.load(Ordering::SeqCst) {
                if Instant::now() > deadline {
                    eprintln!("named_cleanup: deadline of {limit:?} passed, aborting");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn owners_remove_their_names_and_openers_do_not() {
    let p = prefix("owners");
    let owners: Vec<_> = (0..5)
        .map(|_| SharedArray::<f32, _>::create_named_unique(&p, (10, 10)).unwrap())
        .collect();
    assert_eq!(count(&p), 5);
    for owner in &owners {
        let opener = SharedArray::<f32, _>::open_named(owner.name().unwrap(), (10, 10)).unwrap();
        opener.write()[[1, 1]] = 2.0;
        drop(opener);
        assert_eq!(owner.read()[[1, 1]], 2.0);
    }
    assert_eq!(count(&p), 5);
    // An opener keeps working after the owner is gone; only the name disappears.
    let opener = SharedArray::<f32, _>::open_named(owners[0].name().unwrap(), (10, 10)).unwrap();
    drop(owners);
    assert_eq!(count(&p), 0);
    assert_eq!(opener.read()[[1, 1]], 2.0);
    opener.write()[[2, 2]] = 3.0;
    drop(opener);
    assert_eq!(count(&p), 0);
}

#[test]
fn failed_creations_leave_nothing() {
    let p = prefix("failed");
    // Too large to reserve: refused after the file was made, which is then removed.
    let err = SharedArray::<u8, _>::create_named_unique(&p, 1usize << 60).unwrap_err();
    assert!(err.to_string().contains("reserve memory"), "{err}");
    // Too large to describe: refused before any file is made.
    assert!(SharedArray::<u64, _>::create_named_unique(&p, (usize::MAX, 2)).is_err());
    // Too many dimensions.
    assert!(SharedArray::<u8, _>::create_named_unique(&p, vec![1; 9]).is_err());
    assert_eq!(count(&p), 0);
}

#[test]
fn workers_use_a_named_array_without_touching_the_name() {
    let p = prefix("workers");
    let shared = SharedArray::<u64, _>::create_named_unique(&p, (8, 4)).unwrap();
    let name = shared.name().unwrap().to_string();
    let _watchdog = Watchdog::new(Duration::from_secs(120));
    let sums: Vec<u64> = Pool::new()
        .workers(2)
        .task_timeout(Duration::from_secs(30))
        .map(0..8, |row| {
            shared.write().row_mut(row).fill(row as u64);
            // A worker may also open the array by name, as another program would.
            let other = SharedArray::<u64, _>::open_named(&name, (8, 4)).unwrap();
            other.read().row(row).iter().sum::<u64>()
        })
        .unwrap();
    assert_eq!(sums, (0..8).map(|r| 4 * r).collect::<Vec<_>>());
    // Workers exited without removing the name, and made no other.
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(count(&p), 1);
    drop(shared);
    assert_eq!(count(&p), 0);
}
