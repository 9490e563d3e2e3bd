//! Adversarial edges of streams (`imap`, `imap_unordered`) on crews and pools, with real
//! forks: streams dropped while a worker is halfway through sending, timeouts under
//! back-pressure, chunks larger than the window, every task failing, stale results after
//! a dropped stream, payload files, shared arrays, a memory cap mid-stream. Every test
//! holds `common::serial()`, since some count this process's children and descriptors.

mod common;

use std::collections::HashSet;
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

#[test]
fn imap_with_chunks_larger_than_its_window_stays_in_the_window() {
    let _d = common::deadline(120);
    let _s = common::serial();
    const N: usize = 3000;
    const WINDOW: usize = 10;
    let started = SharedArray::<u8, _>::zeros(N).unwrap();
    let it = pool(2)
        .chunk_size(1000)
        .lookahead(WINDOW)
        .imap(0..N, |i| {
            started.write()[i] = 1;
            i
        })
        .unwrap();
    for (k, r) in it.enumerate() {
        assert_eq!(r.unwrap(), k);
        if k % 500 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let furthest = started.read().iter().rposition(|&s| s == 1).unwrap();
        assert!(
            furthest <= k + WINDOW,
            "task {furthest} ran with the consumer at {k}"
        );
    }
}

#[test]
fn a_stream_where_every_task_panics_names_each_and_the_crew_goes_on() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let mut crew = pool(2)
        .spawn(|i| {
            assert!(i >= 1000, "task {i} fails");
            i
        })
        .unwrap();
    let out: Vec<Result<usize, Error>> = crew.imap(0..300).unwrap().collect();
    assert_eq!(out.len(), 300);
    for (k, r) in out.iter().enumerate() {
        match r {
            Err(Error::TaskPanicked {
                index,
                position,
                message,
                ..
            }) => {
                assert_eq!((*index, *position), (k, k));
                assert!(message.contains(&format!("task {k} fails")), "{message}");
            }
            other => panic!("position {k}: {other:?}"),
        }
    }
    let mut failed = 0;
    for done in crew.imap_unordered(0..100).unwrap() {
        assert!(
            matches!(done.result, Err(Error::TaskPanicked { index, .. }) if index == done.index)
        );
        failed += 1;
    }
    assert_eq!(failed, 100);
    assert_eq!(
        crew.map(1000..1010).unwrap(),
        (1000..1010).collect::<Vec<_>>()
    );
    assert_eq!(crew.forks(), 2, "a panic is not a death");
}

#[test]
fn dropped_unordered_streams_leave_nothing_for_the_next_calls() {
    let _d = common::deadline(180);
    let _s = common::serial();
    let mut crew = pool(3)
        .lookahead(64)
        .spawn(|i| {
            if i % 7 == 0 {
                std::thread::sleep(Duration::from_micros(300));
            }
            i * 2
        })
        .unwrap();
    let rounds = if std::env::var("FORKMAP_STRESS").is_ok() {
        200
    } else {
        30
    };
    for round in 0..rounds {
        // Each call's indices are its own: a value from another call would show.
        let base = round * 1_000_000;
        let mut it = crew.imap_unordered(base..base + 500).unwrap();
        for _ in 0..1 + round % 5 {
            let done = it.next().unwrap();
            assert_eq!(done.result.unwrap(), done.index * 2);
        }
        drop(it);
        let next = base + 500_000;
        let mut seen = HashSet::new();
        for done in crew.imap_unordered(next..next + 200).unwrap() {
            let v = done.result.unwrap();
            assert_eq!(done.index, next + done.position, "round {round}");
            assert_eq!(v, done.index * 2, "round {round}: a stale result");
            assert!(seen.insert(done.position));
        }
        assert_eq!(seen.len(), 200);
        let out = crew.map(next..next + 50).unwrap();
        assert!(
            out.iter().enumerate().all(|(k, &v)| v == (next + k) * 2),
            "round {round}"
        );
    }
    assert!(common::children().len() <= 3);
}

#[test]
fn results_past_a_mebibyte_stream_through_memory_files() {
    let _d = common::deadline(120);
    let _s = common::serial();
    const MB: usize = 1 << 20;
    let mut crew = pool(2)
        .spawn(|i| vec![(i % 256) as u8; 3 * MB + i])
        .unwrap();
    let _ = crew.map(0..2).unwrap();
    let fds = common::open_fds();
    for (k, r) in crew.imap(0..12).unwrap().enumerate() {
        let v = r.unwrap();
        assert_eq!(v.len(), 3 * MB + k);
        assert!(v.iter().all(|&b| b == (k % 256) as u8));
    }
    let mut n = 0;
    for done in crew.imap_unordered(0..12).unwrap() {
        assert_eq!(done.result.unwrap().len(), 3 * MB + done.index);
        n += 1;
    }
    assert_eq!(n, 12);
    assert_eq!(common::open_fds(), fds, "payload files leaked");
}

#[test]
fn shared_arrays_cross_over_in_unordered_streams_and_folds() {
    let _d = common::deadline(120);
    let _s = common::serial();
    let _ = pool(2).map(0..2, |i| i).unwrap();
    let fds = common::open_fds();
    let shm = common::shm_entries();
    {
        let mut crew = pool(2)
            .spawn(|i| {
                let a = SharedArray::<u32, Ix1>::zeros(i + 1).unwrap();
                a.write().fill(i as u32);
                (i, a)
            })
            .unwrap();
        let mut kept = Vec::new();
        for done in crew.imap_unordered(0..40).unwrap() {
            let (i, a) = done.result.unwrap();
            assert_eq!(i, done.index);
            assert_eq!(a.len(), i + 1);
            assert!(a.read().iter().all(|&v| v == i as u32));
            kept.push(a);
        }
        // They are the parent's now: writable and freezable after the workers let go.
        kept[0].write()[0] = 7;
        drop(crew);
        let frozen = kept.pop().unwrap().freeze().unwrap();
        assert_eq!(frozen.len(), frozen[0] as usize + 1);

        let total = pool(2)
            .chunk_size(9)
            .fold(
                0..100,
                || None::<SharedArray<u64, Ix1>>,
                |acc, i| {
                    let a = acc.unwrap_or_else(|| SharedArray::zeros(1).unwrap());
                    a.write()[0] += i as u64;
                    Some(a)
                },
                |a, b| match (a, b) {
                    (Some(a), Some(b)) => {
                        a.write()[0] += b.read()[0];
                        Some(a)
                    }
                    (a, b) => a.or(b),
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(total.read()[0], 4950);
    }
    assert_eq!(common::open_fds(), fds, "descriptors of arrays leaked");
    assert_eq!(common::shm_entries(), shm);
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
    let mut seen = [false; N];
    for done in crew.imap_unordered(0..N).unwrap() {
        assert_eq!(done.result.unwrap(), done.index * 3);
        assert!(!std::mem::replace(&mut seen[done.position], true));
    }
    assert!(seen.iter().all(|&s| s));
    assert!(runs.read().iter().all(|&r| r == 1), "{:?}", runs.read());
    let retired = crew.retirements();
    assert!(retired.len() >= 4, "{retired:?}");
    assert!(
        retired
            .iter()
            .all(|r| r.rss.is_some_and(|b| b > 150 * MB as u64))
    );
}

/// A regression test: the coordinator blocked for good in ipc-channel's blocking receive
/// of a message's follow-up fragments, so the 5 s stop check never ran. Messages now fit
/// in one packet (large payloads travel in memory files, batches hold at most 4096
/// outcomes), and the stopped workers are killed and replaced.
#[test]
fn a_worker_stopped_halfway_through_a_send_does_not_hang_the_stream() {
    if common::role().as_deref() == Some("stopped-mid-send") {
        // A hang aborts this re-run process, not the test binary that runs the others.
        let _d = common::deadline(60);
        let mut crew = pool(2).chunk_size(1).spawn(large).unwrap();
        let mut it = crew.imap(0..12).unwrap();
        assert!(is_large(0, &it.next().unwrap().unwrap()));
        // The consumer is away: the workers block halfway through sending their next
        // results. Then they are stopped there, as `kill -STOP` does.
        std::thread::sleep(Duration::from_millis(400));
        for pid in common::children() {
            // SAFETY: kill takes plain integers; the pid is our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        }
        for (k, r) in it.enumerate() {
            let v = r.unwrap_or_else(|e| panic!("item {}: {e}", k + 1));
            assert!(is_large(k + 1, &v), "item {}", k + 1);
        }
        println!("stream finished");
        return;
    }
    let _d = common::deadline(120);
    let _s = common::serial();
    // As `common::rerun`, with the output captured.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_worker_stopped_halfway_through_a_send_does_not_hang_the_stream",
            "--exact",
            "--nocapture",
        ])
        .env("FORKMAP_TEST_ROLE", "stopped-mid-send")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = common::wait_child(&mut child, 90);
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(
        status.success() && out.contains("stream finished"),
        "{status}: {out}"
    );
}

#[test]
fn a_worker_killed_halfway_through_a_send_is_replaced_in_the_same_stream() {
    let _d = common::deadline(120);
    let _s = common::serial();
    for round in 0..3 {
        let mut crew = pool(2).chunk_size(1).spawn(large).unwrap();
        let mut it = crew.imap(0..12).unwrap();
        assert!(is_large(0, &it.next().unwrap().unwrap()));
        // Both workers block halfway through a send; one is killed there. Its death may
        // be reaped before its broken message is read.
        std::thread::sleep(Duration::from_millis(400));
        let victim = common::children()[round % 2];
        // SAFETY: kill takes plain integers; the pid is our own unreaped child.
        unsafe { libc::kill(victim, libc::SIGKILL) };
        for (k, r) in it.enumerate() {
            let v = r.unwrap_or_else(|e| panic!("round {round}, item {}: {e}", k + 1));
            assert!(is_large(k + 1, &v));
        }
        assert_eq!(crew.forks(), 3, "round {round}");
    }
}
