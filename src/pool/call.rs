//! One call's state on a team: its positions, scheduler, failures and where outcomes go
//! (a `Vec` for `map`, a window for `imap`, a queue for `imap_unordered`, a running
//! reduction for `fold`).

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::de::DeserializeOwned;

use super::team::Team;
use super::{Pool, TaskList, missing_result};
use crate::error::Error;
use crate::progress::Progress;
use crate::schedule::Scheduler;
use crate::sys::signals::Interrupts;
use crate::worker::Job;

/// What a failing task does to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The first failure ends the call (`map`, `fold`).
    FailFast,
    /// Failures are recorded per task and the call goes on (`map_results`, `imap`).
    KeepGoing,
}

/// Where a call's outcomes go. `T` is what a piece carries: a task's value, or a fold's
/// partial over `count` positions.
pub(crate) trait Sink<T> {
    /// The value of positions `start..start + count` (`count` is 1 but for folds).
    /// Returns whether they had no outcome yet.
    fn value(&mut self, start: usize, count: usize, value: T) -> bool;
    /// The failure of position `pos` (keep-going calls only). Returns whether it had no
    /// outcome yet.
    fn failure(&mut self, pos: usize, error: Error) -> bool;
}

/// The coordinator's state for one call.
pub(crate) struct Call<K> {
    pub(crate) id: u64,
    pub(crate) indices: TaskList,
    pub(crate) sched: Scheduler,
    pub(crate) sink: K,
    pub(crate) mode: Mode,
    /// Positions with an outcome.
    pub(crate) done: usize,
    /// Failed attempts per position (deaths and timeouts it caused).
    pub(crate) strikes: HashMap<usize, u32>,
    /// Deaths that no task could be blamed for; bounded so a broken machine cannot make
    /// the pool fork forever.
    pub(crate) unexplained_deaths: u32,
    pub(crate) progress: Progress,
    /// The board's total of finished tasks when the call began.
    pub(crate) baseline: u64,
}

impl<K> Call<K> {
    pub(crate) fn len(&self) -> usize {
        self.indices.len()
    }

    pub(crate) fn finished(&self) -> bool {
        self.done >= self.indices.len()
    }
}

/// `map` and `map_results`: a slot per position, failures aside.
pub(crate) struct Collect<R> {
    pub(crate) values: Vec<Option<R>>,
    pub(crate) failures: HashMap<usize, Error>,
}

impl<R> Collect<R> {
    /// `n` empty slots, allocated fallibly.
    pub(crate) fn new(n: usize) -> Result<Collect<R>, Error> {
        Ok(Collect {
            values: super::empty_slots(n)?,
            failures: HashMap::new(),
        })
    }

    fn fresh(&self, pos: usize) -> bool {
        self.values[pos].is_none()
            && (self.failures.is_empty() || !self.failures.contains_key(&pos))
    }
}

impl<R> Sink<R> for Collect<R> {
    #[inline]
    fn value(&mut self, start: usize, _: usize, value: R) -> bool {
        let fresh = self.fresh(start);
        self.values[start] = Some(value);
        fresh
    }

    fn failure(&mut self, pos: usize, error: Error) -> bool {
        let fresh = self.fresh(pos);
        self.failures.insert(pos, error);
        fresh
    }
}

/// `imap`: the outcomes of positions `next..`, in order, as they arrive.
pub(crate) struct Window<R> {
    /// The first position not yet given to the consumer.
    pub(crate) next: usize,
    /// Outcome of position `next + k` at `k`.
    pub(crate) slots: VecDeque<Option<Result<R, Error>>>,
}

impl<R> Window<R> {
    pub(crate) fn new() -> Window<R> {
        Window {
            next: 0,
            slots: VecDeque::new(),
        }
    }

    fn put(&mut self, pos: usize, outcome: Result<R, Error>) -> bool {
        let Some(k) = pos.checked_sub(self.next) else {
            return false;
        };
        if self.slots.len() <= k {
            self.slots.resize_with(k + 1, || None);
        }
        let fresh = self.slots[k].is_none();
        self.slots[k] = Some(outcome);
        fresh
    }

    /// Whether the consumer's next outcome is here.
    pub(crate) fn ready(&self) -> bool {
        matches!(self.slots.front(), Some(Some(_)))
    }

    /// The consumer's next outcome, if it is here.
    pub(crate) fn pop(&mut self) -> Option<Result<R, Error>> {
        if !self.ready() {
            return None;
        }
        self.next += 1;
        self.slots.pop_front().flatten()
    }
}

impl<R> Sink<R> for Window<R> {
    fn value(&mut self, start: usize, _: usize, value: R) -> bool {
        self.put(start, Ok(value))
    }

    fn failure(&mut self, pos: usize, error: Error) -> bool {
        self.put(pos, Err(error))
    }
}

/// `imap_unordered`: outcomes in the order they arrived.
pub(crate) struct Arrivals<R> {
    pub(crate) queue: VecDeque<(usize, Result<R, Error>)>,
    /// Outcomes given to the consumer so far.
    pub(crate) taken: usize,
}

impl<R> Sink<R> for Arrivals<R> {
    fn value(&mut self, start: usize, _: usize, value: R) -> bool {
        self.queue.push_back((start, Ok(value)));
        true
    }

    fn failure(&mut self, pos: usize, error: Error) -> bool {
        self.queue.push_back((pos, Err(error)));
        true
    }
}

/// `fold`: partials reduced in position order as soon as they join the prefix.
pub(crate) struct Reduce<'r, T, Re> {
    pub(crate) reduce: &'r Re,
    /// The reduction of positions `0..frontier`.
    pub(crate) acc: Option<T>,
    pub(crate) frontier: usize,
    /// Partials past the frontier, by first position: `(count, partial)`.
    pub(crate) pending: BTreeMap<usize, (usize, T)>,
}

impl<T, Re: Fn(T, T) -> T> Reduce<'_, T, Re> {
    fn absorb(&mut self, value: T) {
        self.acc = Some(match self.acc.take() {
            Some(acc) => (self.reduce)(acc, value),
            None => value,
        });
    }
}

impl<T, Re: Fn(T, T) -> T> Sink<T> for Reduce<'_, T, Re> {
    fn value(&mut self, start: usize, count: usize, value: T) -> bool {
        if start < self.frontier || self.pending.contains_key(&start) {
            return false;
        }
        if start != self.frontier {
            self.pending.insert(start, (count, value));
            return true;
        }
        self.absorb(value);
        self.frontier += count;
        while let Some((count, value)) = self.pending.remove(&self.frontier) {
            self.absorb(value);
            self.frontier += count;
        }
        true
    }

    fn failure(&mut self, _: usize, _: Error) -> bool {
        // Folds fail fast: the call ends with the error before a sink sees it.
        false
    }
}

/// Installs the interrupt handlers for as long as the guard lives.
pub(crate) fn catch_interrupts() -> Result<Interrupts, Error> {
    Interrupts::catch().map_err(|e| Error::Channel {
        worker: None,
        message: format!("could not install signal handlers: {e}"),
    })
}

/// Runs a call that collects every outcome, on a team that has its workers.
pub(crate) fn run_collect<J: Job>(
    team: &mut Team<J>,
    pool: &Pool,
    indices: TaskList,
    mode: Mode,
) -> Result<Collect<J::Out>, Error>
where
    J::Out: DeserializeOwned,
{
    let n = indices.len();
    let _interrupts = catch_interrupts()?;
    let progress = pool.progress_for(n);
    // After the forks: the workers neither inherit the slots nor make the coordinator
    // take a copy-on-write fault per page as it fills them (measured: 15% of the
    // coordinator's time for a million trivial tasks).
    let sink = Collect::new(n)?;
    let mut call = team.begin(indices, n, sink, mode, progress);
    match run_to_end(team, &mut call) {
        Ok(()) => {
            team.end(&call);
            call.progress.finish(n as u64);
            Ok(call.sink)
        }
        Err(e) => {
            team.abandon(&call);
            call.progress.abandon();
            Err(e)
        }
    }
}

/// Runs a fold call on a team that has its workers.
pub(crate) fn run_fold<J, Re>(
    team: &mut Team<J>,
    pool: &Pool,
    indices: TaskList,
    reduce: &Re,
) -> Result<J::Out, Error>
where
    J: Job,
    J::Out: DeserializeOwned,
    Re: Fn(J::Out, J::Out) -> J::Out,
{
    let n = indices.len();
    let _interrupts = catch_interrupts()?;
    let progress = pool.progress_for(n);
    let sink = Reduce {
        reduce,
        acc: None,
        frontier: 0,
        pending: Default::default(),
    };
    let mut call = team.begin(indices, n, sink, Mode::FailFast, progress);
    match run_to_end(team, &mut call) {
        Ok(()) => {
            team.end(&call);
            call.progress.finish(n as u64);
            call.sink.acc.ok_or_else(missing_result)
        }
        Err(e) => {
            team.abandon(&call);
            call.progress.abandon();
            Err(e)
        }
    }
}

/// Starts a call and runs it until every position has an outcome. The caller's code that
/// runs here (a result's `Deserialize`, a fold's `reduce`) may panic: the workers still
/// holding the call's work are then killed before the panic goes on, as for an error, so
/// a crew's next call starts from what its workers really hold.
fn run_to_end<J: Job, K: Sink<J::Out>>(team: &mut Team<J>, call: &mut Call<K>) -> Result<(), Error>
where
    J::Out: DeserializeOwned,
{
    let run =
        std::panic::AssertUnwindSafe(|| team.start(call).and_then(|()| team.pump(call, |_| false)));
    match std::panic::catch_unwind(run) {
        Ok(outcome) => outcome,
        Err(panic) => {
            team.abandon(call);
            call.progress.abandon();
            std::panic::resume_unwind(panic)
        }
    }
}

/// `map`'s values, every one of them present.
pub(crate) fn collect_values<R>(sink: Collect<R>) -> Result<Vec<R>, Error> {
    sink.values
        .into_iter()
        .collect::<Option<Vec<R>>>()
        .ok_or_else(missing_result)
}

/// `map_results`' outcomes, a value or a failure for each position.
pub(crate) fn collect_results<R>(sink: Collect<R>) -> Vec<Result<R, Error>> {
    let Collect {
        values,
        mut failures,
    } = sink;
    values
        .into_iter()
        .enumerate()
        .map(|(pos, value)| {
            value.ok_or_else(|| failures.remove(&pos).unwrap_or_else(missing_result))
        })
        .collect()
}
