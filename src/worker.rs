//! The child side: receive chunks, run `f` under `catch_unwind`, send result batches,
//! leave with `_exit`. Nothing here returns into the caller's code.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use std::os::fd::AsFd;

use ipc_channel::ipc::{IpcReceiver, IpcSender};
use serde::Serialize;

use crate::ipc::{self, Body, Bytes, Envelope, Order, OutcomeRef, Payload, Piece, Retire};
use crate::schedule::Gate;
use crate::shm::{Board, handoff};
use crate::sys;

mod job;
mod spill;
pub use job::WorkerInfo;
pub use job::{FoldJob, Folds, InitJob, Job, MapJob, Maps};
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

/// Exit code of a worker whose `init` panicked (it said so in a message first).
pub(crate) const EXIT_INIT_PANICKED: i32 = 104;
/// Exit code of a worker that retired on its own (task count or memory cap) after it
/// said so with its last batch.
pub(crate) const EXIT_RETIRED: i32 = 105;

/// The board's `current` while a worker runs its `init`: a death then is init's.
pub(crate) const IN_INIT: u64 = u64::MAX;

/// How often, at most, a worker with a memory cap reads its resident size.
const RSS_CHECK_NS: u64 = 10_000_000;

/// When a worker leaves on its own.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    /// After this many tasks (exactly).
    pub(crate) max_tasks: Option<u64>,
    /// Once its resident memory is past this many bytes (checked after a block of tasks,
    /// at most every 10 ms).
    pub(crate) max_rss: Option<u64>,
}

/// Everything a worker needs, all inherited by fork.
pub(crate) struct Worker<'a, J> {
    pub(crate) id: usize,
    pub(crate) incarnation: u64,
    pub(crate) coordinator: sys::Pid,
    pub(crate) job: &'a J,
    pub(crate) limits: Limits,
    pub(crate) orders: IpcReceiver<Order>,
    pub(crate) reports: IpcSender<Envelope>,
    /// Where descriptors of shared arrays in results go, ahead of their batch.
    pub(crate) fd_socket: std::os::fd::OwnedFd,
    pub(crate) board: &'a Board,
}

/// A batch being built: where it starts, how many positions it covers, its fold partial.
struct Open<T> {
    batch: Outgoing,
    start: usize,
    count: usize,
    acc: Option<T>,
    began: u64,
}

impl<T> Open<T> {
    fn at(start: usize) -> Open<T> {
        Open {
            batch: Outgoing::default(),
            start,
            count: 0,
            acc: None,
            began: sys::monotonic_ns(),
        }
    }
}

impl<J: Job> Worker<'_, J> {
    /// Runs the worker to the end and exits the process. Called right after `fork` in the
    /// child.
    pub(crate) fn run(self) -> ! {
        // Die with the coordinator; if it is already gone, the signal came too late.
        if sys::kill_me_with_parent().is_err() || sys::getppid() != self.coordinator {
            sys::exit_immediately(EXIT_ORPHANED);
        }
        // Panics are reported to the coordinator, never printed by the child: the hook
        // installed before the fork records them from now on.
        IN_WORKER.store(true, Ordering::Relaxed);
        let code = match panic::catch_unwind(AssertUnwindSafe(|| self.serve())) {
            Ok(code) => code,
            Err(_) => EXIT_INTERNAL,
        };
        sys::exit_immediately(code)
    }

    /// Serves orders until told to stop (or the coordinator is gone); the exit code.
    fn serve(&self) -> i32 {
        let slot = self.board.slot(self.id);
        let gate = Gate(&slot.gate);
        slot.current.store(IN_INIT, Ordering::Release);
        let info = WorkerInfo {
            worker: self.id,
            generation: self.incarnation,
            pid: sys::getpid(),
        };
        let mut state = match panic::catch_unwind(AssertUnwindSafe(|| self.job.init(&info))) {
            Ok(state) => state,
            Err(payload) => {
                let message = take_panic_message(Some(payload.as_ref()));
                slot.current.store(0, Ordering::Release);
                self.post(0, Body::InitFailed { message }, Vec::new());
                return EXIT_INIT_PANICKED;
            }
        };
        slot.current.store(0, Ordering::Release);
        let mut left = self.limits.max_tasks;
        let mut next_rss_check = 0u64;
        while let Ok(Order::Run {
            call,
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
            let mut open = Open::<J::Out>::at(start);
            let mut retire = None;
            loop {
                // Never claim past the task limit: a claimed position is this worker's.
                let most = left.map_or(block as usize, |n| (block as u64).min(n) as usize);
                let Some(claimed) = gate.claim_block(seq, most) else {
                    break;
                };
                let claimed_now = claimed.len() as u64;
                for offset in claimed {
                    let pos = start + offset;
                    slot.started_ns
                        .store(sys::monotonic_coarse_ns(), Ordering::Relaxed);
                    slot.current.store(pos as u64 + 1, Ordering::Release);
                    let index = indices.at(offset);
                    let acc = open.acc.take();
                    let returned = panic::catch_unwind(AssertUnwindSafe(|| {
                        self.job.run(&mut state, acc, index)
                    }));
                    open.count += 1;
                    // The task still counts as running until its outcome is encoded: a
                    // timeout, crash or stop while its result is serialised is its own.
                    match returned {
                        Ok(value) if J::FOLDS => open.acc = Some(value),
                        Ok(value) => {
                            open.batch.push(&OutcomeRef::Done(&value));
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
                            open.batch.push::<J::Out>(&OutcomeRef::Panicked(&message));
                            if J::FOLDS {
                                // The partial is lost with the panic: report it now, naming
                                // this (the batch's last) position; the rest starts afresh.
                                let done = std::mem::replace(&mut open, Open::at(pos + 1));
                                slot.done.fetch_add(1, Ordering::Release);
                                if !self.send(call, done, None) {
                                    return 0;
                                }
                                continue;
                            }
                        }
                    }
                    slot.done.fetch_add(1, Ordering::Release);
                }
                if !J::FOLDS && open.batch.pieces.len() >= ipc::MAX_PIECES {
                    // Batches stay small enough for one packet: this one goes now, the
                    // chunk's next positions start another.
                    let next = open.start + open.count;
                    if !self.send(call, std::mem::replace(&mut open, Open::at(next)), None) {
                        return 0;
                    }
                }
                if let Some(n) = left.as_mut() {
                    *n -= claimed_now;
                    if *n == 0 {
                        retire = self.limits.max_tasks.map(Retire::Tasks);
                    }
                }
                if let Some(cap) = self.limits.max_rss {
                    let now = sys::monotonic_coarse_ns();
                    if now >= next_rss_check {
                        next_rss_check = now + RSS_CHECK_NS;
                        if let Some(rss) = sys::resident_bytes().filter(|&rss| rss > cap) {
                            retire = retire.or(Some(Retire::Memory { rss, cap }));
                        }
                    }
                }
                if retire.is_some() {
                    break;
                }
            }
            if !sys::fd_is_open(self.fd_socket.as_fd()) {
                // A task closed this worker's descriptors, so nothing can be reported. Alone
                // in its chunk it is blamed (it still counts as running); otherwise the
                // coordinator runs the chunk's tasks again one by one to find it.
                if open.count != 1 {
                    slot.current.store(0, Ordering::Release);
                }
                sys::exit_immediately(EXIT_CHANNEL_LOST);
            }
            if open.count == 0 {
                // All of it was taken back before the first claim (or after a fold's
                // panic): nothing to report.
                slot.current.store(0, Ordering::Release);
                if retire.is_some() {
                    // Its last batch went with the panic: it leaves without a word, and the
                    // coordinator knows the exit code.
                    return EXIT_RETIRED;
                }
                continue;
            }
            if J::FOLDS {
                let acc = open.acc.take();
                match acc {
                    Some(partial) => open.batch.push(&OutcomeRef::Done(&partial)),
                    None => unreachable!("a fold batch with positions has a partial"),
                }
            }
            if retire.is_some() {
                // Nothing of this process touches the slot after this batch: the
                // replacement that takes the slot may be forked as soon as it arrives.
                slot.current.store(0, Ordering::Release);
                let _ = self.send(call, open, retire);
                return EXIT_RETIRED;
            }
            if !self.send(call, open, None) {
                // The coordinator is gone: nothing left to do.
                return 0;
            }
            slot.current.store(0, Ordering::Release);
        }
        0
    }

    /// Sends a batch: the payload file (for a large one) and the arrays' descriptors
    /// first, then the message that refers to them. Returns false when the coordinator
    /// can no longer be reached.
    fn send<T>(&self, call: u64, open: Open<T>, retire: Option<Retire>) -> bool {
        let busy_ns = sys::monotonic_ns().saturating_sub(open.began);
        let Open {
            batch,
            start,
            count,
            ..
        } = open;
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
            count,
            busy_ns,
            pieces,
            payload,
            retire,
        };
        // Every outcome is encoded: from here the worker waits on the coordinator, not on a
        // task (a send blocks while nobody reads, such as an imap consumer busy between two
        // items), so no timeout or stop may blame a task for it.
        self.board.slot(self.id).current.store(0, Ordering::Release);
        self.post(call, body, all)
    }

    /// Sends the descriptors first, then the message that refers to them.
    fn post(&self, call: u64, body: Body, fds: Vec<std::os::fd::OwnedFd>) -> bool {
        if !fds.is_empty() {
            let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
            if sys::send_fds(self.fd_socket.as_fd(), &borrowed).is_err() {
                return false;
            }
        }
        let envelope = Envelope {
            worker: self.id,
            incarnation: self.incarnation,
            call,
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
