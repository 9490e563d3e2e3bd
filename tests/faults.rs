//! Faults: workers that die, hang or are interrupted never lose a task, hang the pool or
//! leave a process behind.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use forkmap::ndarray::Ix1;
use forkmap::{Error, ExitKind, Pool, SharedArray};

fn die(signal: i32) -> ! {
    // SAFETY: raise sends a signal to this (worker) process only.
    unsafe { libc::raise(signal) };
    // SIGKILL/SIGSEGV/SIGABRT do not return; make sure anyway.
    // SAFETY: _exit ends the worker immediately.
    unsafe { libc::_exit(99) }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("forkmap-faults-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Counts attempts in shared memory, so the test sees how often a task really ran.
fn bump(counter: &SharedArray<u32, Ix1>, i: usize) {
    counter.write()[i] += 1;
}

#[test]
fn a_killed_worker_is_replaced_and_its_tasks_rerun() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let dir = scratch("rerun");
    let attempts = SharedArray::<u32, Ix1>::zeros(200).unwrap();
    let got = Pool::new()
        .workers(2)
        .chunk_size(10)
        .progress(false)
        .map(0..200, |i| {
            bump(&attempts, i);
            // Tasks 37 and 150 kill their worker on the first attempt only.
            if (i == 37 || i == 150) && std::fs::File::create_new(dir.join(i.to_string())).is_ok() {
                die(libc::SIGKILL);
            }
            i * 3
        })
        .unwrap();
    assert_eq!(got, (0..200).map(|i| i * 3).collect::<Vec<_>>());
    let a = attempts.read();
    assert_eq!(a[37], 2);
    assert_eq!(a[150], 2);
    // Nothing ran that was not needed more than twice, and everything ran.
    assert!(a.iter().all(|&n| (1..=2).contains(&n)), "{:?}", a.view());
    let _ = std::fs::remove_dir_all(&dir);
    assert!(common::children().is_empty());
}

#[test]
fn a_task_that_always_crashes_is_named_after_its_retries() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let attempts = SharedArray::<u32, Ix1>::zeros(1).unwrap();
    let err = Pool::new()
        .workers(2)
        .max_retries(1)
        .progress(false)
        .map([5, 6, 7, 8, 9, 10], |i| {
            if i == 8 {
                bump(&attempts, 0);
                // A real invalid write, not raise(): Rust's own SIGSEGV handler lets
                // a raised one return.
                // SAFETY: deliberately not safe; this is the crash under test.
                unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
            }
            i
        })
        .unwrap_err();
    match err {
        Error::WorkerDied { status, task, .. } => {
            assert_eq!(status, ExitKind::Signal(libc::SIGSEGV));
            assert_eq!(task, Some((8, 3)));
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(attempts.read()[0], 2, "max_retries(1) means two attempts");
    assert!(common::children().is_empty());
}

#[test]
fn abort_and_exit_are_worker_deaths_too() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let err = Pool::new()
        .workers(1)
        .max_retries(0)
        .progress(false)
        .map(0..3, |i| if i == 1 { std::process::abort() } else { i })
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WorkerDied {
                status: ExitKind::Signal(libc::SIGABRT),
                task: Some((1, 1)),
                ..
            }
        ),
        "{err}"
    );
    #[allow(clippy::disallowed_methods)]
    let err = Pool::new()
        .workers(2)
        .max_retries(0)
        .progress(false)
        .map(0..3, |i| if i == 2 { std::process::exit(3) } else { i })
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WorkerDied {
                status: ExitKind::Code(3),
                task: Some((2, 2)),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn try_map_keeps_the_other_results() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let out = Pool::new()
        .workers(2)
        .max_retries(1)
        .chunk_size(4)
        .progress(false)
        .map_results(0..40, |i| {
            if i == 3 {
                panic!("three");
            }
            if i == 17 {
                die(libc::SIGKILL);
            }
            i as u64
        })
        .unwrap();
    assert_eq!(out.len(), 40);
    for (i, r) in out.iter().enumerate() {
        match i {
            3 => assert!(
                matches!(r, Err(Error::TaskPanicked { index: 3, .. })),
                "{r:?}"
            ),
            17 => assert!(
                matches!(
                    r,
                    Err(Error::WorkerDied {
                        task: Some((17, 17)),
                        ..
                    })
                ),
                "{r:?}"
            ),
            _ => assert_eq!(r.as_ref().ok(), Some(&(i as u64))),
        }
    }
}

#[test]
fn a_hung_task_times_out() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let started = Instant::now();
    let err = Pool::new()
        .workers(2)
        .max_retries(0)
        .task_timeout(Duration::from_millis(200))
        .progress(false)
        .map(0..6, |i| {
            if i == 4 {
                std::thread::sleep(Duration::from_secs(30));
            }
            i
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TaskTimedOut {
                index: 4,
                position: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "timeout took {:?}",
        started.elapsed()
    );
    assert!(common::children().is_empty());

    // Retried once, then reported in place by try_map while the rest completes.
    let attempts = SharedArray::<u32, Ix1>::zeros(1).unwrap();
    let out = Pool::new()
        .workers(2)
        .max_retries(1)
        .task_timeout(Duration::from_millis(100))
        .progress(false)
        .map_results(0..6, |i| {
            if i == 1 {
                bump(&attempts, 0);
                std::thread::sleep(Duration::from_secs(30));
            }
            i
        })
        .unwrap();
    assert!(matches!(out[1], Err(Error::TaskTimedOut { index: 1, .. })));
    assert_eq!(out.iter().filter(|r| r.is_ok()).count(), 5);
    assert_eq!(attempts.read()[0], 2);
}

#[test]
fn out_of_range_reads_are_task_panics() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let a = SharedArray::<f64, _>::zeros((10, 10)).unwrap();
    let err = Pool::new()
        .workers(2)
        .progress(false)
        .map(0..12, |i| a.read()[[i, i]])
        .unwrap_err();
    match err {
        Error::TaskPanicked { index, message, .. } => {
            assert!(index >= 10);
            assert!(message.contains("out of bounds"), "{message}");
        }
        other => panic!("unexpected {other}"),
    }
}

/// A result that cannot be serialised for one index.
#[derive(Debug)]
struct Picky(usize);

impl serde::Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 6 {
            return Err(serde::ser::Error::custom("six cannot be written"));
        }
        s.serialize_u64(self.0 as u64)
    }
}

impl<'de> serde::Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(|v| Picky(v as usize))
    }
}

#[test]
fn an_unserialisable_result_is_named() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let out = Pool::new()
        .workers(2)
        .chunk_size(5)
        .progress(false)
        .map_results(0..12, Picky)
        .unwrap();
    for (i, r) in out.iter().enumerate() {
        match r {
            Ok(p) => assert_eq!(p.0, i),
            Err(Error::ResultNotSent { index, message, .. }) => {
                assert_eq!(*index, 6);
                // The task's own message, not postcard's generic one.
                assert!(message.contains("six cannot be written"), "{message}");
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(out[6].is_err());
    let err = Pool::new()
        .workers(2)
        .progress(false)
        .map(0..12, Picky)
        .unwrap_err();
    assert!(
        matches!(err, Error::ResultNotSent { index: 6, .. }),
        "{err}"
    );
}

#[test]
fn interrupts_kill_and_reap_every_worker() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let slow = |i: usize| {
        std::thread::sleep(Duration::from_secs(60));
        i
    };
    match common::role().as_deref() {
        Some("default") => {
            // Default SIGINT disposition: the process must end by SIGINT, workers reaped.
            let _ = Pool::new().workers(2).progress(false).map(0..4, slow);
            unreachable!("map returned after SIGINT with the default disposition");
        }
        Some("handled") => {
            extern "C" fn note(_: libc::c_int) {}
            // SAFETY: installs an async-signal-safe no-op handler.
            unsafe {
                libc::signal(
                    libc::SIGTERM,
                    note as extern "C" fn(libc::c_int) as libc::sighandler_t,
                )
            };
            let err = Pool::new()
                .workers(2)
                .progress(false)
                .map(0..4, slow)
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Interrupted {
                        signal: libc::SIGTERM,
                        done: 0,
                        total: 4
                    }
                ),
                "{err}"
            );
            assert!(
                common::children().is_empty(),
                "workers left after an interrupt"
            );
            return;
        }
        _ => {}
    }
    // SAFETY: prctl with integer arguments.
    let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(ret, 0);
    for (role, signal) in [("default", libc::SIGINT), ("handled", libc::SIGTERM)] {
        let mut child = common::rerun("interrupts_kill_and_reap_every_worker", role, &[]);
        let pid = child.id() as i32;
        assert!(
            common::wait_until(20, || common::children_of(pid).len() == 2),
            "{role}: workers never started"
        );
        // SAFETY: kill with integer arguments.
        unsafe { libc::kill(pid, signal) };
        let status = common::wait_child(&mut child, 20);
        use std::os::unix::process::ExitStatusExt;
        match role {
            "default" => assert_eq!(status.signal(), Some(libc::SIGINT), "{role}: {status}"),
            _ => assert!(status.success(), "{role}: {status}"),
        }
        // Anything re-parented to us would be a leaked worker.
        let mut status = 0;
        // SAFETY: status is a valid c_int; WNOHANG never blocks.
        let leaked = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        assert!(
            leaked <= 0,
            "{role}: worker {leaked} outlived its coordinator"
        );
    }
}

#[test]
fn refused_forks_are_errors() {
    if common::role().as_deref() == Some("limited") {
        // Afterwards no new process may be made by this user.
        let lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit with a valid struct.
        let ret = unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &lim) };
        assert_eq!(ret, 0);
        let err = Pool::new()
            .workers(2)
            .progress(false)
            .map(0..4, |i| i)
            .unwrap_err();
        match err {
            Error::Fork { worker: 0, source } => {
                assert_eq!(source.raw_os_error(), Some(libc::EAGAIN))
            }
            other => panic!("unexpected {other}"),
        }
        return;
    }
    let _d = common::deadline(60);
    let _s = common::serial();
    let mut exe = std::env::current_exe().unwrap();
    let mut cmd;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root is exempt from RLIMIT_NPROC: run the limited role as nobody, from a copy of
        // this binary that nobody can reach whatever directory the checkout lives in.
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let dir = scratch("nobody");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.join("faults-test");
        std::fs::copy(&exe, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe = copy;
        cmd = std::process::Command::new(&exe);
        cmd.uid(65534).gid(65534).current_dir(&dir);
    } else {
        cmd = std::process::Command::new(&exe);
    }
    cmd.args([
        "refused_forks_are_errors",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("FORKMAP_TEST_ROLE", "limited");
    let mut child = cmd.spawn().unwrap();
    let status = common::wait_child(&mut child, 50);
    if let Some(dir) = exe.parent().filter(|d| d.starts_with(std::env::temp_dir())) {
        let _ = std::fs::remove_dir_all(dir);
    }
    assert!(status.success(), "{status}");
}
