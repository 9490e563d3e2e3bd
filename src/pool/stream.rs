//! Streaming calls: `imap` (in order) and `imap_unordered` (as completed), lazy iterators
//! that run the coordinator's loop inside `next()` and hand out no position past their
//! window.

use serde::de::DeserializeOwned;

use super::call::{Arrivals, Call, Mode, Window};
use super::team::Team;
use super::{Pool, TaskList, catch_interrupts};
use crate::error::Error;
use crate::sys;
use crate::worker::Job;

/// How often, at most, a consumer that finds its next result already there lets the
/// coordinator look at its workers (new results, idle workers to feed).
const POLL_NS: u64 = 1_000_000;

/// The team a streaming call runs on: its own (forked for it by `Pool::imap`) or a crew's.
pub(crate) enum Holder<'c, J> {
    Owned(Box<Team<J>>),
    Borrowed(&'c mut Team<J>),
}

impl<J> Holder<'_, J> {
    fn team(&mut self) -> &mut Team<J> {
        match self {
            Holder::Owned(team) => team,
            Holder::Borrowed(team) => team,
        }
    }
}

/// One outcome of [`imap_unordered`](Pool::imap_unordered): the task's index, its
/// position in `indices`, and what it returned (or why it has no result).
///
/// A failure of the call itself ([`Error::Interrupted`], every worker dead) is its last
/// item, with `usize::MAX` as index and position: it is about no task.
#[derive(Debug)]
pub struct Completed<R> {
    /// The task's index, as given in `indices`.
    pub index: usize,
    /// Its position in `indices`.
    pub position: usize,
    /// Its value, or its failure.
    pub result: Result<R, Error>,
}

/// What a streaming call keeps between two items.
struct Stream<'c, J, K> {
    holder: Holder<'c, J>,
    /// `None` once the call is over (every item taken, or a failure of the call).
    call: Option<Call<K>>,
    window: usize,
    last_poll: u64,
    /// `!Send`: the workers die with the thread that forked them.
    _thread: std::marker::PhantomData<*const ()>,
}

impl<'c, J: Job, K: super::call::Sink<J::Out>> Stream<'c, J, K>
where
    J::Out: DeserializeOwned,
{
    fn start(
        mut holder: Holder<'c, J>,
        pool: &Pool,
        indices: TaskList,
        sink: K,
    ) -> Result<Self, Error> {
        let n = indices.len();
        if n == 0 {
            return Ok(Stream {
                holder,
                call: None,
                window: 0,
                last_poll: 0,
                _thread: std::marker::PhantomData,
            });
        }
        let team = holder.team();
        let window = pool.window(team.size());
        let progress = pool.progress_for(n);
        let mut call = team.begin(indices, window.min(n), sink, Mode::KeepGoing, progress);
        let _interrupts = catch_interrupts()?;
        if let Err(e) = team.start(&mut call) {
            team.abandon(&call);
            return Err(e);
        }
        Ok(Stream {
            holder,
            call: Some(call),
            window,
            last_poll: sys::monotonic_coarse_ns(),
            _thread: std::marker::PhantomData,
        })
    }

    /// Runs the coordinator until `ready` holds; raises the window to `taken` positions
    /// past what the consumer has taken (when it moved by half a window, so the handlers
    /// are not installed for every item). `Err` ends the call.
    fn advance(&mut self, taken: usize, ready: impl Fn(&K) -> bool) -> Result<(), Error> {
        let Some(call) = self.call.as_mut() else {
            return Ok(());
        };
        let team = self.holder.team();
        let limit = taken.saturating_add(self.window).min(call.len());
        let moved = limit >= call.sched.limit() + self.window / 2 || limit == call.len();
        let now = sys::monotonic_coarse_ns();
        let waiting = !ready(&call.sink) && !call.finished();
        let due = now.saturating_sub(self.last_poll) >= POLL_NS;
        if !(waiting || due || (moved && limit > call.sched.limit())) {
            return Ok(());
        }
        self.last_poll = now;
        // Held only while the coordinator works: between two items, SIGINT and SIGTERM
        // do what the caller's program says.
        let _interrupts = catch_interrupts()?;
        let run = std::panic::AssertUnwindSafe(|| {
            if moved {
                team.extend(call, limit);
            }
            if waiting {
                team.pump(call, |c| ready(&c.sink))
            } else {
                team.poll(call)
            }
        });
        match std::panic::catch_unwind(run) {
            Ok(outcome) => outcome,
            Err(panic) => {
                // The caller's code (a result's `Deserialize`) panicked halfway through a
                // batch, whose other outcomes are lost: the call ends as if dropped, so a
                // `next()` after a caught panic ends the stream rather than wait for good.
                if let Some(call) = self.call.take() {
                    self.holder.team().abandon(&call);
                    call.progress.abandon();
                }
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// The call is over: keep what the next call on the crew starts from, or stop and
    /// reap a team forked for this call.
    fn close(&mut self) {
        let Some(call) = self.call.take() else {
            return;
        };
        let finished = call.finished();
        let team = self.holder.team();
        match finished {
            true => {
                team.end(&call);
                call.progress.finish(call.len() as u64);
                if let Holder::Owned(team) = &mut self.holder
                    && let Ok(_interrupts) = catch_interrupts()
                {
                    team.finish();
                }
            }
            false => {
                team.abandon(&call);
                call.progress.abandon();
            }
        }
    }

    /// A failure of the call: it ends, its workers killed and reaped.
    fn fail(&mut self, error: Error) -> Error {
        if let Some(call) = self.call.take() {
            self.holder.team().abandon(&call);
            call.progress.abandon();
        }
        error
    }
}

impl<J, K> Drop for Stream<'_, J, K> {
    fn drop(&mut self) {
        // Dropped early: the workers still holding this call's tasks are killed and
        // reaped now (all of them, for a team of its own, when the holder drops).
        if let Some(call) = self.call.take() {
            self.holder.team().abandon(&call);
            call.progress.abandon();
        }
    }
}

/// The iterator of [`Pool::imap`] and [`Crew::imap`](super::Crew::imap): each task's
/// `Result`, in the order of `indices`. `!Send`, like a [`Crew`](super::Crew): its workers
/// die with the thread that forked them.
pub struct Imap<'c, J: Job> {
    stream: Stream<'c, J, Window<J::Out>>,
}

impl<'c, J: Job> Imap<'c, J>
where
    J::Out: DeserializeOwned,
{
    pub(crate) fn start(
        holder: Holder<'c, J>,
        pool: &Pool,
        indices: TaskList,
    ) -> Result<Self, Error> {
        Ok(Imap {
            stream: Stream::start(holder, pool, indices, Window::new())?,
        })
    }
}

impl<J: Job> Iterator for Imap<'_, J>
where
    J::Out: DeserializeOwned,
{
    type Item = Result<J::Out, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let call = self.stream.call.as_ref()?;
        if call.sink.next >= call.len() {
            self.stream.close();
            return None;
        }
        let taken = call.sink.next;
        if let Err(e) = self.stream.advance(taken, Window::ready) {
            return Some(Err(self.stream.fail(e)));
        }
        let call = self.stream.call.as_mut()?;
        let item = call.sink.pop();
        if call.sink.next >= call.len() {
            self.stream.close();
        }
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.stream.call {
            Some(call) => {
                let left = call.len() - call.sink.next;
                (left, Some(left + 1))
            }
            None => (0, Some(0)),
        }
    }
}

/// The iterator of [`Pool::imap_unordered`] and
/// [`Crew::imap_unordered`](super::Crew::imap_unordered): each task's outcome as it
/// arrives.
pub struct ImapUnordered<'c, J: Job> {
    stream: Stream<'c, J, Arrivals<J::Out>>,
}

impl<'c, J: Job> ImapUnordered<'c, J>
where
    J::Out: DeserializeOwned,
{
    pub(crate) fn start(
        holder: Holder<'c, J>,
        pool: &Pool,
        indices: TaskList,
    ) -> Result<Self, Error> {
        let sink = Arrivals {
            queue: Default::default(),
            taken: 0,
        };
        Ok(ImapUnordered {
            stream: Stream::start(holder, pool, indices, sink)?,
        })
    }
}

impl<J: Job> Iterator for ImapUnordered<'_, J>
where
    J::Out: DeserializeOwned,
{
    type Item = Completed<J::Out>;

    fn next(&mut self) -> Option<Self::Item> {
        let call = self.stream.call.as_ref()?;
        if call.sink.taken >= call.len() {
            self.stream.close();
            return None;
        }
        let taken = call.sink.taken;
        if let Err(e) = self
            .stream
            .advance(taken, |sink: &Arrivals<J::Out>| !sink.queue.is_empty())
        {
            let error = self.stream.fail(e);
            // The call's own failure has no task: it names none.
            return Some(Completed {
                index: usize::MAX,
                position: usize::MAX,
                result: Err(error),
            });
        }
        let call = self.stream.call.as_mut()?;
        let (position, result) = call.sink.queue.pop_front()?;
        call.sink.taken += 1;
        let index = call.indices.at(position);
        if call.sink.taken >= call.len() {
            self.stream.close();
        }
        Some(Completed {
            index,
            position,
            result,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.stream.call {
            Some(call) => {
                let left = call.len() - call.sink.taken;
                (left, Some(left + 1))
            }
            None => (0, Some(0)),
        }
    }
}

impl<J: Job> std::fmt::Debug for Imap<'_, J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field(
                "left",
                &self.stream.call.as_ref().map(|c| c.len() - c.sink.next),
            )
            .finish_non_exhaustive()
    }
}

impl<J: Job> std::fmt::Debug for ImapUnordered<'_, J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapUnordered")
            .field(
                "left",
                &self.stream.call.as_ref().map(|c| c.len() - c.sink.taken),
            )
            .finish_non_exhaustive()
    }
}
