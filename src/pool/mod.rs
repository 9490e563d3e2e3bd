//! The builder and its calls (`map`, `imap`, `fold`, ...), crews, and the coordinator.

mod call;
mod crew;
mod stream;
mod team;

use std::time::Duration;

use indicatif::ProgressBar;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::progress::{self, Progress};
use crate::sys;
use crate::worker::{FoldJob, InitJob, Job, Limits, MapJob, WorkerInfo};
use call::{Mode, catch_interrupts, collect_results, collect_values, run_collect, run_fold};
pub use crew::{Crew, Retirement};
pub use stream::{Completed, Imap, ImapUnordered};
use team::{Settings, Team};

/// A pool of forked worker processes. Cheap to build; workers are forked by each call
/// ([`map`](Pool::map), [`imap`](Pool::imap), [`fold`](Pool::fold), ...) and reaped before
/// it returns, or once by [`spawn`](Pool::spawn) for a [`Crew`] that runs many calls.
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
    limits: Limits,
    lookahead: Option<usize>,
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
            limits: Limits::default(),
            lookahead: None,
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

    /// Replaces each worker process after it has run `n` tasks (exactly: tasks, not
    /// chunks), as Python's `maxtasksperchild` does: for tasks that leak memory or
    /// descriptors, or a library that degrades. The worker finishes its `n`th task, sends
    /// its results and exits; a fresh process is forked from the coordinator into its slot
    /// (that costs a fork, about 25 ms per GiB of the caller's private heap, and an `init`
    /// of [`map_init`](Pool::map_init) again). `0` means no limit (the default).
    ///
    /// # Examples
    /// ```
    /// let pool = forkmap::Pool::new().workers(2).max_tasks_per_worker(10);
    /// let pids = pool.map(0..40, |_| std::process::id())?;
    /// let mut distinct = pids.clone();
    /// distinct.sort();
    /// distinct.dedup();
    /// assert!(distinct.len() >= 4);
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn max_tasks_per_worker(mut self, n: u64) -> Pool {
        self.limits.max_tasks = (n > 0).then_some(n);
        self
    }

    /// Retires a worker whose resident memory (RSS, as `/proc/self/statm` says) has grown
    /// past `bytes`: it finishes the tasks it has claimed, sends their results and exits,
    /// and a fresh process takes its slot (the cost of a fork, as for
    /// [`max_tasks_per_worker`](Pool::max_tasks_per_worker)). Checked after each task (a
    /// block of cheap ones), at most every 10 ms, so a worker may overshoot by what one
    /// task allocates. Retirements are recorded with the worker, its pid and its size
    /// ([`Crew::retirements`]). Memory the worker shares with the coordinator (pages it
    /// inherited and did not write, shared arrays it read) counts in its RSS too: set the
    /// cap above what a fresh worker shows. `0` means no cap (the default).
    pub fn max_worker_memory(mut self, bytes: u64) -> Pool {
        self.limits.max_rss = (bytes > 0).then_some(bytes);
        self
    }

    /// How many positions past the first one the consumer has not taken yet
    /// [`imap`](Pool::imap) and [`imap_unordered`](Pool::imap_unordered) may hand out:
    /// the bound on the results they hold (default `max(16384, 2048 × workers)`). A smaller
    /// window holds less memory; a larger one keeps the workers busy past a slow task.
    pub fn lookahead(mut self, positions: usize) -> Pool {
        self.lookahead = (positions > 0).then_some(positions);
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
        self.once(MapJob(f), indices, |team, pool, indices| {
            collect_values(run_collect(team, pool, indices, Mode::FailFast)?)
        })
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
    /// let out = forkmap::Pool::new().workers(2).map_results(0..4, |i| {
    ///     assert!(i != 2, "two is right out");
    ///     i * 10
    /// })?;
    /// assert_eq!(out[1].as_ref().ok(), Some(&10));
    /// assert_eq!(out[2].as_ref().unwrap_err().task_index(), Some(2));
    /// assert_eq!(out[3].as_ref().ok(), Some(&30));
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn map_results<I, F, R>(&self, indices: I, f: F) -> Result<Vec<Result<R, Error>>, Error>
    where
        I: IntoIterator<Item = usize>,
        F: Fn(usize) -> R,
        R: Serialize + DeserializeOwned,
    {
        self.once(MapJob(f), indices, |team, pool, indices| {
            Ok(collect_results(run_collect(
                team,
                pool,
                indices,
                Mode::KeepGoing,
            )?))
        })
    }

    /// The old name of [`map_results`](Pool::map_results): in Rust a `try_` method stops
    /// at the first error, which is what [`map`](Pool::map) does; this one keeps going.
    #[deprecated(
        since = "0.1.0",
        note = "renamed to `map_results` (it keeps going past failures)"
    )]
    pub fn try_map<I, F, R>(&self, indices: I, f: F) -> Result<Vec<Result<R, Error>>, Error>
    where
        I: IntoIterator<Item = usize>,
        F: Fn(usize) -> R,
        R: Serialize + DeserializeOwned,
    {
        self.map_results(indices, f)
    }

    /// [`map`](Pool::map) over the items of a slice: `f(&items[i])` for every item, the
    /// results in order. The slice is inherited by the workers with the fork, never
    /// serialised: its items need neither `Serialize` nor `Send`.
    ///
    /// # Errors
    /// As for [`map`](Pool::map); an error names the item's position as its index.
    ///
    /// # Examples
    /// ```
    /// let words = ["fork", "map", "pool"];
    /// let lengths = forkmap::Pool::new().workers(2).map_slice(&words, |w| w.len())?;
    /// assert_eq!(lengths, vec![4, 3, 4]);
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn map_slice<T, F, R>(&self, items: &[T], f: F) -> Result<Vec<R>, Error>
    where
        F: Fn(&T) -> R,
        R: Serialize + DeserializeOwned,
    {
        self.map(0..items.len(), |i| f(&items[i]))
    }

    /// Like [`map`](Pool::map), with state per worker process: `init` runs once in each
    /// worker (and again in each replacement, after a crash or a retirement) and `f` gets
    /// `&mut` to what it built: a model loaded once, an HDF5 handle, a scratch buffer, a C
    /// library that is not thread-safe. The state is a cache: it dies with its worker, so
    /// no result may depend on what earlier tasks left in it (per-worker sums belong in
    /// [`fold`](Pool::fold)).
    ///
    /// # Errors
    /// As for [`map`](Pool::map), and [`Error::InitFailed`] when `init` panics, or kills
    /// its worker on every attempt `max_retries` allows.
    ///
    /// # Examples
    /// ```
    /// let pool = forkmap::Pool::new().workers(2);
    /// let out = pool.map_init(0..4, |info| vec![info.worker(); 1024], |scratch, i| scratch.len() + i)?;
    /// assert_eq!(out, vec![1024, 1025, 1026, 1027]);
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn map_init<I, In, F, S, R>(&self, indices: I, init: In, f: F) -> Result<Vec<R>, Error>
    where
        I: IntoIterator<Item = usize>,
        In: Fn(&WorkerInfo) -> S,
        F: Fn(&mut S, usize) -> R,
        R: Serialize + DeserializeOwned,
    {
        self.once(InitJob { init, f }, indices, |team, pool, indices| {
            collect_values(run_collect(team, pool, indices, Mode::FailFast)?)
        })
    }

    /// Folds the tasks in the workers and reduces the partials in the parent, as rayon's
    /// `fold` + `reduce`: each batch of consecutive positions a worker runs starts from
    /// `identity()` and folds every task into it with `fold(acc, index)`; the coordinator
    /// combines the partials with `reduce` in position order (so `reduce` need only be
    /// associative, not commutative). Only the partials travel: one per batch.
    ///
    /// A batch's partial counts all or nothing: if its worker dies, the batch runs again
    /// from `identity()`, so every index is folded in exactly once.
    ///
    /// # Errors
    /// As for [`map`](Pool::map): the first failure ends the call.
    ///
    /// # Examples
    /// ```
    /// let pool = forkmap::Pool::new().workers(2);
    /// let sum = pool.fold(0..1000, || 0u64, |acc, i| acc + i as u64, |a, b| a + b)?;
    /// assert_eq!(sum, 499_500);
    /// // Position order: a concatenation comes out in order, though batches run anywhere.
    /// let s = pool.fold(0..20, String::new, |acc, i| acc + &format!("{i} "), |a, b| a + &b)?;
    /// assert!(s.starts_with("0 1 2 3 "));
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn fold<I, Id, Fo, Re, T>(
        &self,
        indices: I,
        identity: Id,
        fold: Fo,
        reduce: Re,
    ) -> Result<T, Error>
    where
        I: IntoIterator<Item = usize>,
        Id: Fn() -> T,
        Fo: Fn(T, usize) -> T,
        Re: Fn(T, T) -> T,
        T: Serialize + DeserializeOwned,
    {
        let job = FoldJob { identity, fold };
        let fallback = |job: &FoldJob<Id, Fo>| (job.identity)();
        self.once_or(job, indices, fallback, |team, pool, indices| {
            run_fold(team, pool, indices, &reduce)
        })
    }

    /// Runs `f` on every index and yields the results lazily, in the order of `indices`,
    /// as the workers deliver them: for more results than fit in memory, or to write
    /// result `i` while later tasks run. At most [`lookahead`](Pool::lookahead) positions
    /// past the first one not yet taken are handed out, so the results held stay bounded
    /// however many tasks there are; a task much slower than the others stalls the window
    /// behind it. Each item is that task's `Result` (as in
    /// [`map_results`](Pool::map_results)); a failure of the call itself
    /// ([`Error::Interrupted`], every worker dead) is the last item.
    ///
    /// The workers are forked here. Dropping the iterator early kills and reaps them at
    /// once, without waiting on their tasks. SIGINT and SIGTERM are caught only while
    /// the iterator waits for results: between two items they do what the program says
    /// (by default, end it; the workers die with it).
    ///
    /// # Errors
    /// Set-up failures, as for [`map`](Pool::map).
    ///
    /// # Examples
    /// ```
    /// let pool = forkmap::Pool::new().workers(2);
    /// let mut total = 0;
    /// for r in pool.imap(0..100, |i| i * 2)? {
    ///     total += r?;
    /// }
    /// assert_eq!(total, 9900);
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn imap<'f, I, F, R>(&self, indices: I, f: F) -> Result<Imap<'f, MapJob<F>>, Error>
    where
        I: IntoIterator<Item = usize>,
        F: Fn(usize) -> R,
        R: Serialize + DeserializeOwned,
    {
        let (team, indices) = self.forked(MapJob(f), indices)?;
        Imap::start(stream::Holder::Owned(Box::new(team)), self, indices)
    }

    /// Like [`imap`](Pool::imap), but yields each result as soon as it arrives, with its
    /// index and position: no task waits on a slower one before it. The window of
    /// [`lookahead`](Pool::lookahead) positions bounds the results held the same way.
    ///
    /// # Errors
    /// Set-up failures, as for [`map`](Pool::map).
    ///
    /// # Examples
    /// ```
    /// let pool = forkmap::Pool::new().workers(2);
    /// let mut seen = vec![false; 50];
    /// for done in pool.imap_unordered(0..50, |i| i + 1)? {
    ///     assert_eq!(done.result?, done.index + 1);
    ///     seen[done.position] = true;
    /// }
    /// assert!(seen.iter().all(|&s| s));
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn imap_unordered<'f, I, F, R>(
        &self,
        indices: I,
        f: F,
    ) -> Result<ImapUnordered<'f, MapJob<F>>, Error>
    where
        I: IntoIterator<Item = usize>,
        F: Fn(usize) -> R,
        R: Serialize + DeserializeOwned,
    {
        let (team, indices) = self.forked(MapJob(f), indices)?;
        ImapUnordered::start(stream::Holder::Owned(Box::new(team)), self, indices)
    }

    /// Forks the workers once and keeps them: the [`Crew`] runs `f` for call after call
    /// ([`Crew::map`], [`Crew::imap`], ...), sending only positions, so a loop of maps pays
    /// the fork (about 25 ms per GiB of the caller's private heap, per worker) once rather
    /// than every time. What `f` captures is the workers' snapshot from this moment; the
    /// borrow checker keeps it unchanged while the crew lives (interior mutability aside:
    /// a `Cell` set later is not seen by the workers, nor by a replacement forked before).
    ///
    /// A crew is `!Send`: its workers die with the thread that forked them
    /// (`PR_SET_PDEATHSIG`), so it stays on that thread.
    ///
    /// **Parameters that change between calls** (the weights of an epoch, a threshold) go
    /// in a [`SharedArray`](crate::SharedArray) that `f` captures: the parent writes them
    /// before each call and every worker reads the new values, with nothing serialised:
    ///
    /// ```
    /// let params = forkmap::SharedArray::<f64, _>::zeros(2)?;
    /// let mut crew = forkmap::Pool::new().workers(2).spawn(|i| {
    ///     let p = params.read();
    ///     p[0] * i as f64 + p[1]
    /// })?;
    /// for epoch in 1..=3 {
    ///     params.write().assign(&forkmap::ndarray::arr1(&[epoch as f64, 0.5]));
    ///     assert_eq!(crew.map(0..4)?[3], 3.0 * epoch as f64 + 0.5);
    /// }
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    ///
    /// # Errors
    /// Set-up failures, as for [`map`](Pool::map).
    ///
    /// # Examples
    /// ```
    /// let weights = vec![0.5f64; 1000];
    /// let mut crew = forkmap::Pool::new().workers(2).spawn(|i| weights[i] * i as f64)?;
    /// for _epoch in 0..3 {
    ///     let v: Vec<f64> = crew.map(0..1000)?;
    ///     assert_eq!(v[10], 5.0);
    /// }
    /// assert_eq!(crew.forks(), 2);
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn spawn<F, R>(&self, f: F) -> Result<Crew<MapJob<F>>, Error>
    where
        F: Fn(usize) -> R,
        R: Serialize + DeserializeOwned,
    {
        Crew::spawn(MapJob(f), self)
    }

    /// A [`Crew`] whose workers keep state: `init` runs once in each worker process (and
    /// in each replacement), and `f` gets `&mut` to it, as in [`map_init`](Pool::map_init).
    ///
    /// # Errors
    /// Set-up failures, as for [`map`](Pool::map). A failing `init` is reported by the
    /// first call.
    ///
    /// # Examples
    /// ```
    /// let mut crew = forkmap::Pool::new().workers(2).spawn_init(|_| 0u64, |calls, i| {
    ///     *calls += 1;
    ///     i
    /// })?;
    /// assert_eq!(crew.map(0..3)?, vec![0, 1, 2]);
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn spawn_init<In, F, S, R>(&self, init: In, f: F) -> Result<Crew<InitJob<In, F>>, Error>
    where
        In: Fn(&WorkerInfo) -> S,
        F: Fn(&mut S, usize) -> R,
        R: Serialize + DeserializeOwned,
    {
        Crew::spawn(InitJob { init, f }, self)
    }

    /// A [`Crew`] that folds: each call ([`Crew::fold`]) folds its tasks in the workers
    /// with `identity` and `fold` and reduces the partials in the parent, as
    /// [`Pool::fold`] does.
    ///
    /// # Errors
    /// Set-up failures, as for [`map`](Pool::map).
    ///
    /// # Examples
    /// ```
    /// let mut crew = forkmap::Pool::new().workers(2).spawn_fold(|| 0u64, |acc, i| acc + i as u64)?;
    /// assert_eq!(crew.fold(0..10, |a, b| a + b)?, 45);
    /// assert_eq!(crew.fold(10..20, |a, b| a + b)?, 145);
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn spawn_fold<Id, Fo, T>(
        &self,
        identity: Id,
        fold: Fo,
    ) -> Result<Crew<FoldJob<Id, Fo>>, Error>
    where
        Id: Fn() -> T,
        Fo: Fn(T, usize) -> T,
        T: Serialize + DeserializeOwned,
    {
        Crew::spawn(FoldJob { identity, fold }, self)
    }

    /// What a team of this pool runs with.
    fn settings(&self) -> Settings {
        Settings {
            max_retries: self.max_retries,
            task_timeout: self.task_timeout,
            chunk_size: self.chunk_size,
            limits: self.limits,
        }
    }

    /// The progress of a call of `len` tasks.
    fn progress_for(&self, len: usize) -> Progress {
        let setting = self
            .progress
            .unwrap_or_else(progress::Setting::default_for_stderr);
        Progress::new(setting, self.bar.as_ref(), len)
    }

    /// The streaming window for `workers` workers.
    fn window(&self, workers: usize) -> usize {
        self.lookahead.unwrap_or_else(|| 16384.max(2048 * workers))
    }

    /// A team for one call over `indices`, forked (one worker per task at most; none
    /// for an empty list).
    fn forked<J: Job>(
        &self,
        job: J,
        indices: impl IntoIterator<Item = usize>,
    ) -> Result<(Team<J>, TaskList), Error>
    where
        J::Out: DeserializeOwned,
    {
        let workers = self.worker_count()?;
        let indices = collect_indices(indices, std::mem::size_of::<Option<J::Out>>())?;
        let mut team = Team::new(job, workers.min(indices.len()).max(1), self.settings())?;
        if !indices.is_empty() {
            let _interrupts = catch_interrupts()?;
            team.fill_slots()?;
        }
        Ok((team, indices))
    }

    /// Runs one call on a team forked for it, and stops and reaps the team.
    fn once<J, I, Out>(
        &self,
        job: J,
        indices: I,
        call: impl FnOnce(&mut Team<J>, &Pool, TaskList) -> Result<Vec<Out>, Error>,
    ) -> Result<Vec<Out>, Error>
    where
        J: Job,
        J::Out: DeserializeOwned,
        I: IntoIterator<Item = usize>,
    {
        self.once_or(job, indices, |_| Vec::new(), call)
    }

    /// [`once`](Pool::once), with what an empty task list gives.
    fn once_or<J, I, T>(
        &self,
        job: J,
        indices: I,
        empty: impl FnOnce(&J) -> T,
        call: impl FnOnce(&mut Team<J>, &Pool, TaskList) -> Result<T, Error>,
    ) -> Result<T, Error>
    where
        J: Job,
        J::Out: DeserializeOwned,
        I: IntoIterator<Item = usize>,
    {
        let workers = self.worker_count()?;
        let indices = collect_indices(indices, std::mem::size_of::<Option<J::Out>>())?;
        if indices.is_empty() {
            return Ok(empty(&job));
        }
        // Held until every worker is reaped (the team drops first); when the last call
        // lets go, a signal that arrived meanwhile is delivered again under the caller's
        // own disposition (by default, the process ends).
        let interrupts = catch_interrupts()?;
        let mut team = Team::new(job, workers.min(indices.len()), self.settings())?;
        let outcome = team
            .fill_slots()
            .and_then(|_| call(&mut team, self, indices));
        if outcome.is_ok() {
            team.finish();
        }
        // Any worker still alive is killed and reaped here.
        drop(team);
        drop(interrupts);
        outcome
    }
}

/// Task lists whose bookkeeping takes less than this are not checked against the memory
/// budget (any machine has that much).
const SMALL_LIST: usize = 64 << 20;

fn too_many_workers(n: usize, what: &str) -> String {
    format!(
        "{what} asks for {n} worker processes; at most {} are supported",
        Pool::MAX_WORKERS
    )
}

/// Collects the task list with fallible allocation: a list too long for the address
/// space or for the memory this process can get (with `extra` bytes per task for its
/// result slot) is [`Error::TooManyTasks`], never a capacity-overflow panic, an
/// allocation abort or an OOM kill. Consecutive indices (`0..n`, `k..k + n`) are kept as
/// their first and their count, in no memory at all.
fn collect_indices<I: IntoIterator<Item = usize>>(
    indices: I,
    extra: usize,
) -> Result<TaskList, Error> {
    let per_task = std::mem::size_of::<usize>() + extra;
    let iter = indices.into_iter();
    let grow = |out: &mut Vec<usize>, want: usize| -> Result<(), Error> {
        let bytes = budget(want, per_task)?;
        out.try_reserve(want - out.len())
            .map_err(|e| Error::TooManyTasks {
                count: want,
                reason: format!("could not allocate {bytes} bytes: {e}"),
            })
    };
    let (lower, upper) = iter.size_hint();
    let hint = upper.unwrap_or(lower).max(lower);
    // Refused before anything runs, as if the list were kept (a result slot or an index
    // per task), so that `0..usize::MAX` is an error rather than an endless count.
    budget(hint, per_task)?;
    let (mut first, mut count) = (0usize, 0usize);
    let mut list: Option<Vec<usize>> = None;
    for i in iter {
        match &mut list {
            Some(out) => {
                if out.len() == out.capacity() {
                    let want = out.len().saturating_mul(2).max(out.len() + 1).max(64);
                    grow(out, want)?;
                }
                out.push(i);
            }
            None if count == 0 => (first, count) = (i, 1),
            None if first.checked_add(count) == Some(i) => count += 1,
            None => {
                let mut out = Vec::new();
                grow(&mut out, hint.max(count + 1))?;
                out.extend(first..first + count);
                out.push(i);
                list = Some(out);
            }
        }
    }
    Ok(match list {
        Some(list) => TaskList::List(list),
        None => TaskList::Range { first, len: count },
    })
}

/// Checks that `n` tasks of `per_task` bytes of bookkeeping fit in memory; their bytes.
fn budget(n: usize, per_task: usize) -> Result<usize, Error> {
    let too_many = |reason: String| Error::TooManyTasks { count: n, reason };
    let bytes = n.checked_mul(per_task).ok_or_else(|| {
        too_many(format!(
            "{per_task} bytes each would overflow the address space"
        ))
    })?;
    // Reading the budget costs a few /proc files: a crew's small calls skip it.
    if bytes >= SMALL_LIST
        && let Some(budget) = sys::memory_budget()
        && bytes as u64 > budget
    {
        return Err(too_many(format!(
            "they need {bytes} bytes of bookkeeping ({per_task} per task), \
             about {budget} bytes of memory are available"
        )));
    }
    Ok(bytes)
}

/// A call's indices: consecutive ones as their first and count, others listed.
#[derive(Debug, Clone)]
pub(crate) enum TaskList {
    /// `first, first + 1, ..., first + len - 1`.
    Range { first: usize, len: usize },
    /// One per position.
    List(Vec<usize>),
}

impl TaskList {
    pub(crate) fn len(&self) -> usize {
        match self {
            TaskList::Range { len, .. } => *len,
            TaskList::List(list) => list.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index at position `pos`.
    #[inline]
    pub(crate) fn at(&self, pos: usize) -> usize {
        match self {
            TaskList::Range { first, .. } => first + pos,
            TaskList::List(list) => list[pos],
        }
    }

    /// The indices of positions `range`, as an order carries them.
    pub(crate) fn chunk(&self, range: std::ops::Range<usize>) -> crate::ipc::Indices {
        match self {
            TaskList::Range { first, .. } => crate::ipc::Indices::From(first + range.start),
            TaskList::List(list) => crate::ipc::Indices::of(&list[range]),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_indices_are_kept_as_a_range_and_others_listed() {
        let r = collect_indices(5..9, 8).unwrap();
        assert!(matches!(r, TaskList::Range { first: 5, len: 4 }));
        assert_eq!((r.at(0), r.at(3), r.len()), (5, 8, 4));
        assert_eq!(r.chunk(1..3), crate::ipc::Indices::From(6));
        let e = collect_indices(Vec::new(), 8).unwrap();
        assert!(e.is_empty());
        let l = collect_indices([3, 4, 5, 9, 1, 1], 8).unwrap();
        assert!(matches!(&l, TaskList::List(v) if v == &[3, 4, 5, 9, 1, 1]));
        assert_eq!(l.chunk(2..4), crate::ipc::Indices::List(vec![5, 9]));
        // Lazy iterators without a size hint, and a break after a long run.
        let lazy = collect_indices((0..1000).chain([7]).filter(|_| true), 8).unwrap();
        assert_eq!(lazy.len(), 1001);
        assert_eq!((lazy.at(999), lazy.at(1000)), (999, 7));
        let top = collect_indices([usize::MAX - 1, usize::MAX], 8).unwrap();
        assert!(matches!(top, TaskList::Range { len: 2, .. }));
        assert!(matches!(
            collect_indices(0..usize::MAX, 0),
            Err(Error::TooManyTasks { .. })
        ));
    }
}
