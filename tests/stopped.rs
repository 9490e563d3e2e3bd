//! A worker stopped for good (SIGSTOP, or SIGTTIN for a task reading the terminal) does
//! not hold the map forever, even without a task timeout: it is killed after a grace
//! time, its tasks run elsewhere, and a task that stops its worker every time is named.

mod common;

use forkmap::ndarray::Ix1;
use forkmap::{Error, Pool, SharedArray};

#[test]
fn a_stopped_worker_is_replaced_then_named() {
    let _d = common::deadline(120);
    let attempts = SharedArray::<u32, Ix1>::zeros(8).unwrap();
    let out = Pool::new()
        .workers(2)
        .chunk_size(1)
        .max_retries(1)
        .progress(false)
        .map_results(0..8, |i| {
            let n = {
                let mut a = attempts.write();
                a[i] += 1;
                a[i]
            };
            // Task 2 stops its worker once; task 5 every time.
            if (i == 2 && n == 1) || i == 5 {
                // SAFETY: raise stops this (worker) process only.
                unsafe { libc::raise(libc::SIGSTOP) };
            }
            i
        })
        .unwrap();
    for (i, r) in out.iter().enumerate() {
        match (i, r) {
            (
                5,
                Err(
                    e @ Error::WorkerStopped {
                        task: Some((5, 5)), ..
                    },
                ),
            ) => {
                assert!(e.to_string().contains("stopped"), "{e}");
            }
            (_, Ok(v)) => assert_eq!(*v, i),
            (_, r) => panic!("position {i}: {r:?}"),
        }
    }
    let a = attempts.read();
    assert_eq!((a[2], a[5]), (2, 2));
    assert!(common::children().is_empty());
}
