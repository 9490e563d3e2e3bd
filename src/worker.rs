//! The child side: receive chunks, run `f` under `catch_unwind`, send result batches,
//! leave with `_exit`. Nothing here returns into the caller's code.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use ipc_channel::ipc::{IpcReceiver, IpcSender};
use serde::Serialize;

use crate::ipc::{self, BatchRef, Body, Bytes, Envelope, Order, Outcome};
use crate::schedule::Gate;
use crate::shm::{Board, handoff};
use crate::sys;

/// Exit code of a worker whose own machinery (not a task) panicked.
pub(crate) const EXIT_INTERNAL: i32 = 101;
/// Exit code of a worker that found its coordinator gone at start.
pub(crate) const EXIT_ORPHANED: i32 = 102;

/// Set in a worker right after the fork: from then on the panic hook records panics for
/// the coordinator instead of printing them. Never set in the caller's process.
static IN_WORKER: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Installs, once per process and before the first fork, a panic hook that records a
/// worker's panic (message and location) and otherwise defers to the hook that was there.
///
/// Installing it in the child instead would take the process-wide hook lock after the
/// fork, and hang if another thread of the caller was panicking at that moment. A caller
/// that later replaces the hook loses only the location in panic reports, and its hook
/// prints worker panics.
pub(crate) fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !IN_WORKER.load(Ordering::Relaxed) {
                return previous(info);
            }
            let msg = payload_message(info.payload());
            let msg = match info.location() {
                Some(loc) => format!("{msg} (at {}:{}:{})", loc.file(), loc.line(), loc.column()),
                None => msg,
            };
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(msg));
        }));
    });
}

thread_local! {
    /// The message of the last panic on this thread, recorded by the worker's hook.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Everything a worker needs, all inherited by fork.
pub(crate) struct Worker<'a, F> {
    pub(crate) id: usize,
    pub(crate) incarnation: u64,
    pub(crate) coordinator: sys::Pid,
    pub(crate) indices: &'a [usize],
    pub(crate) f: &'a F,
    pub(crate) orders: IpcReceiver<Order>,
    pub(crate) reports: IpcSender<Envelope>,
    /// Where descriptors of shared arrays in results go, ahead of their batch.
    pub(crate) fd_socket: std::os::fd::OwnedFd,
    pub(crate) board: &'a Board,
}

impl<F> Worker<'_, F> {
    /// Runs the worker to the end and exits the process. Called right after `fork` in the
    /// child.
    pub(crate) fn run<R>(self) -> !
    where
        F: Fn(usize) -> R,
        R: Serialize,
    {
        // Die with the coordinator; if it is already gone, the signal came too late.
        if sys::kill_me_with_parent().is_err() || sys::getppid() != self.coordinator {
            sys::exit_immediately(EXIT_ORPHANED);
        }
        sys::reset_signals_in_child();
        // Panics are reported to the coordinator, never printed by the child: the hook
        // installed before the fork records them from now on.
        IN_WORKER.store(true, Ordering::Relaxed);
        let code = match panic::catch_unwind(AssertUnwindSafe(|| self.serve())) {
            Ok(()) => 0,
            Err(_) => EXIT_INTERNAL,
        };
        sys::exit_immediately(code)
    }

    fn serve<R>(&self)
    where
        F: Fn(usize) -> R,
        R: Serialize,
    {
        let slot = self.board.slot(self.id);
        let gate = Gate(&slot.gate);
        while let Ok(Order::Run { seq, range }) = self.orders.recv() {
            // The coordinator may have taken the chunk back, or take back its unclaimed
            // end while it runs: each position is claimed through the gate first.
            if !gate.open(seq, range.len()) {
                continue;
            }
            let start = range.start;
            let began = sys::monotonic_ns();
            let mut outcomes = Vec::with_capacity(range.len());
            while let Some(offset) = gate.claim(seq) {
                let pos = start + offset;
                slot.started_ns
                    .store(sys::monotonic_coarse_ns(), Ordering::Relaxed);
                slot.current.store(pos as u64 + 1, Ordering::Release);
                let index = self.indices[pos];
                let outcome = match panic::catch_unwind(AssertUnwindSafe(|| (self.f)(index))) {
                    Ok(value) => Outcome::Done(value),
                    Err(payload) => {
                        let message = LAST_PANIC
                            .with(|p| p.borrow_mut().take())
                            .unwrap_or_else(|| payload_message(payload.as_ref()));
                        // The payload's own destructor may panic; that must not unwind out.
                        if panic::catch_unwind(AssertUnwindSafe(|| drop(payload))).is_err() {
                            sys::exit_immediately(EXIT_INTERNAL);
                        }
                        Outcome::Panicked(message)
                    }
                };
                outcomes.push(outcome);
                slot.done.fetch_add(1, Ordering::Release);
            }
            slot.current.store(0, Ordering::Release);
            if outcomes.is_empty() {
                // All of it was taken back before the first claim: nothing to report.
                continue;
            }
            let busy_ns = sys::monotonic_ns().saturating_sub(began);
            if !self.send(start, outcomes, busy_ns) {
                // The coordinator is gone: nothing left to do.
                return;
            }
        }
    }

    /// Sends a batch; if it cannot be serialised as a whole, sends its outcomes one by
    /// one so that exactly the results that fail are reported as unsendable. Returns
    /// false when the coordinator can no longer be reached.
    fn send<R: Serialize>(&self, start: usize, outcomes: Vec<Outcome<R>>, busy_ns: u64) -> bool {
        let (encoded, fds) = handoff::collect_outgoing(|| {
            ipc::encode(&BatchRef {
                start,
                busy_ns,
                outcomes: &outcomes,
            })
        });
        if let Ok(bytes) = encoded {
            return self.post(Body::Batch(Bytes(bytes)), fds);
        }
        drop(fds);
        let busy = busy_ns / outcomes.len().max(1) as u64;
        for (position, one) in (start..).zip(outcomes.chunks(1)) {
            let (encoded, fds) = handoff::collect_outgoing(|| {
                ipc::encode(&BatchRef {
                    start: position,
                    busy_ns: busy,
                    outcomes: one,
                })
            });
            let sent = match encoded {
                Ok(bytes) => self.post(Body::Batch(Bytes(bytes)), fds),
                Err(message) => self.post(Body::Unsendable { position, message }, Vec::new()),
            };
            if !sent {
                return false;
            }
        }
        true
    }

    /// Sends the descriptors first, then the message that refers to them.
    fn post(&self, body: Body, fds: Vec<std::os::fd::OwnedFd>) -> bool {
        use std::os::fd::AsFd;
        if !fds.is_empty() {
            let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
            if sys::send_fds(self.fd_socket.as_fd(), &borrowed).is_err() {
                return false;
            }
        }
        let envelope = Envelope {
            worker: self.id,
            incarnation: self.incarnation,
            fds: fds.len() as u32,
            body,
        };
        self.reports.send(envelope).is_ok()
    }
}

/// The message of a panic payload (a `&str` or `String`), when the hook did not record one.
fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".to_string())
}
