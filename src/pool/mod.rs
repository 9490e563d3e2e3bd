//! The builder, `map`, and the coordinator's event loop.

mod run;

use std::collections::HashMap;
use std::time::Duration;

use indicatif::ProgressBar;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::progress::{self, Progress};
use crate::shm::Board;
use crate::sys::{self, signals::Interrupts};
use run::{Mode, Policy, Run};

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
    progress: Option<progress::Setting>,
    bar: Option<ProgressBar>,
    max_retries: u32,
    task_timeout: Option<Duration>,
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
            Ok(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > Pool::MAX_WORKERS => {
                    Err(too_many_workers(n, &format!("FORKMAP_WORKERS={v:?}")))
                }
                Ok(n) => Ok(n),
                Err(_) => Err(format!(
                    "FORKMAP_WORKERS={v:?} is not a whole number of workers"
                )),
            },
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
            max_retries: 2,
            task_timeout: None,
        }
    }

    /// The most worker processes one pool forks. A larger count, from
    /// [`workers`](Pool::workers) or `FORKMAP_WORKERS`, is refused by `map` with
    /// [`Error::Config`] rather than forking thousands of processes without a word.
    pub const MAX_WORKERS: usize = 4096;

    /// Sets the number of worker processes (at most one per task is forked, and at most
    /// [`MAX_WORKERS`](Pool::MAX_WORKERS)).
    pub fn workers(mut self, n: usize) -> Pool {
        self.workers = Ok(n);
        self
    }

    /// Sends tasks in chunks of exactly `n` positions (at most 8,388,607), turning adaptive
    /// sizing off.
    /// Stealing still balances the load between workers: a worker with nothing to do
    /// takes back the unstarted end of another's chunk, so a chunk may run shorter than
    /// `n`. `0` means adaptive (the default): chunks probe with 1, 2, 4, ... tasks until
    /// a task has been timed, then hold between about 200 us and 50 ms of work.
    pub fn chunk_size(mut self, n: usize) -> Pool {
        self.chunk_size = (n > 0).then_some(n);
        self
    }

    /// Shows (or hides) progress on stderr: a bar with count, rate and ETA when stderr is
    /// a terminal; when it is not (a Slurm or CI log), a plain line with the same figures
    /// at every tenth of the tasks and at least every 10 seconds, without carriage returns.
    /// The default shows a bar on a terminal and nothing otherwise.
    pub fn progress(mut self, on: bool) -> Pool {
        self.progress = Some(if on {
            progress::Setting::On(progress::LINE_EVERY)
        } else {
            progress::Setting::Off
        });
        self
    }

    /// Shows progress, and in a log (stderr not a terminal) writes a line at every tenth
    /// of the tasks and at least every `interval` (a bar on a terminal is unchanged).
    ///
    /// # Examples
    /// ```
    /// // In a batch job: `forkmap: 450/1000 tasks (45%), 150.0/s, elapsed 0:00:03, eta 0:00:03`.
    /// let pool = forkmap::Pool::new().progress_every(std::time::Duration::from_secs(60));
    /// # drop(pool);
    /// ```
    pub fn progress_every(mut self, interval: std::time::Duration) -> Pool {
        self.progress = Some(progress::Setting::On(interval));
        self
    }

    /// Drives this bar instead of the default one: its style and draw target are kept;
    /// its length and position are set by each `map`.
    pub fn progress_bar(mut self, bar: ProgressBar) -> Pool {
        self.bar = Some(bar);
        self
    }

    /// How many times a task that kills its worker (a crash, a signal, `exit`, a timeout)
    /// is tried again in a fresh worker before it is reported. Default 2, so such a task
    /// runs at most 3 times. Tasks that were merely in the dead worker's hands are re-run
    /// without counting against them.
    pub fn max_retries(mut self, n: u32) -> Pool {
        self.max_retries = n;
        self
    }

    /// Kills the worker of any task that runs longer than `limit` and retries the task
    /// (per [`max_retries`](Pool::max_retries)), then reports it as
    /// [`Error::TaskTimedOut`]. Checked about every 10 ms. Default: no limit.
    ///
    /// A limit of `u64::MAX` nanoseconds (about 584 years) or more cannot be measured on
    /// the monotonic clock and means no limit, like `Duration::MAX`; it never wraps
    /// around to a short one.
    pub fn task_timeout(mut self, limit: Duration) -> Pool {
        self.task_timeout = (limit.as_nanos() < u128::from(u64::MAX)).then_some(limit);
        self
    }

    /// The number of workers `map` will fork (for a long enough list of tasks).
    ///
    /// # Errors
    /// [`Error::Config`] for an unparsable `FORKMAP_WORKERS` or more than
    /// [`MAX_WORKERS`](Pool::MAX_WORKERS), [`Error::NoWorkers`] for 0.
    pub fn worker_count(&self) -> Result<usize, Error> {
        match &self.workers {
            Ok(0) => Err(Error::NoWorkers),
            Ok(n) if *n > Pool::MAX_WORKERS => {
                Err(Error::Config(too_many_workers(*n, "Pool::workers")))
            }
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
        let (values, _) = self.execute(indices, f, Mode::FailFast)?;
        values
            .into_iter()
            .collect::<Option<Vec<R>>>()
            .ok_or_else(missing_result)
    }

    /// Like [`map`](Pool::map), but one failing task does not throw away the others:
    /// every task gets its own `Result`, in the order of `indices`. A task that panics,
    /// kills its worker on every allowed attempt, runs past the timeout or returns a
    /// result that cannot be serialised has an `Err` in its place; the call goes on.
    ///
    /// # Errors
    /// The outer `Err` is for failures of the call itself: set-up ([`Error::NoWorkers`],
    /// [`Error::Config`], [`Error::Fork`], [`Error::Shm`], [`Error::Channel`]),
    /// [`Error::Interrupted`], or every worker dying for reasons no task explains.
    ///
    /// # Examples
    /// ```
    /// let out = forkmap::Pool::new().workers(2).try_map(0..4, |i| {
    ///     assert!(i != 2, "two is right out");
    ///     i * 10
    /// })?;
    /// assert_eq!(out[1].as_ref().ok(), Some(&10));
    /// assert_eq!(out[2].as_ref().unwrap_err().task_index(), Some(2));
    /// assert_eq!(out[3].as_ref().ok(), Some(&30));
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn try_map<I, F, R>(&self, indices: I, f: F) -> Result<Vec<Result<R, Error>>, Error>
    where
        I: IntoIterator<Item = usize>,
        F: Fn(usize) -> R,
        R: Serialize + DeserializeOwned,
    {
        let (values, mut failures) = self.execute(indices, f, Mode::KeepGoing)?;
        Ok(values
            .into_iter()
            .enumerate()
            .map(|(pos, value)| {
                value.ok_or_else(|| failures.remove(&pos).unwrap_or_else(missing_result))
            })
            .collect())
    }

    /// Runs a call; returns each position's value, and the failures (`KeepGoing` only).
    #[allow(clippy::type_complexity)]
    fn execute<I, F, R>(
        &self,
        indices: I,
        f: F,
        mode: Mode,
    ) -> Result<(Vec<Option<R>>, HashMap<usize, Error>), Error>
    where
        I: IntoIterator<Item = usize>,
        F: Fn(usize) -> R,
        R: Serialize + DeserializeOwned,
    {
        let workers = self.worker_count()?;
        let indices = collect_indices(indices, std::mem::size_of::<Option<R>>())?;
        if indices.is_empty() {
            return Ok((Vec::new(), HashMap::new()));
        }
        let workers = workers.min(indices.len());
        // Channels and returned arrays each hold descriptors: lift the soft limit first.
        sys::fds::raise_nofile_limit();
        let setting = self
            .progress
            .unwrap_or_else(progress::Setting::default_for_stderr);
        let progress = Progress::new(setting, self.bar.as_ref(), indices.len());
        let board = Board::new(workers)?;
        crate::worker::install_panic_hook();
        let policy = Policy {
            mode,
            max_retries: self.max_retries,
            task_timeout: self.task_timeout,
        };
        // Held until every worker is reaped (the run drops first); when the last call
        // lets go, a signal that arrived meanwhile is delivered again under the caller's
        // own disposition (by default, the process ends).
        let interrupts = Interrupts::catch().map_err(|e| Error::Channel {
            worker: None,
            message: format!("could not install signal handlers: {e}"),
        })?;
        let outcome =
            Run::new(&indices, &f, &board, workers, self.chunk_size, policy).and_then(|mut run| {
                run.start(workers)?;
                run.drive(&progress)?;
                run.finish();
                Ok((
                    std::mem::take(&mut run.values),
                    std::mem::take(&mut run.failures),
                ))
                // `run` drops here: any worker still alive is killed and reaped.
            });
        match &outcome {
            Ok(outcomes) => progress.finish(outcomes.0.len() as u64),
            Err(_) => progress.abandon(),
        }
        drop(interrupts);
        outcome
    }
}

fn too_many_workers(n: usize, what: &str) -> String {
    format!(
        "{what} asks for {n} worker processes; at most {} are supported",
        Pool::MAX_WORKERS
    )
}

/// Collects the task list with fallible allocation: a list too long for the address
/// space or for the memory this process can get (with `extra` bytes per task for its
/// result slot) is [`Error::TooManyTasks`], never a capacity-overflow panic, an
/// allocation abort or an OOM kill.
fn collect_indices<I: IntoIterator<Item = usize>>(
    indices: I,
    extra: usize,
) -> Result<Vec<usize>, Error> {
    let per_task = std::mem::size_of::<usize>() + extra;
    let iter = indices.into_iter();
    let mut out: Vec<usize> = Vec::new();
    let grow = |out: &mut Vec<usize>, want: usize| -> Result<(), Error> {
        let too_many = |reason: String| Error::TooManyTasks {
            count: want,
            reason,
        };
        let bytes = want.checked_mul(per_task).ok_or_else(|| {
            too_many(format!(
                "{per_task} bytes each would overflow the address space"
            ))
        })?;
        if let Some(budget) = sys::memory_budget()
            && bytes as u64 > budget
        {
            return Err(too_many(format!(
                "they need {bytes} bytes of bookkeeping ({per_task} per task), \
                 about {budget} bytes of memory are available"
            )));
        }
        out.try_reserve(want - out.len())
            .map_err(|e| too_many(format!("could not allocate {bytes} bytes: {e}")))
    };
    let (lower, upper) = iter.size_hint();
    grow(&mut out, upper.unwrap_or(lower).max(lower))?;
    for i in iter {
        if out.len() == out.capacity() {
            let want = out.len().saturating_mul(2).max(out.len() + 1).max(64);
            grow(&mut out, want)?;
        }
        out.push(i);
    }
    Ok(out)
}

/// `n` empty result slots, allocated fallibly (see [`collect_indices`]).
fn empty_slots<R>(n: usize) -> Result<Vec<Option<R>>, Error> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|e| Error::TooManyTasks {
        count: n,
        reason: format!("could not allocate their result slots: {e}"),
    })?;
    v.resize_with(n, || None);
    Ok(v)
}

fn missing_result() -> Error {
    Error::Channel {
        worker: None,
        message: "a result went missing".into(),
    }
}
