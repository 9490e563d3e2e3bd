//! Past one machine: the same map over the ranks of an MPI job (feature `mpi`).
//!
//! Each rank (one per node, or per NUMA domain) keeps its own forked [`Pool`] (or a
//! [`Crew`] forked once: [`map_crew`](Cluster::map_crew)) with its own shared arrays,
//! retries and timeouts; MPI only spreads blocks of positions over the ranks and brings
//! the results back to the root (rank 0). The root hands out blocks
//! dynamically: shrinking in size (half an even share of what is left, capped at about
//! [`block_time`](Cluster::block_time) of the rank's measured work), two held by each rank
//! at once so the next one is in hand while the current one runs, and it always knows
//! which blocks each rank holds. The root's own workers compute too: a second thread on
//! every rank does all of a call's MPI traffic while the calling thread runs blocks.
//!
//! Every rank makes the same calls with the same `indices`; a rank whose `indices` differ
//! (in length or content) gets [`Error::Mpi`] on every rank, not a hang.
//!
//! # Rules
//! - **Workers never call MPI.** `f` runs in processes forked from the rank; they carry a
//!   copy of the MPI library's state, and a call from them would corrupt it. Everything
//!   MPI is done by the rank itself.
//! - **Fork after `MPI_Init`.** Each block forks the pool's workers while MPI is running
//!   (with its progress threads, and this module's link thread). On shared memory and TCP
//!   this is safe, and tested here. On RDMA fabrics (InfiniBand verbs, AWS EFA) memory that
//!   MPI has registered must not be shared copy-on-write with a child: it needs a kernel
//!   that copies DMA pages on fork (Linux 5.12 and later with a recent rdma-core) or
//!   `RDMAV_FORK_SAFE=1`; EFA providers abort on such a fork. There, check with your site.
//! - **Lifetimes.** A `Cluster` holds a duplicate of the communicator: drop it before the
//!   `Universe` (declare it after), as any rsmpi communicator.
//! - **Threading.** MPI must be initialised with
//!   `mpi::initialize_with_threading(Threading::Multiple)` (or `Serialized`): the link
//!   thread makes every MPI call of a cluster call while the calling thread makes none.
//!
//! # Failure model
//! | what | what happens |
//! |---|---|
//! | a task panics, kills its worker or times out on any rank | handled by that rank's pool as on one machine (retries, blame); then in [`map`](Cluster::map) the call stops on every rank, each rank finishing the block it runs (workers reaped everywhere), and every rank returns the same [`Error::OnRank`] naming the rank, the task's index and its position; in [`map_results`](Cluster::map_results) the error takes the task's slot |
//! | a rank's process dies | the MPI job ends (Open MPI 4.1 has no fault-tolerant MPI): mpirun kills the other ranks, whose workers die with them; under Slurm use `srun --kill-on-bad-exit=1` |
//! | a rank stops answering (stopped, or its process hung) | the root (or a rank, for a silent root) aborts the job with `MPI_Abort` after [`rank_timeout`](Cluster::rank_timeout) (default 60 s) of silence, printing the rank; every rank's link thread sends a beat each second, so a rank whose tasks merely run long is not silent (a task that never ends is the pool's [`task_timeout`](Pool::task_timeout)'s business) |
//! | ranks pass different `indices`, or make different calls | [`Error::Mpi`] on every rank, naming the first rank that differs |
//! | a rank bound to one CPU (mpirun's default binding) | [`Cluster::new`] fails on every rank with [`Error::Config`] naming the fix |
//!
//! # Examples
//! ```
//! use forkmap::mpi::{Cluster, rsmpi::{self, Threading}};
//!
//! let (universe, _) = rsmpi::initialize_with_threading(Threading::Multiple).unwrap();
//! let world = universe.world();
//! let cluster = Cluster::new(&world, forkmap::Pool::new().workers(2))?;
//! if let Some(squares) = cluster.map(0..100, |i| (i * i) as u64)? {
//!     // Only the root gets the results.
//!     assert_eq!(squares[9], 81);
//! }
//! # Ok::<(), forkmap::Error>(())
//! ```

mod call;
mod dispatch;
mod link;
mod local;
mod wire;

use std::cell::RefCell;
use std::sync::mpsc;
use std::time::Duration;

use ::mpi::collective::{CommunicatorCollectives, Root};
use ::mpi::environment::{Threading, threading_support};
use ::mpi::topology::{Communicator, SimpleCommunicator};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::job::{Folds, Maps};
use crate::sys::mpi::LentComm;
use crate::{Crew, Pool};
use call::{collect, concat, drive, reduce_in_order, with_ranks};
use dispatch::Dispatcher;
use link::LinkConfig;
use local::{
    CrewFoldBlocks, CrewMapBlocks, CrewResultBlocks, FoldBlocks, Local, MapBlocks, ResultBlocks,
};
use wire::indices_hash;

/// Re-exported: the rsmpi crate this module is built on, so callers use the same version.
pub use ::mpi as rsmpi;

/// The exit code of an MPI job that forkmap aborted because a rank went silent.
pub const ABORT_CODE: i32 = link::ABORT_CODE;

/// A forkmap pool on every rank of an MPI communicator; see the [module docs](self).
///
/// Made collectively: every rank of the communicator calls [`Cluster::new`], and then
/// makes the same calls in the same order.
pub struct Cluster {
    comm: SimpleCommunicator,
    pool: Pool,
    workers: Vec<usize>,
    rank_timeout: Duration,
    block_time: Duration,
    piece: usize,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("rank", &self.comm.rank())
            .field("size", &self.comm.size())
            .field("pool", &self.pool)
            .field("workers", &self.workers)
            .field("rank_timeout", &self.rank_timeout)
            .field("block_time", &self.block_time)
            .finish()
    }
}

/// Which call the ranks make, checked to be the same on every rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Map = 1,
    MapResults = 2,
    Fold = 3,
    MapAll = 4,
    FoldAll = 5,
}

impl Call {
    fn name(code: u64) -> &'static str {
        match code {
            1 => "map",
            2 => "map_results",
            3 => "fold",
            4 => "map_all",
            5 => "fold_all",
            _ => "an unknown call",
        }
    }
}

/// One block's output on the root: where it starts, which rank ran it, what it gave.
pub(crate) type Outputs<O> = Vec<(usize, i32, O)>;

impl Cluster {
    /// Makes a cluster over `comm` (every rank calls this), each rank running its blocks
    /// on `pool`. The communicator is duplicated, so forkmap's messages never mix with
    /// the caller's.
    ///
    /// # Errors
    /// On every rank, when any rank:
    /// - is bound to one CPU of a node that has more and `FORKMAP_WORKERS` is not set
    ///   ([`Error::Config`]): mpirun's default binding pins each rank to one core, so its
    ///   pool would fork one worker. Launch with `mpirun --bind-to none` or
    ///   `--map-by ppr:1:node:PE=<cores>`, or `srun --cpus-per-task=<cores>`; or set
    ///   `FORKMAP_WORKERS` (to 1 for one worker per rank on purpose);
    /// - has a pool whose worker count is invalid ([`Error::Config`], [`Error::NoWorkers`]
    ///   on that rank);
    ///
    /// and [`Error::Config`] when MPI was initialised below `Threading::Serialized`.
    pub fn new<C: Communicator>(comm: &C, pool: Pool) -> Result<Cluster, Error> {
        let level = threading_support();
        if level < Threading::Serialized {
            return Err(Error::Config(format!(
                "MPI was initialised at Threading::{level:?}; a forkmap Cluster does its MPI \
                 traffic on a second thread and needs Threading::Serialized or Multiple: \
                 initialise with mpi::initialize_with_threading(Threading::Multiple)"
            )));
        }
        let own = pool.worker_count();
        let (mask, online) = cpus();
        let bound = std::env::var_os("FORKMAP_WORKERS").is_none() && mask == 1 && online > 1;
        let status: u64 = if own.is_err() {
            1
        } else {
            u64::from(bound) * 2
        };
        let mine = [
            status,
            own.as_ref().map_or(0, |&w| w as u64),
            mask as u64,
            online as u64,
        ];
        let size = comm.size() as usize;
        let mut all = vec![0u64; 4 * size];
        comm.all_gather_into(&mine[..], &mut all[..]);
        let me = comm.rank() as usize;
        if let Some(r) = (0..size).find(|&r| all[4 * r] != 0) {
            let row = &all[4 * r..4 * r + 4];
            return Err(match (row[0], r == me, own) {
                (1, true, Err(e)) => e,
                (1, _, _) => Error::Config(format!(
                    "rank {r}'s pool has an invalid worker count (see FORKMAP_WORKERS there)"
                )),
                _ => Error::Config(format!(
                    "rank {r} may run on {} of its node's {} CPUs (mpirun binds each rank to \
                     one core by default), so its pool would fork one worker: launch with \
                     `mpirun --bind-to none` or `--map-by ppr:1:node:PE={}`, or \
                     `srun --cpus-per-task={}`; or set FORKMAP_WORKERS",
                    row[2], row[3], row[3], row[3]
                )),
            });
        }
        Ok(Cluster {
            comm: comm.duplicate(),
            pool,
            workers: (0..size).map(|r| all[4 * r + 1] as usize).collect(),
            rank_timeout: Duration::from_secs(60),
            block_time: Duration::from_secs(1),
            piece: 1 << 30,
        })
    }

    /// Aborts the MPI job when a rank (or, seen from a rank, the root) has sent nothing
    /// for `limit` during a call (default 60 s). Beats go out every second, so a limit
    /// of a few seconds is the least that makes sense.
    pub fn rank_timeout(mut self, limit: Duration) -> Cluster {
        self.rank_timeout = limit;
        self
    }

    /// Caps a block at about `target` of the rank's measured work (default 1 s): smaller
    /// blocks stop a failing call sooner and balance better, larger ones fork less often.
    /// The root's setting is the one used.
    pub fn block_time(mut self, target: Duration) -> Cluster {
        self.block_time = target;
        self
    }

    /// Splits results into MPI messages of at most `bytes` (default 1 GiB); for tests.
    #[doc(hidden)]
    pub fn max_message_bytes(mut self, bytes: usize) -> Cluster {
        self.piece = bytes.clamp(1, 1 << 30);
        self
    }

    /// This process's rank in the cluster's communicator.
    pub fn rank(&self) -> i32 {
        self.comm.rank()
    }

    /// The number of ranks.
    pub fn size(&self) -> i32 {
        self.comm.size()
    }

    /// Whether this rank is the root (rank 0), which gets the results.
    pub fn is_root(&self) -> bool {
        self.comm.rank() == 0
    }

    /// Runs `f` on every index over all the ranks' workers; the root gets the results in
    /// the order of `indices` (`Some`), every other rank `None`.
    ///
    /// Every rank calls it with the same `indices` (checked). `f` runs in forked workers
    /// and must never call MPI.
    ///
    /// # Errors
    /// The same on every rank: [`Error::Mpi`] when the ranks' `indices` differ (or one
    /// rank makes another call); [`Error::OnRank`] for the first task that failed on any
    /// rank (panic, dead worker, timeout), after every rank has stopped and reaped its
    /// workers. On the root only, [`Error::Mpi`] when a rank's results cannot be decoded.
    pub fn map<I, F, R>(&self, indices: I, f: F) -> Result<Option<Vec<R>>, Error>
    where
        I: IntoIterator<Item = usize>,
        F: Fn(usize) -> R,
        R: Serialize + DeserializeOwned,
    {
        let indices = collect(indices)?;
        let local = MapBlocks {
            pool: &self.pool,
            f: &f,
        };
        self.run(&indices, &local, Call::Map)?
            .map(|o| concat(o?, indices.len()))
            .transpose()
    }

    /// Like [`map`](Cluster::map), but a failing task does not stop the call: on the root
    /// every task has its own `Result`, a failure being [`Error::OnRank`] with its rank
    /// (the name follows [`Pool::map_results`]).
    ///
    /// # Errors
    /// As for `map`, except that task failures are in their slots; [`Error::OnRank`] is
    /// returned for failures of a rank's pool itself (set-up, interruption).
    pub fn map_results<I, F, R>(
        &self,
        indices: I,
        f: F,
    ) -> Result<Option<Vec<Result<R, Error>>>, Error>
    where
        I: IntoIterator<Item = usize>,
        F: Fn(usize) -> R,
        R: Serialize + DeserializeOwned,
    {
        let indices = collect(indices)?;
        let local = ResultBlocks {
            pool: &self.pool,
            f: &f,
        };
        let Some(outputs) = self.run(&indices, &local, Call::MapResults)? else {
            return Ok(None);
        };
        concat(with_ranks(outputs?), indices.len()).map(Some)
    }

    /// Folds every index into a `T` over all the ranks: each worker folds runs of
    /// consecutive positions from `identity()` with `fold`, and the partials are combined
    /// in position order with `reduce` (on each rank per block, then on the root), so
    /// `reduce` must be associative but need not be commutative. The root gets
    /// `Some(total)`, every other rank `None`.
    ///
    /// # Errors
    /// As for [`map`](Cluster::map); a failing task is reported with the run of positions
    /// it was folded in.
    ///
    /// # Examples
    /// ```
    /// use forkmap::mpi::{Cluster, rsmpi::{self, Threading}};
    ///
    /// let (universe, _) = rsmpi::initialize_with_threading(Threading::Multiple).unwrap();
    /// let cluster = Cluster::new(&universe.world(), forkmap::Pool::new().workers(2))?;
    /// let total = cluster.fold(1..=100, || 0u64, |acc, i| acc + i as u64, |a, b| a + b)?;
    /// if cluster.is_root() {
    ///     assert_eq!(total, Some(5050));
    /// }
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn fold<I, ID, F, C, T>(
        &self,
        indices: I,
        identity: ID,
        fold: F,
        reduce: C,
    ) -> Result<Option<T>, Error>
    where
        I: IntoIterator<Item = usize>,
        ID: Fn() -> T,
        F: Fn(T, usize) -> T,
        C: Fn(T, T) -> T,
        T: Serialize + DeserializeOwned,
    {
        self.fold_call(indices, identity, fold, reduce, Call::Fold)
    }

    fn fold_call<I, ID, F, C, T>(
        &self,
        indices: I,
        identity: ID,
        fold: F,
        reduce: C,
        call: Call,
    ) -> Result<Option<T>, Error>
    where
        I: IntoIterator<Item = usize>,
        ID: Fn() -> T,
        F: Fn(T, usize) -> T,
        C: Fn(T, T) -> T,
        T: Serialize + DeserializeOwned,
    {
        let indices = collect(indices)?;
        let local = FoldBlocks {
            pool: &self.pool,
            identity: &identity,
            fold: &fold,
            reduce: &reduce,
        };
        let Some(outputs) = self.run(&indices, &local, call)? else {
            return Ok(None);
        };
        Ok(Some(
            reduce_in_order(outputs?, &reduce).unwrap_or_else(identity),
        ))
    }

    /// Like [`map`](Cluster::map), but every rank gets the results: the root broadcasts
    /// them (in pieces of at most 1 GiB) once the map is done.
    ///
    /// # Errors
    /// As for `map`, on every rank (a decoding failure on the root included).
    pub fn map_all<I, F, R>(&self, indices: I, f: F) -> Result<Vec<R>, Error>
    where
        I: IntoIterator<Item = usize>,
        F: Fn(usize) -> R,
        R: Serialize + DeserializeOwned,
    {
        let indices = collect(indices)?;
        let local = MapBlocks {
            pool: &self.pool,
            f: &f,
        };
        let at_root = self
            .run(&indices, &local, Call::MapAll)?
            .map(|o| concat(o?, indices.len()));
        self.share(at_root)
    }

    /// Like [`fold`](Cluster::fold), but every rank gets the total.
    ///
    /// # Errors
    /// As for `fold`, on every rank.
    pub fn fold_all<I, ID, F, C, T>(
        &self,
        indices: I,
        identity: ID,
        fold: F,
        reduce: C,
    ) -> Result<T, Error>
    where
        I: IntoIterator<Item = usize>,
        ID: Fn() -> T,
        F: Fn(T, usize) -> T,
        C: Fn(T, T) -> T,
        T: Serialize + DeserializeOwned,
    {
        let at_root = self
            .fold_call(indices, identity, fold, reduce, Call::FoldAll)?
            .map(Ok);
        self.share(at_root)
    }

    /// Like [`map`](Cluster::map), on a [`Crew`] forked once: every block of every call
    /// runs on the crew's processes (nothing is forked per block), with the crew's
    /// function. Fork the crew before `MPI_Init` where the fabric is RDMA: its workers
    /// then carry no MPI state at all.
    ///
    /// # Errors
    /// As for `map`.
    ///
    /// # Examples
    /// ```
    /// use forkmap::mpi::{Cluster, rsmpi::{self, Threading}};
    ///
    /// let pool = forkmap::Pool::new().workers(2);
    /// let mut crew = pool.spawn(|i| i * 3)?;          // forked before MPI starts
    /// let (universe, _) = rsmpi::initialize_with_threading(Threading::Multiple).unwrap();
    /// let cluster = Cluster::new(&universe.world(), pool)?;
    /// for _ in 0..3 {
    ///     if let Some(v) = cluster.map_crew(&mut crew, 0..100)? {
    ///         assert_eq!(v[7], 21);
    ///     }
    /// }
    /// assert_eq!(crew.forks(), 2);                     // no fork per block or per call
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn map_crew<J, I>(
        &self,
        crew: &mut Crew<J>,
        indices: I,
    ) -> Result<Option<Vec<J::Out>>, Error>
    where
        J: Maps,
        J::Out: Serialize + DeserializeOwned,
        I: IntoIterator<Item = usize>,
    {
        let indices = collect(indices)?;
        let local = CrewMapBlocks {
            crew: RefCell::new(crew),
        };
        self.run(&indices, &local, Call::Map)?
            .map(|o| concat(o?, indices.len()))
            .transpose()
    }

    /// Like [`map_results`](Cluster::map_results), on a [`Crew`] (see
    /// [`map_crew`](Cluster::map_crew)).
    ///
    /// # Errors
    /// As for `map_results`.
    #[allow(clippy::type_complexity)]
    pub fn map_results_crew<J, I>(
        &self,
        crew: &mut Crew<J>,
        indices: I,
    ) -> Result<Option<Vec<Result<J::Out, Error>>>, Error>
    where
        J: Maps,
        J::Out: Serialize + DeserializeOwned,
        I: IntoIterator<Item = usize>,
    {
        let indices = collect(indices)?;
        let local = CrewResultBlocks {
            crew: RefCell::new(crew),
        };
        let Some(outputs) = self.run(&indices, &local, Call::MapResults)? else {
            return Ok(None);
        };
        concat(with_ranks(outputs?), indices.len()).map(Some)
    }

    /// Like [`fold`](Cluster::fold), on a crew of folds (`Pool::spawn_fold`); `reduce`
    /// combines partials in position order.
    ///
    /// # Errors
    /// As for `fold`.
    pub fn fold_crew<J, I, C>(
        &self,
        crew: &mut Crew<J>,
        indices: I,
        reduce: C,
    ) -> Result<Option<J::Out>, Error>
    where
        J: Folds,
        J::Out: Serialize + DeserializeOwned,
        I: IntoIterator<Item = usize>,
        C: Fn(J::Out, J::Out) -> J::Out,
    {
        let indices = collect(indices)?;
        // A fold over no positions runs nothing: it is the crew's identity.
        let identity = crew.fold(std::iter::empty(), &reduce)?;
        let local = CrewFoldBlocks {
            crew: RefCell::new(crew),
            reduce: &reduce,
        };
        let Some(outputs) = self.run(&indices, &local, Call::Fold)? else {
            return Ok(None);
        };
        Ok(Some(reduce_in_order(outputs?, &reduce).unwrap_or(identity)))
    }

    /// Broadcasts the root's value (or its error) to every rank.
    fn share<T: Serialize + DeserializeOwned>(
        &self,
        at_root: Option<Result<T, Error>>,
    ) -> Result<T, Error> {
        let root = self.comm.process_at_rank(0);
        let mut bytes = Vec::new();
        let mut header = [0u64; 2];
        let mut value = None;
        if let Some(v) = at_root {
            match v.and_then(|v| {
                postcard::to_stdvec(&v)
                    .map(|b| (v, b))
                    .map_err(|e| Error::Mpi(format!("could not encode the results: {e}")))
            }) {
                Ok((v, b)) => {
                    value = Some(v);
                    bytes = b;
                }
                Err(e) => {
                    header[0] = 1;
                    bytes = e.to_string().into_bytes();
                }
            }
            header[1] = bytes.len() as u64;
        }
        root.broadcast_into(&mut header[..]);
        if !self.is_root() {
            bytes = vec![0; header[1] as usize];
        }
        for range in wire::pieces(bytes.len(), self.piece) {
            root.broadcast_into(&mut bytes[range]);
        }
        if header[0] == 1 {
            let message = String::from_utf8_lossy(&bytes);
            return Err(Error::Mpi(format!("at the root: {message}")));
        }
        match value {
            Some(v) => Ok(v),
            None => postcard::from_bytes(&bytes)
                .map_err(|e| Error::Mpi(format!("could not decode the root's results: {e}"))),
        }
    }

    /// Checks that every rank makes this call with these indices.
    fn agree(&self, indices: &[usize], call: Call) -> Result<(), Error> {
        let mine = [indices.len() as u64, indices_hash(indices), call as u64];
        let size = self.comm.size() as usize;
        let mut all = vec![0u64; 3 * size];
        self.comm.all_gather_into(&mine[..], &mut all[..]);
        let first = &all[..3];
        let Some(r) = (1..size).find(|&r| all[3 * r..3 * r + 3] != *first) else {
            return Ok(());
        };
        let row = &all[3 * r..3 * r + 3];
        Err(Error::Mpi(if row[2] != first[2] {
            format!(
                "rank {r} called Cluster::{} while rank 0 called Cluster::{}: every rank must \
                 make the same calls",
                Call::name(row[2]),
                Call::name(first[2])
            )
        } else if row[0] != first[0] {
            format!(
                "rank {r} has {} indices, rank 0 has {}: every rank must pass the same indices",
                row[0], first[0]
            )
        } else {
            format!(
                "rank {r}'s {} indices differ from rank 0's (content hash {:016x}, rank 0 \
                 {:016x}): every rank must pass the same indices",
                row[0], row[1], first[1]
            )
        }))
    }

    /// One call: the link thread talks, this thread runs blocks. On the root, `Some` of
    /// every block's output (or the error of decoding one); `None` elsewhere.
    #[allow(clippy::type_complexity)]
    fn run<L: Local>(
        &self,
        indices: &[usize],
        local: &L,
        call: Call,
    ) -> Result<Option<Result<Outputs<L::Output>, Error>>, Error> {
        self.agree(indices, call)?;
        let root = self.is_root();
        if indices.is_empty() {
            return Ok(root.then(|| Ok(Vec::new())));
        }
        let cfg = LinkConfig {
            rank_timeout: self.rank_timeout,
            piece: self.piece,
        };
        let (to_link, link_rx) = mpsc::channel();
        let (to_main, main_rx) = mpsc::channel();
        let comm = LentComm(&self.comm);
        std::thread::scope(|s| {
            let link = if root {
                let book = Dispatcher::new(indices.len(), &self.workers, self.block_time);
                s.spawn(move || link::serve_root(comm, book, to_main, link_rx, cfg))
            } else {
                s.spawn(move || link::serve_rank(comm, to_main, link_rx, cfg))
            };
            let out = drive(indices, local, root, &to_link, &main_rx);
            drop(to_link);
            if let Err(panic) = link.join() {
                std::panic::resume_unwind(panic);
            }
            out
        })
    }
}

/// This process's affinity mask size and the node's online CPUs (1, 1 when unknown, which
/// turns the binding check off).
fn cpus() -> (usize, usize) {
    match crate::sys::cpus::affinity_cpus() {
        Ok(mask) => {
            let online = crate::sys::cpus::online_cpus().unwrap_or(mask);
            (mask, online.max(mask))
        }
        Err(_) => (1, 1),
    }
}
