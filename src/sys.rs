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

mod child;
pub(crate) mod fds;
mod memory;
mod received;
pub(crate) mod signals;

pub(crate) use child::{Child, own_process_group};
pub(crate) use memory::{memory_budget, resident_bytes};
pub(crate) use received::ReceivedFile;

/// A process id.
pub(crate) type Pid = libc::pid_t;

#[cfg(test)]
/// `SIGKILL`, the signal that ends a worker that must stop now.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;

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

#[cfg(test)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitKind {
    /// It called `exit`/`_exit` with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It ended, but its status went to someone else: the program reaps children itself
    /// or ignores SIGCHLD (then the kernel discards the status).
    Unknown,
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ExitKind::Code(code) => write!(f, "exit code {code}"),
            ExitKind::Signal(sig) => write!(f, "signal {} ({})", sig, signal_name(sig)),
            ExitKind::Unknown => f.write_str(
                "an unknown status (reaped by someone else: the program waits for every child or ignores SIGCHLD)",
            ),
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

#[cfg(test)]
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

#[cfg(test)]
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

/// Reaps `pid` if it has ended, `Ok(None)` while it runs: for kernels without pidfds.
pub(crate) fn wait_nohang(pid: Pid) -> io::Result<Option<ExitKind>> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: status is a valid, writable c_int for the duration of the call.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        match ret {
            0 => return Ok(None),
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            -1 if io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) => {
                return Ok(Some(ExitKind::Unknown));
            }
            -1 => return Err(io::Error::last_os_error()),
            _ => return Ok(Some(decode_status(status))),
        }
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

/// Bytes of address space this process may still map under `RLIMIT_AS` (`ulimit -v`),
/// or `None` without such a limit. Allocation failure aborts a Rust program, so a
/// result that cannot fit is refused before it is decoded.
pub(crate) fn address_space_left() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
    let used = line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024;
    Some(limit.rlim_cur.saturating_sub(used))
}

/// Frees the pages of `len` bytes of a memory file from `offset` (the file keeps its size
/// and reads there as zeros), for a received result already decoded that far.
pub(crate) fn punch_hole(file: &File, offset: usize, len: usize) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: fallocate takes an open fd and plain integers.
    check(unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    })?;
    Ok(())
}

/// Whether `fd` is an open descriptor of this process.
pub(crate) fn fd_is_open(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    // SAFETY: F_GETFD takes a descriptor and no pointers.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) != -1 }
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
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// A coarse monotonic clock (the kernel's last tick, a few milliseconds of resolution)
/// that costs no more than a memory read: workers stamp every task with it, and task
/// deadlines are checked against it.
pub(crate) fn monotonic_coarse_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; both clocks used here exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
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
    match proc_stat(pid) {
        Some((state, _)) => !matches!(state, 'Z' | 'X' | 'x'),
        None => process_exists(pid),
    }
}

/// The state letter of `pid` in `/proc/<pid>/stat` (`R`, `S`, `T`, `Z`, ...).
pub(crate) fn process_state(pid: Pid) -> Option<char> {
    proc_stat(pid).map(|(state, _)| state)
}

/// The state letter and the start time (clock ticks after boot, field 22) of `pid`,
/// from `/proc/<pid>/stat`; `None` when it cannot be read (gone, or no `/proc`).
pub(crate) fn proc_stat(pid: Pid) -> Option<(char, u64)> {
    // A /proc mounted for another pid namespace (a process that entered a new one
    // without mounting its own /proc) would describe another process under this number.
    if !proc_is_ours() {
        return None;
    }
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `/proc` shows this process's pid namespace: `/proc/self` names our pid.
fn proc_is_ours() -> bool {
    std::fs::read_link("/proc/self").is_ok_and(|p| p.as_os_str() == getpid().to_string().as_str())
}

/// The state letter and start time in the text of a `/proc/<pid>/stat` file.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    // The fields follow the command name, which is in parentheses and may itself contain
    // spaces or parentheses: field 3 (the state) is the first after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether the process that had `pid` and started at `start` (clock ticks after boot, 0:
/// unknown) still runs: the pid exists, is no zombie, and has that start time.
pub(crate) fn same_process_running(pid: Pid, start: u64) -> bool {
    if pid <= 0 || !process_exists(pid) {
        return false;
    }
    match proc_stat(pid) {
        Some(('Z' | 'X' | 'x', _)) => false,
        Some((_, now)) => start == 0 || now == start,
        None => process_running(pid),
    }
}

/// This process's pid and start time (see [`proc_stat`]; 0 when unknown), cached for the
/// current fork generation, so a forked child never reports its parent's.
pub(crate) fn self_identity() -> (Pid, u64) {
    use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
    // No lock: a fork while another thread held one would leave it held in the child.
    // Threads of one generation store the same values, and the generation is stored
    // last, so a reader that sees its own generation sees that generation's values.
    static GENERATION: AtomicU64 = AtomicU64::new(u64::MAX);
    static PID: AtomicI32 = AtomicI32::new(0);
    static START: AtomicU64 = AtomicU64::new(0);
    let generation = fork_generation();
    if generation != u64::MAX && GENERATION.load(Ordering::Acquire) == generation {
        return (PID.load(Ordering::Relaxed), START.load(Ordering::Relaxed));
    }
    let pid = getpid();
    // `/proc/self` is right even when /proc belongs to another pid namespace.
    let start = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| parse_stat(&stat))
        .map_or(0, |(_, start)| start);
    PID.store(pid, Ordering::Relaxed);
    START.store(start, Ordering::Relaxed);
    GENERATION.store(generation, Ordering::Release);
    (pid, start)
}

/// Where named shared-memory segments live: the directory `shm_open` uses on Linux, so
/// a segment named `x` here is what Python's `SharedMemory(name="x")` opens.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// The longest file name Linux file systems accept (`NAME_MAX`).
pub(crate) const NAME_MAX: usize = 255;

/// Creates a new file at `path` for reading and writing with mode 0600 (the umask can
/// only narrow it): `O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW`. Anything already at
/// `path`, a dangling symlink included, is an `AlreadyExists` error.
pub(crate) fn create_exclusive(path: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// Opens an existing file at `path` for reading and writing, refusing a symlink:
/// `O_RDWR | O_CLOEXEC | O_NOFOLLOW`.
pub(crate) fn open_existing(path: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// Fills `buf` with random bytes from the kernel's generator (`getrandom`), for names
/// that another user cannot guess.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes for the whole call.
        let ret = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        done += ret as usize;
    }
    Ok(())
}

/// Most descriptors passed in one `SCM_RIGHTS` message (the kernel's `SCM_MAX_FD` is 253).
const FDS_PER_MESSAGE: usize = 250;

/// A connected pair of `AF_UNIX` `SOCK_SEQPACKET` sockets, close-on-exec, for passing
/// file descriptors between a worker and its coordinator.
pub(crate) fn fd_socketpair() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two c_ints for the kernel to fill.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// Sends `fds` over `socket` (`SCM_RIGHTS`), in as many messages as needed. The
/// receiver gets its own descriptors for the same open files.
pub(crate) fn send_fds(
    socket: std::os::fd::BorrowedFd<'_>,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    for batch in fds.chunks(FDS_PER_MESSAGE) {
        let raw: Vec<libc::c_int> = batch.iter().map(|fd| fd.as_raw_fd()).collect();
        let payload_len = std::mem::size_of_val(raw.as_slice());
        // SAFETY: CMSG_SPACE computes a size from an integer.
        let space = unsafe { libc::CMSG_SPACE(payload_len as u32) } as usize;
        let mut control = vec![0u64; space.div_ceil(8)];
        let mut count = batch.len() as u32;
        let mut iov = libc::iovec {
            iov_base: (&raw mut count).cast(),
            iov_len: std::mem::size_of::<u32>(),
        };
        // (1) msghdr is plain data, zero is a valid start; (2) the iovec, the control
        // buffer (8-byte aligned, `space` bytes) and `raw` outlive the sendmsg call;
        // (3) CMSG_FIRSTHDR returns a pointer into that buffer, which has room for one
        // header and `payload_len` bytes of descriptors.
        // SAFETY: (1)-(3) above.
        let ret = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload_len as u32) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<libc::c_int>(),
                raw.len(),
            );
            loop {
                let ret = libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
                if ret == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break ret;
            }
        };
        if ret == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives exactly `n` descriptors sent by [`send_fds`] on `socket`, blocking until
/// they are there (the sender sends them before the message that refers to them).
pub(crate) fn recv_fds(
    socket: std::os::fd::BorrowedFd<'_>,
    n: usize,
) -> io::Result<Vec<std::os::fd::OwnedFd>> {
    use std::os::fd::{AsRawFd as _, FromRawFd};
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let want = (n - out.len()).min(FDS_PER_MESSAGE);
        // SAFETY: CMSG_SPACE computes a size from an integer.
        let space = unsafe { libc::CMSG_SPACE((want * std::mem::size_of::<libc::c_int>()) as u32) }
            as usize;
        let mut control = vec![0u64; space.div_ceil(8)];
        let mut count = 0u32;
        let mut iov = libc::iovec {
            iov_base: (&raw mut count).cast(),
            iov_len: std::mem::size_of::<u32>(),
        };
        // SAFETY: msghdr is plain data; the iovec and the 8-byte aligned control buffer of
        // `space` bytes outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let ret = loop {
            // SAFETY: msg describes valid buffers (above); MSG_CMSG_CLOEXEC marks the new
            // descriptors close-on-exec.
            let ret =
                unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
            if ret == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break ret;
        };
        if ret == -1 {
            return Err(fds::explain(io::Error::last_os_error()));
        }
        if ret == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the sender closed before sending its descriptors",
            ));
        }
        let before = out.len();
        // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer the kernel filled, within
        // msg_controllen; each SCM_RIGHTS payload holds (cmsg_len - CMSG_LEN(0)) / 4 fresh
        // descriptors that now belong to this process.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                    for k in 0..bytes / std::mem::size_of::<libc::c_int>() {
                        out.push(std::os::fd::OwnedFd::from_raw_fd(
                            data.add(k).read_unaligned(),
                        ));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            // The kernel drops what the receiver cannot hold: almost always EMFILE.
            return Err(io::Error::other(format!(
                "descriptors were truncated in transit, most likely too many open \
                 descriptors here: {}",
                fds::usage()
            )));
        }
        if out.len() - before != count as usize {
            return Err(io::Error::other(format!(
                "expected {count} descriptors, got {}",
                out.len() - before
            )));
        }
    }
    Ok(out)
}
