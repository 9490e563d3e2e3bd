//! Bad input at the edges is an `Error`, never a panic, an abort or a wrap-around:
//! huge task lists, huge worker counts, timeouts past the clock's range, and error
//! messages that keep the OS's reason. Tests that count children run one at a time.

mod common;

use std::error::Error as _;
use std::time::Duration;

use forkmap::{Error, Pool, SharedArray};

fn pool() -> Pool {
    Pool::new().workers(2).progress(false)
}

#[test]
fn a_timeout_beyond_the_clock_means_no_limit() {
    let _s = common::serial();
    let _d = common::deadline(60);
    // 18_446_744_074 s is just over u64::MAX ns: it used to wrap to 0.29 s.
    for limit in [
        Duration::from_secs(18_446_744_074),
        Duration::MAX,
        Duration::from_nanos(u64::MAX),
    ] {
        let out = pool().task_timeout(limit).map(0..2, |i| {
            std::thread::sleep(Duration::from_millis(600));
            i
        });
        assert_eq!(out.unwrap(), vec![0, 1], "limit {limit:?}");
    }
    // A long but representable limit still lets a short task finish, and a short one
    // still fires.
    let err = pool()
        .max_retries(0)
        .task_timeout(Duration::from_millis(200))
        .map(0..1, |_| std::thread::sleep(Duration::from_secs(30)))
        .unwrap_err();
    assert!(matches!(err, Error::TaskTimedOut { .. }), "{err}");
}

#[test]
fn a_task_list_too_long_for_memory_is_an_error() {
    let _s = common::serial();
    let _d = common::deadline(60);
    let before = common::children().len();
    // Capacity overflow: more bytes than the address space.
    let err = pool().map(0..usize::MAX, |i| i).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyTasks {
                count: usize::MAX,
                ..
            }
        ),
        "{err}"
    );
    // 2^40 tasks need 16 TB of bookkeeping: refused before any allocation or fork.
    let err = pool().map(0..1usize << 40, |i| i).unwrap_err();
    assert!(
        matches!(err, Error::TooManyTasks { count, .. } if count == 1 << 40),
        "{err}"
    );
    assert!(err.to_string().contains("1099511627776 tasks"), "{err}");
    // An iterator that does not say its length is caught as it grows.
    let err = pool()
        .map((0..usize::MAX).filter(|_| true), |i| i)
        .map(|v| v.len());
    // Either the budget check or the allocator refuses it before memory runs out.
    assert!(matches!(err, Err(Error::TooManyTasks { .. })), "{err:?}");
    // try_map refuses too, and the pool still works afterwards.
    assert!(matches!(
        pool().map_results(0..usize::MAX, |i| i),
        Err(Error::TooManyTasks { .. })
    ));
    assert_eq!(pool().map(0..3, |i| i).unwrap(), vec![0, 1, 2]);
    assert!(common::children().len() <= before, "a refused call forked");
}

#[test]
fn too_many_workers_is_refused() {
    let _s = common::serial();
    let _d = common::deadline(60);
    let before = common::children().len();
    let err = Pool::new()
        .workers(100_000)
        .progress(false)
        .map(0..1000, |i| i)
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("100000"), "{err}");
    assert!(err.to_string().contains("4096"), "{err}");
    assert!(common::children().len() <= before, "a refused call forked");
    // At the limit itself the count is accepted (and capped by the tasks).
    assert_eq!(
        Pool::new()
            .workers(Pool::MAX_WORKERS)
            .worker_count()
            .unwrap(),
        Pool::MAX_WORKERS
    );
}

#[test]
fn errors_with_an_os_cause_display_it() {
    let err = forkmap::records::load_shared("/nonexistent/nope.txt").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("nope.txt") && text.contains("No such file or directory (os error 2)"),
        "{text}"
    );
    assert!(err.source().is_some(), "source() lost");

    let err = SharedArray::<f64, _>::open_named("forkmap-test-no-such-segment", 3).unwrap_err();
    assert!(matches!(err, Error::Shm { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("could not open it") && text.contains("(os error 2)"),
        "{text}"
    );
    let io = err
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("an io::Error source");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
}
