//! The child side: receive chunks, run `f` under `catch_unwind`, send result batches,
//! leave with `_exit`. Nothing here returns into the caller's code.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use ipc_channel::ipc::{IpcReceiver, IpcSender};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ipc::{Order, Outcome, Report};
use crate::shm::Board;
use crate::sys;

/// Exit code of a worker whose own machinery (not a task) panicked.
pub(crate) const EXIT_INTERNAL: i32 = 101;
/// Exit code of a worker that found its coordinator gone at start.
pub(crate) const EXIT_ORPHANED: i32 = 102;

thread_local! {
    /// The message of the last panic on this thread, recorded by the worker's hook.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Everything a worker needs, all inherited by fork.
pub(crate) struct Worker<'a, F, R> {
    pub(crate) id: usize,
    pub(crate) coordinator: sys::Pid,
    pub(crate) indices: &'a [usize],
    pub(crate) f: &'a F,
    pub(crate) orders: IpcReceiver<Order>,
    pub(crate) reports: IpcSender<Report<R>>,
    pub(crate) board: &'a Board,
}

impl<F, R> Worker<'_, F, R>
where
    F: Fn(usize) -> R,
    R: Serialize + DeserializeOwned,
{
    /// Runs the worker to the end and exits the process. Called right after `fork` in the
    /// child.
    pub(crate) fn run(self) -> ! {
        // Die with the coordinator; if it is already gone, the signal came too late.
        if sys::kill_me_with_parent().is_err() || sys::getppid() != self.coordinator {
            sys::exit_immediately(EXIT_ORPHANED);
        }
        // Panics are reported to the coordinator, never printed by the child.
        panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "Box<dyn Any>".to_string());
            let msg = match info.location() {
                Some(loc) => format!("{msg} (at {}:{}:{})", loc.file(), loc.line(), loc.column()),
                None => msg,
            };
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(msg));
        }));
        let code = match panic::catch_unwind(AssertUnwindSafe(|| self.serve())) {
            Ok(()) => 0,
            Err(_) => EXIT_INTERNAL,
        };
        sys::exit_immediately(code)
    }

    fn serve(&self) {
        let slot = self.board.slot(self.id);
        while let Ok(Order::Run(chunk)) = self.orders.recv() {
            let start = chunk.start;
            let began = sys::monotonic_ns();
            let mut outcomes = Vec::with_capacity(chunk.len());
            for pos in chunk {
                slot.started_ns
                    .store(sys::monotonic_ns(), Ordering::Relaxed);
                slot.current.store(pos as u64 + 1, Ordering::Release);
                let index = self.indices[pos];
                let outcome = match panic::catch_unwind(AssertUnwindSafe(|| (self.f)(index))) {
                    Ok(value) => Outcome::Done(value),
                    Err(payload) => {
                        let message = LAST_PANIC
                            .with(|p| p.borrow_mut().take())
                            .unwrap_or_else(|| "panic".into());
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
            let busy_ns = sys::monotonic_ns().saturating_sub(began);
            let batch = Report::Batch {
                worker: self.id,
                start,
                outcomes,
                busy_ns,
            };
            if let Err(e) = self.reports.send(batch) {
                let message = e.to_string();
                let sent = self.reports.send(Report::Unsendable {
                    worker: self.id,
                    start,
                    message,
                });
                if sent.is_err() {
                    // The coordinator is gone: nothing left to do.
                    return;
                }
            }
        }
    }
}
