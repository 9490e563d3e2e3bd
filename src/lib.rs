#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

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
#[cfg_attr(docsrs, doc(cfg(feature = "hdf5")))]
pub mod h5;
pub mod records;

pub use error::{Error, ExitKind};
pub use pool::Pool;
pub use records::Record;
pub use shm::{FrozenArray, ReadGuard, SharedArray, WriteGuard};

/// Re-exported: `SharedArray` elements are `bytemuck::Pod` (derive it on your own rows).
pub use bytemuck;
/// Re-exported: [`Pool::progress_bar`] takes an `indicatif::ProgressBar`.
pub use indicatif;
/// Re-exported so callers can name the element types and views without a version clash.
pub use ndarray;

/// Serialises the unit tests that fork with those that hold files whose locks a forked
/// child would inherit (an HDF5 file's `flock` stays held while any copy of its
/// descriptor is open, so a fork from another test thread could hold it).
#[cfg(test)]
pub(crate) fn fork_test_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
