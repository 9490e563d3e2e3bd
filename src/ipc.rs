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

use std::ops::Range;

use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// Coordinator to worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Order {
    /// Run the tasks at these positions of `indices`, in order, claiming each through
    /// the worker's gate: `seq` numbers the worker's chunks from 1.
    Run { seq: u64, range: Range<usize> },
    /// No more work: leave.
    Stop,
}

/// What became of one task.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome<R> {
    /// It returned this value.
    Done(R),
    /// It panicked with this message.
    Panicked(String),
}

/// Worker to coordinator: who sends, and what.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) worker: usize,
    /// Tells a replaced worker's late messages apart from its replacement's: the
    /// coordinator drops messages from incarnations it has buried.
    pub(crate) incarnation: u64,
    /// How many shared-array descriptors the worker sent ahead of this message on its
    /// descriptor socket, for the arrays in the body.
    pub(crate) fds: u32,
    pub(crate) body: Body,
}

/// The content of an [`Envelope`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Body {
    /// A serialised [`Batch`]: outcomes of the front positions of the worker's oldest chunk.
    Batch(Bytes),
    /// The result at `position` (the front of the oldest chunk) could not be serialised.
    Unsendable { position: usize, message: String },
}

/// The outcomes of positions `start..start + outcomes.len()`, as the coordinator decodes them.
#[derive(Debug, Deserialize)]
pub(crate) struct Batch<R> {
    pub(crate) start: usize,
    pub(crate) busy_ns: u64,
    pub(crate) outcomes: Vec<Outcome<R>>,
}

/// The same batch as the worker encodes it, borrowing its outcomes (same wire format).
#[derive(Debug, Serialize)]
pub(crate) struct BatchRef<'a, R> {
    pub(crate) start: usize,
    pub(crate) busy_ns: u64,
    pub(crate) outcomes: &'a [Outcome<R>],
}

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

/// Serialises a value as ipc-channel would.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(value).map_err(|e| e.to_string())
}

/// Decodes what [`encode`] produced.
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
    fn borrowed_and_owned_batches_share_a_wire_format() {
        let outcomes = vec![
            Outcome::Done(vec![1u32, 2]),
            Outcome::Panicked("x".into()),
            Outcome::Done(vec![]),
        ];
        let bytes = encode(&BatchRef {
            start: 7,
            busy_ns: 99,
            outcomes: &outcomes,
        })
        .unwrap();
        let back: Batch<Vec<u32>> = decode(&bytes).unwrap();
        assert_eq!((back.start, back.busy_ns, back.outcomes.len()), (7, 99, 3));
        assert!(matches!(&back.outcomes[1], Outcome::Panicked(m) if m == "x"));
        let env = Envelope {
            worker: 1,
            incarnation: 2,
            fds: 0,
            body: Body::Batch(Bytes(bytes.clone())),
        };
        let again: Envelope = decode(&encode(&env).unwrap()).unwrap();
        assert!(matches!(again.body, Body::Batch(Bytes(b)) if b == bytes));
    }
}
