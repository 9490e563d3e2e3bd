//! What a rank does with a block: runs it on its own workers.
//!
//! [`Local`] is the seam between the cluster protocol and the local executor. Today the
//! executor is a [`Pool`] (a fork per block); a crew forked once (fork once, map many)
//! plugs in as one more implementation, with the protocol unchanged.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::Failure;
use crate::Pool;
use crate::error::Error;

/// Runs one block of a cluster call on this rank's workers.
pub(crate) trait Local {
    /// What one block gives (its results, or its fold): sent to the root as bytes.
    type Output: Serialize + DeserializeOwned;

    /// Runs `indices`, the block's slice of the call's indices, which starts at position
    /// `start` of the call. An `Err` stops the whole call on every rank; it names positions
    /// of the call (see [`Failure::from_local`]).
    fn run_block(&self, indices: &[usize], start: usize) -> Result<Self::Output, Failure>;
}

/// `map`: the first failure ends the block (and the call).
pub(crate) struct MapBlocks<'a, F> {
    pub(crate) pool: &'a Pool,
    pub(crate) f: &'a F,
}

impl<F, R> Local for MapBlocks<'_, F>
where
    F: Fn(usize) -> R,
    R: Serialize + DeserializeOwned,
{
    type Output = Vec<R>;

    fn run_block(&self, indices: &[usize], start: usize) -> Result<Vec<R>, Failure> {
        self.pool
            .map(indices.iter().copied(), self.f)
            .map_err(|e| Failure::from_local(e, start))
    }
}

/// One task's result in `try_map`, as it travels.
pub(crate) type Slot<R> = Result<R, Failure>;

/// `try_map`: every task has its own result; only a failure of the pool itself is an `Err`.
pub(crate) struct TryMapBlocks<'a, F> {
    pub(crate) pool: &'a Pool,
    pub(crate) f: &'a F,
}

impl<F, R> Local for TryMapBlocks<'_, F>
where
    F: Fn(usize) -> R,
    R: Serialize + DeserializeOwned,
{
    type Output = Vec<Slot<R>>;

    fn run_block(&self, indices: &[usize], start: usize) -> Result<Vec<Slot<R>>, Failure> {
        Ok(self
            .pool
            .try_map(indices.iter().copied(), self.f)
            .map_err(|e| Failure::from_local(e, start))?
            .into_iter()
            .map(|r| r.map_err(|e| Failure::from_local(e, start)))
            .collect())
    }
}

/// `fold`: the block is cut into about four runs per worker; each worker folds its runs
/// from `identity()`, and the rank combines the runs' partials in order with `reduce`.
pub(crate) struct FoldBlocks<'a, ID, F, C> {
    pub(crate) pool: &'a Pool,
    pub(crate) workers: usize,
    pub(crate) identity: &'a ID,
    pub(crate) fold: &'a F,
    pub(crate) reduce: &'a C,
}

impl<ID, F, C, T> Local for FoldBlocks<'_, ID, F, C>
where
    ID: Fn() -> T,
    F: Fn(T, usize) -> T,
    C: Fn(T, T) -> T,
    T: Serialize + DeserializeOwned,
{
    type Output = T;

    fn run_block(&self, indices: &[usize], start: usize) -> Result<T, Failure> {
        let runs = runs(indices.len(), self.workers);
        let partials = self
            .pool
            .map(0..runs.len(), |k| {
                indices[runs[k].clone()]
                    .iter()
                    .fold((self.identity)(), |acc, &i| (self.fold)(acc, i))
            })
            .map_err(|e| fold_failure(e, &runs, indices, start))?;
        Ok(partials
            .into_iter()
            .reduce(|a, b| (self.reduce)(a, b))
            .unwrap_or_else(|| (self.identity)()))
    }
}

/// Cuts `len` positions into about four contiguous runs per worker.
fn runs(len: usize, workers: usize) -> Vec<std::ops::Range<usize>> {
    let count = (4 * workers.max(1)).min(len).max(1);
    (0..count)
        .map(|k| k * len / count..(k + 1) * len / count)
        .collect()
}

/// A fold's failure names a run, not a task: say which positions the run held (its
/// task index is the run's first index only when the run is one task long).
fn fold_failure(
    error: Error,
    runs: &[std::ops::Range<usize>],
    indices: &[usize],
    start: usize,
) -> Failure {
    let Some(run) = error
        .task_index()
        .and_then(|k| runs.get(k))
        .filter(|r| !r.is_empty())
    else {
        return Failure::from_local(error, start);
    };
    let (first, last) = (run.start, run.end - 1);
    Failure {
        index: (first == last).then(|| indices[first] as u64),
        position: Some((start + first) as u64),
        message: format!(
            "while folding positions {}..={} (indices {}..={}), one run of a worker: {error}",
            start + first,
            start + last,
            indices[first],
            indices[last]
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_the_block_in_order() {
        for (len, workers) in [(0, 3), (1, 3), (5, 3), (100, 3), (7, 1)] {
            let r = runs(len, workers);
            assert_eq!(r.first().unwrap().start, 0);
            assert_eq!(r.last().unwrap().end, len);
            assert!(r.windows(2).all(|w| w[0].end == w[1].start));
            assert!(len == 0 || r.iter().all(|x| !x.is_empty()));
        }
    }
}
