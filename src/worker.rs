//! The child side: receive chunks, run `f` under `catch_unwind`, send result batches,
//! leave with `_exit`. Nothing here returns into the caller's code.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use std::os::fd::AsFd;

use ipc_channel::ipc::{IpcReceiver, IpcSender};
use serde::Serialize;

use crate::ipc::{self, Body, Bytes, Envelope, Order, OutcomeRef, Payload, Piece};
use crate::schedule::Gate;
use crate::shm::{Board, handoff};
use crate::sys;

mod spill;
use spill::Spill;

/// Exit code of a worker whose own machinery (not a task) panicked.
pub(crate) const EXIT_INTERNAL: i32 = 101;
/// Exit code of a worker that found its coordinator gone at start.
pub(crate) const EXIT_ORPHANED: i32 = 102;
/// Exit code of a worker whose task closed the worker's own descriptors (its channel to
/// the coordinator), found at the end of a chunk: a task alone in its chunk is blamed,
/// the tasks of a longer chunk are run again one by one.
pub(crate) const EXIT_CHANNEL_LOST: i32 = 103;

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
        while let Ok(Order::Run {
            seq,
            range,
            block,
            indices,
        }) = self.orders.recv()
        {
            // The coordinator may have taken the chunk back, or take back its unclaimed
            // end while it runs: each position is claimed through the gate first.
            if !gate.open(seq, range.len()) {
                continue;
            }
            let start = range.start;
            let began = sys::monotonic_ns();
            let mut batch = Outgoing::default();
            while let Some(claimed) = gate.claim_block(seq, block as usize) {
                for offset in claimed {
                    let pos = start + offset;
                    slot.started_ns
                        .store(sys::monotonic_coarse_ns(), Ordering::Relaxed);
                    slot.current.store(pos as u64 + 1, Ordering::Release);
                    let index = indices.at(offset);
                    let returned = panic::catch_unwind(AssertUnwindSafe(|| (self.f)(index)));
                    // The task still counts as running until its outcome is encoded: a
                    // timeout, crash or stop while its result is serialised is its own.
                    match returned {
                        Ok(value) => {
                            batch.push(&OutcomeRef::Done(&value));
                            // A destructor that panics cannot change an outcome already encoded.
                            if panic::catch_unwind(AssertUnwindSafe(|| drop(value))).is_err() {
                                take_panic_message(None);
                            }
                        }
                        Err(payload) => {
                            let message = take_panic_message(Some(payload.as_ref()));
                            // The payload's own destructor may panic; that must not unwind out.
                            if panic::catch_unwind(AssertUnwindSafe(|| drop(payload))).is_err() {
                                sys::exit_immediately(EXIT_INTERNAL);
                            }
                            batch.push::<R>(&OutcomeRef::Panicked(&message));
                        }
                    }
                    slot.done.fetch_add(1, Ordering::Release);
                }
            }
            if !sys::fd_is_open(self.fd_socket.as_fd()) {
                // A task closed this worker's descriptors, so nothing can be reported. Alone
                // in its chunk it is blamed (it still counts as running); otherwise the
                // coordinator runs the chunk's tasks again one by one to find it.
                if batch.pieces.len() != 1 {
                    slot.current.store(0, Ordering::Release);
                }
                sys::exit_immediately(EXIT_CHANNEL_LOST);
            }
            if batch.pieces.is_empty() {
                // All of it was taken back before the first claim: nothing to report.
                slot.current.store(0, Ordering::Release);
                continue;
            }
            let busy_ns = sys::monotonic_ns().saturating_sub(began);
            if !self.send(start, batch, busy_ns) {
                // The coordinator is gone: nothing left to do.
                return;
            }
            slot.current.store(0, Ordering::Release);
        }
    }

    /// Sends a batch: the payload file (for a large one) and the arrays' descriptors
    /// first, then the message that refers to them. Returns false when the coordinator
    /// can no longer be reached.
    fn send(&self, start: usize, batch: Outgoing, busy_ns: u64) -> bool {
        let Outgoing { buf, pieces, scope } = batch;
        let fds = scope.close();
        let mut all = Vec::with_capacity(fds.len() + 1);
        let payload = match buf.finish() {
            Ok(Ok(bytes)) => Payload::Inline(Bytes(bytes)),
            Ok(Err(file)) => {
                all.push(std::os::fd::OwnedFd::from(file));
                Payload::File
            }
            // The end of the batch could not be written: this worker cannot report it.
            Err(_) => sys::exit_immediately(EXIT_INTERNAL),
        };
        all.extend(fds);
        let body = Body::Batch {
            start,
            busy_ns,
            pieces,
            payload,
        };
        self.post(body, all)
    }

    /// Sends the descriptors first, then the message that refers to them.
    fn post(&self, body: Body, fds: Vec<std::os::fd::OwnedFd>) -> bool {
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

/// A batch being encoded: each outcome right after its task, into one buffer, with the
/// descriptors of the arrays in it collected by one scope for the whole batch.
struct Outgoing {
    buf: Spill,
    pieces: Vec<Piece>,
    scope: handoff::OutgoingScope,
}

impl Default for Outgoing {
    fn default() -> Outgoing {
        Outgoing {
            buf: Spill::default(),
            pieces: Vec::new(),
            scope: handoff::OutgoingScope::open(),
        }
    }
}

impl Outgoing {
    /// Appends one outcome. A value that fails to serialise (an error or a panic in its
    /// `Serialize`) is replaced by an `Unsendable` outcome that says why.
    fn push<R: Serialize>(&mut self, outcome: &OutcomeRef<'_, R>) {
        let before = self.buf.len();
        let buf = &mut self.buf;
        self.scope.start_piece();
        let encoded =
            panic::catch_unwind(AssertUnwindSafe(|| ipc::encode_with(outcome, buf.flavor())));
        let io_error = self.buf.error.take();
        let failure = match encoded {
            Ok(Ok(())) => {
                self.pieces.push(Piece {
                    len: (self.buf.len() - before) as u64,
                    fds: self.scope.end_piece(),
                });
                return;
            }
            Ok(Err(message)) if message == ipc::LENGTH_UNKNOWN => format!(
                "{message}: results travel as postcard, which cannot carry #[serde(flatten)] \
                 or a collection that does not say its length"
            ),
            Ok(Err(message)) => match io_error {
                Some(e) => format!("it could not be written out: {e}"),
                None => message,
            },
            Err(payload) => format!(
                "its Serialize panicked: {}",
                take_panic_message(Some(payload.as_ref()))
            ),
        };
        self.scope.discard_piece();
        if self.buf.truncate(before).is_err() {
            // The batch's file cannot be cut back: this worker cannot report its batch.
            sys::exit_immediately(EXIT_INTERNAL);
        }
        // A message always encodes.
        let _ = ipc::encode_into(&OutcomeRef::<R>::Unsendable(&failure), &mut self.buf);
        self.pieces.push(Piece {
            len: (self.buf.len() - before) as u64,
            fds: 0,
        });
    }
}

/// The message of the panic just caught on this thread: what the hook recorded, else the
/// payload's text.
fn take_panic_message(payload: Option<&(dyn std::any::Any + Send)>) -> String {
    LAST_PANIC
        .with(|p| p.borrow_mut().take())
        .or_else(|| payload.map(payload_message))
        .unwrap_or_else(|| "a panic".to_string())
}

/// The message of a panic payload (a `&str` or `String`), when the hook did not record one.
fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".to_string())
}
