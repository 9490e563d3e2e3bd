//! HDF5 files of rows and numeric arrays (cargo feature `hdf5`): one dataset per call.
//!
//! A [`Row`] is written as a compound dataset whose type is the row's in-memory layout:
//! each field at its offset (`[u8; N]` a fixed ASCII string of `N` bytes, NUL padded;
//! integers, floats and [`Bool`](crate::row::Bool) as their native types) and the padding
//! as holes, so the library writes the array's memory as it is, with no per-row copy or
//! conversion. h5py reads it as the numpy dtype with the same names, formats, offsets and
//! itemsize (see the table in [`row`](crate::row)); `h5dump` shows the fields. Numeric
//! arrays of any dimension are written with their plain type.
//!
//! The library is the system's libhdf5 through hdf5-metno (on Debian: `libhdf5-dev` and
//! `pkg-config`). It is used from one process at a time: write from the coordinator,
//! after the workers have handed their arrays over.
//!
//! # Examples
//! ```
//! use forkmap::h5;
//!
//! #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable, forkmap::Row)]
//! #[repr(C)]
//! struct Methylation { chr: [u8; 10], _pad: [u8; 2], pos: i32, pct: f32, c: i32, t: i32 }
//!
//! let dir = std::env::temp_dir().join(format!("forkmap-doc-h5-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let row = Methylation { chr: *b"chr1\0\0\0\0\0\0", _pad: [0; 2], pos: 7, pct: 50.0, c: 1, t: 1 };
//! let rows = ndarray::Array1::from_elem(100, row);
//!
//! let out = h5::Writer::create(dir.join("out.h5"))?;
//! out.write("data1", rows.view())?;
//! out.write("grid", ndarray::Array2::<f64>::zeros((3, 4)).view())?;
//! out.close()?;
//!
//! let back = h5::read_shared::<Methylation>(dir.join("out.h5"), "data1")?;
//! assert_eq!(*back.read(), rows);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), forkmap::Error>(())
//! ```

use std::path::{Path, PathBuf};

use bytemuck::Pod;
use hdf5_metno as hdf5;
use hdf5_metno::H5Type;
use hdf5_metno::types::{CompoundField, CompoundType, FloatSize, IntSize, TypeDescriptor};
use ndarray::{ArrayView, Dimension, Ix1};

use crate::error::Error;
use crate::row::{Kind, Row, check_layout};
use crate::shm::SharedArray;

fn hdf5_error(path: &Path, action: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Hdf5 {
        path: path.to_path_buf(),
        action,
        message: e.to_string(),
    }
}

/// The HDF5 type of a row: a compound of its fields at their offsets, padding as holes.
#[doc(hidden)]
pub fn row_descriptor<T: Row>() -> TypeDescriptor {
    check_layout::<T>();
    let fields = T::FIELDS
        .iter()
        .enumerate()
        .map(|(k, f)| CompoundField::new(f.name, kind_descriptor(f.kind), f.offset, k))
        .collect();
    TypeDescriptor::Compound(CompoundType {
        fields,
        size: std::mem::size_of::<T>(),
    })
}

fn kind_descriptor(kind: Kind) -> TypeDescriptor {
    match kind {
        Kind::I8 => TypeDescriptor::Integer(IntSize::U1),
        Kind::I16 => TypeDescriptor::Integer(IntSize::U2),
        Kind::I32 => TypeDescriptor::Integer(IntSize::U4),
        Kind::I64 => TypeDescriptor::Integer(IntSize::U8),
        Kind::U8 => TypeDescriptor::Unsigned(IntSize::U1),
        Kind::U16 => TypeDescriptor::Unsigned(IntSize::U2),
        Kind::U32 => TypeDescriptor::Unsigned(IntSize::U4),
        Kind::U64 => TypeDescriptor::Unsigned(IntSize::U8),
        Kind::F32 => TypeDescriptor::Float(FloatSize::U4),
        Kind::F64 => TypeDescriptor::Float(FloatSize::U8),
        Kind::Bool => TypeDescriptor::Boolean,
        Kind::Ascii(n) => TypeDescriptor::FixedAscii(n),
    }
}

/// An HDF5 file being written, one dataset per call to [`write`](Self::write).
pub struct Writer {
    file: hdf5::File,
    path: PathBuf,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("path", &self.path).finish()
    }
}

impl Writer {
    /// Creates the file, replacing an existing one.
    ///
    /// # Errors
    /// [`Error::Hdf5`] when the library cannot create it.
    pub fn create(path: impl AsRef<Path>) -> Result<Writer, Error> {
        let path = path.as_ref();
        let file = hdf5::File::create(path).map_err(|e| hdf5_error(path, "create it", e))?;
        Ok(Writer {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `array` as the new dataset `name` (a path inside the file, such as
    /// `"data1"`; its groups must exist): rows of a `#[derive(forkmap::Row)]` type as a
    /// compound dataset straight from the array's memory, or numbers of any dimension.
    /// Pass a shared array as `writer.write("data1", shared.read().view())`.
    ///
    /// # Errors
    /// [`Error::Hdf5`] when the dataset exists already, the name is invalid, or the
    /// library fails to write.
    pub fn write<T: H5Type + Clone, D: Dimension>(
        &self,
        name: &str,
        array: ArrayView<'_, T, D>,
    ) -> Result<(), Error> {
        let path = &self.path;
        let array = array.as_standard_layout();
        self.file
            .new_dataset_builder()
            .with_data(&array)
            .create(name)
            .map_err(|e| hdf5_error(path, "write the dataset", e))?;
        Ok(())
    }

    /// Flushes and closes the file. Dropping the writer closes it too, but without a
    /// chance to report an error.
    ///
    /// # Errors
    /// [`Error::Hdf5`] when the library fails to flush or close it.
    pub fn close(self) -> Result<(), Error> {
        let Writer { file, path } = self;
        file.flush().map_err(|e| hdf5_error(&path, "flush it", e))?;
        file.close().map_err(|e| hdf5_error(&path, "close it", e))
    }
}

/// Reads the one-dimensional dataset `name` into a new [`SharedArray`] of `T`: a
/// compound dataset into rows (each of `T`'s fields must be in the file, by name, with
/// the same type; the file may hold more fields, and any layout, packed or not), or a
/// numeric dataset of exactly `T`'s type.
///
/// # Errors
/// [`Error::Hdf5`] when the file or dataset cannot be opened or read, is not
/// one-dimensional, or its type does not match `T` (the field and both types are named);
/// [`Error::Shm`] when the shared memory cannot be made.
pub fn read_shared<T: H5Type + Pod>(
    path: impl AsRef<Path>,
    name: &str,
) -> Result<SharedArray<T, Ix1>, Error> {
    let path = path.as_ref();
    let mismatch = |message: String| Error::Hdf5 {
        path: path.to_path_buf(),
        action: "read the dataset",
        message,
    };
    let file = hdf5::File::open(path).map_err(|e| hdf5_error(path, "open it", e))?;
    let dataset = file
        .dataset(name)
        .map_err(|e| hdf5_error(path, "open the dataset", e))?;
    if dataset.ndim() != 1 {
        return Err(mismatch(format!(
            "{name} has {} dimensions, not 1",
            dataset.ndim()
        )));
    }
    let have = dataset
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| hdf5_error(path, "read the dataset's type", e))?;
    check_type(&T::type_descriptor(), &have, std::any::type_name::<T>())
        .map_err(|m| mismatch(format!("{name}: {m}")))?;
    let rows: Vec<T> = dataset
        .read_raw()
        .map_err(|e| hdf5_error(path, "read the dataset", e))?;
    let shared = SharedArray::<T, Ix1>::zeros(rows.len())?;
    shared
        .write()
        .as_slice_mut()
        .expect("a new one-dimensional array is contiguous")
        .copy_from_slice(&rows);
    Ok(shared)
}

/// Whether data of the file's type `have` reads as `want` without a lossy conversion.
fn check_type(want: &TypeDescriptor, have: &TypeDescriptor, what: &str) -> Result<(), String> {
    match (want, have) {
        (TypeDescriptor::Compound(w), TypeDescriptor::Compound(h)) => {
            for field in &w.fields {
                let Some(found) = h.fields.iter().find(|f| f.name == field.name) else {
                    let names: Vec<&str> = h.fields.iter().map(|f| f.name.as_str()).collect();
                    return Err(format!(
                        "the dataset has no field {:?} of {what} (its fields: {})",
                        field.name,
                        names.join(", ")
                    ));
                };
                if found.ty != field.ty {
                    return Err(format!(
                        "field {:?} is {} in the file, {} in {what}",
                        field.name, found.ty, field.ty
                    ));
                }
            }
            Ok(())
        }
        _ if want == have => Ok(()),
        _ => Err(format!("the dataset's type is {have}, {what} is {want}")),
    }
}

#[cfg(test)]
mod tests;
