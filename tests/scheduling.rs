//! The scheduling contract with real forks: tasks that sleep (so they need no core and
//! any number of workers runs at once on a small machine) reach every worker, and a long
//! task does not hold back the work queued behind it.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use forkmap::Pool;

fn pid_after_sleep(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

#[test]
fn every_worker_runs_a_task_when_there_are_enough() {
    let _d = common::deadline(120);
    for workers in [8, 16, 32] {
        for tasks in [workers, workers + 1, 2 * workers, 3 * workers + 5] {
            let pids = Pool::new()
                .workers(workers)
                .progress(false)
                .map(0..tasks, |_| pid_after_sleep(50))
                .unwrap();
            let distinct: HashSet<u32> = pids.iter().copied().collect();
            assert_eq!(
                distinct.len(),
                workers,
                "{tasks} tasks on {workers} workers ran in {} processes",
                distinct.len()
            );
            assert!(!distinct.contains(&std::process::id()));
        }
    }
    assert!(common::wait_until(10, || common::children().is_empty()));
}

#[test]
fn fewer_tasks_than_workers_get_one_worker_each() {
    let _d = common::deadline(60);
    for tasks in 1..=6 {
        let pids = Pool::new()
            .workers(8)
            .progress(false)
            .map(0..tasks, |_| pid_after_sleep(50))
            .unwrap();
        let distinct: HashSet<u32> = pids.iter().copied().collect();
        assert_eq!(distinct.len(), tasks, "{tasks} tasks on 8 workers");
    }
}

#[test]
fn tasks_queued_behind_a_long_one_move_to_an_idle_worker() {
    let _d = common::deadline(60);
    // Worker 0 meets the 2 s task first, with a chunk already queued behind it; worker 1
    // finishes its own five tasks of 100 ms in 0.5 s and must take the rest from worker 0.
    for chunk in [0, 1, 3] {
        let pids = Pool::new()
            .workers(2)
            .chunk_size(chunk)
            .progress(false)
            .map(0..10, |i| pid_after_sleep(if i == 0 { 2000 } else { 100 }))
            .unwrap();
        let long = pids[0];
        let with_long: Vec<usize> = (0..10).filter(|&i| pids[i] == long).collect();
        assert_eq!(
            with_long,
            vec![0],
            "chunk size {chunk}: the long task's worker also ran {with_long:?}"
        );
    }
}

#[test]
fn a_long_chunk_is_split_while_it_runs() {
    let _d = common::deadline(60);
    // One fixed chunk per worker: worker 0's first task takes 1.5 s, and the thief must
    // take the unclaimed end of its running chunk, not wait for it.
    let pids = Pool::new()
        .workers(2)
        .chunk_size(10)
        .progress(false)
        .map(0..20, |i| pid_after_sleep(if i == 0 { 1500 } else { 20 }))
        .unwrap();
    let long = pids[0];
    let after_long: Vec<usize> = (1..10).filter(|&i| pids[i] == long).collect();
    assert_eq!(
        after_long,
        Vec::<usize>::new(),
        "worker 0 ran these of its chunk after the long task"
    );
}

#[test]
fn a_worker_stuck_in_one_task_of_a_big_chunk_is_drained_by_many_steals() {
    let _d = common::deadline(120);
    // Found in review: past 15 take-backs of the same stuck worker's queued chunks the
    // thief gave up, and the stuck worker later ran its whole chunk alone.
    let c = 1usize << 17;
    let pids = Pool::new()
        .workers(2)
        .chunk_size(c)
        .progress(false)
        .map(0..4 * c, |i| {
            if i == 0 {
                std::thread::sleep(Duration::from_millis(1500));
            }
            std::process::id()
        })
        .unwrap();
    let long = pids[0];
    let after_long = (1..c).filter(|&i| pids[i] == long).count();
    assert!(
        after_long < c / 2,
        "worker 0 ran {after_long} of the {} positions of its chunk after the long task",
        c - 1
    );
}
