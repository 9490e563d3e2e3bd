//! Adversarial edges of crews with real forks: calls after interrupted calls and after a
//! panic in the coordinator, stopped workers, timeouts, recycling while work is stolen,
//! slow and failing inits, nested pools, two crews on two threads or one, an ignored
//! SIGCHLD, a thousand calls (streams: `stream_edges.rs`). Every test holds `common::serial()`, since some count this
//! process's children and descriptors.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use forkmap::ndarray::Ix1;
use forkmap::{Error, Pool, SharedArray};

fn pool(workers: usize) -> Pool {
    Pool::new().workers(workers).progress(false)
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
                    let streamed: Vec<u64> =
                        crew.imap(0..n).unwrap().map(|r| r.unwrap().0).collect();
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
    assert_ne!(
        common::state(victim),
        Some('T'),
        "the stopped worker outlived its crew"
    );
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
        matches!(
            err,
            Error::TaskTimedOut {
                index: 7,
                position: 7,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(crew.map(0..20).unwrap(), (0..20).collect::<Vec<_>>());
    // In a stream, the timeout is that item's, and the stream goes on.
    once.write()[0] = 0;
    let out: Vec<Result<usize, Error>> = crew.imap(0..20).unwrap().collect();
    for (k, r) in out.iter().enumerate() {
        match k {
            7 => assert!(
                matches!(r, Err(Error::TaskTimedOut { index: 7, .. })),
                "{r:?}"
            ),
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
        assert!(
            per_pid.values().all(|&n| n <= LIMIT),
            "call {call}: {per_pid:?}"
        );
        let runs = runs.read();
        let twice: Vec<usize> = (0..N).filter(|&i| runs[i] != 1).collect();
        assert!(
            twice.is_empty(),
            "call {call}: positions not run once: {twice:?}"
        );
    }
    let retired = crew.retirements();
    assert!(retired.len() >= 2 * N / LIMIT - 3, "{}", retired.len());
    assert!(retired.iter().all(|r| r.tasks == Some(LIMIT as u64)));
}

static HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::SeqCst);
}

/// Sends SIGTERM to this process once `started[0]` is set (a task is running).
fn terminate_when_started(started: &SharedArray<u32, Ix1>) {
    assert!(common::wait_until(30, || started.read()[0] > 0));
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
}

#[test]
fn a_crew_interrupted_during_a_call_runs_the_next_one_exactly() {
    if common::role().as_deref() == Some("interrupted") {
        let _d = common::deadline(60);
        // SAFETY: installs an async-signal-safe handler (one atomic add).
        unsafe {
            libc::signal(
                libc::SIGTERM,
                count as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
        let started = SharedArray::<u32, Ix1>::zeros(1).unwrap();
        let mut crew = pool(2)
            .spawn(|i| {
                if i >= 1000 {
                    started.write()[0] = 1;
                    std::thread::sleep(Duration::from_secs(60));
                }
                i
            })
            .unwrap();
        std::thread::scope(|s| {
            s.spawn(|| terminate_when_started(&started));
            let err = crew.map(1000..1004).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Interrupted {
                        signal: libc::SIGTERM,
                        ..
                    }
                ),
                "{err}"
            );
        });
        // Delivered again, once, to the program's handler when the call let go.
        assert_eq!(HANDLED.load(Ordering::SeqCst), 1);
        assert_eq!(crew.map(0..50).unwrap(), (0..50).collect::<Vec<_>>());
        // The same while a stream waits for its first item: its last item is the interrupt.
        started.write()[0] = 0;
        std::thread::scope(|s| {
            s.spawn(|| terminate_when_started(&started));
            let mut it = crew.imap(1000..1004).unwrap();
            let first = it.next().unwrap();
            assert!(
                matches!(
                    first,
                    Err(Error::Interrupted {
                        signal: libc::SIGTERM,
                        ..
                    })
                ),
                "{first:?}"
            );
            assert!(it.next().is_none());
        });
        assert_eq!(HANDLED.load(Ordering::SeqCst), 2);
        // And unordered: the call's own failure is its last item, naming no task.
        started.write()[0] = 0;
        std::thread::scope(|s| {
            s.spawn(|| terminate_when_started(&started));
            let items: Vec<_> = crew.imap_unordered(1000..1004).unwrap().collect();
            assert_eq!(items.len(), 1, "{items:?}");
            let last = &items[0];
            assert_eq!((last.index, last.position), (usize::MAX, usize::MAX));
            assert!(
                matches!(last.result, Err(Error::Interrupted { .. })),
                "{last:?}"
            );
        });
        assert_eq!(HANDLED.load(Ordering::SeqCst), 3);
        let got: Vec<usize> = crew
            .imap_unordered(0..30)
            .unwrap()
            .map(|d| d.result.unwrap())
            .collect();
        assert_eq!(got.len(), 30);
        assert_eq!(crew.map(0..50).unwrap(), (0..50).collect::<Vec<_>>());
        assert_eq!(common::children().len(), 2);
        drop(crew);
        assert!(common::wait_until(10, || common::children().is_empty()));
        return;
    }
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut child = common::rerun(
        "a_crew_interrupted_during_a_call_runs_the_next_one_exactly",
        "interrupted",
        &[],
    );
    let status = common::wait_child(&mut child, 90);
    assert!(status.success(), "{status}");
}

#[test]
fn a_slow_init_is_not_a_task_that_timed_out() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let slow = |_: &forkmap::WorkerInfo| {
        std::thread::sleep(Duration::from_millis(1000));
        5usize
    };
    let timeout = Duration::from_millis(200);
    let out = pool(2)
        .task_timeout(timeout)
        .map_init(0..10, slow, |s, i| i + *s)
        .unwrap();
    assert_eq!(out, (5..15).collect::<Vec<_>>());
    let mut crew = pool(2)
        .task_timeout(timeout)
        .max_tasks_per_worker(4)
        .spawn_init(slow, |s, i| i + *s)
        .unwrap();
    // Each replacement runs the slow init again, still not a timeout.
    assert_eq!(crew.map(0..12).unwrap(), (5..17).collect::<Vec<_>>());
    assert!(crew.forks() >= 3);
}

#[test]
fn a_crew_whose_init_panics_fails_every_call_without_hanging() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut crew = pool(2)
        .spawn_init(|_| -> u32 { panic!("no model file") }, |_, i| i)
        .unwrap();
    for call in 0..4 {
        match crew.map(0..10) {
            Err(Error::InitFailed { reason, .. }) => {
                assert!(reason.contains("no model file"), "call {call}: {reason}")
            }
            other => panic!("call {call}: {other:?}"),
        }
        assert!(common::children().len() <= 2);
    }
    // A stream says it at its start (the worker's words arrived before the call) or as
    // its first item.
    let first = crew.imap(0..10).and_then(|mut it| it.next().unwrap());
    assert!(matches!(first, Err(Error::InitFailed { .. })), "{first:?}");
    drop(crew);
    assert!(common::wait_until(10, || common::children().is_empty()));

    // An init that fails only in the first process: the next call's replacement works.
    let inits = SharedArray::<u32, Ix1>::zeros(1).unwrap();
    let mut crew = pool(1)
        .spawn_init(
            |_| {
                let n = {
                    let mut a = inits.write();
                    a[0] += 1;
                    a[0]
                };
                assert!(n > 1, "first init fails");
                n
            },
            |n, i| (i, *n),
        )
        .unwrap();
    assert!(matches!(crew.map(0..5), Err(Error::InitFailed { .. })));
    let out = crew.map(0..5).unwrap();
    assert!(
        out.iter().enumerate().all(|(k, &(i, n))| i == k && n == 2),
        "{out:?}"
    );
}

#[test]
fn a_thousand_one_task_calls_leak_no_descriptor_and_no_process() {
    let _d = common::deadline(180);
    let _s = common::serial();
    let mut crew = pool(2).spawn(|i| i + 1).unwrap();
    assert_eq!(crew.map([0]).unwrap(), vec![1]);
    let fds = common::open_fds();
    for i in 0..1000 {
        match i % 4 {
            0 => assert_eq!(crew.imap([i]).unwrap().next().unwrap().unwrap(), i + 1),
            1 => assert_eq!(
                crew.imap_unordered([i])
                    .unwrap()
                    .next()
                    .unwrap()
                    .result
                    .unwrap(),
                i + 1
            ),
            _ => assert_eq!(crew.map([i]).unwrap(), vec![i + 1]),
        }
    }
    assert_eq!(
        common::open_fds(),
        fds,
        "descriptors leaked over 1000 calls"
    );
    assert_eq!(common::children().len(), 2);
    assert_eq!(crew.forks(), 2);
}

#[test]
fn a_crew_with_more_workers_than_tasks() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut crew = pool(6).spawn(|i| i * i).unwrap();
    for call in 0..50 {
        let n = call % 4;
        assert_eq!(
            crew.map(0..n).unwrap(),
            (0..n).map(|i| i * i).collect::<Vec<_>>()
        );
        let streamed: Vec<usize> = crew.imap(0..n).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(streamed.len(), n);
    }
    assert_eq!(crew.forks(), 6);
    let mut folds = pool(5).spawn_fold(|| 0u64, |a, i| a + i as u64).unwrap();
    assert_eq!(folds.fold([41], |a, b| a + b).unwrap(), 41);
    assert_eq!(folds.fold(0..3, |a, b| a + b).unwrap(), 3);
}

#[test]
fn a_task_may_run_a_pool_of_its_own() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut crew = pool(2)
        .spawn(|i| {
            let inner = pool(2);
            let squares = inner.map(0..5, move |j| i * 100 + j * j).unwrap();
            let streamed: usize = inner.imap(0..4, |j| j).unwrap().map(|r| r.unwrap()).sum();
            let failed = inner.map(0..3, |j| assert!(j != 1, "inner")).unwrap_err();
            (squares, streamed, failed.task_index(), std::process::id())
        })
        .unwrap();
    for call in 0..3 {
        let out = crew.map(0..6).unwrap();
        for (i, (squares, streamed, failed, _)) in out.iter().enumerate() {
            assert_eq!(
                squares,
                &(0..5).map(|j| i * 100 + j * j).collect::<Vec<_>>(),
                "call {call}"
            );
            assert_eq!((*streamed, *failed), (6, Some(1)));
        }
    }
    // The inner pools' workers were the crew workers' children, all reaped.
    for pid in common::children() {
        assert!(
            common::children_of(pid).is_empty(),
            "grandchildren of {pid} left"
        );
    }
    assert_eq!(crew.forks(), 2);
}

/// A value whose Deserialize panics in the coordinator for one value.
#[derive(Debug, serde::Serialize)]
struct Explodes(u32);

impl<'de> serde::Deserialize<'de> for Explodes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        assert!(v != 5, "the coordinator cannot take five");
        Ok(Explodes(v))
    }
}

#[test]
fn a_crew_call_that_panicked_in_the_coordinator_leaves_the_crew_exact() {
    let _d = common::deadline(120);
    let _s = common::serial();
    const N: usize = 400;
    let runs = SharedArray::<u32, Ix1>::zeros(N).unwrap();
    let mut crew = pool(2)
        .chunk_size(3)
        .spawn(|i| {
            if i < N {
                bump(&runs, i);
            }
            // The first call's second chunk (5..100 in chunks of 3) holds a long task:
            // its worker is still in it when the call panics, and through the next call.
            std::thread::sleep(Duration::from_millis(if i == 8 { 1500 } else { 2 }));
            Explodes(i as u32)
        })
        .unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crew.map(5..100)));
    assert!(caught.is_err(), "the Deserialize panic reaches the caller");
    runs.write().fill(0);
    for call in 0..3 {
        let out = crew
            .map(100..N)
            .unwrap_or_else(|e| panic!("call {call}: {e}"));
        assert!(out.iter().enumerate().all(|(k, v)| v.0 as usize == 100 + k));
        let r = runs.read();
        let wrong: Vec<usize> = (100..N).filter(|&i| r[i] != call + 1).collect();
        assert!(wrong.is_empty(), "call {call}: not run once: {wrong:?}");
    }

    // A `reduce` (run in the caller) that panics, then the crew's next fold.
    let mut folds = pool(2)
        .chunk_size(5)
        .spawn_fold(
            || 0u64,
            |a, i| {
                if i < 1000 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                a + i as u64
            },
        )
        .unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        folds.fold(0..1000, |a, b| {
            assert!(a < 10_000, "reduce refuses");
            a + b
        })
    }));
    assert!(caught.is_err());
    for call in 0..3 {
        let sum = folds.fold(1000..3000, |a, b| a + b);
        assert_eq!(
            sum.unwrap_or_else(|e| panic!("call {call}: {e}")),
            (1000..3000u64).sum::<u64>()
        );
    }
}

#[test]
fn a_crew_whose_init_kills_its_worker_fails_every_call_and_stops_forking() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut crew = pool(2)
        .max_retries(1)
        .spawn_init(|_| -> u32 { std::process::abort() }, |_, i| i)
        .unwrap();
    for call in 0..3 {
        match crew.map(0..10) {
            Err(Error::InitFailed { reason, .. }) => {
                assert!(reason.contains("SIGABRT"), "call {call}: {reason}")
            }
            other => panic!("call {call}: {other:?}"),
        }
    }
    assert!(crew.forks() <= 2 + 3 * 4, "{} forks", crew.forks());
    let began = std::time::Instant::now();
    drop(crew);
    assert!(began.elapsed() < Duration::from_secs(10));
    assert!(common::wait_until(10, || common::children().is_empty()));

    // Dropping a crew whose workers are still in a long init does not wait for it.
    let crew = pool(2)
        .spawn_init(|_| std::thread::sleep(Duration::from_secs(60)), |_, i| i)
        .unwrap();
    let began = std::time::Instant::now();
    drop(crew);
    assert!(began.elapsed() < Duration::from_secs(10));
    assert!(common::wait_until(10, || common::children().is_empty()));
}

#[test]
fn a_crew_kept_in_worker_state_dies_with_its_worker() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut crew = pool(2)
        .max_tasks_per_worker(6)
        .spawn_init(
            |_| pool(2).spawn(|j| (j * 2, std::process::id())).unwrap(),
            |inner, i| {
                let out = inner.map(0..i % 5 + 1).unwrap();
                let pids: Vec<u32> = out.iter().map(|&(_, p)| p).collect();
                (out.iter().map(|&(v, _)| v).sum::<usize>(), pids)
            },
        )
        .unwrap();
    let mut inner_pids = HashSet::new();
    for _ in 0..3 {
        for (i, (sum, pids)) in crew.map(0..20).unwrap().into_iter().enumerate() {
            let n = i % 5 + 1;
            assert_eq!(sum, n * (n - 1));
            inner_pids.extend(pids);
        }
    }
    assert!(
        crew.forks() >= 10,
        "the outer workers retired: {}",
        crew.forks()
    );
    drop(crew);
    // The inner crews' workers were grandchildren: they went with their parents, those
    // retired during the calls too.
    assert!(
        common::wait_until(20, || inner_pids
            .iter()
            .all(|&p| matches!(common::state(p as i32), None | Some('Z')))),
        "inner workers outlived their crews"
    );
    assert!(common::wait_until(10, || common::children().is_empty()));
}

#[test]
fn a_fold_with_retiring_workers_and_thieves_is_exact() {
    let _d = common::deadline(180);
    let _s = common::serial();
    const N: usize = 2000;
    let runs = SharedArray::<u32, Ix1>::zeros(N).unwrap();
    let mut crew = pool(3)
        .max_tasks_per_worker(29)
        .spawn_fold(
            || 0u64,
            |acc, i| {
                bump(&runs, i);
                if i % 89 == 0 {
                    std::thread::sleep(Duration::from_millis(3));
                }
                acc + i as u64 * 3
            },
        )
        .unwrap();
    for call in 0..2 {
        runs.write().fill(0);
        let sum = crew.fold(0..N, |a, b| a + b).unwrap();
        assert_eq!(sum, 3 * (N as u64 - 1) * N as u64 / 2, "call {call}");
        let r = runs.read();
        let wrong: Vec<usize> = (0..N).filter(|&i| r[i] != 1).collect();
        assert!(wrong.is_empty(), "call {call}: not run once: {wrong:?}");
    }
}

#[test]
fn chunk_numbers_wrap_around_across_a_crews_calls() {
    let _d = common::deadline(300);
    let _s = common::serial();
    // Every task its own chunk: more than 2^14 chunks per worker over the calls, the
    // range of the gate's sequence numbers.
    let mut crew = pool(2)
        .chunk_size(1)
        .spawn(|i| {
            if i % 61 == 0 {
                std::thread::sleep(Duration::from_micros(500));
            }
            i
        })
        .unwrap();
    for call in 0..40 {
        let base = call * 10_000;
        let out = crew.map(base..base + 1000).unwrap();
        assert!(
            out.iter().enumerate().all(|(k, &v)| v == base + k),
            "call {call}"
        );
    }
    assert_eq!(crew.forks(), 2);
}

#[test]
fn a_crew_whose_caller_ignores_sigchld_still_replaces_and_retires() {
    if common::role().as_deref() == Some("nochld") {
        let _d = common::deadline(60);
        let mut crew = pool(2)
            .max_tasks_per_worker(25)
            .spawn(|i| (i + 1, std::process::id()))
            .unwrap();
        // From now on the kernel reaps the workers itself and keeps no status.
        // SAFETY: sets a disposition to SIG_IGN.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
        for call in 0..4 {
            let out = crew.map(0..60).unwrap();
            assert!(
                out.iter().enumerate().all(|(k, &(v, _))| v == k + 1),
                "call {call}"
            );
            let victim = out[0].1 as i32;
            if common::state(victim).is_some() {
                kill(victim, libc::SIGKILL);
            }
        }
        assert!(crew.retirements().len() >= 6, "{:?}", crew.retirements());
        drop(crew);
        assert!(common::wait_until(10, || common::children().is_empty()));
        return;
    }
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut child = common::rerun(
        "a_crew_whose_caller_ignores_sigchld_still_replaces_and_retires",
        "nochld",
        &[],
    );
    assert!(common::wait_child(&mut child, 90).success());
}

#[test]
fn two_crews_on_one_thread_take_turns() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut a = pool(2).spawn(|i| i + 1).unwrap();
    let mut b = pool(2).lookahead(1).spawn(|i| i * 2).unwrap();
    for round in 0..20 {
        let n = 10 + round;
        assert_eq!(a.map(0..n).unwrap(), (1..=n).collect::<Vec<_>>());
        // A window of one position: handed out one at a time, still all of them.
        let doubled: Vec<usize> = b.imap(0..n).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(doubled, (0..n).map(|i| i * 2).collect::<Vec<_>>());
        // A forking call between them.
        assert_eq!(pool(2).map(0..3, |i| i).unwrap(), vec![0, 1, 2]);
    }
    assert_eq!(common::children().len(), 4);
    drop(a);
    assert_eq!(b.map(0..5).unwrap(), vec![0, 2, 4, 6, 8]);
    assert_eq!((b.forks(), common::children().len()), (2, 2));
    drop(b);
    assert!(common::wait_until(10, || common::children().is_empty()));
}

/// The panic leaves the rest of its batch without outcomes: the stream ends there (it
/// waited for them for good before).
#[test]
fn a_stream_used_after_a_panic_in_its_next_ends_or_fails() {
    if common::role().as_deref() == Some("next-after-panic") {
        let _d = common::deadline(30);
        let mut crew = pool(1)
            .chunk_size(10)
            .spawn(|i| Explodes(i as u32))
            .unwrap();
        let mut it = crew.imap(0..20).unwrap();
        // The first batch (positions 0..10) holds the value the coordinator cannot take.
        let mut caught = 0;
        for _ in 0..25 {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| it.next())) {
                Err(_) => caught += 1,
                Ok(None) => break,
                Ok(Some(_)) => {}
            }
        }
        assert_eq!(caught, 1);
        println!("stream ended");
        return;
    }
    let _d = common::deadline(60);
    let _s = common::serial();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_stream_used_after_a_panic_in_its_next_ends_or_fails",
            "--exact",
            "--nocapture",
        ])
        .env("FORKMAP_TEST_ROLE", "next-after-panic")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = common::wait_child(&mut child, 50);
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(
        status.success() && out.contains("stream ended"),
        "{status}: {out}"
    );
}
