//! `.npy` files of rows and numeric arrays, through `ndarray-npy`: what `np.save` writes
//! and `np.load` reads.
//!
//! A [`Row`] is written as numpy's structured dtype in the list form numpy itself
//! writes for padded dtypes: one `(name, type)` per field and a nameless void
//! `('', '|V2')` for every gap, so `np.load` gives exactly the dtype
//! `{'names': [...], 'formats': [...], 'offsets': [...], 'itemsize': ...}` of the Rust
//! struct, and the bytes are the array's memory as they are. Numeric arrays (`f64`,
//! `i32`, ...) of any dimension are written with their plain type string.
//!
//! # Examples
//! ```
//! #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable, forkmap::Row)]
//! #[repr(C)]
//! struct Hit {
//!     id: u32,
//!     _pad: [u8; 4],
//!     energy: f64,
//! }
//!
//! let dir = std::env::temp_dir().join(format!("forkmap-doc-npy-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let rows = ndarray::arr1(&[Hit { id: 1, _pad: [0; 4], energy: 2.5 }]);
//! forkmap::npy::write(dir.join("hits.npy"), rows.view())?;
//! let back = forkmap::npy::read_shared::<Hit, ndarray::Ix1>(dir.join("hits.npy"))?;
//! assert_eq!(back.read()[0], rows[0]);
//!
//! let grid = ndarray::Array2::<f64>::eye(3);
//! forkmap::npy::write(dir.join("grid.npy"), grid.view())?;
//! let back = forkmap::npy::read_shared::<f64, ndarray::Ix2>(dir.join("grid.npy"))?;
//! assert_eq!(*back.read(), grid);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), forkmap::Error>(())
//! ```

use std::io::{self, Read, Write};
use std::path::Path;

use bytemuck::Pod;
use ndarray::{Array, ArrayView, Dimension};
use ndarray_npy::{ReadDataError, ReadableElement, WritableElement, WriteDataError};
use py_literal::Value;

use crate::error::Error;
use crate::row::{Row, check_layout};
use crate::shm::SharedArray;

/// Writes `array` (rows or numbers, any dimension) as a `.npy` file, replacing one that
/// exists. Pass a shared array as `npy::write(path, shared.read().view())`.
///
/// # Errors
/// [`Error::Npy`] when the file cannot be created or written.
pub fn write<A: WritableElement, D: Dimension>(
    path: impl AsRef<Path>,
    array: ArrayView<'_, A, D>,
) -> Result<(), Error> {
    let path = path.as_ref();
    ndarray_npy::write_npy(path, &array).map_err(|e| Error::Npy {
        path: path.to_path_buf(),
        action: "write it",
        message: e.to_string(),
    })
}

/// Reads a `.npy` file into a new [`SharedArray`] of rows or numbers with `D`'s number
/// of dimensions. A row type's dtype must match the file's exactly (the same field names,
/// types and offsets); a number type must be the file's (no conversion).
///
/// # Errors
/// [`Error::Npy`] when the file cannot be read, its header is malformed, its dtype or
/// dimension count is not the one asked for (both are named), or its data is short or
/// longer than the header says; [`Error::Shm`] when the shared memory cannot be made.
pub fn read_shared<A: ReadableElement + Pod, D: Dimension>(
    path: impl AsRef<Path>,
) -> Result<SharedArray<A, D>, Error> {
    let path = path.as_ref();
    let array: Array<A, D> = ndarray_npy::read_npy(path).map_err(|e| Error::Npy {
        path: path.to_path_buf(),
        action: "read it",
        message: format!("{e} (reading {})", std::any::type_name::<A>()),
    })?;
    SharedArray::from_array(&array)
}

/// numpy's list descriptor of `T`: its fields, with a nameless void for every gap.
#[doc(hidden)]
pub fn row_descriptor<T: Row>() -> Value {
    check_layout::<T>();
    let mut fields: Vec<_> = T::FIELDS.iter().collect();
    fields.sort_by_key(|f| f.offset);
    let mut list = Vec::with_capacity(fields.len() * 2);
    let mut at = 0;
    let gap = |bytes: usize| {
        Value::Tuple(vec![
            Value::String(String::new()),
            Value::String(format!("|V{bytes}")),
        ])
    };
    for field in fields {
        if field.offset > at {
            list.push(gap(field.offset - at));
        }
        list.push(Value::Tuple(vec![
            Value::String(field.name.into()),
            Value::String(field.kind.numpy()),
        ]));
        at = field.offset + field.kind.size();
    }
    let size = std::mem::size_of::<T>();
    if size > at {
        list.push(gap(size - at));
    }
    Value::List(list)
}

/// Writes rows as their memory.
#[doc(hidden)]
pub fn write_rows<T: Row, W: Write>(rows: &[T], mut writer: W) -> Result<(), WriteDataError> {
    writer.write_all(bytemuck::cast_slice(rows))?;
    Ok(())
}

/// Reads `len` rows, checking the file's descriptor against `T`'s.
#[doc(hidden)]
pub fn read_rows<T: Row, R: Read>(
    mut reader: R,
    type_desc: &Value,
    len: usize,
) -> Result<Vec<T>, ReadDataError> {
    let want = row_descriptor::<T>();
    if *type_desc != want {
        return Err(ReadDataError::ParseData(
            format!(
                "the file's dtype is {type_desc}, {} is {want}",
                std::any::type_name::<T>()
            )
            .into(),
        ));
    }
    let mut rows = vec![T::zeroed(); len];
    reader
        .read_exact(bytemuck::cast_slice_mut(&mut rows))
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ReadDataError::MissingData,
            _ => ReadDataError::Io(e),
        })?;
    let mut extra = [0u8; 1];
    match reader.read(&mut extra) {
        Ok(0) => Ok(rows),
        Ok(_) => {
            let rest = io::copy(&mut reader, &mut io::sink()).unwrap_or(0) as usize;
            Err(ReadDataError::ExtraBytes(rest + 1))
        }
        Err(e) => Err(ReadDataError::Io(e)),
    }
}
