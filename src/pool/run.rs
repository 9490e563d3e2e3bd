//! The coordinator's event loop for one `map` call: fork, hand out chunks, collect
//! batches, detect dead and overdue workers, replace them, re-run what they held.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{IpcReceiver, IpcSender};
use ipc_channel::{IpcError, TryRecvError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ExitKind};
use crate::ipc::{self, Batch, Body, Envelope, Order, Outcome};
use crate::progress::Progress;
use crate::schedule::{Gates, Scheduler};
use crate::shm::{Board, handoff};
use crate::sys::{self, Forked, Pid};
use crate::worker::Worker;

/// How long the coordinator waits for a message before it looks at its workers.
const TICK: Duration = Duration::from_millis(10);
/// How long finished workers get to exit on their own before they are killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// What a failing task does to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// The first failure ends the call (`map`).
    FailFast,
    /// Failures are recorded per task and the call goes on (`try_map`).
    KeepGoing,
}

/// The pool settings a run needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    pub(super) mode: Mode,
    pub(super) max_retries: u32,
    pub(super) task_timeout: Option<Duration>,
}

/// One worker slot as the coordinator sees it. A slot outlives its processes: when a
/// worker dies, a replacement takes the same slot (and board slot) with a new incarnation.
#[derive(Debug)]
struct Member {
    pid: Pid,
    incarnation: u64,
    orders: Option<IpcSender<Order>>,
    /// The coordinator's end of the worker's descriptor socket (shared arrays in results).
    fds: Option<OwnedFd>,
    exit: Option<ExitKind>,
    /// Tasks of this slot whose results arrived (progress is reset to it on a death).
    acked: u64,
    /// Set when the coordinator killed the worker for running one task too long.
    overdue: Option<usize>,
}

/// The coordinator's state for one call. Dropping it kills and reaps every worker not
/// yet reaped, so no early return can leave a process behind.
pub(super) struct Run<'a, F, R> {
    pub(super) indices: &'a [usize],
    pub(super) f: &'a F,
    pub(super) board: &'a Board,
    pub(super) policy: Policy,
    coordinator: Pid,
    report_tx: IpcSender<Envelope>,
    report_rx: Option<IpcReceiver<Envelope>>,
    crew: Vec<Member>,
    sched: Scheduler,
    /// One slot per position: `None` until its value is known. Allocated after the
    /// workers are forked, so they neither inherit it nor make the coordinator take
    /// copy-on-write faults as it fills.
    pub(super) values: Vec<Option<R>>,
    /// Positions whose task failed (`try_map` only; `map` stops at the first).
    pub(super) failures: HashMap<usize, Error>,
    pub(super) done: usize,
    /// Failed attempts per position (deaths and timeouts it caused).
    strikes: HashMap<usize, u32>,
    /// Deaths that no task could be blamed for; bounded so a broken machine cannot make
    /// the pool fork forever.
    unexplained_deaths: u32,
    next_incarnation: u64,
}

impl<'a, F, R> Run<'a, F, R>
where
    F: Fn(usize) -> R,
    R: Serialize + DeserializeOwned,
{
    pub(super) fn new(
        indices: &'a [usize],
        f: &'a F,
        board: &'a Board,
        workers: usize,
        chunk: Option<usize>,
        policy: Policy,
    ) -> Result<Self, Error> {
        let (report_tx, report_rx) = ipc::report_channel()?;
        Ok(Run {
            indices,
            f,
            board,
            policy,
            coordinator: sys::getpid(),
            report_tx,
            report_rx: Some(report_rx),
            crew: Vec::with_capacity(workers),
            sched: Scheduler::new(indices.len(), workers, chunk),
            values: Vec::new(),
            failures: HashMap::new(),
            done: 0,
            strikes: HashMap::new(),
            unexplained_deaths: 0,
            next_incarnation: 0,
        })
    }

    /// Forks the workers and gives each its first chunks.
    pub(super) fn start(&mut self, workers: usize) -> Result<(), Error> {
        self.values = super::empty_slots(self.indices.len())?;
        for w in 0..workers {
            self.spawn(w)?;
        }
        for w in 0..workers {
            self.refill(w);
        }
        Ok(())
    }

    /// Forks a worker into slot `w`. The child closes every channel end that is not its
    /// own and never returns from here.
    fn spawn(&mut self, w: usize) -> Result<(), Error> {
        let (tx, rx) = ipc::order_channel(w)?;
        let (fd_coordinator, fd_worker) = sys::fd_socketpair().map_err(|e| Error::Channel {
            worker: Some(w),
            message: format!("could not create the descriptor socket: {e}"),
        })?;
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        let slot = self.board.slot(w);
        slot.current.store(0, Ordering::Release);
        self.board.gate(w).reset();
        // Process-wide lazy state the child relies on must be complete before the fork
        // (another thread may be initialising it right now; see `ipc::prepare_fork`).
        ipc::prepare_fork();
        let _ = sys::fork_generation();
        match sys::fork().map_err(|source| Error::Fork { worker: w, source })? {
            Forked::Child => {
                for m in &mut self.crew {
                    m.orders = None;
                    m.fds = None;
                }
                self.report_rx = None;
                drop(tx);
                drop(fd_coordinator);
                Worker {
                    id: w,
                    incarnation,
                    coordinator: self.coordinator,
                    indices: self.indices,
                    f: self.f,
                    orders: rx,
                    reports: self.report_tx.clone(),
                    fd_socket: fd_worker,
                    board: self.board,
                }
                .run()
            }
            Forked::Parent(pid) => {
                drop(rx);
                drop(fd_worker);
                let member = Member {
                    pid,
                    incarnation,
                    orders: Some(tx),
                    fds: Some(fd_coordinator),
                    exit: None,
                    acked: 0,
                    overdue: None,
                };
                if w < self.crew.len() {
                    let acked = self.crew[w].acked;
                    self.crew[w] = Member { acked, ..member };
                } else {
                    self.crew.push(member);
                }
                Ok(())
            }
        }
    }

    /// Tops worker `w` up to its chunks in flight, stealing for it when it is idle (which
    /// may send the victim a chunk too).
    fn refill(&mut self, w: usize) {
        if self.crew[w].exit.is_some() {
            return;
        }
        for (v, chunk) in self.sched.fill(w, self.board) {
            let order = Order::Run {
                seq: chunk.seq,
                range: chunk.range,
            };
            // A worker that cannot be sent to is gone: what it holds is given back when
            // it is reaped (`bury`), this chunk with the rest.
            if let Some(tx) = &self.crew[v].orders {
                let _ = tx.send(order);
            }
        }
    }

    /// Runs the event loop until every position has an outcome.
    pub(super) fn drive(&mut self, progress: &Progress) -> Result<(), Error> {
        let mut last_check = Instant::now();
        while self.done < self.indices.len() {
            if let Some(signal) = sys::interrupted() {
                return Err(Error::Interrupted {
                    signal,
                    done: self.done,
                    total: self.indices.len(),
                });
            }
            let received = match &self.report_rx {
                Some(rx) => rx.try_recv_timeout(TICK),
                None => Err(TryRecvError::IpcError(IpcError::Disconnected)),
            };
            match received {
                Ok(envelope) => self.accept(envelope)?,
                Err(TryRecvError::Empty) => {}
                // A signal arrived while waiting: looked at on the next turn.
                Err(TryRecvError::IpcError(IpcError::Io(e)))
                    if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(TryRecvError::IpcError(e)) => {
                    // A worker that died in the middle of a large send leaves a broken
                    // message; its chunk is re-run like any other dead worker's.
                    if !self.reap()? {
                        return Err(Error::Channel {
                            worker: None,
                            message: format!("could not receive results: {e}"),
                        });
                    }
                }
            }
            if progress.is_on() {
                progress.update(self.board.total_done());
            }
            if last_check.elapsed() >= TICK {
                last_check = Instant::now();
                self.enforce_timeouts();
                self.reap()?;
                // A worker left with nothing (all it held was taken back, or there was
                // nothing to steal when it asked) looks again: work may have become free.
                for w in 0..self.crew.len() {
                    if self.sched.held(w).is_empty() {
                        self.refill(w);
                    }
                }
            }
        }
        Ok(())
    }

    fn accept(&mut self, envelope: Envelope) -> Result<(), Error> {
        let Envelope {
            worker,
            incarnation,
            fds,
            body,
        } = envelope;
        match self.crew.get(worker) {
            Some(m) if m.incarnation == incarnation => {}
            // A buried worker's last words: its chunks were already given back.
            _ => return Ok(()),
        }
        let pid = self.crew[worker].pid;
        match body {
            Body::Batch(bytes) => {
                let received = match (fds, &self.crew[worker].fds) {
                    (0, _) => Ok(Vec::new()),
                    (n, Some(socket)) => {
                        sys::recv_fds(socket.as_fd(), n as usize).map_err(|e| e.to_string())
                    }
                    (_, None) => Err("its descriptor socket is closed".to_string()),
                };
                let received = received.map_err(|e| Error::Channel {
                    worker: Some(worker),
                    message: format!(
                        "could not receive the shared arrays of worker {worker} (pid {pid}): {e}"
                    ),
                })?;
                let (decoded, array_error) =
                    handoff::with_incoming(received, || ipc::decode::<Batch<R>>(&bytes.0));
                let batch = match (decoded, array_error) {
                    (Ok(batch), _) => batch,
                    (Err(_), Some(e)) => return Err(e),
                    (Err(message), None) => {
                        return Err(Error::Channel {
                            worker: Some(worker),
                            message: format!(
                                "could not decode the results of worker {worker} (pid {pid}): {message}"
                            ),
                        });
                    }
                };
                let n = batch.outcomes.len();
                self.take_front(worker, batch.start, n)?;
                for (pos, outcome) in (batch.start..).zip(batch.outcomes) {
                    let result = match outcome {
                        Outcome::Done(value) => Ok(value),
                        Outcome::Panicked(message) => Err(Error::TaskPanicked {
                            index: self.indices[pos],
                            position: pos,
                            worker,
                            pid,
                            message,
                        }),
                    };
                    self.settle(pos, result)?;
                }
                self.crew[worker].acked += n as u64;
                self.sched.observe(n, batch.busy_ns);
            }
            Body::Unsendable { position, message } => {
                self.take_front(worker, position, 1)?;
                self.crew[worker].acked += 1;
                let err = Error::ResultNotSent {
                    index: self.indices[position],
                    worker,
                    pid,
                    message,
                };
                self.settle(position, Err(err))?;
            }
        }
        self.refill(worker);
        Ok(())
    }

    /// Checks that `start..start + n` is the front of `worker`'s oldest chunk and removes it.
    fn take_front(&mut self, worker: usize, start: usize, n: usize) -> Result<(), Error> {
        self.sched
            .complete(worker, start, n)
            .map_err(|message| Error::Channel {
                worker: Some(worker),
                message,
            })
    }

    /// Records the outcome of one position; in fail-fast mode an error ends the call.
    fn settle(&mut self, pos: usize, result: Result<R, Error>) -> Result<(), Error> {
        let result = match (result, self.policy.mode) {
            (Err(e), Mode::FailFast) => return Err(e),
            (r, _) => r,
        };
        let fresh = self.values[pos].is_none() && !self.failures.contains_key(&pos);
        match result {
            Ok(value) => self.values[pos] = Some(value),
            Err(e) => {
                self.failures.insert(pos, e);
            }
        }
        if fresh {
            self.done += 1;
        }
        Ok(())
    }

    /// Kills workers whose current task has run past the deadline.
    fn enforce_timeouts(&mut self) {
        let Some(limit) = self.policy.task_timeout else {
            return;
        };
        let now = sys::monotonic_coarse_ns();
        for (w, m) in self.crew.iter_mut().enumerate() {
            if m.exit.is_some() || m.overdue.is_some() {
                continue;
            }
            let slot = self.board.slot(w);
            let current = slot.current.load(Ordering::Acquire);
            let started = slot.started_ns.load(Ordering::Relaxed);
            if current > 0 && u128::from(now.saturating_sub(started)) > limit.as_nanos() {
                m.overdue = Some(current as usize - 1);
                let _ = sys::kill(m.pid, sys::SIGKILL);
            }
        }
    }

    /// Reaps workers that ended and deals with each death. Returns whether any died.
    fn reap(&mut self) -> Result<bool, Error> {
        let mut any = false;
        for w in 0..self.crew.len() {
            if self.crew[w].exit.is_some() {
                continue;
            }
            let pid = self.crew[w].pid;
            match sys::try_wait(pid) {
                Ok(Some(status)) => {
                    any = true;
                    self.bury(w, status)?;
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Error::Channel {
                        worker: Some(w),
                        message: format!("could not wait for pid {pid}: {e}"),
                    });
                }
            }
        }
        if self.done < self.indices.len() && self.crew.iter().all(|m| m.exit.is_some()) {
            let w = self.crew.len() - 1;
            let m = &self.crew[w];
            return Err(Error::WorkerDied {
                worker: w,
                pid: m.pid,
                status: m.exit.unwrap_or(ExitKind::Code(0)),
                task: None,
            });
        }
        Ok(any)
    }

    /// A worker ended: give back what it held, blame the task it was running, and fork a
    /// replacement if work remains.
    fn bury(&mut self, w: usize, status: ExitKind) -> Result<(), Error> {
        let slot = self.board.slot(w);
        let m = &mut self.crew[w];
        m.exit = Some(status);
        m.orders = None;
        m.fds = None;
        let pid = m.pid;
        // Tasks it finished but never reported will run again: take them off the bar.
        slot.done.store(m.acked, Ordering::Release);
        let running = slot.current.swap(0, Ordering::AcqRel);
        let overdue = m.overdue.take();
        let held = self.sched.surrender(w);
        if held.is_empty() && overdue.is_none() {
            // It died idle (or after its last batch): nothing was lost.
            return self.replace(w);
        }
        let culprit = overdue
            .or_else(|| (running > 0).then(|| running as usize - 1))
            .filter(|p| held.iter().any(|r| r.contains(p)));
        for r in held {
            match culprit {
                // The culprit goes back alone, so it cannot take innocent tasks down again.
                Some(p) if r.contains(&p) => {
                    self.sched.requeue(r.start..p);
                    self.sched.requeue(p + 1..r.end);
                }
                _ => self.sched.requeue(r),
            }
        }
        match culprit {
            Some(p) => {
                let strikes = self.strikes.entry(p).or_insert(0);
                *strikes += 1;
                if *strikes > self.policy.max_retries {
                    let index = self.indices[p];
                    let err = match (overdue, self.policy.task_timeout) {
                        (Some(_), Some(timeout)) => Error::TaskTimedOut {
                            index,
                            position: p,
                            worker: w,
                            pid,
                            timeout,
                        },
                        _ => Error::WorkerDied {
                            worker: w,
                            pid,
                            status,
                            task: Some((index, p)),
                        },
                    };
                    self.settle(p, Err(err))?;
                } else {
                    self.sched.requeue(p..p + 1);
                }
            }
            None => {
                self.unexplained_deaths += 1;
                if self.unexplained_deaths > (self.policy.max_retries + 1) * self.crew.len() as u32
                {
                    return Err(Error::WorkerDied {
                        worker: w,
                        pid,
                        status,
                        task: None,
                    });
                }
            }
        }
        self.replace(w)
    }

    /// Forks a replacement into slot `w` when work remains; if the fork is refused, the
    /// other workers carry on (the call fails only when none is left).
    fn replace(&mut self, w: usize) -> Result<(), Error> {
        if self.sched.unsent() == 0 || sys::interrupted().is_some() {
            return Ok(());
        }
        match self.spawn(w) {
            Ok(()) => {}
            Err(e) if self.crew.iter().all(|m| m.exit.is_some()) => return Err(e),
            Err(_) => {}
        }
        for v in 0..self.crew.len() {
            self.refill(v);
        }
        Ok(())
    }

    /// Tells every worker to stop and reaps it, killing any that outstays the grace time.
    pub(super) fn finish(&mut self) {
        for m in &mut self.crew {
            if let Some(tx) = m.orders.take() {
                // A worker that already left cannot be told; it is reaped below either way.
                let _ = tx.send(Order::Stop);
            }
        }
        let deadline = Instant::now() + EXIT_GRACE;
        for w in 0..self.crew.len() {
            // A worker told to stop exits within microseconds: poll fast, then back off.
            let mut nap = Duration::from_micros(5);
            while self.crew[w].exit.is_none() {
                match sys::try_wait(self.crew[w].pid) {
                    Ok(Some(status)) => self.crew[w].exit = Some(status),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(nap);
                        nap = (nap * 2).min(Duration::from_micros(500));
                    }
                    // Out of time or unwaitable: Drop kills and reaps it.
                    _ => break,
                }
            }
        }
    }
}

impl<F, R> Drop for Run<'_, F, R> {
    fn drop(&mut self) {
        for m in &mut self.crew {
            m.orders = None;
            if m.exit.is_none() {
                let _ = sys::kill(m.pid, sys::SIGKILL);
            }
        }
        for m in &mut self.crew {
            if m.exit.is_none() {
                m.exit = sys::wait(m.pid).ok();
            }
        }
    }
}
