//! The builder, `map`, and the coordinator's event loop.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use ipc_channel::ipc::{IpcReceiver, IpcSender};
use ipc_channel::{IpcError, TryRecvError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ExitKind};
use crate::ipc::{self, Order, Outcome, Report};
use crate::progress::Progress;
use crate::schedule::{IN_FLIGHT, Scheduler};
use crate::shm::Board;
use crate::sys::{self, Forked, Pid};
use crate::worker::Worker;

/// How long the coordinator waits for a message before it looks at its workers.
const TICK: Duration = Duration::from_millis(10);
/// How long finished workers get to exit on their own before they are killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// A pool of forked worker processes. Cheap to build; workers are forked by each
/// [`map`](Pool::map) call and reaped before it returns.
///
/// # Examples
/// ```
/// let squares: Vec<u64> = forkmap::Pool::new().workers(2).map(0..5, |i| (i * i) as u64)?;
/// assert_eq!(squares, vec![0, 1, 4, 9, 16]);
/// # Ok::<(), forkmap::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Pool {
    workers: Result<usize, String>,
    chunk_size: Option<usize>,
    progress: Option<bool>,
    bar: Option<ProgressBar>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new()
    }
}

impl Pool {
    /// A pool with as many workers as `FORKMAP_WORKERS` says, or else as many as the CPUs
    /// this process may run on; adaptive chunks; a progress bar only when stderr is a
    /// terminal.
    ///
    /// An unparsable `FORKMAP_WORKERS` is reported as [`Error::Config`] by `map`.
    pub fn new() -> Pool {
        let workers = match std::env::var("FORKMAP_WORKERS") {
            Ok(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("FORKMAP_WORKERS={v:?} is not a whole number of workers")),
            Err(std::env::VarError::NotUnicode(v)) => Err(format!(
                "FORKMAP_WORKERS={v:?} is not a whole number of workers"
            )),
            Err(std::env::VarError::NotPresent) => {
                Ok(std::thread::available_parallelism().map_or(1, |n| n.get()))
            }
        };
        Pool {
            workers,
            chunk_size: None,
            progress: None,
            bar: None,
        }
    }

    /// Sets the number of worker processes (at most one per task is forked).
    pub fn workers(mut self, n: usize) -> Pool {
        self.workers = Ok(n);
        self
    }

    /// Sends tasks in chunks of exactly `n` positions, turning adaptive sizing off.
    /// Stealing still balances the load between workers. `0` means adaptive.
    pub fn chunk_size(mut self, n: usize) -> Pool {
        self.chunk_size = (n > 0).then_some(n);
        self
    }

    /// Shows (or hides) a progress bar on stderr: count, rate and ETA.
    pub fn progress(mut self, on: bool) -> Pool {
        self.progress = Some(on);
        self
    }

    /// Drives this bar instead of the default one: its style and draw target are kept;
    /// its length and position are set by each `map`.
    pub fn progress_bar(mut self, bar: ProgressBar) -> Pool {
        self.bar = Some(bar);
        self
    }

    /// The number of workers `map` will fork (for a long enough list of tasks).
    ///
    /// # Errors
    /// [`Error::Config`] for an unparsable `FORKMAP_WORKERS`, [`Error::NoWorkers`] for 0.
    pub fn worker_count(&self) -> Result<usize, Error> {
        match &self.workers {
            Ok(0) => Err(Error::NoWorkers),
            Ok(n) => Ok(*n),
            Err(msg) => Err(Error::Config(msg.clone())),
        }
    }

    /// Runs `f` on every index, in forked worker processes, and returns the results in
    /// the order of `indices`.
    ///
    /// `f` and everything it captures is inherited by each worker as a copy-on-write
    /// snapshot taken when `map` is called: it needs neither `Send` nor `Sync`, and what
    /// it changes (statics, captured cells, files it writes) stays in the worker. Only
    /// [`SharedArray`](crate::SharedArray) memory is shared. Results travel back
    /// serialised. Indices may be in any order and repeat.
    ///
    /// # Errors
    /// The first failure ends the call, after every worker has been killed and reaped:
    /// [`Error::TaskPanicked`] names the task, [`Error::WorkerDied`] a worker that ended
    /// (by a signal, `exit`, ...) with tasks in hand, [`Error::ResultNotSent`] a result
    /// that could not be serialised; [`Error::NoWorkers`], [`Error::Config`],
    /// [`Error::Fork`], [`Error::Shm`] and [`Error::Channel`] for set-up failures.
    ///
    /// # Examples
    /// ```
    /// use forkmap::{Error, Pool};
    ///
    /// let err = Pool::new().workers(2).map([3, 1, 4], |i| if i == 4 { panic!("no {i}") } else { i }).unwrap_err();
    /// assert!(matches!(err, Error::TaskPanicked { index: 4, position: 2, .. }));
    /// ```
    pub fn map<I, F, R>(&self, indices: I, f: F) -> Result<Vec<R>, Error>
    where
        I: IntoIterator<Item = usize>,
        F: Fn(usize) -> R,
        R: Serialize + DeserializeOwned,
    {
        let workers = self.worker_count()?;
        let indices: Vec<usize> = indices.into_iter().collect();
        if indices.is_empty() {
            return Ok(Vec::new());
        }
        let workers = workers.min(indices.len());
        let progress = Progress::new(
            self.progress
                .unwrap_or_else(|| std::io::stderr().is_terminal()),
            self.bar.as_ref(),
            indices.len(),
        );
        let board = Board::new(workers)?;
        let (report_tx, report_rx) = ipc::report_channel::<R>()?;
        let mut run = Run {
            indices: &indices,
            f: &f,
            board: &board,
            coordinator: sys::getpid(),
            report_tx,
            report_rx: Some(report_rx),
            crew: Vec::with_capacity(workers),
            sched: Scheduler::new(indices.len(), workers, self.chunk_size),
            results: std::iter::repeat_with(|| None)
                .take(indices.len())
                .collect(),
            done: 0,
        };
        let outcome = run
            .start(workers)
            .and_then(|()| run.drive(&progress))
            .and_then(|()| run.finish());
        match outcome {
            Ok(()) => {
                progress.finish(run.done as u64);
                let results = std::mem::take(&mut run.results);
                drop(run);
                results
                    .into_iter()
                    .collect::<Option<Vec<R>>>()
                    .ok_or_else(|| Error::Channel {
                        worker: usize::MAX,
                        message: "a result went missing".into(),
                    })
            }
            Err(e) => {
                progress.abandon();
                drop(run);
                Err(e)
            }
        }
    }
}

/// One worker as the coordinator sees it.
#[derive(Debug)]
struct Member {
    pid: Pid,
    orders: Option<IpcSender<Order>>,
    in_flight: VecDeque<Range<usize>>,
    exit: Option<ExitKind>,
}

/// The coordinator's state for one `map` call. Dropping it kills and reaps every worker
/// not yet reaped, so no early return can leave a process behind.
struct Run<'a, F, R> {
    indices: &'a [usize],
    f: &'a F,
    board: &'a Board,
    coordinator: Pid,
    report_tx: IpcSender<Report<R>>,
    report_rx: Option<IpcReceiver<Report<R>>>,
    crew: Vec<Member>,
    sched: Scheduler,
    results: Vec<Option<R>>,
    done: usize,
}

impl<F, R> Run<'_, F, R>
where
    F: Fn(usize) -> R,
    R: Serialize + DeserializeOwned,
{
    fn start(&mut self, workers: usize) -> Result<(), Error> {
        for w in 0..workers {
            self.spawn(w)?;
        }
        for w in 0..workers {
            self.refill(w);
        }
        Ok(())
    }

    /// Forks worker `w`. The child closes every channel end that is not its own and
    /// never returns from here.
    fn spawn(&mut self, w: usize) -> Result<(), Error> {
        let (tx, rx) = ipc::order_channel(w)?;
        match sys::fork().map_err(|source| Error::Fork { worker: w, source })? {
            Forked::Child => {
                for m in &mut self.crew {
                    m.orders = None;
                }
                self.report_rx = None;
                drop(tx);
                Worker {
                    id: w,
                    coordinator: self.coordinator,
                    indices: self.indices,
                    f: self.f,
                    orders: rx,
                    reports: self.report_tx.clone(),
                    board: self.board,
                }
                .run()
            }
            Forked::Parent(pid) => {
                drop(rx);
                let member = Member {
                    pid,
                    orders: Some(tx),
                    in_flight: VecDeque::new(),
                    exit: None,
                };
                if w < self.crew.len() {
                    self.crew[w] = member;
                } else {
                    self.crew.push(member);
                }
                Ok(())
            }
        }
    }

    /// Tops worker `w` up to `IN_FLIGHT` chunks.
    fn refill(&mut self, w: usize) {
        while self.crew[w].exit.is_none() && self.crew[w].in_flight.len() < IN_FLIGHT {
            let Some(chunk) = self.sched.next_chunk(w) else {
                break;
            };
            let sent = self.crew[w]
                .orders
                .as_ref()
                .map(|tx| tx.send(Order::Run(chunk.clone())));
            match sent {
                Some(Ok(())) => self.crew[w].in_flight.push_back(chunk),
                // The worker is gone; its death is handled when it is reaped.
                _ => {
                    self.sched.requeue(chunk);
                    break;
                }
            }
        }
    }

    fn drive(&mut self, progress: &Progress) -> Result<(), Error> {
        let mut last_check = Instant::now();
        while self.done < self.indices.len() {
            let received = match &self.report_rx {
                Some(rx) => rx.try_recv_timeout(TICK),
                None => Err(TryRecvError::IpcError(IpcError::Disconnected)),
            };
            match received {
                Ok(report) => self.accept(report)?,
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::IpcError(e)) => {
                    return Err(Error::Channel {
                        worker: usize::MAX,
                        message: format!("could not receive results: {e}"),
                    });
                }
            }
            progress.update(self.board.total_done());
            if last_check.elapsed() >= TICK {
                last_check = Instant::now();
                self.check_workers()?;
            }
        }
        Ok(())
    }

    fn accept(&mut self, report: Report<R>) -> Result<(), Error> {
        match report {
            Report::Batch {
                worker,
                start,
                outcomes,
                busy_ns,
            } => {
                let expected = self
                    .crew
                    .get_mut(worker)
                    .and_then(|m| m.in_flight.pop_front());
                if expected != Some(start..start + outcomes.len()) {
                    return Err(Error::Channel {
                        worker,
                        message: format!(
                            "unexpected batch at position {start} of {} results (expected {expected:?})",
                            outcomes.len()
                        ),
                    });
                }
                let pid = self.crew[worker].pid;
                let n = outcomes.len();
                for (pos, outcome) in (start..).zip(outcomes) {
                    match outcome {
                        Outcome::Done(value) => self.results[pos] = Some(value),
                        Outcome::Panicked(message) => {
                            return Err(Error::TaskPanicked {
                                index: self.indices[pos],
                                position: pos,
                                worker,
                                pid,
                                message,
                            });
                        }
                    }
                }
                self.done += n;
                self.sched.observe(n, busy_ns);
                self.refill(worker);
                Ok(())
            }
            Report::Unsendable {
                worker,
                start,
                message,
            } => {
                let pid = self.crew.get(worker).map_or(0, |m| m.pid);
                Err(Error::ResultNotSent {
                    index: self.indices[start],
                    worker,
                    pid,
                    message,
                })
            }
        }
    }

    /// Reaps workers that ended. One that ended with tasks in hand fails the call.
    fn check_workers(&mut self) -> Result<(), Error> {
        for w in 0..self.crew.len() {
            if self.crew[w].exit.is_some() {
                continue;
            }
            let pid = self.crew[w].pid;
            let status = match sys::try_wait(pid) {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(e) => {
                    return Err(Error::Channel {
                        worker: w,
                        message: format!("could not wait for pid {pid}: {e}"),
                    });
                }
            };
            self.crew[w].exit = Some(status);
            self.crew[w].orders = None;
            let current = self.board.slot(w).current.load(Ordering::Acquire);
            let task =
                (current > 0).then(|| (self.indices[current as usize - 1], current as usize - 1));
            if !self.crew[w].in_flight.is_empty() {
                return Err(Error::WorkerDied {
                    worker: w,
                    pid,
                    status,
                    task,
                });
            }
            // Died idle: what it owned goes to the others.
            self.sched.retire(w);
            for v in 0..self.crew.len() {
                self.refill(v);
            }
        }
        if self.crew.iter().all(|m| m.exit.is_some()) && self.done < self.indices.len() {
            let (w, m) = self
                .crew
                .iter()
                .enumerate()
                .last()
                .ok_or(Error::NoWorkers)?;
            return Err(Error::WorkerDied {
                worker: w,
                pid: m.pid,
                status: m.exit.unwrap_or(ExitKind::Code(0)),
                task: None,
            });
        }
        Ok(())
    }

    /// Tells every worker to stop and reaps it, killing any that outstays the grace time.
    fn finish(&mut self) -> Result<(), Error> {
        for m in &mut self.crew {
            if let Some(tx) = m.orders.take() {
                // A worker that already left cannot be told; it is reaped below either way.
                let _ = tx.send(Order::Stop);
            }
        }
        let deadline = Instant::now() + EXIT_GRACE;
        for w in 0..self.crew.len() {
            while self.crew[w].exit.is_none() {
                match sys::try_wait(self.crew[w].pid) {
                    Ok(Some(status)) => self.crew[w].exit = Some(status),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_micros(200))
                    }
                    // Out of time or unwaitable: Drop kills and reaps it.
                    _ => break,
                }
            }
        }
        Ok(())
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
