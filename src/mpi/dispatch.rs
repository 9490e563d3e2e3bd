//! The root's book of blocks: which positions each rank holds, and how big the next block
//! is. Pure logic, driven by the root's link thread (and by the property tests with an
//! in-memory stand-in for MPI).
//!
//! Positions `0..total` are handed out front to back in contiguous blocks. A block is
//! *held* by one rank from its grant until that rank reports it done or failed; a rank
//! holds at most [`OUTSTANDING`] blocks, so it always has the next one in hand while the
//! current one runs. The sizes shrink (guided self-scheduling: half of an even share of
//! what is left), and are capped by what the rank has shown it runs in `block_time`, so a
//! failure stops every rank within about one block's time and the tail stays short.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// Blocks a rank holds at once: the one it runs and the one it has in hand.
pub(crate) const OUTSTANDING: usize = 2;

/// Positions `start..end` of a call's `indices`, granted to one rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    /// Unique within the call.
    pub(crate) id: u64,
    /// First position.
    pub(crate) start: usize,
    /// One past the last position.
    pub(crate) end: usize,
}

impl Block {
    /// Positions in the block.
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }
}

/// The answer to a rank's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    /// Run these positions.
    Block(Block),
    /// Every position has been handed out.
    NoMore,
}

/// A message that breaks the protocol: a bug, never a user error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Misstep {
    /// A request from a rank that already holds [`OUTSTANDING`] blocks.
    TooManyRequests { rank: usize, held: usize },
    /// A report about a block the rank does not hold.
    NotHeld { rank: usize, id: u64 },
    /// A rank outside the communicator.
    NoSuchRank { rank: usize },
}

impl fmt::Display for Misstep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misstep::TooManyRequests { rank, held } => write!(
                f,
                "rank {rank} asked for a block while holding {held} (at most {OUTSTANDING})"
            ),
            Misstep::NotHeld { rank, id } => {
                write!(f, "rank {rank} reported block {id}, which it does not hold")
            }
            Misstep::NoSuchRank { rank } => write!(f, "message from unknown rank {rank}"),
        }
    }
}

#[derive(Debug, Default)]
struct RankBook {
    workers: usize,
    held: Vec<u64>,
    done_positions: u64,
    busy_ns: u64,
}

/// The root's bookkeeping of one cluster call.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    total: usize,
    next: usize,
    completed: usize,
    next_id: u64,
    block_ns: u64,
    held: HashMap<u64, (Block, usize)>,
    ranks: Vec<RankBook>,
}

impl Dispatcher {
    /// A book over positions `0..total`, for ranks with these local worker counts; blocks
    /// are capped at about `block_time` of a rank's measured work.
    pub(crate) fn new(total: usize, workers: &[usize], block_time: Duration) -> Dispatcher {
        Dispatcher {
            total,
            next: 0,
            completed: 0,
            next_id: 0,
            block_ns: u64::try_from(block_time.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            held: HashMap::new(),
            ranks: workers
                .iter()
                .map(|&w| RankBook {
                    workers: w.max(1),
                    ..RankBook::default()
                })
                .collect(),
        }
    }

    fn book(&mut self, rank: usize) -> Result<&mut RankBook, Misstep> {
        self.ranks.get_mut(rank).ok_or(Misstep::NoSuchRank { rank })
    }

    /// Answers a request of `rank` for one more block.
    ///
    /// # Errors
    /// [`Misstep`] when the rank already holds [`OUTSTANDING`] blocks or does not exist.
    pub(crate) fn request(&mut self, rank: usize) -> Result<Grant, Misstep> {
        let ranks = self.ranks.len();
        let (remaining, block_ns) = (self.total - self.next, self.block_ns);
        let book = self.book(rank)?;
        if book.held.len() >= OUTSTANDING {
            return Err(Misstep::TooManyRequests {
                rank,
                held: book.held.len(),
            });
        }
        if remaining == 0 {
            return Ok(Grant::NoMore);
        }
        let size = block_size(remaining, ranks, book, block_ns);
        let block = Block {
            id: self.next_id,
            start: self.next,
            end: self.next + size,
        };
        self.ranks[rank].held.push(block.id);
        self.next_id += 1;
        self.next = block.end;
        self.held.insert(block.id, (block, rank));
        Ok(Grant::Block(block))
    }

    fn release(&mut self, rank: usize, id: u64) -> Result<Block, Misstep> {
        let book = self.book(rank)?;
        let slot = book
            .held
            .iter()
            .position(|&h| h == id)
            .ok_or(Misstep::NotHeld { rank, id })?;
        book.held.swap_remove(slot);
        let (block, _) = self
            .held
            .remove(&id)
            .expect("a block a rank holds is in the book");
        Ok(block)
    }

    /// `rank` ran block `id` in `elapsed`; returns the block.
    ///
    /// # Errors
    /// [`Misstep::NotHeld`] when the rank does not hold it.
    pub(crate) fn complete(
        &mut self,
        rank: usize,
        id: u64,
        elapsed: Duration,
    ) -> Result<Block, Misstep> {
        let block = self.release(rank, id)?;
        self.completed += block.len();
        let book = &mut self.ranks[rank];
        book.done_positions += block.len() as u64;
        book.busy_ns = book
            .busy_ns
            .saturating_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1));
        Ok(block)
    }

    /// `rank` could not run block `id`; returns the block (the caller stops the call).
    ///
    /// # Errors
    /// [`Misstep::NotHeld`] when the rank does not hold it.
    pub(crate) fn fail(&mut self, rank: usize, id: u64) -> Result<Block, Misstep> {
        self.release(rank, id)
    }

    /// Every position was handed out and reported done.
    pub(crate) fn finished(&self) -> bool {
        self.completed == self.total
    }

    /// The blocks `rank` holds now.
    #[cfg(test)]
    pub(crate) fn held_by(&self, rank: usize) -> Vec<Block> {
        self.ranks.get(rank).map_or_else(Vec::new, |b| {
            b.held.iter().map(|id| self.held[id].0).collect()
        })
    }

    /// Positions reported done so far.
    #[cfg(test)]
    pub(crate) fn completed(&self) -> usize {
        self.completed
    }
}

/// Half an even share of what is left, at least one task per local worker, at most what
/// the rank ran in `block_ns` so far (before any measurement: the minimum, a probe).
fn block_size(remaining: usize, ranks: usize, book: &RankBook, block_ns: u64) -> usize {
    let guided = remaining.div_ceil(2 * ranks.max(1));
    let min = book.workers;
    let cap = if book.busy_ns == 0 {
        min
    } else {
        let fit = u128::from(book.done_positions) * u128::from(block_ns) / u128::from(book.busy_ns);
        usize::try_from(fit).unwrap_or(usize::MAX)
    };
    guided.min(cap).max(min).min(remaining).max(1)
}

#[cfg(test)]
mod tests;
