//! forkmap's panic hook: workers report panics (with their location) instead of printing
//! them, the caller's own hook keeps handling the caller's panics, and a thread that is
//! panicking while `map` forks does not hang the workers.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static CALLER_PANICS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn worker_panics_are_reported_and_the_callers_hook_is_kept() {
    let _d = common::deadline(120);
    std::panic::set_hook(Box::new(|_| {
        CALLER_PANICS.fetch_add(1, Ordering::Relaxed);
    }));
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Another thread panics over and over: some forks land mid-panic.
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::panic::catch_unwind(|| panic!("noise from another thread"));
            }
        });
        let pool = forkmap::Pool::new().workers(2).progress(false);
        for round in 0..40 {
            let err = pool
                .map(0..6, |i| {
                    if i == 4 {
                        panic!("task four, round {round}")
                    } else {
                        i
                    }
                })
                .unwrap_err();
            match err {
                forkmap::Error::TaskPanicked {
                    index: 4, message, ..
                } => {
                    assert!(
                        message.contains(&format!("task four, round {round}")),
                        "{message}"
                    );
                    assert!(
                        message.contains("tests/panic_hook.rs"),
                        "no location: {message}"
                    );
                }
                other => panic!("round {round}: unexpected {other}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        CALLER_PANICS.load(Ordering::Relaxed) > 0,
        "the caller's own hook was replaced"
    );
}
