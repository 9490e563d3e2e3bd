//! `imap` and `imap_unordered` with real forks: order, the bounded window, dropping early,
//! failures per item, and signals between two items. Every test holds
//! `common::serial()`, since some count this process's children.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use forkmap::{Error, Pool, SharedArray};

fn pool(workers: usize) -> Pool {
    Pool::new().workers(workers).progress(false)
}

#[test]
fn imap_yields_every_result_in_order() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let indices: Vec<usize> = (0..5000).map(|k| (k * 7919) % 5000).collect();
    let out: Vec<usize> = pool(3)
        .lookahead(64)
        .imap(indices.clone(), |i| i * 2)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(out, indices.iter().map(|i| i * 2).collect::<Vec<_>>());
    let none: Vec<_> = pool(2).imap(0..0, |i| i).unwrap().collect();
    assert!(none.is_empty());
}

#[test]
fn imap_never_runs_a_task_past_its_window() {
    let _d = common::deadline(120);
    let _s = common::serial();
    const N: usize = 600;
    const WINDOW: usize = 32;
    let started = SharedArray::<u8, _>::zeros(N).unwrap();
    let it = pool(2)
        .lookahead(WINDOW)
        .imap(0..N, |i| {
            started.write().view_mut()[i] = 1;
            i
        })
        .unwrap();
    for (k, r) in it.enumerate() {
        assert_eq!(r.unwrap(), k);
        let view = started.read();
        let furthest = view.view().iter().rposition(|&s| s == 1).unwrap();
        assert!(
            furthest < k + WINDOW + 1,
            "task {furthest} ran while the consumer was at {k} (window {WINDOW})"
        );
        drop(view);
        if k % 100 == 0 {
            // A slow consumer: the workers must wait for it, not run ahead.
            std::thread::sleep(Duration::from_millis(30));
        }
    }
}

#[test]
fn imap_unordered_yields_each_position_once_with_its_index() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let indices: Vec<usize> = (0..3000).map(|k| 10 * k).collect();
    let mut seen = HashSet::new();
    for done in pool(3)
        .lookahead(100)
        .imap_unordered(indices.clone(), |i| i + 1)
        .unwrap()
    {
        assert_eq!(done.index, indices[done.position]);
        assert_eq!(done.result.unwrap(), done.index + 1);
        assert!(
            seen.insert(done.position),
            "position {} twice",
            done.position
        );
    }
    assert_eq!(seen.len(), indices.len());
}

#[test]
fn imap_unordered_does_not_hold_results_behind_a_slow_task() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut order = Vec::new();
    for done in pool(2)
        .imap_unordered(0..20, |i| {
            if i == 0 {
                std::thread::sleep(Duration::from_millis(800));
            }
            i
        })
        .unwrap()
    {
        order.push(done.result.unwrap());
    }
    assert_eq!(order.len(), 20);
    assert_ne!(order[0], 0, "the slow task came first: {order:?}");
    assert_eq!(*order.last().unwrap(), 0, "{order:?}");
}

#[test]
fn a_failing_task_is_one_item_and_the_stream_goes_on() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let out: Vec<Result<usize, Error>> = pool(2)
        .imap(0..40, |i| {
            assert!(i != 13, "unlucky");
            i
        })
        .unwrap()
        .collect();
    assert_eq!(out.len(), 40);
    for (k, r) in out.iter().enumerate() {
        match k {
            13 => assert!(matches!(r, Err(Error::TaskPanicked { index: 13, .. }))),
            _ => assert_eq!(r.as_ref().ok(), Some(&k)),
        }
    }
}

#[test]
fn an_imap_dropped_after_three_items_leaves_no_process() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let mut it = pool(3)
        .imap(0..1000, |i| {
            std::thread::sleep(Duration::from_millis(20));
            i
        })
        .unwrap();
    for k in 0..3 {
        assert_eq!(it.next().unwrap().unwrap(), k);
    }
    assert!(!common::children().is_empty());
    drop(it);
    // Killed and reaped by the drop itself: no wait.
    assert!(common::children().is_empty(), "{:?}", common::children());
}

#[test]
fn a_crew_streams_call_after_call() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut crew = pool(2).lookahead(16).spawn(|i| i * 3).unwrap();
    for round in 0..10 {
        let n = 50 + round * 10;
        let ordered: Vec<usize> = crew.imap(0..n).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(ordered, (0..n).map(|i| i * 3).collect::<Vec<_>>());
        let mut unordered: Vec<usize> = crew
            .imap_unordered(0..n)
            .unwrap()
            .map(|d| d.result.unwrap())
            .collect();
        unordered.sort();
        assert_eq!(unordered, ordered);
        // Dropped early: the workers holding its tasks go, the next call replaces them.
        let mut partial = crew.imap(0..n).unwrap();
        assert_eq!(partial.next().unwrap().unwrap(), 0);
        drop(partial);
        assert_eq!(crew.map(0..5).unwrap(), vec![0, 3, 6, 9, 12]);
    }
    assert!(common::children().len() <= 2);
    drop(crew);
    assert!(common::wait_until(10, || common::children().is_empty()));
}

/// Role of the re-run test binary: stream sleeping tasks, and after the second item
/// send itself SIGTERM, whose default disposition ends it.
#[test]
fn role_streaming_consumer() {
    let Some(role) = common::role() else {
        return;
    };
    let it = pool(2)
        .imap(0..100, |i| {
            std::thread::sleep(Duration::from_millis(10));
            i
        })
        .unwrap();
    for (k, r) in it.enumerate() {
        assert_eq!(r.unwrap(), k);
        if k == 1 && role == "between" {
            println!("raising");
            // SAFETY: raise takes a plain signal number.
            unsafe { libc::raise(libc::SIGTERM) };
            // Not reached: the caller's disposition (the default) ends the process.
            println!("survived");
        }
    }
    println!("finished");
}

#[test]
fn a_signal_between_two_items_acts_as_the_callers_disposition_says() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "role_streaming_consumer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FORKMAP_TEST_ROLE", "between")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = common::wait_child(&mut child, 30);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        out.contains("raising") && !out.contains("survived"),
        "{out}"
    );
}
