//! Crews: workers forked once that run call after call.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use super::stream::{Holder, Imap, ImapUnordered};
use super::team::Team;
use super::{Pool, TaskList, catch_interrupts, collect_indices, collect_results, collect_values};
use super::{run_collect, run_fold};
use crate::error::Error;
use crate::ipc::Retire;
use crate::worker::{Folds, Job, Maps};

/// Worker processes forked once by [`Pool::spawn`] (or [`spawn_init`](Pool::spawn_init),
/// [`spawn_fold`](Pool::spawn_fold)) that run the same function for call after call,
/// each call sending only the positions to run.
///
/// - **Faults** are handled as in a pool's calls: a worker that dies during a call, or
///   between two, is replaced by a process forked from the coordinator *at that moment*
///   (it sees the memory of the caller's process then, not the snapshot the crew started
///   from; what the crew's function borrows cannot have changed, interior mutability
///   aside), and what it held runs again. A call that ends early (a failure in `map`, an
///   iterator dropped) kills the workers still running its tasks; the next call forks
///   their replacements.
/// - **Dropping** the crew kills and reaps its workers without waiting on any task.
/// - **Threads:** workers die with the *thread* that forked them (`PR_SET_PDEATHSIG`),
///   so a crew is `!Send` and stays where it was made:
///
/// ```compile_fail
/// let crew = forkmap::Pool::new().workers(1).spawn(|i| i)?;
/// std::thread::spawn(move || drop(crew)); // error: `Crew` cannot be sent between threads
/// # Ok::<(), forkmap::Error>(())
/// ```
///
/// Calls take `&mut self`: one at a time, and an iterator borrows the crew until it is
/// dropped.
pub struct Crew<J: Job> {
    team: Team<J>,
    pool: Pool,
    /// `!Send` and `!Sync`.
    _thread: PhantomData<*const ()>,
}

/// A worker that left a crew on its own and was replaced (see
/// [`Pool::max_tasks_per_worker`] and [`Pool::max_worker_memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retirement {
    /// Its slot.
    pub worker: usize,
    /// Its process id.
    pub pid: i32,
    /// Tasks it had run when it left.
    pub tasks: Option<u64>,
    /// Its resident memory in bytes when it left, when that was the reason.
    pub rss: Option<u64>,
}

impl<J: Job> Crew<J>
where
    J::Out: DeserializeOwned,
{
    pub(crate) fn spawn(job: J, pool: &Pool) -> Result<Crew<J>, Error> {
        let workers = pool.worker_count()?;
        let _interrupts = catch_interrupts()?;
        let mut team = Team::new(job, workers, pool.settings())?;
        team.fill_slots()?;
        Ok(Crew {
            team,
            pool: pool.clone(),
            _thread: PhantomData,
        })
    }

    /// The number of worker slots.
    pub fn workers(&self) -> usize {
        self.team.size()
    }

    /// How many worker processes the crew has forked: one per slot at the start, plus
    /// each replacement.
    pub fn forks(&self) -> u64 {
        self.team.forks()
    }

    /// The workers that left on their own so far, oldest first (a record of about 40
    /// bytes each: a crew that retires a worker every few tasks for millions of tasks
    /// holds megabytes of them).
    ///
    /// # Examples
    /// ```
    /// let mut crew = forkmap::Pool::new().workers(1).max_tasks_per_worker(3).spawn(|i| i)?;
    /// crew.map(0..9)?;
    /// let retired = crew.retirements();
    /// assert!(retired.len() >= 2 && retired.iter().all(|r| r.tasks == Some(3)));
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn retirements(&self) -> Vec<Retirement> {
        self.team
            .retirements
            .iter()
            .map(|r| Retirement {
                worker: r.worker,
                pid: r.pid,
                tasks: match r.reason {
                    Retire::Tasks(n) => Some(n),
                    Retire::Memory { .. } => None,
                },
                rss: match r.reason {
                    Retire::Memory { rss, .. } => Some(rss),
                    Retire::Tasks(_) => None,
                },
            })
            .collect()
    }
}

impl<J: Maps> Crew<J>
where
    J::Out: DeserializeOwned,
{
    /// Runs the crew's function on every index and returns the results in the order of
    /// `indices`, as [`Pool::map`] does, on the crew's processes.
    ///
    /// # Errors
    /// As for [`Pool::map`]: the first failure ends the call (the workers still running
    /// its tasks are killed, and replaced by the next call).
    ///
    /// # Examples
    /// ```
    /// let mut crew = forkmap::Pool::new().workers(2).spawn(|i| i * i)?;
    /// assert_eq!(crew.map(0..4)?, vec![0, 1, 4, 9]);
    /// assert_eq!(crew.map([5, 2])?, vec![25, 4]);
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn map<I: IntoIterator<Item = usize>>(&mut self, indices: I) -> Result<Vec<J::Out>, Error> {
        let indices = self.indices(indices)?;
        if indices.is_empty() {
            return Ok(Vec::new());
        }
        collect_values(run_collect(
            &mut self.team,
            &self.pool,
            indices,
            super::Mode::FailFast,
        )?)
    }

    /// Every task's own `Result`, as [`Pool::map_results`] gives them.
    ///
    /// # Errors
    /// As for [`Pool::map_results`].
    ///
    /// # Examples
    /// ```
    /// let mut crew = forkmap::Pool::new().workers(2).spawn(|i| {
    ///     assert!(i != 1, "not one");
    ///     i
    /// })?;
    /// let out = crew.map_results(0..3)?;
    /// assert!(out[1].is_err() && out[2].as_ref().ok() == Some(&2));
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn map_results<I: IntoIterator<Item = usize>>(
        &mut self,
        indices: I,
    ) -> Result<Vec<Result<J::Out, Error>>, Error> {
        let indices = self.indices(indices)?;
        if indices.is_empty() {
            return Ok(Vec::new());
        }
        Ok(collect_results(run_collect(
            &mut self.team,
            &self.pool,
            indices,
            super::Mode::KeepGoing,
        )?))
    }

    /// The results lazily, in order, as [`Pool::imap`] yields them. Dropping the iterator
    /// early kills the workers still running its tasks (the next call replaces them).
    ///
    /// # Errors
    /// As for [`Pool::imap`].
    ///
    /// # Examples
    /// ```
    /// let mut crew = forkmap::Pool::new().workers(2).spawn(|i| i + 1)?;
    /// for epoch in 0..3 {
    ///     let total: usize = crew.imap(0..100)?.map(|r| r.unwrap()).sum();
    ///     assert_eq!(total, 5050, "epoch {epoch}");
    /// }
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn imap<I: IntoIterator<Item = usize>>(
        &mut self,
        indices: I,
    ) -> Result<Imap<'_, J>, Error> {
        let indices = self.indices(indices)?;
        Imap::start(Holder::Borrowed(&mut self.team), &self.pool, indices)
    }

    /// The results as they arrive, as [`Pool::imap_unordered`] yields them.
    ///
    /// # Errors
    /// As for [`Pool::imap_unordered`].
    ///
    /// # Examples
    /// ```
    /// let mut crew = forkmap::Pool::new().workers(2).spawn(|i| i % 7)?;
    /// let mut count = 0;
    /// for done in crew.imap_unordered(0..70)? {
    ///     assert_eq!(done.result?, done.index % 7);
    ///     count += 1;
    /// }
    /// assert_eq!(count, 70);
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn imap_unordered<I: IntoIterator<Item = usize>>(
        &mut self,
        indices: I,
    ) -> Result<ImapUnordered<'_, J>, Error> {
        let indices = self.indices(indices)?;
        ImapUnordered::start(Holder::Borrowed(&mut self.team), &self.pool, indices)
    }

    fn indices<I: IntoIterator<Item = usize>>(&self, indices: I) -> Result<TaskList, Error> {
        collect_indices(indices, std::mem::size_of::<Option<J::Out>>())
    }
}

impl<J: Folds> Crew<J>
where
    J::Out: DeserializeOwned,
{
    /// Folds the tasks in the workers with the crew's `identity` and `fold`, and reduces
    /// the partials in the parent with `reduce`, in position order, as [`Pool::fold`]
    /// does. An empty list gives `identity()`, computed in the parent.
    ///
    /// # Errors
    /// As for [`Pool::fold`].
    ///
    /// # Examples
    /// ```
    /// let mut crew = forkmap::Pool::new().workers(2).spawn_fold(Vec::new, |mut v, i| {
    ///     v.push(i);
    ///     v
    /// })?;
    /// let all = crew.fold(0..50, |mut a, b| { a.extend(b); a })?;
    /// assert_eq!(all, (0..50).collect::<Vec<_>>());
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn fold<I, Re>(&mut self, indices: I, reduce: Re) -> Result<J::Out, Error>
    where
        I: IntoIterator<Item = usize>,
        Re: Fn(J::Out, J::Out) -> J::Out,
    {
        let indices = collect_indices(indices, 0)?;
        if indices.is_empty() {
            return Ok(self.team.job().identity());
        }
        run_fold(&mut self.team, &self.pool, indices, &reduce)
    }
}

impl<J: Job> Drop for Crew<J> {
    fn drop(&mut self) {
        // Idle workers are told to stop (a worker still busy is killed); the team's own
        // drop kills and reaps whatever is left.
        if let Ok(_interrupts) = catch_interrupts() {
            self.team.finish();
        }
    }
}

impl<J: Job> std::fmt::Debug for Crew<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crew")
            .field("workers", &self.team.size())
            .field("forks", &self.team.forks())
            .finish_non_exhaustive()
    }
}
