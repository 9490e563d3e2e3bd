//! HDF5 files of [`Record`]s (cargo feature `hdf5`): one compound dataset per input.
//!
//! Each dataset is one-dimensional, of the compound type `chr` (a fixed ASCII string of
//! 10 bytes, NUL padded), `pos` (32-bit integer), `pct` (32-bit float), `c` and `t`
//! (32-bit integers), little-endian and packed (26 bytes a row) in the file: what h5py
//! gives for numpy's `[('chr', 'S10'), ('pos', '<i4'), ('pct', '<f4'), ('c', '<i4'),
//! ('t', '<i4')]`, so `h5py.File(path)[name][:]` reads it back as that dtype.
//!
//! The library is the system's libhdf5 through hdf5-metno (on Debian: `libhdf5-dev` and
//! `pkg-config`). It is used from one process at a time: write from the coordinator,
//! after the workers have handed their arrays over.
//!
//! # Examples
//! ```
//! use forkmap::h5;
//! use forkmap::records;
//!
//! let dir = std::env::temp_dir().join(format!("forkmap-doc-h5-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let rows = ndarray::Array1::from_iter(records::sample(100, 1));
//!
//! let out = h5::Writer::create(dir.join("out.h5"))?;
//! out.write_records("data1", rows.view())?;
//! out.close()?;
//!
//! let back = h5::read_records(dir.join("out.h5"), "data1")?;
//! assert_eq!(back, rows);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), forkmap::Error>(())
//! ```

use std::path::{Path, PathBuf};

use hdf5_metno as hdf5;
use hdf5_metno::types::FixedAscii;
use ndarray::{Array1, ArrayView1};

use crate::error::Error;
use crate::records::{CHR_LEN, Record};

/// Rows converted and written at a time, so the conversion needs little memory.
const CHUNK_ROWS: usize = 1 << 16;

/// The in-memory HDF5 twin of [`Record`]: the derive describes its fields (and their
/// offsets) to the library. Packed, so its layout is exactly the file's 26-byte compound
/// type and the library copies rows as they are instead of converting each one (about 5x
/// faster writes; the derive accepts `repr(packed)` but not `repr(C, packed)`).
// The derive computes each field's real offset, so correctness does not rest on the
// field order that plain `repr(packed)` leaves to the compiler.
#[allow(clippy::repr_packed_without_abi)]
#[derive(hdf5_metno::H5Type, Clone, Copy)]
#[repr(packed)]
struct Row {
    chr: FixedAscii<CHR_LEN>,
    pos: i32,
    pct: f32,
    c: i32,
    t: i32,
}

fn hdf5_error(path: &Path, action: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Hdf5 {
        path: path.to_path_buf(),
        action,
        message: e.to_string(),
    }
}

/// An HDF5 file being written, one dataset of records per call to
/// [`write_records`](Self::write_records).
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

    /// Writes `records` as the new dataset `name` (a path inside the file, such as
    /// `"data1"`; its groups must exist). Pass a shared array's rows with
    /// `writer.write_records("data1", shared.read().view())`.
    ///
    /// # Errors
    /// [`Error::Hdf5`] when the dataset exists already, the name is invalid, a record's
    /// `chr` is not ASCII, or the library fails to write.
    pub fn write_records(&self, name: &str, records: ArrayView1<'_, Record>) -> Result<(), Error> {
        let path = &self.path;
        let dataset = self
            .file
            .new_dataset_builder()
            .packed(true)
            .empty::<Row>()
            .shape(records.len())
            .create(name)
            .map_err(|e| hdf5_error(path, "create the dataset", e))?;
        let mut rows = Vec::with_capacity(CHUNK_ROWS.min(records.len()));
        let mut start = 0;
        while start < records.len() {
            let end = (start + CHUNK_ROWS).min(records.len());
            rows.clear();
            for (k, r) in records.slice(ndarray::s![start..end]).iter().enumerate() {
                let chr = FixedAscii::from_ascii(r.chr_bytes()).map_err(|_| Error::Hdf5 {
                    path: path.clone(),
                    action: "write the dataset",
                    message: format!(
                        "record {} of {name}: chr {:?} is not ASCII",
                        start + k,
                        r.chr_str()
                    ),
                })?;
                rows.push(Row {
                    chr,
                    pos: r.pos,
                    pct: r.pct,
                    c: r.c,
                    t: r.t,
                });
            }
            dataset
                .write_slice(&rows, start..end)
                .map_err(|e| hdf5_error(path, "write the dataset", e))?;
            start = end;
        }
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

/// Reads the dataset `name` of records from an HDF5 file, as [`Writer`] writes it (any
/// compound dataset with these five fields converts).
///
/// # Errors
/// [`Error::Hdf5`] when the file or dataset cannot be opened, is not one-dimensional, or
/// does not convert to records.
pub fn read_records(path: impl AsRef<Path>, name: &str) -> Result<Array1<Record>, Error> {
    let path = path.as_ref();
    let file = hdf5::File::open(path).map_err(|e| hdf5_error(path, "open it", e))?;
    let dataset = file
        .dataset(name)
        .map_err(|e| hdf5_error(path, "open the dataset", e))?;
    let rows: Vec<Row> = dataset
        .read_raw()
        .map_err(|e| hdf5_error(path, "read the dataset", e))?;
    if dataset.ndim() != 1 {
        return Err(Error::Hdf5 {
            path: path.to_path_buf(),
            action: "read the dataset",
            message: format!("{name} has {} dimensions, not 1", dataset.ndim()),
        });
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut r = Record::default();
            let bytes = row.chr.as_bytes();
            r.chr[..bytes.len()].copy_from_slice(bytes);
            r.pos = row.pos;
            r.pct = row.pct;
            r.c = row.c;
            r.t = row.t;
            r
        })
        .collect())
}

#[cfg(test)]
mod tests;
