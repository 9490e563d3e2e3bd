//! Consecutive `map` calls leave nothing behind: no file descriptor, no `/dev/shm`
//! entry, no child process. Alone in its file, because it counts process-wide resources.

mod common;

use forkmap::{Pool, SharedArray};

#[test]
fn two_hundred_maps_leak_nothing() {
    let _d = common::deadline(120);
    let shared = SharedArray::<f64, _>::zeros((64, 64)).unwrap();
    let pool = Pool::new().workers(2).progress(false);
    // One warm-up call, so lazily opened process-wide descriptors are counted in the baseline.
    pool.map(0..4, |i| i).unwrap();
    let fds = common::open_fds();
    let shm = common::shm_entries();
    for round in 0..200 {
        let got: Vec<f64> = pool
            .map(0..16, |i| shared.read()[[i, i]] + i as f64)
            .unwrap();
        assert_eq!(got[15], 15.0, "round {round}");
        if round % 50 == 0 {
            // An error path must clean up too.
            assert!(
                pool.map(0..8, |i| if i == 5 { panic!("boom") } else { i })
                    .is_err()
            );
        }
        assert!(
            common::children().is_empty(),
            "round {round}: children left: {:?}",
            common::children()
        );
    }
    assert_eq!(common::open_fds(), fds, "file descriptors leaked");
    assert_eq!(common::shm_entries(), shm, "/dev/shm entries leaked");
}
