//! Lending an MPI communicator to the thread that talks for a cluster call.

use mpi::topology::SimpleCommunicator;

/// A communicator lent, for the length of one call, to the thread that does all of that
/// call's MPI traffic while the calling thread runs the local pool.
#[derive(Clone, Copy)]
pub(crate) struct LentComm<'a>(pub(crate) &'a SimpleCommunicator);

// SAFETY: rsmpi's communicators are `!Send` only because they hold Open MPI's handle, a
// raw pointer to a process-wide object that any thread may use when MPI was initialised
// at `Threading::Serialized` or above and no two threads call MPI at once. A `LentComm` is
// made only by `mpi::Cluster`, which (1) checks the threading level in `Cluster::new`,
// and (2) lends it to one scoped thread while the lending thread makes no MPI call until
// that thread is joined, so every call on the communicator comes from one thread at a time.
unsafe impl Send for LentComm<'_> {}

impl std::fmt::Debug for LentComm<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LentComm")
    }
}
