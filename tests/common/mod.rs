//! Helpers shared by the integration tests: deadlines, child counting, re-running the
//! test binary as another process.
#![allow(dead_code)]

use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Aborts the whole test process (workers die with it, by their parent-death signal) if
/// the guard is still alive after `secs` seconds: a hang becomes a failure, not a stuck CI.
pub(crate) struct Deadline(Option<mpsc::Sender<()>>);

pub(crate) fn deadline(secs: u64) -> Deadline {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(secs)) {
            eprintln!("test deadline of {secs} s exceeded: aborting");
            std::process::abort();
        }
    });
    Deadline(Some(tx))
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Pids of this process's live children (over all its threads).
pub(crate) fn children() -> Vec<i32> {
    children_of(std::process::id() as i32)
}

pub(crate) fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// The state letter of a process (`R`, `S`, `Z`, ...), or `None` once it is gone.
pub(crate) fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let end = stat.rfind(')')?;
    stat[end + 1..].trim_start().chars().next()
}

/// Waits until `cond` holds, for at most `secs` seconds.
pub(crate) fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Number of open file descriptors of this process.
pub(crate) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Entries in /dev/shm.
pub(crate) fn shm_entries() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Starts this test binary again, running only `test`, with `role` in `FORKMAP_TEST_ROLE`.
pub(crate) fn rerun(test: &str, role: &str, envs: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("FORKMAP_TEST_ROLE", role);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("re-run the test binary")
}

/// The role this process was started in by [`rerun`], if any.
pub(crate) fn role() -> Option<String> {
    std::env::var("FORKMAP_TEST_ROLE").ok()
}

/// Waits for a child with a deadline, killing it when over.
pub(crate) fn wait_child(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not finish within {secs} s", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Serialises the tests of one file that count children or other process-wide things.
pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
