//! The messages between the coordinator and its workers, and the channels that carry them.
//!
//! Each worker has its own order channel (coordinator to worker). Results come back on one
//! channel shared by all workers: one blocking receive serves them all, which is several
//! times cheaper than `IpcReceiverSet::select`, and a message larger than a socket buffer
//! travels on a dedicated side channel, so messages from different workers never interleave.
//!
//! Result batches are serialised by the worker itself (postcard, the format ipc-channel
//! uses) into the [`Envelope`]'s payload. That keeps the outcomes in the worker's hands if
//! a result fails to serialise (so exactly the failing task is reported), and lets the
//! coordinator read who sent a message before it decodes the results.

mod probe;

use std::ops::Range;

use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// Coordinator to worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Order {
    /// Run the tasks at these positions, in order, claiming each through the worker's
    /// gate: `seq` numbers the worker's chunks from 1, `block` is how many positions to
    /// claim at once, and `indices` are the chunk's indices (the worker needs nothing of
    /// the call but its orders, which is what lets workers outlive one call). `call`
    /// numbers the crew's calls; the worker's reports carry it back.
    Run {
        call: u64,
        seq: u64,
        range: Range<usize>,
        block: u32,
        indices: Indices,
    },
    /// No more work: leave.
    Stop,
}

/// The indices of a chunk's positions, as they travel in its order: consecutive ones
/// (the common `0..n`) as their first, in a few bytes; any others listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Indices {
    /// `first, first + 1, ...`.
    From(usize),
    /// One per position.
    List(Vec<usize>),
}

impl Indices {
    /// The indices of `indices` in the fewest bytes.
    pub(crate) fn of(indices: &[usize]) -> Indices {
        let first = indices.first().copied().unwrap_or(0);
        let consecutive = indices
            .iter()
            .enumerate()
            .all(|(k, &i)| first.checked_add(k) == Some(i));
        if consecutive {
            Indices::From(first)
        } else {
            Indices::List(indices.to_vec())
        }
    }

    /// The index at `offset` in the chunk.
    #[inline]
    pub(crate) fn at(&self, offset: usize) -> usize {
        match self {
            Indices::From(first) => first + offset,
            Indices::List(list) => list[offset],
        }
    }
}

/// What became of one task, as the coordinator decodes it. Each outcome of a batch is
/// encoded on its own, right after its task returned, so one that cannot be encoded or
/// decoded costs only its own position.
#[derive(Debug, Deserialize)]
pub(crate) enum Outcome<R> {
    /// It returned this value.
    Done(R),
    /// It panicked with this message.
    Panicked(String),
    /// It returned a value that could not be serialised (or serialising it panicked).
    Unsendable(String),
}

/// The same outcome as the worker encodes it, borrowing its value (same wire format).
#[derive(Debug, Serialize)]
pub(crate) enum OutcomeRef<'a, R> {
    /// See [`Outcome::Done`].
    Done(&'a R),
    /// See [`Outcome::Panicked`].
    Panicked(&'a str),
    /// See [`Outcome::Unsendable`].
    Unsendable(&'a str),
}

/// Worker to coordinator: who sends, and what.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) worker: usize,
    /// Tells a replaced worker's late messages apart from its replacement's: the
    /// coordinator drops messages from incarnations it has buried.
    pub(crate) incarnation: u64,
    /// The call whose order this answers (0 for what a worker says before its first
    /// order): the coordinator drops reports of calls that are over.
    pub(crate) call: u64,
    /// How many descriptors the worker sent ahead of this message on its descriptor
    /// socket: the payload file first (for [`Payload::File`]), then each piece's arrays.
    pub(crate) fds: u32,
    pub(crate) body: Body,
}

/// The content of an [`Envelope`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Body {
    /// Outcomes of positions `start..start + count`, the front of the worker's oldest
    /// chunk: piece `k` is the next `pieces[k].len` bytes of the payload. A map's batch
    /// has a piece per position; a fold's has one for all of them (its partial, or the
    /// panic of its last position). `retire` says the worker leaves after this batch.
    Batch {
        start: usize,
        count: usize,
        busy_ns: u64,
        pieces: Vec<Piece>,
        payload: Payload,
        retire: Option<Retire>,
    },
    /// The worker's `init` panicked with this message; it leaves.
    InitFailed { message: String },
}

/// Why a worker leaves on its own after a batch (it is replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Retire {
    /// It ran as many tasks as `max_tasks_per_worker` allows.
    Tasks(u64),
    /// Its resident memory grew past the cap.
    Memory { rss: u64, cap: u64 },
}

/// One encoded outcome in a batch's payload.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Piece {
    /// Its length in bytes.
    pub(crate) len: u64,
    /// How many shared-array descriptors it refers to (numbered from 0 within it).
    pub(crate) fds: u32,
}

/// Where a batch's encoded outcomes are.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Payload {
    /// In the message.
    Inline(Bytes),
    /// In a memory file sent as the first descriptor: the coordinator maps it and decodes
    /// from the mapping, so a large result costs one copy (its value) in the parent.
    File,
}

/// Payloads from this size on travel in a memory file rather than in the message. With
/// at most [`MAX_PIECES`] pieces, every message then fits in one packet of the result
/// socket (ipc-channel sends a larger one in fragments, and its reader blocks until the
/// last arrives: a worker stopped or slow in the middle would hold the coordinator).
pub(crate) const FILE_PAYLOAD: usize = 128 << 10;

/// A map batch is sent once it holds this many outcomes (at most about 5 bytes each in
/// the message for an inline payload, 15 for a file's).
pub(crate) const MAX_PIECES: usize = 4096;

/// A byte buffer serialised as one byte string (a single copy) rather than a sequence
/// of `u8` values.
#[derive(Debug)]
pub(crate) struct Bytes(pub(crate) Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// Appends the encoding of `value` to `buf` (postcard, the format ipc-channel uses). On
/// an error `buf` may hold part of the value; the caller truncates it. A custom
/// `Serialize` error keeps its own message.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut impl std::io::Write,
) -> Result<(), String> {
    match postcard::to_io(value, buf) {
        Ok(_) => Ok(()),
        // postcard drops a custom error's message; walk the value again to recover it.
        Err(postcard::Error::SerdeSerCustom) => {
            Err(probe::failure(value)
                .unwrap_or_else(|| postcard::Error::SerdeSerCustom.to_string()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Like [`encode_into`], into a postcard flavor: byte by byte without a call through
/// `io::Write` per field, which is what a batch of small results spends its time on.
pub(crate) fn encode_with<T, S>(value: &T, sink: S) -> Result<(), String>
where
    T: Serialize + ?Sized,
    S: postcard::ser_flavors::Flavor<Output = ()>,
{
    match postcard::serialize_with_flavor(value, sink) {
        Ok(()) => Ok(()),
        // postcard drops a custom error's message; walk the value again to recover it.
        Err(postcard::Error::SerdeSerCustom) => {
            Err(probe::failure(value)
                .unwrap_or_else(|| postcard::Error::SerdeSerCustom.to_string()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// [`encode_into`] a fresh buffer.
#[cfg(test)]
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    encode_into(value, &mut buf).map(|()| buf)
}

/// postcard's message for a sequence or map serialised without its length (what
/// `#[serde(flatten)]` does).
pub(crate) const LENGTH_UNKNOWN: &str = "The length of a sequence must be known";

/// Decodes what [`encode_into`] produced.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| e.to_string())
}

/// Completes ipc-channel's lazily initialised process-wide state in the calling thread.
///
/// Called before every fork: if another thread of the caller were initialising it at
/// the moment of the fork, the child would inherit a `LazyLock` stuck "in progress" and
/// block forever on its first send or receive. Calling it here waits for any such
/// initialisation to finish (or does it), so the child inherits it complete.
pub(crate) fn prepare_fork() {
    let _ = ipc_channel::platform::OsIpcSender::get_max_fragment_size();
}

/// Order channel of worker `worker`.
pub(crate) fn order_channel(
    worker: usize,
) -> Result<(IpcSender<Order>, IpcReceiver<Order>), Error> {
    ipc::channel().map_err(|e| Error::Channel {
        worker: Some(worker),
        message: format!("could not create the order channel: {e}"),
    })
}

/// The result channel all workers share.
pub(crate) fn report_channel() -> Result<(IpcSender<Envelope>, IpcReceiver<Envelope>), Error> {
    ipc::channel().map_err(|e| Error::Channel {
        worker: None,
        message: format!("could not create the result channel: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_indices_travel_as_their_first_and_others_as_a_list() {
        assert_eq!(Indices::of(&[7, 8, 9]), Indices::From(7));
        assert_eq!(Indices::of(&[]), Indices::From(0));
        assert_eq!(Indices::of(&[usize::MAX]), Indices::From(usize::MAX));
        let list = Indices::of(&[3, 1, 4, 1]);
        assert_eq!(list, Indices::List(vec![3, 1, 4, 1]));
        assert_eq!((list.at(0), list.at(3)), (3, 1));
        assert_eq!(Indices::From(10).at(5), 15);
        assert_eq!(
            Indices::of(&[usize::MAX - 1, usize::MAX]),
            Indices::From(usize::MAX - 1)
        );
    }

    #[test]
    fn borrowed_and_owned_outcomes_share_a_wire_format() {
        let value = vec![1u32, 2];
        let mut buf = Vec::new();
        encode_into(&OutcomeRef::Done(&value), &mut buf).unwrap();
        let first = buf.len();
        encode_into(&OutcomeRef::<Vec<u32>>::Panicked("x"), &mut buf).unwrap();
        let second = buf.len();
        encode_into(&OutcomeRef::<Vec<u32>>::Unsendable("y"), &mut buf).unwrap();
        let one: Outcome<Vec<u32>> = decode(&buf[..first]).unwrap();
        assert!(matches!(one, Outcome::Done(v) if v == value));
        let two: Outcome<Vec<u32>> = decode(&buf[first..second]).unwrap();
        assert!(matches!(two, Outcome::Panicked(m) if m == "x"));
        let three: Outcome<Vec<u32>> = decode(&buf[second..]).unwrap();
        assert!(matches!(three, Outcome::Unsendable(m) if m == "y"));
        let env = Envelope {
            worker: 1,
            incarnation: 2,
            call: 3,
            fds: 0,
            body: Body::Batch {
                start: 7,
                count: 1,
                retire: None,
                busy_ns: 99,
                pieces: vec![Piece {
                    len: first as u64,
                    fds: 0,
                }],
                payload: Payload::Inline(Bytes(buf.clone())),
            },
        };
        let mut wire = Vec::new();
        encode_into(&env, &mut wire).unwrap();
        let again: Envelope = decode(&wire).unwrap();
        assert!(
            matches!(again.body, Body::Batch { payload: Payload::Inline(Bytes(b)), .. } if b == buf)
        );
    }
}
