//! Which positions go to which worker next: per-worker contiguous ranges, probing then
//! adaptive chunk sizes, stealing from ranges and from what other workers hold but have
//! not started, re-queued positions of dead workers. Pure bookkeeping over the workers'
//! gates (one shared word each, see `gate.rs`), no I/O: see `README.md` beside this file
//! for the protocol and the scheduling contract.

mod gate;
#[cfg(test)]
mod sim;

use std::collections::VecDeque;
use std::ops::Range;

pub(crate) use gate::Gate;
use gate::MAX_CHUNK;

/// How many chunks each worker holds at once (one running, one queued behind it).
pub(crate) const IN_FLIGHT: usize = 2;
/// Adaptive chunks take at most this fraction of the worker's remaining range.
const SPLIT: usize = 4;
/// Adaptive chunks aim to hold at least this much work once task cost is known (times a
/// factor for many workers, so the coordinator is never the bottleneck).
const MIN_CHUNK_NS: f64 = 200_000.0;
/// ... and at most this much, so results travel in batches of bounded size and time.
const MAX_CHUNK_NS: f64 = 50_000_000.0;
/// Workers claim positions several at a time when tasks are cheap: a block holds about
/// this much measured work (at most `MAX_BLOCK` tasks), so the claim's atomic swap costs
/// little per task while a thief can still take all but a few microseconds of a chunk.
const BLOCK_NS: f64 = 2_000.0;
const MAX_BLOCK: usize = 64;
/// How many times a steal from a worker's gate is retried when the worker races it.
const STEAL_TRIES: usize = 8;
/// The unclaimed end of a running chunk is split only when it holds more measured work
/// than this (about a round trip): less would finish sooner where it is.
const MIN_STEAL_NS: f64 = 20_000.0;

/// What one attempt at taking from a victim did.
#[derive(Debug)]
enum Take {
    /// Positions moved to the thief's range; the victim, if it must be sent its range.
    Took(Option<usize>),
    /// The victim holds nothing worth taking.
    Nothing,
    /// The victim changed its gate between the look and the swap.
    Raced,
}

/// The gates of all workers, as the scheduler reads and changes them.
pub(crate) trait Gates {
    /// The gate of worker `w`.
    fn gate(&self, w: usize) -> Gate<'_>;
}

/// A chunk handed to a worker: its sequence number (per worker process, from 1) and the
/// positions it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) seq: u64,
    pub(crate) range: Range<usize>,
}

/// The scheduler's state for one `map` call.
#[derive(Debug)]
pub(crate) struct Scheduler {
    /// Positions each worker owns and has not been sent yet.
    ranges: Vec<Range<usize>>,
    /// Positions given back (their worker died); handed out before anything else.
    requeued: VecDeque<Range<usize>>,
    /// Positions below the limit that are in no worker's range yet (see `extend_to`).
    unassigned: Range<usize>,
    /// The chunks sent to each worker and not yet answered, in the order sent.
    held: Vec<VecDeque<Chunk>>,
    /// Sequence number of the next chunk for each worker.
    next_seq: Vec<u64>,
    /// Chunks handed to each worker process so far (probes double while cost is unknown).
    handed: Vec<u32>,
    fixed: Option<usize>,
    /// Smallest and largest adaptive chunk, from the measured task cost.
    min_chunk: usize,
    max_chunk: usize,
    /// Exponentially weighted task cost in nanoseconds (0 = unknown).
    task_ns: f64,
}

impl Scheduler {
    /// Splits positions `0..n` into `workers` contiguous ranges of near-equal length.
    pub(crate) fn new(n: usize, workers: usize, chunk_size: Option<usize>) -> Scheduler {
        let workers = workers.max(1);
        let ranges = (0..workers)
            .map(|w| (n * w / workers)..(n * (w + 1) / workers))
            .collect();
        Scheduler {
            ranges,
            requeued: VecDeque::new(),
            unassigned: n..n,
            held: vec![VecDeque::new(); workers],
            next_seq: vec![1; workers],
            handed: vec![0; workers],
            fixed: chunk_size.map(|c| c.clamp(1, MAX_CHUNK)),
            min_chunk: 1,
            max_chunk: MAX_CHUNK,
            task_ns: 0.0,
        }
    }

    /// Positions not yet handed to any worker.
    pub(crate) fn unsent(&self) -> usize {
        self.ranges.iter().map(|r| r.len()).sum::<usize>()
            + self.requeued.iter().map(|r| r.len()).sum::<usize>()
            + self.unassigned.len()
    }

    /// The first position not yet available to hand out: `n` of [`new`](Scheduler::new),
    /// raised by [`extend_to`](Scheduler::extend_to).
    pub(crate) fn limit(&self) -> usize {
        self.unassigned.end
    }

    /// Makes positions up to `limit` available: a streaming call raises it as the consumer
    /// takes results (no chunk is ever handed out at or past the limit), a distributed one
    /// as blocks arrive. The new positions go to workers whose range runs dry, a share at a
    /// time; the caller then calls [`fill`](Scheduler::fill) for its idle workers.
    pub(crate) fn extend_to(&mut self, limit: usize) {
        if limit > self.unassigned.end {
            self.unassigned.end = limit;
        }
    }

    /// Continues from an earlier call on the same worker processes: their chunks are
    /// numbered on from `next_seq` (their gates remember the last), and chunk sizes start
    /// from the task cost measured then (0: unknown, probe again).
    pub(crate) fn resume(&mut self, next_seq: &[u64], task_ns: f64) {
        for (mine, &seq) in self.next_seq.iter_mut().zip(next_seq) {
            *mine = seq;
        }
        if task_ns > 0.0 {
            self.observe(1, task_ns as u64);
        }
    }

    /// Worker `w` has a new process (with a reset gate): its chunks are numbered from 1
    /// and probe again.
    pub(crate) fn restart(&mut self, w: usize) {
        self.next_seq[w] = 1;
        self.handed[w] = 0;
    }

    /// The sequence number the next chunk for worker `w` gets.
    pub(crate) fn next_seq(&self, w: usize) -> u64 {
        self.next_seq[w]
    }

    /// The measured cost of a task in nanoseconds (0 while unknown).
    pub(crate) fn task_ns(&self) -> f64 {
        self.task_ns
    }

    /// The chunks worker `w` holds (sent, not answered), oldest first.
    pub(crate) fn held(&self, w: usize) -> &VecDeque<Chunk> {
        &self.held[w]
    }

    /// Tops worker `w` up to [`IN_FLIGHT`] chunks and returns what to send, to whom, in
    /// order. A worker holding a chunk is topped up only from re-queued positions, its own
    /// range and positions nobody owns yet; a worker holding nothing also steals: the back half of the largest
    /// unsent range, else the back half of what another worker holds and has not started
    /// (which may give that worker a chunk too).
    pub(crate) fn fill(&mut self, w: usize, gates: &impl Gates) -> Vec<(usize, Chunk)> {
        let mut out = Vec::new();
        while self.held[w].len() < IN_FLIGHT {
            if !self.requeued.is_empty() {
                let r = self.requeued.pop_front().unwrap_or(0..0);
                let take = self.chunk_len(w, r.len());
                if take < r.len() {
                    self.requeued.push_front(r.start + take..r.end);
                }
                out.push((w, self.hand(w, r.start..r.start + take)));
                continue;
            }
            if self.ranges[w].is_empty() && !self.unassigned.is_empty() {
                // A share of what nobody owns yet: no other worker is deprived of anything.
                let share = self.unassigned.len().div_ceil(self.ranges.len());
                let start = self.unassigned.start;
                self.unassigned.start += share;
                self.ranges[w] = start..start + share;
            }
            if self.ranges[w].is_empty() {
                if !self.held[w].is_empty() {
                    break;
                }
                if !self.steal_range(w) {
                    match self.steal_held(w, gates) {
                        None => break,
                        // The victim's unopened chunks were all taken: it holds nothing
                        // now and gets its front half back.
                        Some(Some(v)) => {
                            let r = self.ranges[v].clone();
                            let take = self.chunk_len(v, r.len());
                            self.ranges[v] = r.start + take..r.end;
                            out.push((v, self.hand(v, r.start..r.start + take)));
                        }
                        Some(None) => {}
                    }
                }
            }
            let r = self.ranges[w].clone();
            let take = self.chunk_len(w, r.len());
            self.ranges[w] = r.start + take..r.end;
            out.push((w, self.hand(w, r.start..r.start + take)));
        }
        out
    }

    /// Records `range` as sent to `w` and gives it its sequence number.
    fn hand(&mut self, w: usize, range: Range<usize>) -> Chunk {
        let chunk = Chunk {
            seq: self.next_seq[w],
            range,
        };
        self.next_seq[w] += 1;
        self.handed[w] = self.handed[w].saturating_add(1);
        self.held[w].push_back(chunk.clone());
        chunk
    }

    /// Moves the back half of the largest unsent range to `thief`'s (empty) range.
    fn steal_range(&mut self, thief: usize) -> bool {
        let Some(victim) = (0..self.ranges.len())
            .filter(|&v| v != thief)
            .max_by_key(|&v| self.ranges[v].len())
        else {
            return false;
        };
        let r = self.ranges[victim].clone();
        if r.is_empty() {
            return false;
        }
        let mid = r.end - r.len().div_ceil(2);
        self.ranges[victim] = r.start..mid;
        self.ranges[thief] = mid..r.end;
        true
    }

    /// Takes positions another worker holds and has not started into `thief`'s (empty)
    /// range, trying victims from the one with the most: the chunks it has not opened (the
    /// thief gets the back half, the victim keeps the front half as its range), else the
    /// unclaimed back half of the chunk it runs. `None` when there is nothing to take; else
    /// the victim, when it holds nothing any more and must be sent its range again.
    fn steal_held(&mut self, thief: usize, gates: &impl Gates) -> Option<Option<usize>> {
        let mut victims: Vec<(usize, usize)> = (0..self.held.len())
            .filter(|&v| v != thief && !self.held[v].is_empty())
            .map(|v| {
                let word = gates.gate(v).load();
                let unstarted = self.held[v]
                    .iter()
                    .map(|c| word.unclaimed(c.seq, c.range.len()))
                    .sum::<usize>();
                (v, unstarted)
            })
            .filter(|&(_, n)| n > 0)
            .collect();
        victims.sort_by_key(|&(v, n)| (std::cmp::Reverse(n), v));
        for (victim, _) in victims {
            for _ in 0..STEAL_TRIES {
                match self.take_from(thief, victim, gates.gate(victim)) {
                    Take::Took(refill) => return Some(refill),
                    Take::Nothing => break,
                    // The victim moved on between our look and our swap: look again.
                    Take::Raced => {}
                }
            }
        }
        None
    }

    /// One attempt at taking from `victim` (see [`steal_held`](Scheduler::steal_held)).
    fn take_from(&mut self, thief: usize, victim: usize, gate: Gate<'_>) -> Take {
        let word = gate.load();
        let queue = &self.held[victim];
        let open = queue.iter().position(|c| word.ahead(c.seq) == 0);
        let open_unclaimed = open.map_or(0, |k| word.unclaimed(queue[k].seq, 0));
        if let Some(k) = queue.iter().position(|c| word.ahead(c.seq) > 0) {
            let unopened: usize = queue.iter().skip(k).map(|c| c.range.len()).sum();
            if open.is_none() && unopened < 2 {
                // It runs nothing and is about to start its last position: moving that
                // gains nothing.
                return Take::Nothing;
            }
            let (first, last) = (queue[k].seq, queue.back().map_or(0, |c| c.seq));
            if gate.close(first, last) {
                let closed: Vec<Range<usize>> =
                    self.held[victim].drain(k..).map(|c| c.range).collect();
                // Chunks cut one after another from a range join up again; any other (from
                // `requeued`) goes back there.
                let mut joined = closed[0].clone();
                for r in &closed[1..] {
                    if r.start == joined.end {
                        joined.end = r.end;
                    } else {
                        self.requeued
                            .push_front(std::mem::replace(&mut joined, r.clone()));
                    }
                }
                let mid = joined.end - joined.len().div_ceil(2);
                self.ranges[thief] = mid..joined.end;
                if mid > joined.start {
                    // Every range is empty when held work is stolen, the victim's too.
                    self.ranges[victim] = joined.start..mid;
                }
                let idle = self.held[victim].is_empty();
                return Take::Took((idle && !self.ranges[victim].is_empty()).then_some(victim));
            }
            if gate.load().ahead(first) <= 0 {
                return Take::Raced;
            }
            // Refused with the chunks still unopened: too many are skipped already. The
            // chunk it runs can still be split.
        }
        let Some(k) = open else {
            return Take::Nothing;
        };
        if self.task_ns > 0.0 && (open_unclaimed as f64) * self.task_ns < MIN_STEAL_NS {
            // Less work than the round trip it takes to move it.
            return Take::Nothing;
        }
        let chunk = &mut self.held[victim][k];
        let Some(taken) = gate.split(chunk.seq) else {
            return Take::Raced;
        };
        let start = chunk.range.start;
        chunk.range.end = start + taken.start;
        if chunk.range.is_empty() {
            // The worker claimed none of it: it sends no batch for this chunk.
            self.held[victim].remove(k);
        }
        self.ranges[thief] = start + taken.start..start + taken.end;
        Take::Took(None)
    }

    fn chunk_len(&self, w: usize, available: usize) -> usize {
        let want = match (self.fixed, self.task_ns) {
            (Some(c), _) => c,
            // Cost unknown: probe with 1, 2, 4, ... tasks until a batch is measured.
            (None, 0.0) => 1usize << self.handed[w].min(16),
            (None, _) => available
                .div_ceil(SPLIT)
                .clamp(self.min_chunk, self.max_chunk),
        };
        want.clamp(1, available.clamp(1, MAX_CHUNK))
    }

    /// Checks that a batch for `start..start + n` from `w` is the front of its oldest
    /// chunk and removes those positions from what it holds.
    pub(crate) fn complete(&mut self, w: usize, start: usize, n: usize) -> Result<(), String> {
        let queue = &mut self.held[w];
        match queue.front_mut() {
            Some(front) if front.range.start == start && n <= front.range.len() => {
                front.range.start += n;
                if front.range.is_empty() {
                    queue.pop_front();
                }
                Ok(())
            }
            front => Err(format!(
                "unexpected results for positions {start}..{} (expected the front of {:?})",
                start + n,
                front.map(|c| &c.range)
            )),
        }
    }

    /// Gives positions back, for example the unfinished chunks of a worker that died.
    pub(crate) fn requeue(&mut self, range: Range<usize>) {
        if !range.is_empty() {
            self.requeued.push_back(range);
        }
    }

    /// Worker `w`'s process is gone: its unsent range is re-queued and the chunks it held
    /// are returned (for the caller to re-queue, less any task to blame). A replacement
    /// starts afresh (sequence numbers from 1, probing chunks), with a reset gate.
    pub(crate) fn surrender(&mut self, w: usize) -> Vec<Range<usize>> {
        let r = std::mem::replace(&mut self.ranges[w], 0..0);
        self.requeue(r);
        self.next_seq[w] = 1;
        self.handed[w] = 0;
        self.held[w].drain(..).map(|c| c.range).collect()
    }

    /// How many positions a worker should claim at once, from the measured task cost (one
    /// while it is unknown).
    pub(crate) fn claim_block(&self) -> usize {
        if self.task_ns == 0.0 {
            return 1;
        }
        ((BLOCK_NS / self.task_ns) as usize).clamp(1, MAX_BLOCK)
    }

    /// Records that `tasks` tasks took `busy_ns` nanoseconds in a worker, which sets the
    /// smallest and largest adaptive chunk so that a chunk is worth its round trip.
    pub(crate) fn observe(&mut self, tasks: usize, busy_ns: u64) {
        if tasks == 0 {
            return;
        }
        let per_task = (busy_ns as f64 / tasks as f64).max(1.0);
        self.task_ns = if self.task_ns == 0.0 {
            per_task
        } else {
            0.7 * self.task_ns + 0.3 * per_task
        };
        // Many workers answer more often: keep the coordinator's message rate bounded.
        let crowd = self.ranges.len().div_ceil(8) as f64;
        self.min_chunk = ((MIN_CHUNK_NS * crowd / self.task_ns).ceil() as usize).clamp(1, 1 << 16);
        self.max_chunk = ((MAX_CHUNK_NS / self.task_ns) as usize).clamp(self.min_chunk, MAX_CHUNK);
    }
}

#[cfg(test)]
mod tests;
