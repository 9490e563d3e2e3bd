//! Crews with real forks: fork once and map many, replacement of workers killed between
//! and during calls, worker state, recycling, folds that survive a death. Every test holds
//! `common::serial()`, since some count this process's children.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use forkmap::{Error, Pool};

fn pool(workers: usize) -> Pool {
    Pool::new().workers(workers).progress(false)
}

/// A path no other test uses, removed first.
fn marker(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("forkmap-crew-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// True the first time it is called for `path` in any process (an exclusive create).
fn first_time(path: &std::path::Path) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .is_ok()
}

#[test]
fn a_crew_runs_a_hundred_calls_on_the_processes_it_forked_once() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let table: Vec<u64> = (0..64).map(|i| i * 3).collect();
    let mut crew = pool(3)
        .spawn(|i| (table[i % 64] + i as u64, std::process::id()))
        .unwrap();
    assert_eq!(common::children().len(), 3);
    let mut pids = HashSet::new();
    for call in 0..100 {
        let n = 1 + call % 37;
        let out = crew.map(0..n).unwrap();
        assert_eq!(out.len(), n);
        for (i, (v, pid)) in out.into_iter().enumerate() {
            assert_eq!(v, table[i % 64] + i as u64, "call {call}");
            pids.insert(pid);
        }
    }
    assert_eq!(
        crew.forks(),
        3,
        "100 calls forked only the crew's 3 workers"
    );
    assert!(pids.len() <= 3, "{pids:?}");
    assert!(!pids.contains(&std::process::id()));
    assert_eq!(common::children().len(), 3);
    drop(crew);
    assert!(common::wait_until(10, || common::children().is_empty()));
}

#[test]
fn a_worker_killed_between_calls_is_replaced_and_the_next_call_is_exact() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut crew = pool(2).spawn(|i| (i * i, std::process::id())).unwrap();
    let first = crew.map(0..50).unwrap();
    let victim = first[0].1 as i32;
    // SAFETY: kill takes plain integers; the victim is our own unreaped child.
    assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
    assert!(common::wait_until(10, || common::state(victim) == Some('Z')));
    let second = crew.map(0..200).unwrap();
    for (i, (v, pid)) in second.iter().enumerate() {
        assert_eq!(*v, i * i);
        assert_ne!(*pid as i32, victim, "a dead worker returned a result");
    }
    assert_eq!(crew.forks(), 3, "one replacement");
    let live: HashSet<u32> = second.iter().map(|&(_, p)| p).collect();
    assert!(live.len() <= 2);
    drop(crew);
    assert!(common::wait_until(10, || common::children().is_empty()));
}

#[test]
fn a_worker_that_dies_during_a_call_is_replaced_and_nothing_is_lost() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let once = marker("dies-during");
    let mut crew = pool(2)
        .spawn(|i| {
            if i == 17 && first_time(&once) {
                std::process::abort();
            }
            i + 1
        })
        .unwrap();
    for _ in 0..3 {
        assert_eq!(crew.map(0..100).unwrap(), (1..=100).collect::<Vec<_>>());
    }
    assert_eq!(crew.forks(), 3);
    let _ = std::fs::remove_file(&once);
}

#[test]
fn a_failed_call_leaves_the_crew_usable() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut crew = pool(2)
        .spawn(|i| {
            if i == 3 {
                panic!("three");
            }
            if i > 50 {
                std::thread::sleep(Duration::from_millis(5));
            }
            i
        })
        .unwrap();
    let err = crew.map(0..200).unwrap_err();
    assert!(matches!(err, Error::TaskPanicked { index: 3, .. }), "{err}");
    // The workers still running the failed call's tasks were killed; the next call
    // replaces them and is exact.
    assert_eq!(crew.map(10..20).unwrap(), (10..20).collect::<Vec<_>>());
    let out = crew.map_results(0..6).unwrap();
    assert!(out[3].is_err());
    assert_eq!(out[4].as_ref().ok(), Some(&4));
}

#[test]
fn dropping_a_crew_does_not_wait_on_running_tasks() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let mut crew = pool(2)
        .spawn(|i| {
            std::thread::sleep(Duration::from_secs(30));
            i
        })
        .unwrap();
    let it = crew.imap_unordered(0..4).unwrap();
    // Let the workers start their 30 s tasks, then walk away.
    std::thread::sleep(Duration::from_millis(200));
    let _ = it.size_hint();
    drop(it);
    let began = Instant::now();
    drop(crew);
    assert!(began.elapsed() < Duration::from_secs(10));
    assert!(common::wait_until(10, || common::children().is_empty()));
}

static INITS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn init_runs_once_in_each_worker_process() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let once = marker("init-once");
    let out = pool(3)
        .map_init(
            0..300,
            |info| {
                INITS.fetch_add(1, Ordering::SeqCst);
                (info.worker(), info.pid())
            },
            |state, i| {
                if i == 150 && first_time(&once) {
                    // The replacement runs init again, once.
                    std::process::abort();
                }
                (i, state.1, INITS.load(Ordering::SeqCst), std::process::id())
            },
        )
        .unwrap();
    let mut per_pid: HashMap<u32, usize> = HashMap::new();
    for (k, &(i, init_pid, inits, pid)) in out.iter().enumerate() {
        assert_eq!(i, k);
        assert_eq!(inits, 1, "init ran {inits} times in pid {pid}");
        assert_eq!(init_pid as u32, pid, "the state was built in this process");
        *per_pid.entry(pid).or_default() += 1;
    }
    assert!(per_pid.len() >= 3, "{per_pid:?}");
    assert_eq!(
        INITS.load(Ordering::SeqCst),
        0,
        "init never runs in the caller"
    );
    let _ = std::fs::remove_file(&once);
}

#[test]
fn a_crew_keeps_its_workers_state_across_calls() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut crew = pool(2)
        .spawn_init(
            |_| 0u64,
            |seen, i| {
                *seen += 1;
                (i, *seen)
            },
        )
        .unwrap();
    let mut total = 0;
    for _ in 0..5 {
        let out = crew.map(0..40).unwrap();
        total = out.iter().map(|&(_, seen)| seen).max().unwrap();
        assert!(out.iter().enumerate().all(|(k, &(i, _))| i == k));
    }
    // The counters live on in the two processes: one of them has seen at least half of
    // the 200 tasks.
    assert!(total >= 100, "{total}");
    assert_eq!(crew.forks(), 2);
}

#[test]
fn a_panicking_init_ends_the_call_with_a_named_error() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let err = pool(2)
        .map_init(0..10, |_| -> u32 { panic!("no model file") }, |_, i| i)
        .unwrap_err();
    match &err {
        Error::InitFailed { reason, .. } => assert!(reason.contains("no model file"), "{err}"),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("init of worker"), "{err}");
}

#[test]
fn an_init_that_kills_its_worker_is_not_retried_forever() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let err = pool(2)
        .max_retries(1)
        .map_init(0..10, |_| -> u32 { std::process::abort() }, |_, i| i)
        .unwrap_err();
    match &err {
        Error::InitFailed { reason, .. } => assert!(reason.contains("SIGABRT"), "{err}"),
        other => panic!("{other}"),
    }
}

#[test]
fn max_tasks_per_worker_recycles_workers_exactly() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let pids = pool(2)
        .max_tasks_per_worker(10)
        .map(0..100, |_| std::process::id())
        .unwrap();
    let mut per_pid: HashMap<u32, usize> = HashMap::new();
    for pid in pids {
        *per_pid.entry(pid).or_default() += 1;
    }
    assert!(per_pid.len() >= 10, "{} processes", per_pid.len());
    assert!(per_pid.values().all(|&n| n <= 10), "{per_pid:?}");
}

#[test]
fn a_crew_records_why_its_workers_retired() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut crew = pool(2).max_tasks_per_worker(5).spawn(|i| i).unwrap();
    assert_eq!(crew.map(0..30).unwrap(), (0..30).collect::<Vec<_>>());
    let retired = crew.retirements();
    assert!(retired.len() >= 4, "{retired:?}");
    assert!(
        retired
            .iter()
            .all(|r| r.tasks == Some(5) && r.rss.is_none())
    );
    assert!(crew.forks() >= 6);
}

#[test]
fn a_worker_that_grows_past_the_memory_cap_is_retired_and_named() {
    let _d = common::deadline(120);
    let _s = common::serial();
    const MB: usize = 1 << 20;
    let mut crew = pool(2)
        .max_worker_memory(160 * MB as u64)
        .spawn(|i| {
            // Leaks 40 MB a task, touched so it is resident.
            let leak = vec![1u8; 40 * MB];
            std::mem::forget(leak);
            std::thread::sleep(Duration::from_millis(15));
            i
        })
        .unwrap();
    assert_eq!(crew.map(0..24).unwrap(), (0..24).collect::<Vec<_>>());
    let retired = crew.retirements();
    assert!(!retired.is_empty());
    for r in &retired {
        let rss = r.rss.expect("retired for its memory");
        assert!(rss > 160 * MB as u64 && rss < 600 * MB as u64, "{r:?}");
    }
}

#[test]
fn a_fold_survives_a_killed_worker_with_the_exact_sum() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let once = marker("fold-dies");
    let sum = pool(2)
        .fold(
            0..10_000,
            || 0u64,
            |acc, i| {
                if i == 6_000 && first_time(&once) {
                    std::process::abort();
                }
                acc + i as u64
            },
            |a, b| a + b,
        )
        .unwrap();
    assert_eq!(sum, (0..10_000u64).sum::<u64>());
    let _ = std::fs::remove_file(&once);
}

#[test]
fn a_fold_reduces_in_position_order() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let indices: Vec<usize> = (0..3000).rev().collect();
    let all = pool(3)
        .chunk_size(7)
        .fold(
            indices.clone(),
            Vec::new,
            |mut acc, i| {
                acc.push(i as u32);
                acc
            },
            |mut a, b| {
                a.extend(b);
                a
            },
        )
        .unwrap();
    assert_eq!(all, indices.iter().map(|&i| i as u32).collect::<Vec<_>>());
    let empty = pool(2).fold(Vec::<usize>::new(), || 7u8, |a, _| a, |a, _| a);
    assert_eq!(empty.unwrap(), 7);
}

#[test]
fn a_fold_names_the_task_that_panicked() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let err = pool(2)
        .fold(
            0..500,
            || 0u64,
            |acc, i| {
                assert!(i != 321, "bad row {i}");
                acc + 1
            },
            |a, b| a + b,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TaskPanicked {
                index: 321,
                position: 321,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_folding_crew_runs_many_calls() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut crew = pool(2)
        .spawn_fold(|| 0u64, |acc, i| acc + i as u64)
        .unwrap();
    for k in 0..20u64 {
        let n = 100 * (k + 1);
        assert_eq!(
            crew.fold(0..n as usize, |a, b| a + b).unwrap(),
            n * (n - 1) / 2
        );
    }
    assert_eq!(crew.fold(0..0, |a, b| a + b).unwrap(), 0);
    assert_eq!(crew.forks(), 2);
}
