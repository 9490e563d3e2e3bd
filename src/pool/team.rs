//! The coordinator's side of a team of workers: fork them, hand out each call's chunks,
//! collect batches, detect dead, overdue, stopped and retiring workers, replace them,
//! re-run what they held. A team outlives its calls (a crew runs many); each call's own
//! state is a [`Call`].

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{IpcReceiver, IpcSender};
use ipc_channel::{IpcError, TryRecvError};
use serde::de::DeserializeOwned;

mod receive;

use super::TaskList;
use super::call::{Call, Mode, Sink};
use crate::error::{Error, ExitKind};
use crate::ipc::{self, Envelope, Order, Retire};
use crate::progress::Progress;
use crate::schedule::{Gates, Scheduler};
use crate::shm::Board;
use crate::sys::{self, Child, Forked, Pid, signals};
use crate::worker::{self, Job, Limits, Worker};
use receive::settle_failure;

/// How long the coordinator waits for a message before it looks at its workers.
const TICK: Duration = Duration::from_millis(10);
/// How long finished workers get to exit on their own before they are killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// How often workers are looked at for a stop (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU).
const STOP_CHECK: Duration = Duration::from_millis(500);
/// How long a worker may stay stopped with tasks in hand before it is killed and its
/// tasks are run elsewhere.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);

/// The pool settings a team runs with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) max_retries: u32,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) chunk_size: Option<usize>,
    pub(crate) limits: Limits,
}

/// A worker that left on its own: who, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retirement {
    pub(crate) worker: usize,
    pub(crate) pid: Pid,
    pub(crate) reason: Retire,
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
    /// How it ended, once reaped: the slot then waits for a replacement.
    exit: Option<ExitKind>,
    /// It said it leaves after its last batch (what it held went back then); reaped when
    /// it has gone, and replaced.
    retiring: bool,
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

impl Member {
    /// Whether orders can go to it.
    fn serving(&self) -> bool {
        self.exit.is_none() && !self.retiring
    }
}

/// The workers of a pool or crew and the channels to them. Dropping it kills and reaps
/// every worker not yet reaped, so no early return can leave a process behind.
pub(crate) struct Team<J> {
    job: J,
    board: Board,
    pub(crate) settings: Settings,
    coordinator: Pid,
    report_tx: IpcSender<Envelope>,
    report_rx: Option<IpcReceiver<Envelope>>,
    crew: Vec<Member>,
    next_incarnation: u64,
    /// Calls begun so far (a call's id is its number, from 1).
    calls: u64,
    /// The sequence number of the next chunk for each slot's process (see `schedule`).
    next_seq: Vec<u64>,
    /// The task cost measured by the last call, which the next one starts from.
    task_ns: f64,
    /// Deaths in `init` since the last batch arrived.
    init_deaths: u32,
    /// Broken messages received so far (each from a worker that died while sending it).
    broken: u64,
    pub(crate) retirements: Vec<Retirement>,
    last_check: Instant,
    last_stop_check: Instant,
}

impl<J: Job> Team<J>
where
    J::Out: DeserializeOwned,
{
    /// A team of `workers` slots running `job`; nothing is forked yet.
    pub(crate) fn new(job: J, workers: usize, settings: Settings) -> Result<Self, Error> {
        let (report_tx, report_rx) = ipc::report_channel()?;
        // Channels and returned arrays each hold descriptors: lift the soft limit first.
        sys::fds::raise_nofile_limit();
        worker::install_panic_hook();
        Ok(Team {
            job,
            board: Board::new(workers)?,
            settings,
            coordinator: sys::getpid(),
            report_tx,
            report_rx: Some(report_rx),
            crew: Vec::with_capacity(workers),
            next_incarnation: 0,
            calls: 0,
            next_seq: vec![1; workers],
            task_ns: 0.0,
            init_deaths: 0,
            broken: 0,
            retirements: Vec::new(),
            last_check: Instant::now(),
            last_stop_check: Instant::now(),
        })
    }

    /// Forks a worker into every slot that has none; the slots it forked.
    pub(crate) fn fill_slots(&mut self) -> Result<Vec<usize>, Error> {
        let mut forked = Vec::new();
        for w in 0..self.size() {
            if self.crew.get(w).is_none_or(|m| m.exit.is_some()) {
                self.spawn(w)?;
                forked.push(w);
            }
        }
        Ok(forked)
    }

    /// Starts a call over `indices`: positions `0..available` may be handed out now (all
    /// of them but for streaming calls, which raise the limit as they go).
    pub(crate) fn begin<K>(
        &mut self,
        indices: TaskList,
        available: usize,
        sink: K,
        mode: Mode,
        progress: Progress,
    ) -> Call<K> {
        self.calls += 1;
        let mut sched = Scheduler::new(available, self.size(), self.settings.chunk_size);
        sched.resume(&self.next_seq, self.task_ns);
        Call {
            id: self.calls,
            indices,
            sched,
            sink,
            mode,
            done: 0,
            strikes: Default::default(),
            unexplained_deaths: 0,
            progress,
            baseline: self.board.total_done(),
        }
    }

    /// Looks at the workers (replacing any that died since the last call) and gives
    /// each its first chunks.
    pub(crate) fn start<K: Sink<J::Out>>(&mut self, call: &mut Call<K>) -> Result<(), Error> {
        for w in self.fill_slots()? {
            // A new process: its chunks are numbered from 1 again.
            call.sched.restart(w);
        }
        // Workers that died since the last call are replaced now (and forked from the
        // coordinator as it is now).
        self.reap(call)?;
        for w in 0..self.crew.len() {
            self.refill(call, w);
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
        self.next_seq[w] = 1;
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
                    job: &self.job,
                    limits: self.settings.limits,
                    orders: rx,
                    reports: self.report_tx.clone(),
                    fd_socket: fd_worker,
                    board: &self.board,
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
                    retiring: false,
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
    fn refill<K>(&mut self, call: &mut Call<K>, w: usize) {
        if !self.crew[w].serving() {
            return;
        }
        let block = call.sched.claim_block() as u32;
        for (v, chunk) in call.sched.fill(w, &self.board) {
            let order = Order::Run {
                call: call.id,
                seq: chunk.seq,
                indices: call.indices.chunk(chunk.range.clone()),
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

    /// Hands out positions up to `limit` (a streaming call's window moved on).
    pub(crate) fn extend<K>(&mut self, call: &mut Call<K>, limit: usize) {
        if limit > call.sched.limit() {
            call.sched.extend_to(limit);
            for w in 0..self.crew.len() {
                if call.sched.held(w).len() < crate::schedule::IN_FLIGHT {
                    self.refill(call, w);
                }
            }
        }
    }

    /// Runs the event loop until `until` holds (or every position has an outcome).
    pub(crate) fn pump<K: Sink<J::Out>>(
        &mut self,
        call: &mut Call<K>,
        mut until: impl FnMut(&Call<K>) -> bool,
    ) -> Result<(), Error> {
        while !until(call) && !call.finished() {
            self.step(call, TICK)?;
        }
        Ok(())
    }

    /// Takes what has arrived without waiting (a streaming call between two items).
    pub(crate) fn poll<K: Sink<J::Out>>(&mut self, call: &mut Call<K>) -> Result<(), Error> {
        self.step(call, Duration::ZERO)
    }

    /// One turn of the event loop: a message (waiting at most `wait`), then, once per
    /// tick, timeouts, stops, deaths and idle workers.
    fn step<K: Sink<J::Out>>(&mut self, call: &mut Call<K>, wait: Duration) -> Result<(), Error> {
        self.check_interrupt(call)?;
        let received = match &self.report_rx {
            Some(rx) if wait.is_zero() => rx.try_recv(),
            Some(rx) => rx.try_recv_timeout(wait),
            None => Err(TryRecvError::IpcError(IpcError::Disconnected)),
        };
        match received {
            Ok(envelope) => self.accept(call, envelope)?,
            Err(TryRecvError::Empty) => {}
            // A signal arrived while waiting: looked at on the next turn.
            Err(TryRecvError::IpcError(IpcError::Io(e)))
                if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(TryRecvError::IpcError(e)) => {
                // A worker that died in the middle of a large send leaves a broken
                // message; its chunk is re-run like any other dead worker's. Its death
                // may have been dealt with already (by an earlier call of a crew that
                // abandoned it, reading nothing): each dead process explains one.
                self.reap(call)?;
                let live = self.crew.iter().filter(|m| m.exit.is_none()).count() as u64;
                self.broken += 1;
                if self.broken > self.forks() - live {
                    return Err(Error::Channel {
                        worker: None,
                        message: format!("could not receive results: {e}"),
                    });
                }
            }
        }
        if call.progress.is_on() {
            call.progress
                .update(self.board.total_done().saturating_sub(call.baseline));
        }
        if self.last_check.elapsed() >= TICK {
            self.last_check = Instant::now();
            self.enforce_timeouts();
            if self.last_stop_check.elapsed() >= STOP_CHECK {
                self.last_stop_check = Instant::now();
                Self::enforce_stops(&mut self.crew, &self.board);
            }
            self.reap(call)?;
            // A worker left with nothing (all it held was taken back, or there was
            // nothing to steal when it asked) looks again: work may have become free.
            for w in 0..self.crew.len() {
                if call.sched.held(w).is_empty() {
                    self.refill(call, w);
                }
            }
        }
        Ok(())
    }

    /// Kills workers whose current task has run past the deadline.
    fn enforce_timeouts(&mut self) {
        let Some(limit) = self.settings.task_timeout else {
            return;
        };
        let now = sys::monotonic_coarse_ns();
        for (w, m) in self.crew.iter_mut().enumerate() {
            if !m.serving() || m.overdue.is_some() {
                continue;
            }
            let slot = self.board.slot(w);
            let current = slot.current.load(Ordering::Acquire);
            let started = slot.started_ns.load(Ordering::Relaxed);
            if current > 0
                && current != worker::IN_INIT
                && u128::from(now.saturating_sub(started)) > limit.as_nanos()
            {
                m.overdue = Some(current as usize - 1);
                m.child.kill();
            }
        }
    }

    /// Kills workers that have stayed stopped (by SIGSTOP, or SIGTTIN for a task that
    /// reads the terminal) for longer than [`STOP_GRACE`]: with tasks in hand and no
    /// `task_timeout` they would hold the call forever.
    fn enforce_stops(crew: &mut [Member], board: &Board) {
        for (w, m) in crew.iter_mut().enumerate() {
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
                let current = board.slot(w).current.load(Ordering::Acquire);
                let running =
                    (current > 0 && current != worker::IN_INIT).then(|| current as usize - 1);
                m.stopped = Some((running, since.elapsed()));
                m.child.kill();
            }
        }
    }

    /// Ends the call with [`Error::Interrupted`] once SIGINT or SIGTERM has arrived: checked
    /// before any death is blamed on a task, since a signal sent to the whole program may
    /// have reached the workers too.
    fn check_interrupt<K>(&self, call: &Call<K>) -> Result<(), Error> {
        match signals::pending() {
            Some(signal) => Err(Error::Interrupted {
                signal,
                done: call.done,
                total: call.len(),
            }),
            None => Ok(()),
        }
    }

    /// Reaps workers that ended and deals with each death, after taking in whatever
    /// they sent before they went. Returns whether any died.
    fn reap<K: Sink<J::Out>>(&mut self, call: &mut Call<K>) -> Result<bool, Error> {
        let mut any = false;
        for w in 0..self.crew.len() {
            if self.crew[w].exit.is_some() {
                continue;
            }
            let pid = self.crew[w].pid;
            match self.crew[w].child.try_wait() {
                Ok(Some(status)) => {
                    any = true;
                    self.check_interrupt(call)?;
                    // Its last batch (or its init's last words) may still be unread: take
                    // in everything sent so far before its chunks are given back.
                    self.drain(call)?;
                    if std::mem::take(&mut self.crew[w].retiring) {
                        let m = &mut self.crew[w];
                        m.exit = Some(status);
                        m.fds = None;
                        self.replace(call, w)?;
                    } else {
                        self.bury(call, w, status)?;
                    }
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
        if !call.finished() && self.crew.iter().all(|m| m.exit.is_some()) {
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
    fn bury<K: Sink<J::Out>>(
        &mut self,
        call: &mut Call<K>,
        w: usize,
        status: ExitKind,
    ) -> Result<(), Error> {
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
        let held = call.sched.surrender(w);
        if running == worker::IN_INIT {
            for r in held {
                call.sched.requeue(r);
            }
            self.init_deaths += 1;
            if self.init_deaths > self.settings.max_retries {
                return Err(Error::InitFailed {
                    worker: w,
                    pid,
                    reason: format!("died with {status} while running it"),
                });
            }
            return self.replace(call, w);
        }
        if status == ExitKind::Code(worker::EXIT_RETIRED) && overdue.is_none() && running == 0 {
            // It retired without a last batch to say so (its last one was a fold's
            // panic): nothing it held was started.
            for r in held {
                call.sched.requeue(r);
            }
            return self.replace(call, w);
        }
        if held.is_empty() && overdue.is_none() {
            // It died idle (or after its last batch): nothing was lost.
            return self.replace(call, w);
        }
        let culprit = overdue
            .or_else(|| (running > 0).then(|| running as usize - 1))
            .filter(|p| held.iter().any(|r| r.contains(p)));
        let isolate = culprit.is_none() && status == ExitKind::Code(worker::EXIT_CHANNEL_LOST);
        for r in held {
            match culprit {
                // A task of this chunk closed the worker's descriptors: run them one by
                // one, so that the next time it is alone and blamed.
                None if isolate => r.for_each(|p| call.sched.requeue(p..p + 1)),
                // The culprit goes back alone, so it cannot take innocent tasks down again.
                Some(p) if r.contains(&p) => {
                    call.sched.requeue(r.start..p);
                    call.sched.requeue(p + 1..r.end);
                }
                _ => call.sched.requeue(r),
            }
        }
        match culprit {
            Some(p) => {
                let strikes = call.strikes.entry(p).or_insert(0);
                *strikes += 1;
                if *strikes > self.settings.max_retries {
                    let index = call.indices.at(p);
                    let err = match (overdue, self.settings.task_timeout, stopped) {
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
                    settle_failure(call, p, 1, err)?;
                } else {
                    call.sched.requeue(p..p + 1);
                }
            }
            None => {
                call.unexplained_deaths += 1;
                if call.unexplained_deaths
                    > (self.settings.max_retries + 1) * self.crew.len() as u32
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
        self.replace(call, w)
    }

    /// Forks a replacement into slot `w` when work remains; if the fork is refused, the
    /// other workers carry on (the call fails only when none is left).
    fn replace<K>(&mut self, call: &mut Call<K>, w: usize) -> Result<(), Error> {
        if call.sched.unsent() == 0 && call.sched.limit() >= call.len()
            || signals::pending().is_some()
        {
            return Ok(());
        }
        match self.spawn(w) {
            Ok(()) => call.sched.restart(w),
            Err(e) if self.crew.iter().all(|m| m.exit.is_some()) => return Err(e),
            Err(_) => {}
        }
        for v in 0..self.crew.len() {
            self.refill(call, v);
        }
        Ok(())
    }
}

impl<J> Team<J> {
    /// What the workers run.
    pub(crate) fn job(&self) -> &J {
        &self.job
    }

    /// The number of worker slots.
    pub(crate) fn size(&self) -> usize {
        self.next_seq.len()
    }

    /// Worker processes forked so far, replacements included.
    pub(crate) fn forks(&self) -> u64 {
        self.next_incarnation
    }

    /// The call is over with every position done: what the next call starts from is kept.
    pub(crate) fn end<K>(&mut self, call: &Call<K>) {
        for w in 0..self.size() {
            self.next_seq[w] = call.sched.next_seq(w);
        }
        self.task_ns = call.sched.task_ns();
    }

    /// The call ended early (an error, or its iterator was dropped): the workers still
    /// holding its work are killed and reaped at once, never waited on; the others are
    /// idle and stay. Slots left empty are forked again by the next call.
    pub(crate) fn abandon<K>(&mut self, call: &Call<K>) {
        let busy: Vec<usize> = (0..self.crew.len())
            .filter(|&w| self.crew[w].exit.is_none() && !call.sched.held(w).is_empty())
            .collect();
        for &w in &busy {
            self.crew[w].orders = None;
            self.crew[w].child.kill();
        }
        for w in busy {
            let m = &mut self.crew[w];
            m.exit = Some(m.child.kill_and_reap());
            m.fds = None;
            m.retiring = false;
            self.board.slot(w).done.store(m.acked, Ordering::Release);
            self.board.slot(w).current.store(0, Ordering::Release);
        }
        for w in 0..self.size() {
            self.next_seq[w] = call.sched.next_seq(w);
        }
    }

    /// Tells every idle worker to stop and reaps it, killing any that outstays the grace
    /// time (and at once any that still holds work: tasks are never waited on).
    pub(crate) fn finish(&mut self) {
        for (w, m) in self.crew.iter_mut().enumerate() {
            if let Some(tx) = m.orders.take() {
                let busy = self.board.slot(w).current.load(Ordering::Acquire) != 0;
                // A worker that already left cannot be told; it is reaped below either way.
                if busy || tx.send(Order::Stop).is_err() {
                    m.child.kill();
                }
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

impl<J> Drop for Team<J> {
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
