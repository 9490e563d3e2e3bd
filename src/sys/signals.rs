//! SIGINT and SIGTERM while a coordinator waits on its workers.
//!
//! The recording handler is installed process-wide by the first [`Interrupts`] guard and
//! put back by the last one to drop, so overlapping calls on several threads (and a
//! coordinator that panics) share one installation and the caller's disposition is saved
//! exactly once. A signal is never cleared by a call: the handler counts signals, and
//! every guard alive sees every signal counted since the installation. When the last
//! guard drops, the caller's dispositions are put back and each signal that arrived in
//! the meantime is sent again, so the caller's own handler runs, or the default action
//! ends the process, exactly as if forkmap had not been there.
//!
//! A guard is cheap to take and to drop: a streaming call can hold one only while it
//! waits for its workers.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The signals that interrupt a `map`.
pub(crate) const INTERRUPT_SIGNALS: [i32; 2] = [libc::SIGINT, libc::SIGTERM];

/// Signals received by the recording handler, per entry of [`INTERRUPT_SIGNALS`].
static RECEIVED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// [`RECEIVED`] when the handler was installed (or when its signals were last sent on).
static BASELINE: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// The process-wide installation: how many guards hold it and what it replaced.
struct Installed {
    holders: usize,
    /// `(signal, previous disposition)` for each signal whose handler was replaced.
    saved: Vec<(i32, libc::sigaction)>,
}

// SAFETY: a `sigaction` is plain data (handler address, flags, mask); nothing in it is
// tied to the thread that read it.
unsafe impl Send for Installed {}

static INSTALLED: Mutex<Installed> = Mutex::new(Installed {
    holders: 0,
    saved: Vec::new(),
});

fn lock() -> std::sync::MutexGuard<'static, Installed> {
    INSTALLED.lock().unwrap_or_else(|e| e.into_inner())
}

extern "C" fn on_interrupt(sig: libc::c_int) {
    // Async-signal-safe: one atomic add.
    if let Some(i) = INTERRUPT_SIGNALS.iter().position(|&s| s == sig) {
        RECEIVED[i].fetch_add(1, Ordering::SeqCst);
    }
}

extern "C" fn ignore_in_worker(_: libc::c_int) {
    // Only the coordinator decides what a SIGINT or SIGTERM means; it kills its workers.
    // A handler (unlike SIG_IGN) is reset by `exec`, so programs a task starts get the
    // default action back.
}

fn handler_address(f: extern "C" fn(libc::c_int)) -> libc::sighandler_t {
    f as libc::sighandler_t
}

fn current(sig: i32) -> io::Result<libc::sigaction> {
    // SAFETY: sigaction is plain data and zero is a valid value; `old` is a valid
    // out-pointer and a null `act` only reads the disposition.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut old) == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(old)
    }
}

fn install(sig: i32, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: sigaction is plain data; the handler is SIG_IGN or an async-signal-safe
    // `extern "C" fn(c_int)` that lives as long as the program.
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = handler;
        new.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut new.sa_mask);
        if libc::sigaction(sig, &new, std::ptr::null_mut()) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn restore(sig: i32, old: &libc::sigaction) {
    // SAFETY: `old` was returned by sigaction for this signal.
    unsafe { libc::sigaction(sig, old, std::ptr::null_mut()) };
}

/// A hold on the process-wide interrupt handler; see the module documentation.
#[derive(Debug)]
pub(crate) struct Interrupts(());

impl Interrupts {
    /// Takes a hold, installing the handler if no other call holds it. SIGINT and SIGTERM
    /// get the recording handler unless the caller ignores them (then they stay ignored,
    /// in the workers too); SIGPIPE is ignored, so a send to a worker that just died is an
    /// `EPIPE` error rather than the end of the caller.
    ///
    /// # Errors
    /// The OS error of a `sigaction` call that failed; nothing stays installed then.
    pub(crate) fn catch() -> io::Result<Interrupts> {
        let mut state = lock();
        if state.holders == 0 {
            for (i, &sig) in INTERRUPT_SIGNALS.iter().enumerate() {
                BASELINE[i].store(RECEIVED[i].load(Ordering::SeqCst), Ordering::SeqCst);
                let old = current(sig).inspect_err(|_| put_back(&mut state))?;
                if old.sa_sigaction == libc::SIG_IGN {
                    continue;
                }
                install(sig, handler_address(on_interrupt))
                    .inspect_err(|_| put_back(&mut state))?;
                state.saved.push((sig, old));
            }
            let old = current(libc::SIGPIPE).inspect_err(|_| put_back(&mut state))?;
            install(libc::SIGPIPE, libc::SIG_IGN).inspect_err(|_| put_back(&mut state))?;
            state.saved.push((libc::SIGPIPE, old));
        }
        state.holders += 1;
        Ok(Interrupts(()))
    }
}

/// The first interrupting signal received while the handler is installed, if any.
pub(crate) fn pending() -> Option<i32> {
    INTERRUPT_SIGNALS
        .iter()
        .enumerate()
        .find(|&(i, _)| RECEIVED[i].load(Ordering::SeqCst) > BASELINE[i].load(Ordering::SeqCst))
        .map(|(_, &sig)| sig)
}

/// Puts the saved dispositions back (a disposition the caller changed while forkmap's
/// handler was installed is left as the caller set it).
fn put_back(state: &mut Installed) {
    for (sig, old) in state.saved.drain(..) {
        let ours = sig != libc::SIGPIPE;
        match current(sig) {
            Ok(now) if ours && now.sa_sigaction != handler_address(on_interrupt) => {}
            _ => restore(sig, &old),
        }
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        let mut resend = Vec::new();
        {
            let mut state = lock();
            state.holders -= 1;
            if state.holders > 0 {
                return;
            }
            put_back(&mut state);
            for (i, &sig) in INTERRUPT_SIGNALS.iter().enumerate() {
                let now = RECEIVED[i].load(Ordering::SeqCst);
                if BASELINE[i].swap(now, Ordering::SeqCst) < now {
                    resend.push(sig);
                }
            }
        }
        // Outside the lock: the caller's handler may run right here.
        for sig in resend {
            send_again(sig);
        }
    }
}

/// Delivers `sig` to this process under the caller's disposition: to this thread when it
/// does not block the signal (a handler then runs before this returns), else to the
/// process, for whichever thread takes it.
fn send_again(sig: i32) {
    // SAFETY: sigset_t is plain data; pthread_sigmask with a null new set only reads
    // this thread's mask into `mask`; raise and kill take plain integers.
    unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        let blocked = libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask) == 0
            && libc::sigismember(&mask, sig) == 1;
        if blocked {
            libc::kill(libc::getpid(), sig);
        } else {
            libc::raise(sig);
        }
    }
}

/// Holds the installation still across a `fork`, so the child cannot inherit it half
/// changed by another thread. Drop the returned lock in the parent; in the child pass
/// it to [`worker_dispositions`].
pub(crate) fn hold_for_fork() -> ForkHold {
    ForkHold(lock())
}

/// See [`hold_for_fork`].
#[allow(missing_debug_implementations)]
pub(crate) struct ForkHold(std::sync::MutexGuard<'static, Installed>);

/// In a freshly forked worker: forget the coordinator's installation (its guards live in
/// the parent), and make SIGINT and SIGTERM do nothing here unless they are ignored, so
/// a signal sent to every process of the program (`kill(0, ..)`, `pkill`, a service
/// manager) is decided by the coordinator alone. SIGPIPE is ignored, so a vanished
/// coordinator is an `EPIPE`, not a silent death.
pub(crate) fn worker_dispositions(mut hold: ForkHold) {
    hold.0.holders = 0;
    // Leaking is fine: the child never frees what it inherited anyway.
    std::mem::forget(std::mem::take(&mut hold.0.saved));
    for (i, &sig) in INTERRUPT_SIGNALS.iter().enumerate() {
        BASELINE[i].store(RECEIVED[i].load(Ordering::SeqCst), Ordering::SeqCst);
        if current(sig).is_ok_and(|old| old.sa_sigaction != libc::SIG_IGN) {
            let _ = install(sig, handler_address(ignore_in_worker));
        }
    }
    let _ = install(libc::SIGPIPE, libc::SIG_IGN);
    drop(hold);
}
