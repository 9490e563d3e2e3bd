//! Every raw OS call forkmap makes: fork, wait, signals, prctl, memfd, fallocate.
//!
//! Nothing outside this module (and the lock words in `sync`) calls `libc`. Each call
//! returns `io::Result` and turns the OS's flags into named constants once.

#[cfg(not(target_os = "linux"))]
compile_error!(
    "forkmap needs Linux: memfd_create, PR_SET_PDEATHSIG and robust process-shared mutexes"
);

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

/// A process id.
pub(crate) type Pid = libc::pid_t;

/// `SIGKILL`, the signal that ends a worker that must stop now.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;
/// `SIGTERM`, the polite request to stop.
pub(crate) const SIGTERM: i32 = libc::SIGTERM;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Which side of a `fork` this process is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forked {
    /// The new process.
    Child,
    /// The caller; the child has this pid.
    Parent(Pid),
}

/// Forks the calling process.
///
/// The child starts with one thread (the caller's) and a copy-on-write image of the
/// parent. Locks that other threads of the parent held at the moment of the fork stay
/// locked in the child, so the caller forks from a state where that cannot matter (the
/// coordinator starts no thread of its own) and the child leaves with
/// [`exit_immediately`], never by returning into code that may run destructors.
pub(crate) fn fork() -> io::Result<Forked> {
    #[allow(clippy::disallowed_methods)]
    // SAFETY: fork has no memory-safety preconditions: the child gets a private copy of
    // the address space. The remaining hazard (locks held by other threads) is a
    // liveness concern handled by the caller as documented above.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Asks the kernel to `SIGKILL` this process when the thread that forked it dies.
pub(crate) fn kill_me_with_parent() -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
    check(unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    })?;
    Ok(())
}

/// The calling process's id.
pub(crate) fn getpid() -> Pid {
    // SAFETY: getpid cannot fail and touches no memory.
    unsafe { libc::getpid() }
}

/// The parent process's id (1, or a subreaper, once the parent has died).
pub(crate) fn getppid() -> Pid {
    // SAFETY: getppid cannot fail and touches no memory.
    unsafe { libc::getppid() }
}

/// Ends this process at once with `code`: no destructors, no `atexit` handlers, no
/// flushing of the caller's buffers. The only way a forked worker leaves.
pub(crate) fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Sends `signal` to `pid`.
pub(crate) fn kill(pid: Pid, signal: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    check(unsafe { libc::kill(pid, signal) })?;
    Ok(())
}

/// Whether a process with this pid exists (a zombie counts as existing).
pub(crate) fn process_exists(pid: Pid) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let ret = unsafe { libc::kill(pid, 0) };
    ret == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// It called `exit`/`_exit` with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ExitKind::Code(code) => write!(f, "exit code {code}"),
            ExitKind::Signal(sig) => write!(f, "signal {} ({})", sig, signal_name(sig)),
        }
    }
}

/// The conventional name of a signal number.
pub(crate) fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => "signal",
    }
}

fn decode_status(status: libc::c_int) -> ExitKind {
    if libc::WIFSIGNALED(status) {
        ExitKind::Signal(libc::WTERMSIG(status))
    } else {
        ExitKind::Code(libc::WEXITSTATUS(status))
    }
}

/// Reaps `pid` if it has ended; `Ok(None)` while it runs.
pub(crate) fn try_wait(pid: Pid) -> io::Result<Option<ExitKind>> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: status is a valid, writable c_int for the duration of the call.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        match ret {
            0 => return Ok(None),
            -1 => {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            _ => return Ok(Some(decode_status(status))),
        }
    }
}

/// Waits until `pid` ends and reaps it.
pub(crate) fn wait(pid: Pid) -> io::Result<ExitKind> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: status is a valid, writable c_int for the duration of the call.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(decode_status(status));
    }
}

/// Creates an anonymous memory file (`memfd_create`) of `len` bytes whose pages are
/// reserved up front with `fallocate`, so running out of memory is an error here and
/// never a `SIGBUS` on first touch. Sealing is allowed, so the file can later be frozen.
pub(crate) fn memfd_reserved(name: &str, len: usize) -> io::Result<File> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: cname is a valid NUL-terminated string that outlives the call.
    let fd = check(unsafe {
        libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    reserve(&file, len)?;
    Ok(file)
}

/// Sizes `file` to `len` bytes and reserves its pages with `fallocate`, so a full
/// `/dev/shm` or memory limit is an `Err` now rather than a `SIGBUS` on first touch.
pub(crate) fn reserve(file: &File, len: usize) -> io::Result<()> {
    // Anonymous memory files have no size limit of their own, and tmpfs may be as large
    // as memory: reserving more than the machine can give would not fail but wake the
    // OOM killer. Refuse it here instead.
    if let Some(budget) = memory_budget()
        && len as u64 > budget
    {
        return Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("{len} bytes requested, about {budget} bytes of memory available"),
        ));
    }
    file.set_len(len as u64)?;
    if len == 0 {
        return Ok(());
    }
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: fallocate takes an open fd and plain integers.
    let ret = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if ret != 0 {
        let err = io::Error::last_os_error();
        // Truncate back so the failed reservation does not keep what it got.
        let _ = file.set_len(0);
        return Err(err);
    }
    Ok(())
}

/// Seals a memfd against any further write, growth or shrink. Fails with `EBUSY` while
/// any process still has a writable shared mapping of it.
pub(crate) fn seal_read_only(file: &File) -> io::Result<()> {
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS takes an open fd and an integer.
    check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(())
}

/// The seals currently set on a memfd.
pub(crate) fn seals(file: &File) -> io::Result<i32> {
    // SAFETY: F_GET_SEALS takes an open fd.
    check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) })
}

/// Whether a memfd is sealed against writes.
pub(crate) fn is_write_sealed(file: &File) -> bool {
    seals(file).is_ok_and(|s| s & libc::F_SEAL_WRITE != 0)
}

/// A monotonic clock reading in nanoseconds, the same in every process of the machine,
/// so a worker can stamp a task's start and the coordinator can read its age.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The errno of an error, for the lock code that speaks in raw return values.
pub(crate) fn errno_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

static FORK_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static ATFORK: std::sync::Once = std::sync::Once::new();

extern "C" fn bump_fork_generation() {
    // Async-signal-safe: one atomic add.
    FORK_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// A number that changes in every child created by `fork` (by any caller of libc's
/// `fork`, not only forkmap), so a per-process cache can tell that it was inherited
/// rather than made here. This caches no pid: it counts forks along this lineage.
pub(crate) fn fork_generation() -> u64 {
    ATFORK.call_once(|| {
        // SAFETY: the handler is an `extern "C" fn()` that stays valid for the life of
        // the program and only performs an atomic add.
        let ret = unsafe { libc::pthread_atfork(None, None, Some(bump_fork_generation)) };
        // pthread_atfork fails only with ENOMEM; without the handler every lookup
        // would be treated as stale, which is correct but slower, so the cache is
        // simply disabled by pinning the generation to a value no cache holds.
        if ret != 0 {
            FORK_GENERATION.store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        }
    });
    FORK_GENERATION.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether `pid` is still a running process: not gone and not a zombie.
pub(crate) fn process_running(pid: Pid) -> bool {
    if !process_exists(pid) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name, which is in parentheses and may
        // itself contain spaces or parentheses.
        Ok(stat) => match stat.rfind(')') {
            Some(end) => !matches!(
                stat[end + 1..].trim_start().chars().next(),
                Some('Z' | 'X' | 'x')
            ),
            None => true,
        },
        Err(_) => process_exists(pid),
    }
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Bytes of memory this process could still get: what the kernel reports available
/// (`MemAvailable` plus free swap), capped by the memory cgroup's remaining allowance.
/// `None` when none of these can be read.
pub(crate) fn memory_budget() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.as_deref()?.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    };
    let mut budget = match (field("MemAvailable:"), field("SwapFree:")) {
        (Some(avail), swap) => Some(avail + swap.unwrap_or(0)),
        (None, _) => None,
    };
    // cgroup v2, then v1.
    let cgroup = match (
        read_u64("/sys/fs/cgroup/memory.max"),
        read_u64("/sys/fs/cgroup/memory.current"),
    ) {
        (Some(max), Some(cur)) => Some(max.saturating_sub(cur)),
        _ => match (
            read_u64("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            read_u64("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
        ) {
            (Some(max), Some(cur)) if max < (1 << 60) => Some(max.saturating_sub(cur)),
            _ => None,
        },
    };
    if let Some(c) = cgroup {
        budget = Some(budget.map_or(c, |b| b.min(c)));
    }
    budget
}
