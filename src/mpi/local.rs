//! What a rank does with a block: runs it on its own workers.
//!
//! [`Local`] is the seam between the cluster protocol and the local executor: a [`Pool`]
//! (a fork per block) or a [`Crew`] forked once, serving every block of every call. Another
//! executor plugs in as one more implementation, with the protocol unchanged.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::from_local;
use crate::error::Error;
use crate::job::{Folds, Job, Maps};
use crate::{Crew, Pool};

/// Runs one block of a cluster call on this rank's workers.
pub(crate) trait Local {
    /// What one block gives (its results, or its fold): sent to the root as bytes.
    type Output: Serialize + DeserializeOwned;

    /// Runs `indices`, the block's slice of the call's indices, which starts at position
    /// `start` of the call. An `Err` stops the whole call on every rank; it names
    /// positions of the call (see [`from_local`]).
    fn run_block(&self, indices: &[usize], start: usize) -> Result<Self::Output, Error>;
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

    fn run_block(&self, indices: &[usize], start: usize) -> Result<Vec<R>, Error> {
        self.pool
            .map(indices.iter().copied(), self.f)
            .map_err(|e| from_local(e, start))
    }
}

/// `map_results`: every task has its own result; only a failure of the pool itself (set-up,
/// an interruption) is an `Err`.
pub(crate) struct ResultBlocks<'a, F> {
    pub(crate) pool: &'a Pool,
    pub(crate) f: &'a F,
}

impl<F, R> Local for ResultBlocks<'_, F>
where
    F: Fn(usize) -> R,
    R: Serialize + DeserializeOwned,
{
    type Output = Vec<Result<R, Error>>;

    fn run_block(&self, indices: &[usize], start: usize) -> Result<Self::Output, Error> {
        Ok(self
            .pool
            .map_results(indices.iter().copied(), self.f)
            .map_err(|e| from_local(e, start))?
            .into_iter()
            .map(|r| r.map_err(|e| from_local(e, start)))
            .collect())
    }
}

/// `fold`: the pool folds the block in its workers and reduces their partials in position
/// order.
pub(crate) struct FoldBlocks<'a, ID, F, C> {
    pub(crate) pool: &'a Pool,
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

    fn run_block(&self, indices: &[usize], start: usize) -> Result<T, Error> {
        self.pool
            .fold(
                indices.iter().copied(),
                self.identity,
                self.fold,
                self.reduce,
            )
            .map_err(|e| from_local(e, start))
    }
}

/// A crew's map: the crew was forked once (before `MPI_Init`, ideally) and serves every
/// block of every call; its `&mut` is borrowed for one block at a time, on the thread that
/// forked it.
pub(crate) struct CrewMapBlocks<'a, J: Job> {
    pub(crate) crew: RefCell<&'a mut Crew<J>>,
}

impl<J> Local for CrewMapBlocks<'_, J>
where
    J: Maps,
    J::Out: Serialize + DeserializeOwned,
{
    type Output = Vec<J::Out>;

    fn run_block(&self, indices: &[usize], start: usize) -> Result<Self::Output, Error> {
        self.crew
            .borrow_mut()
            .map(indices.iter().copied())
            .map_err(|e| from_local(e, start))
    }
}

/// A crew's `map_results`.
pub(crate) struct CrewResultBlocks<'a, J: Job> {
    pub(crate) crew: RefCell<&'a mut Crew<J>>,
}

impl<J> Local for CrewResultBlocks<'_, J>
where
    J: Maps,
    J::Out: Serialize + DeserializeOwned,
{
    type Output = Vec<Result<J::Out, Error>>;

    fn run_block(&self, indices: &[usize], start: usize) -> Result<Self::Output, Error> {
        Ok(self
            .crew
            .borrow_mut()
            .map_results(indices.iter().copied())
            .map_err(|e| from_local(e, start))?
            .into_iter()
            .map(|r| r.map_err(|e| from_local(e, start)))
            .collect())
    }
}

/// A crew of folds.
pub(crate) struct CrewFoldBlocks<'a, J: Job, C> {
    pub(crate) crew: RefCell<&'a mut Crew<J>>,
    pub(crate) reduce: &'a C,
}

impl<J, C> Local for CrewFoldBlocks<'_, J, C>
where
    J: Folds,
    J::Out: Serialize + DeserializeOwned,
    C: Fn(J::Out, J::Out) -> J::Out,
{
    type Output = J::Out;

    fn run_block(&self, indices: &[usize], start: usize) -> Result<J::Out, Error> {
        self.crew
            .borrow_mut()
            .fold(indices.iter().copied(), self.reduce)
            .map_err(|e| from_local(e, start))
    }
}
