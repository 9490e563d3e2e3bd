#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The derive's expansions name `::forkmap::...`, in this crate's tests and examples too.
extern crate self as forkmap;

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
#[cfg(feature = "mpi")]
#[cfg_attr(docsrs, doc(cfg(feature = "mpi")))]
pub mod mpi;
/// The jobs a [`Crew`] runs (what `J` is in `Crew<J>`): named in types, never built by
/// hand.
pub mod job {
    pub use crate::worker::{FoldJob, Folds, InitJob, Job, MapJob, Maps};
}
pub mod npy;
pub mod records;
pub mod row;
pub mod text;

pub use error::{Error, ExitKind};
/// `#[derive(forkmap::Row)]`: see [`row`].
pub use forkmap_derive::Row;
pub use pool::{Completed, Crew, Imap, ImapUnordered, Pool, Retirement};
pub use shm::{FrozenArray, ReadGuard, SharedArray, WriteGuard};
pub use worker::WorkerInfo;

/// Re-exported: `SharedArray` elements are `bytemuck::Pod` (derive it on your own rows).
pub use bytemuck;
/// Re-exported: [`Pool::progress_bar`] takes an `indicatif::ProgressBar`.
pub use indicatif;
/// Re-exported so callers can name the element types and views without a version clash.
pub use ndarray;

/// What `#[derive(Row)]` expands to refers to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::__row_h5 as row_h5;
    pub use crate::__row_npy as row_npy;
    pub use bytemuck;
    #[cfg(feature = "hdf5")]
    pub use hdf5_metno;
    pub use ndarray_npy;
    pub use py_literal;
}

/// The HDF5 element type of a row (feature `hdf5`), built from its field table.
#[cfg(feature = "hdf5")]
#[doc(hidden)]
#[macro_export]
macro_rules! __row_h5 {
    ($t:ty) => {
        // SAFETY: the descriptor is built from `Row::FIELDS` (checked against the type's
        // size), which the derive takes from the type's real layout; padding is a hole.
        unsafe impl $crate::__private::hdf5_metno::H5Type for $t {
            fn type_descriptor() -> $crate::__private::hdf5_metno::types::TypeDescriptor {
                $crate::h5::row_descriptor::<$t>()
            }
        }
    };
}

/// Without the `hdf5` feature, rows have no HDF5 type.
#[cfg(not(feature = "hdf5"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __row_h5 {
    ($t:ty) => {};
}

/// The `.npy` element impls of a row, built from its field table.
#[doc(hidden)]
#[macro_export]
macro_rules! __row_npy {
    ($t:ty) => {
        impl $crate::__private::ndarray_npy::WritableElement for $t {
            fn type_descriptor() -> $crate::__private::py_literal::Value {
                $crate::npy::row_descriptor::<$t>()
            }
            fn write<W: ::std::io::Write>(
                &self,
                writer: W,
            ) -> ::core::result::Result<(), $crate::__private::ndarray_npy::WriteDataError> {
                $crate::npy::write_rows(::core::slice::from_ref(self), writer)
            }
            fn write_slice<W: ::std::io::Write>(
                slice: &[Self],
                writer: W,
            ) -> ::core::result::Result<(), $crate::__private::ndarray_npy::WriteDataError> {
                $crate::npy::write_rows(slice, writer)
            }
        }
        impl $crate::__private::ndarray_npy::ReadableElement for $t {
            fn read_to_end_exact_vec<R: ::std::io::Read>(
                reader: R,
                type_desc: &$crate::__private::py_literal::Value,
                len: usize,
            ) -> ::core::result::Result<
                ::std::vec::Vec<Self>,
                $crate::__private::ndarray_npy::ReadDataError,
            > {
                $crate::npy::read_rows(reader, type_desc, len)
            }
        }
    };
}

/// Serialises the unit tests that fork with those that hold files whose locks a forked
/// child would inherit (an HDF5 file's `flock` stays held while any copy of its
/// descriptor is open, so a fork from another test thread could hold it).
#[cfg(test)]
pub(crate) fn fork_test_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
