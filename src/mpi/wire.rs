//! What the ranks of a cluster call say to each other, and how a failure travels.
//!
//! Control messages are postcard-encoded [`Msg`]s on tag [`CONTROL`]; a block's results
//! follow its [`Msg::Done`] as raw byte pieces on tag [`DATA`], each at most the cluster's
//! piece size (1 GiB by default), so no message comes near MPI's `i32` count limit. MPI
//! keeps messages from one rank with one tag in order, so the pieces a rank sends
//! are the next [`DATA`] messages the root receives from it.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Tag of control messages.
pub(crate) const CONTROL: i32 = 1;
/// Tag of result pieces.
pub(crate) const DATA: i32 = 2;

/// A control message.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Msg {
    /// Rank to root: one more block, please.
    Request,
    /// Root to rank: run positions `start..end` of the call's `indices`.
    Grant { id: u64, start: u64, end: u64 },
    /// Root to rank: every position has been handed out.
    NoMore,
    /// Rank to root: block `id` ran in `elapsed_ns`; its `len` result bytes follow in
    /// `pieces` [`DATA`] messages.
    Done {
        id: u64,
        elapsed_ns: u64,
        len: u64,
        pieces: u32,
    },
    /// Rank to root: block `id` failed; the call stops.
    Failed { id: u64, error: Error },
    /// Either way: still alive.
    Beat,
    /// Root to rank: the call is over (finished, or stopped by a failure).
    End { stop: Option<Stop> },
    /// Rank to root, its last message of the call: the `End` arrived.
    Bye,
}

impl Msg {
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Every field is plain data, and `Error` serialises by design (its wire form).
        postcard::to_stdvec(self).expect("control messages always encode")
    }

    pub(crate) fn decode(bytes: &[u8], from: i32) -> Result<Msg, Error> {
        postcard::from_bytes(bytes)
            .map_err(|e| Error::Mpi(format!("undecodable control message from rank {from}: {e}")))
    }
}

/// Why a call stopped: what failed, and on which rank.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Stop {
    pub(crate) rank: i32,
    pub(crate) error: Error,
}

impl Stop {
    pub(crate) fn into_error(self) -> Error {
        on_rank(self.rank, self.error)
    }
}

/// `error` as it happened on `rank`.
pub(crate) fn on_rank(rank: i32, error: Error) -> Error {
    match error {
        // Already about a rank (a rank's own report of another's failure): keep it.
        e @ Error::OnRank { .. } => e,
        e => Error::OnRank {
            rank,
            error: Box::new(e),
        },
    }
}

/// A failure of this rank's local pool on a block starting at position `start`: the
/// positions the pool reports (within the block) become positions in the whole call.
pub(crate) fn from_local(mut error: Error, start: usize) -> Error {
    shift_positions(&mut error, start);
    error
}

/// Adds `start` to the task positions `error` names.
fn shift_positions(error: &mut Error, start: usize) {
    match error {
        Error::TaskPanicked { position, .. } | Error::TaskTimedOut { position, .. } => {
            *position += start;
        }
        Error::WorkerDied { task, .. } | Error::WorkerStopped { task, .. } => {
            if let Some((_, position)) = task.as_mut() {
                *position += start;
            }
        }
        _ => {}
    }
}

/// Piece boundaries of `len` bytes in pieces of at most `piece` bytes.
pub(crate) fn pieces(len: usize, piece: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let piece = piece.max(1);
    (0..len.div_ceil(piece)).map(move |k| k * piece..((k + 1) * piece).min(len))
}

/// Hash of a call's indices, the same on every rank for the same list (FNV-1a over the
/// little-endian bytes, so it does not depend on the build as `DefaultHasher` may).
pub(crate) fn indices_hash(indices: &[usize]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &i in indices {
        for b in (i as u64).to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            Msg::Request,
            Msg::Grant {
                id: 3,
                start: 10,
                end: u64::MAX,
            },
            Msg::Done {
                id: 1,
                elapsed_ns: 5,
                len: 1 << 40,
                pieces: 1024,
            },
            Msg::End {
                stop: Some(Stop {
                    rank: 2,
                    error: Error::Mpi("boom".into()),
                }),
            },
            Msg::Bye,
        ] {
            let back = Msg::decode(&m.encode(), 0).unwrap();
            assert_eq!(format!("{back:?}"), format!("{m:?}"));
        }
        let err = Msg::decode(&[200, 1], 4).unwrap_err();
        assert!(err.to_string().contains("from rank 4"), "{err}");
    }

    #[test]
    fn pieces_cover_exactly() {
        assert_eq!(pieces(0, 10).count(), 0);
        assert_eq!(pieces(10, 10).collect::<Vec<_>>(), vec![0..10]);
        assert_eq!(
            pieces(25, 10).collect::<Vec<_>>(),
            vec![0..10, 10..20, 20..25]
        );
        let total: usize = pieces(1 << 31, 1 << 30).map(|r| r.len()).sum();
        assert_eq!(total, 1 << 31);
    }

    #[test]
    fn local_positions_become_call_positions() {
        let err = Error::TaskPanicked {
            index: 77,
            position: 3,
            worker: 1,
            pid: 42,
            message: "no".into(),
        };
        let e = on_rank(1, from_local(err, 100));
        let Error::OnRank { rank: 1, error } = &e else {
            panic!("{e}")
        };
        assert!(matches!(
            **error,
            Error::TaskPanicked {
                index: 77,
                position: 103,
                ..
            }
        ));
        assert_eq!(e.task_index(), Some(77));
        assert!(
            e.to_string().starts_with("rank 1: task 77 (position 103)"),
            "{e}"
        );
        // A report that is already about a rank keeps its rank.
        assert!(matches!(on_rank(0, e), Error::OnRank { rank: 1, .. }));
    }

    #[test]
    fn the_hash_sees_order_and_content() {
        assert_ne!(indices_hash(&[1, 2]), indices_hash(&[2, 1]));
        assert_ne!(indices_hash(&[1, 2]), indices_hash(&[1, 3]));
        assert_eq!(indices_hash(&[5; 9]), indices_hash(&[5; 9]));
    }
}
