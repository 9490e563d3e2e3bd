#![doc = include_str!("../README.md")]

mod error;
mod ipc;
mod pool;
mod progress;
mod schedule;
mod shm;
mod sync;
mod sys;
mod worker;

#[cfg(feature = "hdf5")]
pub mod h5;
pub mod records;

pub use error::{Error, ExitKind};
pub use pool::Pool;
pub use records::Record;
pub use shm::{FrozenArray, ReadGuard, SharedArray, WriteGuard};

/// Re-exported so callers can name the element types and views without a version clash.
pub use ndarray;
