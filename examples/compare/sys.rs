//! The few raw OS calls the harness cannot make through std: `fork`, `_exit`, `waitpid`,
//! `prctl(PR_SET_PDEATHSIG)`, `kill` of a process group and the thread CPU clock. The copy
//! baseline must fork by hand (it is the thing forkmap is compared with, so it may not use
//! forkmap's internals), and the skewed workload spins on the thread CPU clock so that a
//! task costs the same CPU time in every peer, Rust or Python.

use std::io;
use std::time::Duration;

/// A process id.
pub(crate) type Pid = libc::pid_t;

/// Which side of a fork this process is on.
pub(crate) enum Forked {
    /// The new process.
    Child,
    /// The caller; the child has this pid.
    Parent(Pid),
}

/// Forks the calling process. Call it only while the process has a single thread. The
/// child must leave with [`exit_now`], never by returning into the caller's code.
pub(crate) fn fork() -> io::Result<Forked> {
    // The copy baseline may not use forkmap's `sys::fork`: this is its own, with the same
    // obligations (single-threaded caller, `_exit` in the child).
    #[allow(clippy::disallowed_methods)]
    // SAFETY: fork has no memory-safety preconditions; every caller in this harness runs
    // single-threaded (peer processes start no thread before forking), so no lock held by
    // another thread can be inherited in a locked state.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Ends a forked child at once: no destructors, no flushing of inherited buffers.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe, takes an integer and never returns.
    unsafe { libc::_exit(code) }
}

/// Asks the kernel to SIGKILL this (child) process when its parent dies, so an
/// interrupted run leaves no process behind.
pub(crate) fn die_with_parent() {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
}

/// Waits for `pid` to end and reaps it; returns its raw wait status.
pub(crate) fn wait(pid: Pid) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid, writable c_int for the duration of the call.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != -1 {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Reaps `pid` if it has ended: `Some(raw status)`, or `None` while it runs.
pub(crate) fn try_wait(pid: Pid) -> io::Result<Option<i32>> {
    let mut status = 0;
    // SAFETY: `status` is a valid, writable c_int for the duration of the call.
    match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        _ => Ok(Some(status)),
    }
}

/// Sends SIGKILL to `pid`.
pub(crate) fn kill(pid: Pid) {
    // SAFETY: kill takes plain integers; a pid that is gone only yields ESRCH.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Sends SIGKILL to every process in process group `pgid` (a peer and what it forked).
pub(crate) fn kill_group(pgid: Pid) {
    // SAFETY: as for `kill`; a negative pid names a process group.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// CPU time consumed by the calling thread, in nanoseconds.
pub(crate) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID always exists
    // on Linux. std offers no thread CPU clock.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time (user + system) and minor page faults so far, of this process and of its
/// reaped children.
pub(crate) fn usage() -> [(Duration, u64); 2] {
    [rusage(libc::RUSAGE_SELF), rusage(libc::RUSAGE_CHILDREN)]
}

fn rusage(who: libc::c_int) -> (Duration, u64) {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `r` is a valid, writable rusage for the duration of the call.
    unsafe { libc::getrusage(who, &mut r) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(r.ru_utime) + tv(r.ru_stime), r.ru_minflt as u64)
}
