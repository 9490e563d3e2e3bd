//! A forked worker as the coordinator holds it: a pidfd, so that neither a program that
//! reaps children itself nor an ignored SIGCHLD can make forkmap wait for, or signal, a
//! pid that now belongs to another process; and a process group of its own, so what a
//! task starts and leaves running goes with the worker.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{
    Pid as RPid, PidfdFlags, Signal, WaitId, WaitIdOptions, pidfd_open, pidfd_send_signal, waitid,
};

use super::{ExitKind, Pid, check};

/// A child process this process forked, tracked through a pidfd.
#[derive(Debug)]
pub(crate) struct Child {
    pid: Pid,
    /// `None` when the child was gone before it could be opened (reaped by someone else),
    /// or on a kernel without pidfds (before Linux 5.3; see `by_pid`).
    pidfd: Option<OwnedFd>,
    /// No pidfd because the kernel has none: waited for and signalled by pid, as before
    /// pidfds existed (safe as long as nobody else reaps this process's children).
    by_pid: bool,
}

impl Child {
    /// Starts tracking `pid`, a child just forked by this process, and puts it in a
    /// process group of its own (the child does the same, whichever runs first).
    ///
    /// A child can be reaped by another waiter (or by the kernel, with SIGCHLD ignored)
    /// only once it has exited; one that is already gone is tracked as gone.
    pub(crate) fn adopt(pid: Pid) -> Child {
        // SAFETY: setpgid takes plain integers; it fails harmlessly (ESRCH, EACCES) when
        // the child has already gone or changed its own group.
        unsafe { libc::setpgid(pid, pid) };
        let opened = match RPid::from_raw(pid) {
            Some(p) => pidfd_open(p, PidfdFlags::empty()),
            None => Err(rustix::io::Errno::SRCH),
        };
        match opened {
            Ok(fd) => Child {
                pid,
                pidfd: Some(fd),
                by_pid: false,
            },
            // Already exited and reaped by someone else.
            Err(rustix::io::Errno::SRCH) => Child {
                pid,
                pidfd: None,
                by_pid: false,
            },
            Err(_) => Child {
                pid,
                pidfd: None,
                by_pid: true,
            },
        }
    }

    /// Whether the child has exited (it may be a zombie, or reaped by someone else).
    fn exited(&self, timeout: Option<Duration>) -> bool {
        let Some(fd) = &self.pidfd else {
            return true;
        };
        let ts = timeout.map(|t| Timespec {
            tv_sec: t.as_secs() as _,
            tv_nsec: t.subsec_nanos() as _,
        });
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        loop {
            match poll(&mut fds, ts.as_ref()) {
                Ok(n) => return n > 0,
                Err(rustix::io::Errno::INTR) => continue,
                // A pidfd that cannot be polled: fall back to asking wait.
                Err(_) => return true,
            }
        }
    }

    /// Reaps the child if it has exited, after killing what is left of its process
    /// group. `Ok(None)` while it runs; [`ExitKind::Unknown`] when it was reaped by
    /// someone else (a program that waits for every child, or SIGCHLD ignored).
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitKind>> {
        if self.by_pid {
            let status = super::wait_nohang(self.pid);
            if let Ok(Some(_)) = status {
                self.by_pid = false;
            }
            return status;
        }
        if !self.exited(Some(Duration::ZERO)) {
            return Ok(None);
        }
        // While the exited leader is not reaped, its pid (and so its group id) cannot
        // be reused: the group kill reaches only processes the worker left behind.
        self.kill_group();
        let Some(fd) = &self.pidfd else {
            return Ok(Some(ExitKind::Unknown));
        };
        loop {
            match waitid(
                WaitId::PidFd(fd.as_fd()),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                Ok(Some(status)) => {
                    return Ok(Some(
                        match (status.exit_status(), status.terminating_signal()) {
                            (_, Some(sig)) => ExitKind::Signal(sig),
                            (Some(code), None) => ExitKind::Code(code),
                            (None, None) => ExitKind::Unknown,
                        },
                    ));
                }
                // Exited but not yet waitable: looked at again on the next turn.
                Ok(None) => return Ok(None),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::CHILD) => return Ok(Some(ExitKind::Unknown)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Kills the child and its process group (SIGKILL). Never signals a pid the child no
    /// longer owns.
    pub(crate) fn kill(&self) {
        if let Some(fd) = &self.pidfd {
            let _ = pidfd_send_signal(fd, Signal::KILL);
        } else if self.by_pid {
            // SAFETY: kill takes plain integers; the child is not reaped yet (by_pid is
            // cleared when it is), so the pid is still its own.
            let _ = check(unsafe { libc::kill(self.pid, libc::SIGKILL) });
        }
        self.kill_group();
    }

    fn kill_group(&self) {
        // The group is named by the worker's pid. It exists while any process of it
        // does, and a pid in use as a group id is not handed to a new process, so this
        // reaches only the worker's group (or nobody: ESRCH).
        // SAFETY: kill takes plain integers; a negative pid names a process group.
        let _ = check(unsafe { libc::kill(-self.pid, libc::SIGKILL) });
    }

    /// Kills the child and its group, waits until it has exited and reaps it.
    pub(crate) fn kill_and_reap(&mut self) -> ExitKind {
        self.kill();
        loop {
            if !self.by_pid {
                self.exited(None);
            }
            match self.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) => std::thread::sleep(Duration::from_micros(100)),
                Err(_) => return ExitKind::Unknown,
            }
        }
    }

    /// Whether the child is stopped by a signal (`T` in `/proc`; a debugger's trace stop
    /// is `t` and does not count).
    pub(crate) fn is_stopped(&self) -> bool {
        super::process_state(self.pid) == Some('T') && !self.exited(Some(Duration::ZERO))
    }
}

/// In a freshly forked child: a process group of its own, so that the coordinator can
/// kill whatever the child's tasks start along with it.
pub(crate) fn own_process_group() {
    // SAFETY: setpgid(0, 0) makes the calling process a group leader; no pointers.
    unsafe { libc::setpgid(0, 0) };
}
