//! Adversarial edges of crews and streams with real forks: calls after dropped and
//! interrupted calls, stopped workers, timeouts under back-pressure, recycling while work
//! is stolen, large and shared-array results, slow and failing inits, nested pools, two
//! crews on two threads. Every test holds `common::serial()`, since some count this
//! process's children and descriptors.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use forkmap::ndarray::Ix1;
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

/// Counts a run of position `i` in memory every process shares.
fn bump(runs: &SharedArray<u32, Ix1>, i: usize) {
    runs.write()[i] += 1;
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill takes plain integers; the pid is our own unreaped child.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {pid} {sig}");
}

#[test]
fn two_threads_run_a_crew_each_at_once() {
    let _d = common::deadline(180);
    let _s = common::serial();
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut crew = pool(2)
                    .spawn(move |i| (i as u64 * 10 + t, std::process::id()))
                    .unwrap();
                let mut pids = HashSet::new();
                for call in 0..40 {
                    let n = 1 + (call * 7) % 50;
                    let out = crew.map(0..n).unwrap();
                    for (i, &(v, pid)) in out.iter().enumerate() {
                        assert_eq!(v, i as u64 * 10 + t, "thread {t} call {call}");
                        pids.insert(pid);
                    }
                    let streamed: Vec<u64> = crew
                        .imap(0..n)
                        .unwrap()
                        .map(|r| r.unwrap().0)
                        .collect();
                    assert_eq!(streamed.len(), n);
                }
                assert_eq!(crew.forks(), 2, "thread {t}");
                pids
            })
        })
        .collect();
    let pids: Vec<HashSet<u32>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(pids[0].is_disjoint(&pids[1]), "the crews shared a worker");
    assert!(common::wait_until(10, || common::children().is_empty()));
}

#[test]
fn a_worker_stopped_between_calls_does_not_hold_the_next_one() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut crew = pool(2).spawn(|i| (i * 2, std::process::id())).unwrap();
    let first = crew.map(0..20).unwrap();
    let victim = first[0].1 as i32;
    kill(victim, libc::SIGSTOP);
    assert!(common::wait_until(10, || common::state(victim) == Some('T')));
    for call in 0..3 {
        let out = crew.map(0..100).unwrap();
        assert!(
            out.iter().enumerate().all(|(i, &(v, _))| v == i * 2),
            "call {call}"
        );
    }
    // Stopped for good, the worker was killed and replaced once it held work too long
    // (or its work was all taken by the other one, and it stays stopped, idle).
    assert!(crew.forks() <= 3, "{}", crew.forks());
    drop(crew);
    assert!(common::wait_until(10, || common::children().is_empty()));
    assert_ne!(common::state(victim), Some('T'), "the stopped worker outlived its crew");
}

#[test]
fn a_crew_task_that_hangs_once_times_out_and_the_crew_goes_on() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let once = SharedArray::<u32, Ix1>::zeros(1).unwrap();
    let mut crew = pool(2)
        .task_timeout(Duration::from_millis(300))
        .max_retries(0)
        .spawn(|i| {
            if i == 7 {
                let first = {
                    let mut o = once.write();
                    o[0] += 1;
                    o[0] == 1
                };
                if first {
                    std::thread::sleep(Duration::from_secs(60));
                }
            }
            i
        })
        .unwrap();
    let err = crew.map(0..20).unwrap_err();
    assert!(
        matches!(err, Error::TaskTimedOut { index: 7, position: 7, .. }),
        "{err}"
    );
    assert_eq!(crew.map(0..20).unwrap(), (0..20).collect::<Vec<_>>());
    // In a stream, the timeout is that item's, and the stream goes on.
    once.write()[0] = 0;
    let out: Vec<Result<usize, Error>> = crew.imap(0..20).unwrap().collect();
    for (k, r) in out.iter().enumerate() {
        match k {
            7 => assert!(matches!(r, Err(Error::TaskTimedOut { index: 7, .. })), "{r:?}"),
            _ => assert_eq!(r.as_ref().ok(), Some(&k)),
        }
    }
}

#[test]
fn one_task_per_worker_folds_and_streams_exactly() {
    let _d = common::deadline(180);
    let _s = common::serial();
    const N: usize = 60;
    let runs = SharedArray::<u32, Ix1>::zeros(N).unwrap();
    let one = pool(2).max_tasks_per_worker(1);
    let sum = one
        .fold(
            0..N,
            || (0u64, Vec::new()),
            |(acc, mut pids), i| {
                bump(&runs, i);
                pids.push(std::process::id());
                (acc + i as u64, pids)
            },
            |(a, mut p), (b, q)| {
                p.extend(q);
                (a + b, p)
            },
        )
        .unwrap();
    assert_eq!(sum.0, (0..N as u64).sum::<u64>());
    let distinct: HashSet<u32> = sum.1.iter().copied().collect();
    assert_eq!(distinct.len(), N, "a process ran more than one task");
    assert!(runs.read().iter().all(|&r| r == 1), "{:?}", runs.read());

    runs.write().fill(0);
    let mut per_pid: HashMap<u32, usize> = HashMap::new();
    let it = one
        .lookahead(5)
        .imap(0..N, |i| {
            bump(&runs, i);
            (i, std::process::id())
        })
        .unwrap();
    for (k, r) in it.enumerate() {
        let (i, pid) = r.unwrap();
        assert_eq!(i, k);
        *per_pid.entry(pid).or_default() += 1;
    }
    assert_eq!(per_pid.len(), N, "{per_pid:?}");
    assert!(runs.read().iter().all(|&r| r == 1), "{:?}", runs.read());
}

#[test]
fn workers_retiring_while_their_chunks_are_stolen_run_each_position_once() {
    let _d = common::deadline(180);
    let _s = common::serial();
    const N: usize = 3000;
    const LIMIT: usize = 37;
    let runs = SharedArray::<u32, Ix1>::zeros(N).unwrap();
    let mut crew = pool(3)
        .max_tasks_per_worker(LIMIT as u64)
        .spawn(|i| {
            bump(&runs, i);
            // Uneven costs keep the thieves busy.
            if i % 97 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
            (i, std::process::id())
        })
        .unwrap();
    for call in 0..2 {
        runs.write().fill(0);
        let out = crew.map_results(0..N).unwrap();
        let mut per_pid: HashMap<u32, usize> = HashMap::new();
        for (k, r) in out.into_iter().enumerate() {
            let (i, pid) = r.unwrap_or_else(|e| panic!("call {call} position {k}: {e}"));
            assert_eq!(i, k);
            *per_pid.entry(pid).or_default() += 1;
        }
        assert!(per_pid.values().all(|&n| n <= LIMIT), "call {call}: {per_pid:?}");
        let runs = runs.read();
        let twice: Vec<usize> = (0..N).filter(|&i| runs[i] != 1).collect();
        assert!(twice.is_empty(), "call {call}: positions not run once: {twice:?}");
    }
    let retired = crew.retirements();
    assert!(retired.len() >= 2 * N / LIMIT - 3, "{}", retired.len());
    assert!(retired.iter().all(|r| r.tasks == Some(LIMIT as u64)));
}

#[test]
fn a_memory_cap_retires_workers_in_the_middle_of_an_unordered_stream() {
    let _d = common::deadline(180);
    let _s = common::serial();
    const MB: usize = 1 << 20;
    const N: usize = 40;
    let runs = SharedArray::<u32, Ix1>::zeros(N).unwrap();
    let mut crew = pool(2)
        .max_worker_memory(150 * MB as u64)
        .lookahead(6)
        .spawn(|i| {
            bump(&runs, i);
            std::mem::forget(vec![1u8; 30 * MB]);
            std::thread::sleep(Duration::from_millis(12));
            i * 3
        })
        .unwrap();
    let mut seen = vec![false; N];
    for done in crew.imap_unordered(0..N).unwrap() {
        assert_eq!(done.result.unwrap(), done.index * 3);
        assert!(!std::mem::replace(&mut seen[done.position], true));
    }
    assert!(seen.iter().all(|&s| s));
    assert!(runs.read().iter().all(|&r| r == 1), "{:?}", runs.read());
    let retired = crew.retirements();
    assert!(retired.len() >= 4, "{retired:?}");
    assert!(retired.iter().all(|r| r.rss.is_some_and(|b| b > 150 * MB as u64)));
}
