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
use crate::ipc::{self, Body, Envelope, Indices, Order, Outcome, Payload};
use crate::progress::Progress;
use crate::schedule::{Gates, Scheduler};
use crate::shm::{Board, handoff};
use crate::sys::{self, Child, Forked, Pid, signals};
use crate::worker::Worker;

/// How long the coordinator waits for a message before it looks at its workers.
const TICK: Duration = Duration::from_millis(10);
/// How long finished workers get to exit on their own before they are killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// How often workers are looked at for a stop (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU).
const STOP_CHECK: Duration = Duration::from_millis(500);
/// How long a worker may stay stopped with tasks in hand before it is killed and its
/// tasks are run elsewhere.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);

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
    child: Child,
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
    /// Since when the worker has been seen stopped (reset when it runs again).
    stopped_since: Option<Instant>,
    /// Set when the coordinator killed the worker for staying stopped: the task it was
    /// running, and for how long it was stopped.
    stopped: Option<(Option<usize>, Duration)>,
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
        for w in 0..workers {
            self.spawn(w)?;
        }
        // After the forks: the workers neither inherit the slots nor make the coordinator
        // take a copy-on-write fault per page as it fills them (measured: 15% of the
        // coordinator's time for a million trivial tasks). Should this fail, dropping the
        // run kills and reaps the workers.
        self.values = super::empty_slots(self.indices.len())?;
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
        let hold = signals::hold_for_fork();
        match sys::fork().map_err(|source| Error::Fork { worker: w, source })? {
            Forked::Child => {
                // What the task starts goes with the worker; only the coordinator
                // decides what SIGINT and SIGTERM mean.
                sys::own_process_group();
                signals::worker_dispositions(hold);
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
                    f: self.f,
                    orders: rx,
                    reports: self.report_tx.clone(),
                    fd_socket: fd_worker,
                    board: self.board,
                }
                .run()
            }
            Forked::Parent(pid) => {
                drop(hold);
                let child = Child::adopt(pid);
                drop(rx);
                drop(fd_worker);
                let member = Member {
                    child,
                    pid,
                    incarnation,
                    orders: Some(tx),
                    fds: Some(fd_coordinator),
                    exit: None,
                    acked: 0,
                    overdue: None,
                    stopped_since: None,
                    stopped: None,
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
        let block = self.sched.claim_block() as u32;
        for (v, chunk) in self.sched.fill(w, self.board) {
            let order = Order::Run {
                seq: chunk.seq,
                indices: Indices::of(&self.indices[chunk.range.clone()]),
                range: chunk.range,
                block,
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
        let mut last_stop_check = Instant::now();
        while self.done < self.indices.len() {
            self.check_interrupt()?;
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
                if last_stop_check.elapsed() >= STOP_CHECK {
                    last_stop_check = Instant::now();
                    self.enforce_stops();
                }
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
        let Body::Batch {
            start,
            busy_ns,
            pieces,
            payload,
        } = body;
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
                "could not receive the descriptors of worker {worker} (pid {pid}): {e}"
            ),
        })?;
        let mut received = received.into_iter();
        let mut bytes = match payload {
            Payload::Inline(bytes) => Ok(Received::Heap(bytes.0)),
            Payload::File => match received.next() {
                Some(fd) => sys::ReceivedFile::map(std::fs::File::from(fd))
                    .map(Received::Mapped)
                    .map_err(|e| format!("could not map the file that carries it: {e}")),
                None => Err("the file that carries it is missing".to_string()),
            },
        };
        let n = pieces.len();
        self.take_front(worker, start, n)?;
        let mut offset = 0usize;
        for (pos, piece) in (start..).zip(pieces) {
            let fds: Vec<OwnedFd> = match piece.fds {
                0 => Vec::new(),
                n => received.by_ref().take(n as usize).collect(),
            };
            let len = piece.len as usize;
            let at = offset;
            offset = offset.saturating_add(len);
            // The common case first, without building an error: a small value with no
            // arrays in it, decoded from the message itself. Anything else (or a failure)
            // takes the general path below, which says what went wrong.
            if piece.fds == 0
                && let Ok(Received::Heap(b)) = &bytes
                && let Some(Ok(Outcome::Done(value))) = b
                    .get(at..at.saturating_add(len))
                    .map(ipc::decode::<Outcome<R>>)
            {
                self.store(pos, value);
                continue;
            }
            let index = self.indices[pos];
            let not_received = |message: String| Error::ResultNotSent {
                index,
                worker,
                pid,
                message,
            };
            let left = (len > ipc::FILE_PAYLOAD)
                .then(sys::address_space_left)
                .flatten();
            let room = match left {
                Some(left) if len as u64 > left => Err(format!(
                    "it is too large to receive: {len} bytes, about {left} bytes of address \
                     space left under RLIMIT_AS (ulimit -v)"
                )),
                _ => Ok(()),
            };
            let source = match (room, bytes.as_mut()) {
                (Err(message), _) => Err(message),
                (_, Err(message)) => Err(message.clone()),
                (_, Ok(source)) => Ok(source),
            };
            let result = match source {
                Err(message) => Err(not_received(message)),
                Ok(source) => {
                    let mut decode = || match source {
                        Received::Heap(b) => b
                            .get(at..at.saturating_add(len))
                            .ok_or_else(|| "its bytes are missing from the batch".to_string())
                            .and_then(ipc::decode::<Outcome<R>>),
                        // The file's pages are given back as the value is built.
                        Received::Mapped(file) => file.decode::<Outcome<R>>(at, len),
                    };
                    // Without descriptors the piece holds no array: no context to open.
                    let decoded = match fds.is_empty() {
                        true => (decode(), None),
                        false => handoff::with_incoming(fds, decode),
                    };
                    match decoded {
                        (Ok(Outcome::Done(value)), _) => Ok(value),
                        (Ok(Outcome::Panicked(message)), _) => Err(Error::TaskPanicked {
                            index,
                            position: pos,
                            worker,
                            pid,
                            message,
                        }),
                        (Ok(Outcome::Unsendable(message)), _) => Err(not_received(message)),
                        (Err(_), Some(e)) => Err(e),
                        (Err(message), None) => Err(not_received(format!(
                            "the coordinator could not decode it ({message}); results travel \
                             as postcard, which cannot carry serde attributes that need a \
                             self-describing format (skip_serializing_if, flatten, untagged \
                             or internally tagged enums)"
                        ))),
                    }
                }
            };
            self.settle(pos, result)?;
        }
        drop(bytes);
        self.crew[worker].acked += n as u64;
        self.sched.observe(n, busy_ns);
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

    /// Records the value of one position.
    fn store(&mut self, pos: usize, value: R) {
        let fresh = self.values[pos].is_none()
            && (self.failures.is_empty() || !self.failures.contains_key(&pos));
        self.values[pos] = Some(value);
        if fresh {
            self.done += 1;
        }
    }

    /// Records the outcome of one position; in fail-fast mode an error ends the call.
    fn settle(&mut self, pos: usize, result: Result<R, Error>) -> Result<(), Error> {
        let result = match (result, self.policy.mode) {
            (Err(e), Mode::FailFast) => return Err(e),
            (r, _) => r,
        };
        let fresh = self.values[pos].is_none()
            && (self.failures.is_empty() || !self.failures.contains_key(&pos));
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
                m.child.kill();
            }
        }
    }

    /// Kills workers that have stayed stopped (by SIGSTOP, or SIGTTIN for a task that
    /// reads the terminal) for longer than [`STOP_GRACE`]: with tasks in hand and no
    /// `task_timeout` they would hold the call forever.
    fn enforce_stops(&mut self) {
        for (w, m) in self.crew.iter_mut().enumerate() {
            if m.exit.is_some() || m.stopped.is_some() {
                m.stopped_since = None;
                continue;
            }
            if !m.child.is_stopped() {
                m.stopped_since = None;
                continue;
            }
            let since = *m.stopped_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= STOP_GRACE {
                let current = self.board.slot(w).current.load(Ordering::Acquire);
                m.stopped = Some(((current > 0).then(|| current as usize - 1), since.elapsed()));
                m.child.kill();
            }
        }
    }

    /// Ends the call with [`Error::Interrupted`] once SIGINT or SIGTERM has arrived: checked
    /// before any death is blamed on a task, since a signal sent to the whole program may
    /// have reached the workers too.
    fn check_interrupt(&self) -> Result<(), Error> {
        match signals::pending() {
            Some(signal) => Err(Error::Interrupted {
                signal,
                done: self.done,
                total: self.indices.len(),
            }),
            None => Ok(()),
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
            match self.crew[w].child.try_wait() {
                Ok(Some(status)) => {
                    any = true;
                    self.check_interrupt()?;
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
        let stopped = m.stopped.take();
        let overdue = m.overdue.take().or(stopped.and_then(|(p, _)| p));
        let held = self.sched.surrender(w);
        if held.is_empty() && overdue.is_none() {
            // It died idle (or after its last batch): nothing was lost.
            return self.replace(w);
        }
        let culprit = overdue
            .or_else(|| (running > 0).then(|| running as usize - 1))
            .filter(|p| held.iter().any(|r| r.contains(p)));
        let isolate =
            culprit.is_none() && status == ExitKind::Code(crate::worker::EXIT_CHANNEL_LOST);
        for r in held {
            match culprit {
                // A task of this chunk closed the worker's descriptors: run them one by
                // one, so that the next time it is alone and blamed.
                None if isolate => r.for_each(|p| self.sched.requeue(p..p + 1)),
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
                    let err = match (overdue, self.policy.task_timeout, stopped) {
                        (_, _, Some((_, stopped_for))) => Error::WorkerStopped {
                            worker: w,
                            pid,
                            task: Some((index, p)),
                            stopped_for,
                        },
                        (Some(_), Some(timeout), None) => Error::TaskTimedOut {
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
                    return Err(match stopped {
                        Some((_, stopped_for)) => Error::WorkerStopped {
                            worker: w,
                            pid,
                            task: None,
                            stopped_for,
                        },
                        None => Error::WorkerDied {
                            worker: w,
                            pid,
                            status,
                            task: None,
                        },
                    });
                }
            }
        }
        self.replace(w)
    }

    /// Forks a replacement into slot `w` when work remains; if the fork is refused, the
    /// other workers carry on (the call fails only when none is left).
    fn replace(&mut self, w: usize) -> Result<(), Error> {
        if self.sched.unsent() == 0 || signals::pending().is_some() {
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
                match self.crew[w].child.try_wait() {
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

/// A batch's payload as the coordinator holds it while decoding.
enum Received {
    /// Carried in the message.
    Heap(Vec<u8>),
    /// Carried in a memory file, mapped.
    Mapped(sys::ReceivedFile),
}

impl<F, R> Drop for Run<'_, F, R> {
    fn drop(&mut self) {
        for m in &mut self.crew {
            m.orders = None;
            if m.exit.is_none() {
                m.child.kill();
            }
        }
        for m in &mut self.crew {
            if m.exit.is_none() {
                m.exit = Some(m.child.kill_and_reap());
            }
        }
    }
}
