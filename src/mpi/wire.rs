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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    Failed { id: u64, failure: Failure },
    /// Either way: still alive.
    Beat,
    /// Root to rank: the call is over (finished, or stopped by a failure).
    End { stop: Option<Stop> },
    /// Rank to root, its last message of the call: the `End` arrived.
    Bye,
}

impl Msg {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("control messages always encode")
    }

    pub(crate) fn decode(bytes: &[u8], from: i32) -> Result<Msg, Error> {
        postcard::from_bytes(bytes)
            .map_err(|e| Error::Mpi(format!("undecodable control message from rank {from}: {e}")))
    }
}

/// A failure, as it travels between ranks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Failure {
    pub(crate) index: Option<u64>,
    pub(crate) position: Option<u64>,
    pub(crate) message: String,
}

/// Why a call stopped: what failed, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stop {
    pub(crate) rank: i32,
    pub(crate) failure: Failure,
}

impl Stop {
    pub(crate) fn into_error(self) -> Error {
        self.failure.on_rank(self.rank)
    }
}

impl Failure {
    /// A failure of this rank's local pool on a block starting at position `start`: the
    /// positions the pool reports (within the block) become positions in the whole call.
    pub(crate) fn from_local(mut error: Error, start: usize) -> Failure {
        let position = shift_positions(&mut error, start);
        Failure {
            index: error.task_index().map(|i| i as u64),
            position: position.map(|p| p as u64),
            message: error.to_string(),
        }
    }

    /// A failure that is about no task (a message that could not be decoded, a protocol
    /// misstep).
    pub(crate) fn plain(message: String) -> Failure {
        Failure {
            index: None,
            position: None,
            message,
        }
    }

    pub(crate) fn on_rank(self, rank: i32) -> Error {
        Error::OnRank {
            rank,
            index: self.index.map(|i| i as usize),
            position: self.position.map(|p| p as usize),
            message: self.message,
        }
    }
}

/// Adds `start` to the task positions `error` names; returns the task's new position.
fn shift_positions(error: &mut Error, start: usize) -> Option<usize> {
    match error {
        Error::TaskPanicked { position, .. } | Error::TaskTimedOut { position, .. } => {
            *position += start;
            Some(*position)
        }
        Error::WorkerDied { task, .. } | Error::WorkerStopped { task, .. } => {
            task.as_mut().map(|(_, position)| {
                *position += start;
                *position
            })
        }
        _ => None,
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
                    failure: Failure::plain("boom".into()),
                }),
            },
            Msg::Bye,
        ] {
            assert_eq!(Msg::decode(&m.encode(), 0).unwrap(), m);
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
        let f = Failure::from_local(err, 100);
        assert_eq!((f.index, f.position), (Some(77), Some(103)));
        assert!(f.message.contains("position 103"), "{}", f.message);
        let e = f.on_rank(1);
        assert!(matches!(
            e,
            Error::OnRank {
                rank: 1,
                index: Some(77),
                position: Some(103),
                ..
            }
        ));
        assert_eq!(e.task_index(), Some(77));
        assert!(
            e.to_string().starts_with("rank 1: task 77 (position 103)"),
            "{e}"
        );
    }

    #[test]
    fn the_hash_sees_order_and_content() {
        assert_ne!(indices_hash(&[1, 2]), indices_hash(&[2, 1]));
        assert_ne!(indices_hash(&[1, 2]), indices_hash(&[1, 3]));
        assert_eq!(indices_hash(&[5; 9]), indices_hash(&[5; 9]));
    }
}
