//! Programs that ignore SIGCHLD (the kernel then reaps children itself and discards their
//! status) or reap every child themselves: worker deaths are still seen, retried and
//! named, and no signal goes to a pid that is no longer a worker. Each case runs in a
//! re-run of this test binary, since SIGCHLD's disposition is process-wide.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use forkmap::ndarray::Ix1;
use forkmap::{Error, ExitKind, Pool, SharedArray};

fn die() -> ! {
    // SAFETY: raise sends SIGKILL to this (worker) process only.
    unsafe { libc::raise(libc::SIGKILL) };
    // SAFETY: _exit ends the worker immediately.
    unsafe { libc::_exit(99) }
}

/// Task 7 dies on its first attempt; task 11 on every attempt.
fn exercise(case: &str, status_is_lost: bool) {
    let attempts = SharedArray::<u32, Ix1>::zeros(40).unwrap();
    let out = Pool::new()
        .workers(3)
        .chunk_size(4)
        .progress(false)
        .map_results(0..40, |i| {
            let n = {
                let mut a = attempts.write();
                a[i] += 1;
                a[i]
            };
            if (i == 7 && n == 1) || i == 11 {
                die();
            }
            i * 2
        })
        .unwrap();
    for (i, r) in out.iter().enumerate() {
        match (i, r) {
            (
                11,
                Err(Error::WorkerDied {
                    task: Some((11, 11)),
                    status,
                    ..
                }),
            ) => {
                // The status went to someone else: say so rather than invent one. (A
                // program's own reaper may lose the race to forkmap's.)
                let text = r.as_ref().unwrap_err().to_string();
                if status_is_lost {
                    assert_eq!(*status, ExitKind::Unknown, "{case}");
                    assert!(text.contains("unknown status"), "{case}: {text}");
                } else {
                    assert!(
                        matches!(status, ExitKind::Unknown | ExitKind::Signal(libc::SIGKILL)),
                        "{case}: {text}"
                    );
                }
            }
            (_, Ok(v)) => assert_eq!(*v, i * 2, "{case}"),
            (_, r) => panic!("{case}: position {i}: {r:?}"),
        }
    }
    let a = attempts.read();
    assert_eq!(a[7], 2, "{case}: task 7 retried once");
    assert_eq!(a[11], 3, "{case}: task 11 tried 1 + max_retries times");
    assert!(common::children().is_empty(), "{case}: workers left");
}

#[test]
fn ignored_sigchld() {
    if common::role().as_deref() == Some("ignore") {
        let _d = common::deadline(60);
        // SAFETY: SIG_IGN for SIGCHLD: children are reaped by the kernel.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
        exercise("SIGCHLD ignored", true);
        return;
    }
    let _d = common::deadline(90);
    let mut child = common::rerun("ignored_sigchld", "ignore", &[]);
    let status = common::wait_child(&mut child, 60);
    assert!(status.success(), "{status}");
}

#[test]
fn a_program_that_reaps_every_child() {
    if common::role().as_deref() == Some("reaper") {
        let _d = common::deadline(60);
        static STOP: AtomicBool = AtomicBool::new(false);
        // As a program with its own child handling does: wait for any child, always.
        let reaper = std::thread::spawn(|| {
            while !STOP.load(Ordering::Relaxed) {
                let mut status = 0;
                // SAFETY: status is a valid c_int; WNOHANG never blocks.
                unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        });
        exercise("children reaped by the program", false);
        STOP.store(true, Ordering::Relaxed);
        reaper.join().unwrap();
        return;
    }
    let _d = common::deadline(90);
    let mut child = common::rerun("a_program_that_reaps_every_child", "reaper", &[]);
    let status = common::wait_child(&mut child, 60);
    assert!(status.success(), "{status}");
}
