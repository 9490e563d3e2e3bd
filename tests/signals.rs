//! SIGINT and SIGTERM as real programs meet them: overlapping calls on two threads, a
//! coordinator that panics, a signal sent to every process of the program, the program's
//! own handler. Each case runs in a re-run of this test binary, since dispositions are
//! process-wide.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use forkmap::{Error, Pool};

fn disposition(sig: i32) -> libc::sighandler_t {
    // SAFETY: sigaction is plain data; a null new action only reads.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

fn run_role(test: &str, role: &str, secs: u64) -> std::process::ExitStatus {
    let mut child = common::rerun(test, role, &[]);
    common::wait_child(&mut child, secs)
}

/// Fails the test if anything was re-parented to it (a leaked worker or grandchild).
fn no_orphans(what: &str) {
    let mut status = 0;
    // SAFETY: status is a valid c_int; WNOHANG never blocks.
    let leaked = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    assert!(
        leaked <= 0,
        "{what}: process {leaked} outlived its coordinator"
    );
}

fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(ret, 0);
}

/// A Deserialize that panics in the coordinator for one value.
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
fn overlapping_calls_and_panics_leave_the_callers_dispositions() {
    if common::role().as_deref() == Some("overlap") {
        let _d = common::deadline(120);
        let threads: Vec<_> = (0..2)
            .map(|t| {
                std::thread::spawn(move || {
                    for round in 0..20 {
                        let got = Pool::new()
                            .workers(2)
                            .progress(false)
                            .map(0..20, |i| {
                                std::thread::sleep(Duration::from_micros(200 * (i as u64 % 3)));
                                i + t + round
                            })
                            .unwrap();
                        assert_eq!(got[19], 19 + t + round);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // A coordinator that panics (here in a result's Deserialize) is caught by the caller.
        let caught = std::panic::catch_unwind(|| {
            Pool::new()
                .workers(2)
                .progress(false)
                .map(0..10, |i| Explodes(i as u32))
        });
        assert!(
            caught.is_err(),
            "the Deserialize panic should reach the caller"
        );
        assert!(
            common::children().is_empty(),
            "workers left after a coordinator panic"
        );
        for sig in [libc::SIGINT, libc::SIGTERM] {
            assert_eq!(disposition(sig), libc::SIG_DFL, "signal {sig} left changed");
        }
        // And the default really acts: this SIGTERM ends the process.
        // SAFETY: raise with a signal number.
        unsafe { libc::raise(libc::SIGTERM) };
        unreachable!("SIGTERM was swallowed");
    }
    let _d = common::deadline(180);
    let _s = common::serial();
    let status = run_role(
        "overlapping_calls_and_panics_leave_the_callers_dispositions",
        "overlap",
        150,
    );
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
}

static HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::SeqCst);
}

fn slow(i: usize) -> usize {
    std::thread::sleep(Duration::from_secs(60));
    i
}

/// Waits until `pid` has `n` worker children, and returns them.
fn workers_of(pid: i32, n: usize) -> Vec<i32> {
    assert!(
        common::wait_until(30, || common::children_of(pid).len() == n),
        "workers of {pid} never started"
    );
    common::children_of(pid)
}

#[test]
fn a_signal_to_every_process_acts_as_the_caller_says() {
    match common::role().as_deref() {
        Some("default") => {
            let _d = common::deadline(60);
            let _ = Pool::new()
                .workers(3)
                .chunk_size(1)
                .progress(false)
                .map(0..6, slow);
            unreachable!("map returned after SIGTERM with the default disposition");
        }
        Some("handled") => {
            let _d = common::deadline(60);
            // SAFETY: installs an async-signal-safe handler (one atomic add).
            unsafe {
                libc::signal(
                    libc::SIGTERM,
                    count as extern "C" fn(libc::c_int) as libc::sighandler_t,
                )
            };
            let err = Pool::new()
                .workers(3)
                .chunk_size(1)
                .progress(false)
                .map(0..6, slow)
                .unwrap_err();
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
            assert_eq!(
                HANDLED.load(Ordering::SeqCst),
                1,
                "the program's handler did not run"
            );
            assert!(
                common::children().is_empty(),
                "workers left after an interrupt"
            );
            return;
        }
        _ => {}
    }
    let _d = common::deadline(300);
    let _s = common::serial();
    become_subreaper();
    let rounds = std::env::var("FORKMAP_STRESS").map_or(4, |_| 30);
    for round in 0..rounds {
        for role in ["default", "handled"] {
            let mut child = common::rerun(
                "a_signal_to_every_process_acts_as_the_caller_says",
                role,
                &[],
            );
            let pid = child.id() as i32;
            // As `pkill`, a service manager or a batch scheduler does: every process of
            // the program gets it, the workers first.
            for w in workers_of(pid, 3) {
                // SAFETY: kill with integer arguments.
                unsafe { libc::kill(w, libc::SIGTERM) };
            }
            // SAFETY: kill with integer arguments.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let status = common::wait_child(&mut child, 30);
            match role {
                "default" => assert_eq!(
                    status.signal(),
                    Some(libc::SIGTERM),
                    "{round} {role}: {status}"
                ),
                _ => assert!(status.success(), "{round} {role}: {status}"),
            }
            no_orphans(role);
        }
    }
}

#[test]
fn kill_zero_from_the_program_itself_is_an_interrupt() {
    if common::role().as_deref() == Some("self") {
        let _d = common::deadline(60);
        // SAFETY: installs an async-signal-safe handler (one atomic add).
        unsafe {
            libc::signal(
                libc::SIGINT,
                count as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
        let me = std::process::id() as i32;
        std::thread::spawn(move || {
            assert!(common::wait_until(30, || common::children_of(me).len() == 2));
            // SAFETY: kill(0, ..) signals this process's own group, as a shell's Ctrl-C.
            unsafe { libc::kill(0, libc::SIGINT) };
        });
        let err = Pool::new()
            .workers(2)
            .progress(false)
            .map(0..4, slow)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Interrupted {
                    signal: libc::SIGINT,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            HANDLED.load(Ordering::SeqCst),
            1,
            "the program's SIGINT handler did not run"
        );
        assert!(common::children().is_empty());
        return;
    }
    let _d = common::deadline(90);
    let _s = common::serial();
    become_subreaper();
    // In a process group of its own, so that kill(0, ..) reaches only it and its workers.
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "kill_zero_from_the_program_itself_is_an_interrupt",
        "--exact",
        "--nocapture",
    ])
    .env("FORKMAP_TEST_ROLE", "self");
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().unwrap();
    let status = common::wait_child(&mut child, 60);
    assert!(status.success(), "{status}");
    no_orphans("kill(0)");
}
