//! The gate: one word of shared memory per worker that decides, atomically, which
//! positions the worker runs and which the coordinator takes back.
//!
//! The word packs `(seq, skip, head, tail)`: `seq` is the sequence number of the last
//! chunk the worker opened, `head` how many of its positions the worker has claimed,
//! `tail` how many it may claim, and `skip` how many of the chunks after `seq` (sent, not
//! yet opened) the coordinator has taken back. The worker claims positions one at a time
//! (`head += 1` while `head < tail`) and opens its chunks in order; the coordinator lowers
//! `tail` to take the unclaimed back of the open chunk, or raises `skip` to take back
//! chunks the worker has not opened. Every change is a compare-and-swap of the whole word,
//! so a position is either claimed by the worker or taken back by the coordinator, never
//! both: see `README.md` beside this file.

use std::sync::atomic::{AtomicU64, Ordering};

/// The largest chunk a gate can describe (`head` and `tail` have 23 bits each).
pub(crate) const MAX_CHUNK: usize = (1 << FIELD_BITS) - 1;
/// How many unopened chunks of one worker can be taken back at once.
pub(crate) const MAX_SKIP: u64 = (1 << SKIP_BITS) - 1;
const SEQ_BITS: u32 = 14;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
const SKIP_BITS: u32 = 4;
const FIELD_BITS: u32 = 23;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;

/// A gate's word, unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word {
    /// The last opened chunk's sequence number, modulo 2^14 (0: none yet).
    pub(crate) seq: u64,
    /// Chunks after `seq` that were taken back before the worker opened them.
    pub(crate) skip: u64,
    /// Positions of chunk `seq` the worker has claimed.
    pub(crate) head: usize,
    /// Positions of chunk `seq` the worker may claim.
    pub(crate) tail: usize,
}

impl Word {
    fn pack(self) -> u64 {
        debug_assert!(self.head <= MAX_CHUNK && self.tail <= MAX_CHUNK && self.skip <= MAX_SKIP);
        ((self.seq & SEQ_MASK) << (SKIP_BITS + 2 * FIELD_BITS))
            | (self.skip << (2 * FIELD_BITS))
            | ((self.head as u64 & FIELD_MASK) << FIELD_BITS)
            | (self.tail as u64 & FIELD_MASK)
    }

    fn unpack(v: u64) -> Word {
        Word {
            seq: v >> (SKIP_BITS + 2 * FIELD_BITS),
            skip: (v >> (2 * FIELD_BITS)) & MAX_SKIP,
            head: ((v >> FIELD_BITS) & FIELD_MASK) as usize,
            tail: (v & FIELD_MASK) as usize,
        }
    }

    /// How far chunk `seq` is ahead of the last opened one (modulo 2^14, as a signed
    /// distance: negative for a chunk opened before it).
    pub(crate) fn ahead(self, seq: u64) -> i64 {
        let d = seq.wrapping_sub(self.seq) & SEQ_MASK;
        if d >= 1 << (SEQ_BITS - 1) {
            d as i64 - (1 << SEQ_BITS)
        } else {
            d as i64
        }
    }

    /// Positions of chunk `seq` (of length `len`) that the worker has neither claimed nor
    /// finished, as seen in this word: all of an unopened chunk, the unclaimed rest of the
    /// open one, none of an earlier one.
    pub(crate) fn unclaimed(self, seq: u64, len: usize) -> usize {
        match self.ahead(seq) {
            0 => self.tail - self.head,
            d if d > 0 => len,
            _ => 0,
        }
    }
}

/// A worker's gate, over a word in shared memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gate<'a>(pub(crate) &'a AtomicU64);

impl Gate<'_> {
    /// The word as it is now.
    pub(crate) fn load(self) -> Word {
        Word::unpack(self.0.load(Ordering::Acquire))
    }

    /// Resets the gate for a new worker process (before it is forked): no chunk yet.
    pub(crate) fn reset(self) {
        self.0.store(0, Ordering::Release);
    }

    fn swap(self, from: Word, to: Word) -> Result<(), Word> {
        self.0
            .compare_exchange(from.pack(), to.pack(), Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(Word::unpack)
    }

    /// Worker side: opens chunk `seq` of `len` positions, the next one received. Returns
    /// false when the coordinator took it back before the worker got to it: the worker
    /// skips it silently (the coordinator already counts it as given back).
    pub(crate) fn open(self, seq: u64, len: usize) -> bool {
        let mut now = self.load();
        loop {
            let to = match now.skip {
                0 => Word {
                    seq,
                    skip: 0,
                    head: 0,
                    tail: len,
                },
                n => Word {
                    seq,
                    skip: n - 1,
                    head: 0,
                    tail: 0,
                },
            };
            match self.swap(now, to) {
                Ok(()) => return now.skip == 0,
                Err(seen) => now = seen,
            }
        }
    }

    /// Worker side: claims the next position of the open chunk `seq`; its offset in the
    /// chunk, or `None` when the rest of the chunk was taken back or is done.
    pub(crate) fn claim(self, seq: u64) -> Option<usize> {
        let mut now = self.load();
        loop {
            if now.ahead(seq) != 0 || now.head >= now.tail {
                return None;
            }
            let to = Word {
                head: now.head + 1,
                ..now
            };
            match self.swap(now, to) {
                Ok(()) => return Some(now.head),
                Err(seen) => now = seen,
            }
        }
    }

    /// Coordinator side: takes back chunks `first..=last`, sent to the worker and not yet
    /// opened, where `first` is the first one not already taken back. Fails, changing
    /// nothing, once the worker has opened `first` (or when more than [`MAX_SKIP`] chunks
    /// would be skipped).
    pub(crate) fn close(self, first: u64, last: u64) -> bool {
        let mut now = self.load();
        loop {
            if now.ahead(first) != now.skip as i64 + 1 {
                return false;
            }
            let skip = last.wrapping_sub(now.seq) & SEQ_MASK;
            if skip > MAX_SKIP {
                return false;
            }
            match self.swap(now, Word { skip, ..now }) {
                Ok(()) => return true,
                Err(seen) => now = seen,
            }
        }
    }

    /// Coordinator side: takes back the unclaimed back half (rounded up) of the open chunk
    /// `seq`; returns the offsets taken, or `None` when nothing is left to take.
    pub(crate) fn split(self, seq: u64) -> Option<std::ops::Range<usize>> {
        let mut now = self.load();
        loop {
            if now.ahead(seq) != 0 || now.head >= now.tail {
                return None;
            }
            let keep = now.tail - (now.tail - now.head).div_ceil(2);
            match self.swap(now, Word { tail: keep, ..now }) {
                Ok(()) => return Some(keep..now.tail),
                Err(seen) => now = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_sequence_numbers_wrap() {
        let w = Word {
            seq: SEQ_MASK,
            skip: MAX_SKIP,
            head: 3,
            tail: MAX_CHUNK,
        };
        assert_eq!(Word::unpack(w.pack()), w);
        assert_eq!(w.ahead(0), 1);
        assert_eq!(w.ahead(SEQ_MASK), 0);
        assert_eq!(w.ahead(SEQ_MASK - 1), -1);
    }

    #[test]
    fn a_worker_claims_until_the_coordinator_splits_the_rest() {
        let word = AtomicU64::new(0);
        let g = Gate(&word);
        assert!(g.open(1, 10));
        assert_eq!(g.claim(1), Some(0));
        assert_eq!(g.claim(1), Some(1));
        // 8 unclaimed: the back 4 are taken.
        assert_eq!(g.split(1), Some(6..10));
        let claimed: Vec<_> = std::iter::from_fn(|| g.claim(1)).collect();
        assert_eq!(claimed, vec![2, 3, 4, 5]);
        assert_eq!(g.split(1), None);
    }

    #[test]
    fn a_closed_chunk_is_skipped_and_the_next_one_opens() {
        let word = AtomicU64::new(0);
        let g = Gate(&word);
        assert!(g.open(1, 2));
        assert_eq!(g.claim(1), Some(0));
        // Chunks 2 and 3 are queued behind chunk 1; the coordinator takes both back.
        assert!(g.close(2, 3));
        assert!(!g.close(2, 3), "a chunk is taken back at most once");
        assert_eq!(g.claim(1), Some(1), "the open chunk runs on");
        assert_eq!(g.claim(1), None);
        // Chunk 4 was sent after the close; it can be taken back on its own later.
        assert!(g.close(4, 4));
        assert!(!g.open(2, 5));
        assert!(!g.open(3, 5));
        assert!(!g.open(4, 5));
        assert!(g.open(5, 1));
        assert!(!g.close(5, 5), "an open chunk cannot be closed, only split");
        assert_eq!(g.claim(5), Some(0));
    }

    #[test]
    fn claims_and_splits_racing_on_two_threads_never_share_a_position() {
        for round in 0..200 {
            let word = AtomicU64::new(0);
            let g = Gate(&word);
            let len = 1000 + round;
            assert!(g.open(1, len));
            let (mine, taken) = std::thread::scope(|s| {
                let worker = s.spawn(|| std::iter::from_fn(|| g.claim(1)).collect::<Vec<_>>());
                let mut taken = Vec::new();
                while let Some(r) = g.split(1) {
                    taken.extend(r);
                    std::hint::spin_loop();
                }
                (worker.join().unwrap(), taken)
            });
            let mut all: Vec<_> = mine.iter().chain(&taken).copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..len).collect::<Vec<_>>());
            assert!(
                mine.windows(2).all(|w| w[1] == w[0] + 1),
                "claims are in order"
            );
        }
    }
}
