//! Which positions go to which worker next: per-worker contiguous ranges, adaptive chunk
//! sizes, stealing the back half of the largest range, and re-queued positions of dead
//! workers. Pure bookkeeping, no I/O: see `README.md` beside this file for the protocol.

use std::collections::VecDeque;
use std::ops::Range;

/// How many chunks each worker holds at once (one running, one queued behind it).
pub(crate) const IN_FLIGHT: usize = 2;
/// Adaptive chunks take this fraction of the worker's remaining range.
const SPLIT: usize = 4;
/// Adaptive chunks aim to hold at least this much work once task cost is known.
const MIN_CHUNK_NS: u64 = 200_000;

/// The scheduler's state for one `map` call.
#[derive(Debug)]
pub(crate) struct Scheduler {
    /// Positions each worker owns and has not been sent yet.
    ranges: Vec<Range<usize>>,
    /// Positions given back (their worker died); handed out before anything else.
    requeued: VecDeque<Range<usize>>,
    fixed: Option<usize>,
    /// Smallest adaptive chunk, from the measured task cost.
    min_chunk: usize,
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
            fixed: chunk_size.map(|c| c.max(1)),
            min_chunk: 1,
            task_ns: 0.0,
        }
    }

    /// Positions not yet handed to any worker.
    pub(crate) fn unsent(&self) -> usize {
        self.ranges.iter().map(|r| r.len()).sum::<usize>()
            + self.requeued.iter().map(|r| r.len()).sum::<usize>()
    }

    /// The next chunk for `worker`: re-queued positions first, then the front of its own
    /// range, and when that is empty, the back half of the largest other range, stolen.
    pub(crate) fn next_chunk(&mut self, worker: usize) -> Option<Range<usize>> {
        if let Some(r) = self.requeued.pop_front() {
            let take = self.chunk_len(r.len());
            if take < r.len() {
                self.requeued.push_front(r.start + take..r.end);
            }
            return Some(r.start..r.start + take);
        }
        if self.ranges[worker].is_empty() {
            let victim = (0..self.ranges.len())
                .filter(|&v| v != worker)
                .max_by_key(|&v| self.ranges[v].len())?;
            let r = self.ranges[victim].clone();
            if r.is_empty() {
                return None;
            }
            let mid = r.end - r.len().div_ceil(2);
            self.ranges[victim] = r.start..mid;
            self.ranges[worker] = mid..r.end;
        }
        let r = self.ranges[worker].clone();
        let take = self.chunk_len(r.len());
        self.ranges[worker] = r.start + take..r.end;
        Some(r.start..r.start + take)
    }

    fn chunk_len(&self, available: usize) -> usize {
        let want = match self.fixed {
            Some(c) => c,
            None => available.div_ceil(SPLIT).max(self.min_chunk),
        };
        want.clamp(1, available.max(1))
    }

    /// Gives positions back, for example the unfinished chunks of a worker that died.
    pub(crate) fn requeue(&mut self, range: Range<usize>) {
        if !range.is_empty() {
            self.requeued.push_back(range);
        }
    }

    /// A worker is gone for good: what it owned and had not been sent goes back.
    pub(crate) fn retire(&mut self, worker: usize) {
        let r = std::mem::replace(&mut self.ranges[worker], 0..0);
        self.requeue(r);
    }

    /// Records that `tasks` tasks took `busy_ns` nanoseconds in a worker, which sets the
    /// smallest adaptive chunk so that a chunk is worth its round trip.
    pub(crate) fn observe(&mut self, tasks: usize, busy_ns: u64) {
        if tasks == 0 {
            return;
        }
        let per_task = busy_ns as f64 / tasks as f64;
        self.task_ns = if self.task_ns == 0.0 {
            per_task
        } else {
            0.7 * self.task_ns + 0.3 * per_task
        };
        self.min_chunk =
            ((MIN_CHUNK_NS as f64 / self.task_ns.max(1.0)).ceil() as usize).clamp(1, 1 << 16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Plays a random interleaving of completions, deaths and steals, and checks that
    /// every position is handed out exactly once (re-queued ones once more per death).
    fn play(n: usize, workers: usize, chunk: Option<usize>, script: &[(u8, u8)]) {
        let mut s = Scheduler::new(n, workers, chunk);
        let mut held: Vec<VecDeque<Range<usize>>> = vec![VecDeque::new(); workers];
        let mut finished = vec![0u32; n];
        let mut alive = vec![true; workers];
        let mut steps = script.iter().cycle();
        let mut guard = 0;
        loop {
            guard += 1;
            assert!(guard < 100 * n + 10_000, "scheduler did not make progress");
            for w in 0..workers {
                while alive[w] && held[w].len() < IN_FLIGHT {
                    match s.next_chunk(w) {
                        Some(c) => {
                            assert!(!c.is_empty() && c.end <= n);
                            held[w].push_back(c);
                        }
                        None => break,
                    }
                }
            }
            if held.iter().all(|h| h.is_empty()) {
                break;
            }
            let &(pick, action) = steps.next().unwrap();
            let w = (0..workers)
                .map(|k| (pick as usize + k) % workers)
                .find(|&w| !held[w].is_empty())
                .unwrap();
            if action % 11 == 0 && alive.iter().filter(|&&a| a).count() > 1 {
                // The worker dies: its chunks come back.
                alive[w] = false;
                for c in held[w].drain(..) {
                    s.requeue(c);
                }
                s.retire(w);
            } else {
                let c = held[w].pop_front().unwrap();
                s.observe(c.len(), c.len() as u64 * (action as u64 * 1000));
                for p in c {
                    finished[p] += 1;
                }
            }
        }
        assert_eq!(s.unsent(), 0);
        assert!(
            finished.iter().all(|&f| f == 1),
            "a position ran a number of times other than once"
        );
    }

    proptest! {
        #[test]
        fn every_position_runs_exactly_once(
            n in 0usize..3000,
            workers in 1usize..9,
            chunk in proptest::option::of(1usize..50),
            script in proptest::collection::vec((any::<u8>(), any::<u8>()), 1..64),
        ) {
            play(n, workers, chunk, &script);
        }
    }

    #[test]
    fn ranges_are_contiguous_and_cover_everything() {
        let s = Scheduler::new(10, 3, None);
        assert_eq!(s.ranges, vec![0..3, 3..6, 6..10]);
        assert_eq!(s.unsent(), 10);
    }

    #[test]
    fn adaptive_chunks_shrink_then_a_thief_takes_the_back_half() {
        let mut s = Scheduler::new(1000, 2, None);
        let first = s.next_chunk(0).unwrap();
        assert_eq!(first, 0..125);
        let second = s.next_chunk(0).unwrap();
        assert!(second.len() < first.len());
        // Worker 1 empties its own range, then steals from worker 0's back half.
        while !s.ranges[1].is_empty() {
            s.next_chunk(1).unwrap();
        }
        let before = s.ranges[0].clone();
        let stolen = s.next_chunk(1).unwrap();
        assert_eq!(s.ranges[0].start, before.start);
        assert!(s.ranges[0].end < before.end && stolen.start >= s.ranges[0].end);
    }

    #[test]
    fn fixed_chunk_size_is_kept() {
        let mut s = Scheduler::new(10, 2, Some(3));
        assert_eq!(s.next_chunk(0), Some(0..3));
        assert_eq!(s.next_chunk(0), Some(3..5));
        assert_eq!(s.next_chunk(1), Some(5..8));
    }

    #[test]
    fn cheap_tasks_raise_the_smallest_chunk() {
        let mut s = Scheduler::new(1_000_000, 2, None);
        s.observe(1000, 1_000_000); // 1 us per task
        assert_eq!(s.min_chunk, 200);
    }
}
