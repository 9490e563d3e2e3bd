//! What a worker process runs: a map (`f(index)`), a map with per-process state
//! (`init` once, then `f(&mut state, index)`), or a fold (`fold(acc, index)` per batch).

use serde::Serialize;

/// Who a worker is, as its `init` sees it (see [`Pool::map_init`](crate::Pool::map_init)).
///
/// `init` runs once in each worker process, and again in each replacement of one (after
/// a crash, a timeout or a retirement): [`generation`](WorkerInfo::generation) tells them
/// apart.
///
/// # Examples
/// ```
/// let pool = forkmap::Pool::new().workers(2);
/// let slots = pool.map_init(0..4, |info| info.worker(), |slot, _| *slot)?;
/// assert!(slots.iter().all(|&w| w < 2));
/// # Ok::<(), forkmap::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerInfo {
    pub(crate) worker: usize,
    pub(crate) generation: u64,
    pub(crate) pid: i32,
}

impl WorkerInfo {
    /// The worker's slot, from 0 to the number of workers less one; a replacement takes
    /// the slot of the process it replaces.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// How many processes this pool (or crew) forked before this one, over all its slots:
    /// a number no other of its worker processes has.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The worker's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }
}

mod sealed {
    /// Only forkmap's own jobs are jobs.
    pub trait Sealed {}
}

/// The work a crew's worker processes do, fixed when they are forked: what `J` is in
/// [`Crew<J>`](crate::Crew). Sealed: only forkmap's jobs implement it.
pub trait Job: sealed::Sealed {
    /// The per-process state `init` builds.
    type State;
    /// What a piece of a batch carries: a task's value (maps) or a batch's partial (folds).
    type Out: Serialize;
    /// Whether a batch carries one partial for all its positions rather than a value each.
    const FOLDS: bool;

    /// Builds the process's state; runs once, before the first order.
    fn init(&self, info: &WorkerInfo) -> Self::State;

    /// Runs the task at `index`: a map returns its value (`acc` is `None`); a fold folds
    /// it into the batch's partial so far (`None` at a batch's first position) and returns
    /// the new partial.
    fn run(&self, state: &mut Self::State, acc: Option<Self::Out>, index: usize) -> Self::Out;
}

/// `f(index)`, the job of [`Pool::spawn`](crate::Pool::spawn).
pub struct MapJob<F>(pub(crate) F);

impl<F> sealed::Sealed for MapJob<F> {}
impl<F> std::fmt::Debug for MapJob<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MapJob")
    }
}

impl<F, R> Job for MapJob<F>
where
    F: Fn(usize) -> R,
    R: Serialize,
{
    type State = ();
    type Out = R;
    const FOLDS: bool = false;

    fn init(&self, _: &WorkerInfo) {}

    #[inline]
    fn run(&self, _: &mut (), _: Option<R>, index: usize) -> R {
        (self.0)(index)
    }
}

/// `init(info)` once per process, then `f(&mut state, index)`: the job of
/// [`Pool::spawn_init`](crate::Pool::spawn_init).
pub struct InitJob<I, F> {
    pub(crate) init: I,
    pub(crate) f: F,
}

impl<I, F> sealed::Sealed for InitJob<I, F> {}
impl<I, F> std::fmt::Debug for InitJob<I, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InitJob")
    }
}

impl<I, F, S, R> Job for InitJob<I, F>
where
    I: Fn(&WorkerInfo) -> S,
    F: Fn(&mut S, usize) -> R,
    R: Serialize,
{
    type State = S;
    type Out = R;
    const FOLDS: bool = false;

    fn init(&self, info: &WorkerInfo) -> S {
        (self.init)(info)
    }

    #[inline]
    fn run(&self, state: &mut S, _: Option<R>, index: usize) -> R {
        (self.f)(state, index)
    }
}

/// `fold(acc, index)` from `identity()` at each batch's first position: the job of
/// [`Pool::spawn_fold`](crate::Pool::spawn_fold).
pub struct FoldJob<Id, Fo> {
    pub(crate) identity: Id,
    pub(crate) fold: Fo,
}

impl<Id, Fo> sealed::Sealed for FoldJob<Id, Fo> {}
impl<Id, Fo> std::fmt::Debug for FoldJob<Id, Fo> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FoldJob")
    }
}

impl<Id, Fo, T> Job for FoldJob<Id, Fo>
where
    Id: Fn() -> T,
    Fo: Fn(T, usize) -> T,
    T: Serialize,
{
    type State = ();
    type Out = T;
    const FOLDS: bool = true;

    fn init(&self, _: &WorkerInfo) {}

    #[inline]
    fn run(&self, _: &mut (), acc: Option<T>, index: usize) -> T {
        let acc = acc.unwrap_or_else(|| (self.identity)());
        (self.fold)(acc, index)
    }
}

/// Jobs whose calls map (a value per task): [`Crew::map`](crate::Crew::map), `imap`, ...
pub trait Maps: Job {}
impl<F, R> Maps for MapJob<F>
where
    F: Fn(usize) -> R,
    R: Serialize,
{
}
impl<I, F, S, R> Maps for InitJob<I, F>
where
    I: Fn(&WorkerInfo) -> S,
    F: Fn(&mut S, usize) -> R,
    R: Serialize,
{
}

/// Jobs whose calls fold (a partial per batch): [`Crew::fold`](crate::Crew::fold).
pub trait Folds: Job {
    /// The fold's starting value, for an empty call.
    fn identity(&self) -> Self::Out;
}
impl<Id, Fo, T> Folds for FoldJob<Id, Fo>
where
    Id: Fn() -> T,
    Fo: Fn(T, usize) -> T,
    T: Serialize,
{
    fn identity(&self) -> T {
        (self.identity)()
    }
}
