//! The calling thread's side of a cluster call, and putting the blocks' outputs together
//! on the root.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::Instant;

use super::dispatch::{Block, OUTSTANDING};
use super::link::{ToLink, ToMain};
use super::local::Local;
use super::{Outputs, wire};
use crate::error::Error;

/// The calling thread's side of a call: runs granted blocks, keeps two in hand, reports
/// each, and on the root keeps every block's output until the link says the call is over.
#[allow(clippy::type_complexity)]
pub(super) fn drive<L: Local>(
    indices: &[usize],
    local: &L,
    root: bool,
    to_link: &mpsc::Sender<ToLink>,
    from_link: &mpsc::Receiver<ToMain>,
) -> Result<Option<Result<Outputs<L::Output>, Error>>, Error> {
    let gone = || Error::Mpi("the link thread of this rank ended early".into());
    // Sends fail only once the link has ended the call; its `End` is waiting then.
    for _ in 0..OUTSTANDING {
        let _ = to_link.send(ToLink::Request);
    }
    let mut queue: VecDeque<Block> = VecDeque::new();
    let mut no_more = false;
    let mut failed = false;
    let mut outputs: Outputs<L::Output> = Vec::new();
    let mut remote: Vec<(usize, i32, Vec<u8>)> = Vec::new();
    let mut undecodable: Option<Error> = None;
    let mut decode = |outputs: &mut Outputs<L::Output>,
                      (start, rank, bytes): (usize, i32, Vec<u8>)| {
        match postcard::from_bytes::<L::Output>(&bytes) {
            Ok(o) => outputs.push((start, rank, o)),
            Err(e) => {
                undecodable.get_or_insert_with(|| {
                    Error::Mpi(format!(
                        "could not decode the results of rank {rank} for the block at \
                         position {start}: {e}"
                    ))
                });
            }
        }
    };
    let stop = loop {
        let event = match from_link.try_recv() {
            Ok(e) => e,
            Err(mpsc::TryRecvError::Disconnected) => return Err(gone()),
            Err(mpsc::TryRecvError::Empty) => {
                if let Some(block) = queue.pop_front().filter(|_| !failed) {
                    let began = Instant::now();
                    let slice = &indices[block.start..block.end];
                    let report = match local.run_block(slice, block.start) {
                        Ok(out) if root => {
                            outputs.push((block.start, 0, out));
                            done(block, began, None)
                        }
                        Ok(out) => match postcard::to_stdvec(&out) {
                            Ok(bytes) => done(block, began, Some(bytes)),
                            Err(e) => ToLink::Failed {
                                id: block.id,
                                error: Error::Mpi(format!(
                                    "could not encode the results of positions {}..{}: {e}",
                                    block.start, block.end
                                )),
                            },
                        },
                        Err(error) => ToLink::Failed {
                            id: block.id,
                            error,
                        },
                    };
                    failed = matches!(report, ToLink::Failed { .. });
                    let _ = to_link.send(report);
                    if !no_more && !failed {
                        let _ = to_link.send(ToLink::Request);
                    }
                    continue;
                }
                if let Some(r) = remote.pop() {
                    decode(&mut outputs, r);
                    continue;
                }
                from_link.recv().map_err(|_| gone())?
            }
        };
        match event {
            ToMain::Grant(b) => queue.push_back(b),
            ToMain::NoMore => no_more = true,
            ToMain::Remote {
                rank,
                start,
                payload,
            } => remote.push((start, rank, payload)),
            ToMain::End(stop) => break stop,
        }
    };
    if let Some(stop) = stop {
        return Err(stop.into_error());
    }
    if !root {
        return Ok(None);
    }
    for r in remote.drain(..) {
        decode(&mut outputs, r);
    }
    Ok(Some(match undecodable {
        Some(e) => Err(e),
        None => Ok(outputs),
    }))
}

fn done(block: Block, began: Instant, payload: Option<Vec<u8>>) -> ToLink {
    ToLink::Done {
        id: block.id,
        elapsed: began.elapsed(),
        payload,
    }
}

/// Per-task errors as what happened on the rank that ran them.
pub(super) fn with_ranks<R>(
    outputs: Outputs<Vec<Result<R, Error>>>,
) -> Outputs<Vec<Result<R, Error>>> {
    outputs
        .into_iter()
        .map(|(start, rank, slots)| {
            let slots = slots
                .into_iter()
                .map(|s| s.map_err(|e| wire::on_rank(rank, e)))
                .collect();
            (start, rank, slots)
        })
        .collect()
}

/// Combines the blocks' partials in position order.
pub(super) fn reduce_in_order<T>(mut outputs: Outputs<T>, reduce: impl Fn(T, T) -> T) -> Option<T> {
    outputs.sort_unstable_by_key(|(start, _, _)| *start);
    outputs.into_iter().map(|(_, _, t)| t).reduce(reduce)
}

/// Joins the blocks' results in position order, checking that they cover `0..total`.
pub(super) fn concat<R>(mut outputs: Outputs<Vec<R>>, total: usize) -> Result<Vec<R>, Error> {
    outputs.sort_unstable_by_key(|(start, _, _)| *start);
    let mut out = Vec::new();
    out.try_reserve_exact(total)
        .map_err(|e| Error::TooManyTasks {
            count: total,
            reason: format!("could not allocate the results on the root: {e}"),
        })?;
    for (start, rank, values) in outputs {
        if start != out.len() {
            return Err(Error::Mpi(format!(
                "rank {rank} sent results for position {start}, expected {}",
                out.len()
            )));
        }
        out.extend(values);
    }
    if out.len() != total {
        return Err(Error::Mpi(format!(
            "results for {} of {total} positions came back",
            out.len()
        )));
    }
    Ok(out)
}

/// Collects a call's indices, refusing a list that cannot be allocated instead of aborting.
pub(super) fn collect<I: IntoIterator<Item = usize>>(indices: I) -> Result<Vec<usize>, Error> {
    let iter = indices.into_iter();
    let mut out = Vec::new();
    let hint = iter.size_hint();
    let want = hint.1.unwrap_or(hint.0).max(hint.0);
    out.try_reserve_exact(want)
        .map_err(|e| Error::TooManyTasks {
            count: want,
            reason: format!("could not allocate the index list: {e}"),
        })?;
    out.extend(iter);
    Ok(out)
}
