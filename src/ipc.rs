//! The messages between the coordinator and its workers, and the channels that carry them.
//!
//! Each worker has its own order channel (coordinator to worker). Results come back on one
//! channel shared by all workers: one blocking receive serves them all, which is several
//! times cheaper than `IpcReceiverSet::select`, and a message larger than a socket buffer
//! travels on a dedicated side channel, so messages from different workers never interleave.

use std::ops::Range;

use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Coordinator to worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Order {
    /// Run the tasks at these positions of `indices`, in order.
    Run(Range<usize>),
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

/// Worker to coordinator.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report<R> {
    /// The outcomes of a chunk, in position order from `start`.
    Batch {
        worker: usize,
        start: usize,
        outcomes: Vec<Outcome<R>>,
        /// Nanoseconds spent running the chunk's tasks.
        busy_ns: u64,
    },
    /// The batch from `start` could not be sent (for example, its results failed to serialize).
    Unsendable {
        worker: usize,
        start: usize,
        message: String,
    },
}

/// Order channel of worker `worker`.
pub(crate) fn order_channel(
    worker: usize,
) -> Result<(IpcSender<Order>, IpcReceiver<Order>), Error> {
    ipc::channel().map_err(|e| Error::Channel {
        worker,
        message: format!("could not create the order channel: {e}"),
    })
}

/// The result channel all workers share.
pub(crate) fn report_channel<R>() -> Result<(IpcSender<Report<R>>, IpcReceiver<Report<R>>), Error>
where
    R: Serialize + for<'de> Deserialize<'de>,
{
    ipc::channel().map_err(|e| Error::Channel {
        worker: usize::MAX,
        message: format!("could not create the result channel: {e}"),
    })
}
