//! Adversarial edges of crews and streams with real forks: calls after dropped and
//! interrupted calls, stopped workers, timeouts under back-pressure, recycling while work
//! is stolen, large and shared-array results, slow and failing inits, nested pools, two
//! crews on two threads. Every test holds `common::serial()`, since some count this
//! process's children and descriptors.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use forkmap::{Error, Pool, SharedArray};

fn pool(workers: usize) -> Pool {
    Pool::new().workers(workers).progress(false)
}

/// Results this large (under the 1 MiB at which a payload moves to a memory file) take
/// several ipc-channel fragments: a worker sending one while nobody reads blocks in the
/// middle of the message.
const LARGE: usize = 900 << 10;

fn large(i: usize) -> Vec<u8> {
    vec![(i % 251) as u8; LARGE]
}

fn is_large(i: usize, v: &[u8]) -> bool {
    v.len() == LARGE && v.iter().all(|&b| b == (i % 251) as u8)
}

#[test]
fn a_crew_call_after_an_imap_dropped_mid_send_is_exact() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut crew = pool(2).chunk_size(1).spawn(large).unwrap();
    for round in 0..3 {
        let mut it = crew.imap_unordered(0..40).unwrap();
        let first = it.next().unwrap();
        assert!(is_large(first.index, &first.result.unwrap()));
        // The consumer is away: the workers finish their next tasks and block halfway
        // through sending them. Dropping the stream kills them there.
        std::thread::sleep(Duration::from_millis(400));
        drop(it);
        let out = crew.map(0..6);
        let out = out.unwrap_or_else(|e| panic!("round {round}: the next call failed: {e}"));
        for (i, v) in out.iter().enumerate() {
            assert!(is_large(i, v), "round {round}, position {i}");
        }
    }
}

#[test]
fn task_timeout_does_not_count_a_send_blocked_on_a_slow_consumer() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut crew = pool(2)
        .chunk_size(1)
        .lookahead(8)
        .task_timeout(Duration::from_millis(300))
        .spawn(large)
        .unwrap();
    for (k, r) in crew.imap(0..10).unwrap().enumerate() {
        let v = r.unwrap_or_else(|e| panic!("item {k}: {e}"));
        assert!(is_large(k, &v));
        // Far slower than a task: the workers wait on the consumer, not the other way.
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(crew.forks(), 2, "workers blocked in a send were killed");
}
