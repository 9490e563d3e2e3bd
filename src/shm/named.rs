//! Named segments: a file in `/dev/shm` that another program can open by its name.
//!
//! The creator makes the file with `O_CREAT | O_EXCL` and mode 0600 (so it never
//! adopts a file someone else put there, and other users cannot open it), reserves its
//! pages, then writes the header with the magic number last. An opener checks the file
//! (a regular file, long enough for a header) and the header (magic, version, element
//! type and shape, sizes) before it touches anything else. Only the creating process
//! removes the name, on drop, and only while the name still refers to its file; a forked
//! copy of the handle never does.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use bytemuck::Pod;
use memmap2::MmapOptions;
use ndarray::{Dimension, IntoDimension};

use super::{Header, Layout, MAX_DIMS, Mapping, Segment, SharedArray, write_header};
use crate::error::Error;
use crate::sys::{self, Pid};

/// Hex digits of randomness in a name made by `create_named_unique` (128 bits).
const RANDOM_HEX: usize = 32;

/// A segment's name and, for the process that created it, the duty to remove it.
#[derive(Debug)]
pub(crate) struct Name {
    name: String,
    path: PathBuf,
    owner: Option<Owner>,
}

/// Who removes the name: the creating process, and only while the name still refers to
/// the file it created (device and inode), not to one someone made after removing ours.
#[derive(Debug)]
struct Owner {
    pid: Pid,
    dev: u64,
    ino: u64,
}

impl Drop for Name {
    fn drop(&mut self) {
        let Some(owner) = &self.owner else {
            return;
        };
        // A forked copy of the owner's handle is not the owner.
        if sys::getpid() != owner.pid {
            return;
        }
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.dev() == owner.dev
            && meta.ino() == owner.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn path_of(name: &str) -> PathBuf {
    PathBuf::from(sys::SHM_DIR).join(name)
}

/// Checks that `name` is one file name: 1 to 255 bytes, no `/` or NUL, not `.` or `..`.
fn check_name(name: &str) -> Result<(), Error> {
    let problem = if name.is_empty() {
        "it is empty"
    } else if name.len() > sys::NAME_MAX {
        "it is longer than 255 bytes"
    } else if name.contains('/') {
        "it contains '/'"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else if name == "." || name == ".." {
        "it is a directory's name"
    } else {
        return Ok(());
    };
    Err(Error::shm(
        format!("{name:?}"),
        "use it as a name",
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{problem}; a name is 1 to 255 bytes, without '/' or NUL, not . or .."),
        ),
    ))
}

/// The error for freezing a named segment.
pub(super) fn cannot_freeze(label: &str) -> Error {
    Error::shm(
        label,
        "freeze it: any process of the same user can open a named segment and write to it, \
         so it cannot be sealed (copy it into an anonymous SharedArray to freeze it)",
        io::Error::from(io::ErrorKind::Unsupported),
    )
}

impl Layout {
    /// The data's length and the whole segment's, if they fit the address space.
    fn lengths(&self) -> Option<(usize, usize)> {
        let data_len = self.elements()?.checked_mul(self.elem_size)?;
        let total = self
            .data_offset()
            .checked_add(data_len)
            .filter(|&t| t <= isize::MAX as usize)?;
        Some((data_len, total))
    }
}

impl Segment {
    /// Creates the segment `/dev/shm/<name>` holding `layout`, header written and lock
    /// ready. The name is removed again if anything after its creation fails.
    pub(crate) fn create_named(layout: &Layout, name: &str) -> Result<Segment, Error> {
        check_name(name)?;
        if layout.shape.len() > MAX_DIMS {
            return Err(Error::Mismatch {
                segment: name.into(),
                message: format!(
                    "{} dimensions requested, at most {MAX_DIMS} are supported",
                    layout.shape.len()
                ),
            });
        }
        let (data_len, total) = layout.lengths().ok_or_else(|| {
            Error::shm(name, "size it", io::Error::from(io::ErrorKind::OutOfMemory))
        })?;
        let path = path_of(name);
        sys::fds::raise_nofile_limit();
        let file = sys::create_exclusive(&path)
            .map_err(|e| Error::shm(name, "create it", sys::fds::explain(e)))?;
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(Error::shm(name, "read its inode", e));
            }
        };
        // From here on, dropping `named` (on any early return too) removes the name.
        let named = Name {
            name: name.into(),
            path,
            owner: Some(Owner {
                pid: sys::getpid(),
                dev: meta.dev(),
                ino: meta.ino(),
            }),
        };
        sys::reserve(&file, total).map_err(|e| Error::shm(name, "reserve memory", e))?;
        let map = MmapOptions::new()
            .len(total)
            .map_raw(&file)
            .map_err(|e| Error::shm(name, "map it", e))?;
        let header = map.as_mut_ptr() as *mut Header;
        // (1) The mapping is `total` >= size_of::<Header>() bytes and page aligned, so
        // 64-byte aligned; (2) the file was created empty by this call (O_EXCL) and
        // extended with zeros, so the memory is zeroed; (3) other processes may open the
        // name already, but an opener reads nothing but the magic until it sees it, and
        // write_header stores the magic last, with Release.
        // SAFETY: (1)-(3) above are write_header's contract.
        unsafe { write_header(header, layout, data_len) }
            .map_err(|e| Error::shm(name, "initialise its lock", e))?;
        Ok(Segment {
            file,
            map: Mapping::Writable(map),
            label: name.into(),
            named: Some(Box::new(named)),
        })
    }

    /// Opens the existing segment `/dev/shm/<name>` and checks that it holds `layout`.
    pub(crate) fn open_named(layout: &Layout, name: &str) -> Result<Segment, Error> {
        check_name(name)?;
        let file =
            sys::open_existing(&path_of(name)).map_err(|e| Error::shm(name, "open it", e))?;
        let mut seg = Segment::attach(file, name.into(), |header, len| {
            header.check(layout, len, name)
        })?;
        seg.named = Some(Box::new(Name {
            name: name.into(),
            path: path_of(name),
            owner: None,
        }));
        Ok(seg)
    }

    /// The segment's name in `/dev/shm`, if it has one.
    pub(crate) fn name(&self) -> Option<&str> {
        self.named.as_ref().map(|n| n.name.as_str())
    }
}

/// # Named segments
///
/// An array can live under a name in `/dev/shm`, for another program to open, check and
/// use under the same lock. Prefer anonymous arrays ([`zeros`](Self::zeros)) for
/// everything else: a named one outlives its creator if that process is killed before
/// its drop runs, and any process of the same user can open it.
impl<A: Pod, D: Dimension> SharedArray<A, D> {
    /// A new array of zeros in the file `/dev/shm/<name>`, created with
    /// `O_CREAT | O_EXCL` and mode 0600 (only this user can open it). This handle owns
    /// the name: dropping it in the creating process removes the name (processes that
    /// have the segment open keep their mapping). Forked workers see the array as usual.
    ///
    /// Another program opens it with [`open_named`](Self::open_named); it is also what
    /// Python's `multiprocessing.shared_memory.SharedMemory(name)` opens (the data then
    /// starts at the 64-byte aligned offset after the header).
    ///
    /// # Errors
    /// [`Error::Shm`] when the name is invalid (empty, longer than 255 bytes, containing
    /// `/` or NUL), already exists (the source's kind is `AlreadyExists`), or the memory
    /// cannot be reserved or mapped; [`Error::Mismatch`] for more than 8 dimensions.
    ///
    /// # Examples
    /// ```
    /// use forkmap::SharedArray;
    ///
    /// let owner = SharedArray::<f64, _>::create_named_unique("forkmap-doc-", (2, 3))?;
    /// owner.write()[[1, 2]] = 7.0;
    /// let name = owner.name().unwrap().to_string();
    ///
    /// // Another program (here, for brevity, the same one) opens it by name.
    /// let other = SharedArray::<f64, _>::open_named(&name, (2, 3))?;
    /// assert_eq!(other.read()[[1, 2]], 7.0);
    /// // The element type and the shape are checked against the segment's header.
    /// assert!(SharedArray::<f32, _>::open_named(&name, (2, 3)).is_err());
    /// assert!(SharedArray::<f64, _>::open_named(&name, (3, 2)).is_err());
    ///
    /// drop(other);
    /// drop(owner); // removes /dev/shm/<name>
    /// assert!(SharedArray::<f64, _>::open_named(&name, (2, 3)).is_err());
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn create_named<Sh: IntoDimension<Dim = D>>(name: &str, shape: Sh) -> Result<Self, Error> {
        let dim = shape.into_dimension();
        let seg = Segment::create_named(&Layout::of::<A>(dim.slice()), name)?;
        Ok(SharedArray::from_segment(seg, dim))
    }

    /// As [`create_named`](Self::create_named), under a name that cannot be guessed:
    /// `prefix` followed by 32 hex digits from the kernel's random generator (a name
    /// that exists already is skipped). Read it back with [`name`](Self::name).
    ///
    /// # Errors
    /// As [`create_named`](Self::create_named); a `prefix` containing `/` or NUL, or
    /// longer than 223 bytes, is an [`Error::Shm`].
    pub fn create_named_unique<Sh: IntoDimension<Dim = D>>(
        prefix: &str,
        shape: Sh,
    ) -> Result<Self, Error> {
        let dim = shape.into_dimension();
        let layout = Layout::of::<A>(dim.slice());
        if prefix.len() > sys::NAME_MAX - RANDOM_HEX {
            return Err(Error::shm(
                format!("{prefix:?}"),
                "use it as a name prefix",
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a prefix is at most 223 bytes, leaving room for 32 random hex digits",
                ),
            ));
        }
        let mut tries = 0;
        loop {
            let mut random = [0u8; RANDOM_HEX / 2];
            sys::random_bytes(&mut random)
                .map_err(|e| Error::shm(format!("{prefix:?}"), "make a random name", e))?;
            let mut name = String::with_capacity(prefix.len() + RANDOM_HEX);
            name.push_str(prefix);
            for b in random {
                name.push_str(&format!("{b:02x}"));
            }
            match Segment::create_named(&layout, &name) {
                Err(Error::Shm { ref source, .. })
                    if source.kind() == io::ErrorKind::AlreadyExists && tries < 8 =>
                {
                    tries += 1;
                }
                Ok(seg) => return Ok(SharedArray::from_segment(seg, dim)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens the array another process created with
    /// [`create_named`](Self::create_named), checking that it holds elements of type `A`
    /// in exactly this shape. This handle does not own the name: dropping it leaves the
    /// segment in place. Reads and writes go through the same cross-process lock as the
    /// creator's.
    ///
    /// The file must not be truncated while it is open (by anyone: mode 0600 leaves that
    /// to the same user); a process touching memory past the new end gets `SIGBUS`.
    ///
    /// # Errors
    /// [`Error::Shm`] when the name is invalid or no such segment exists (the source's
    /// kind is `NotFound`) or it cannot be opened or mapped; [`Error::Mismatch`] when the
    /// file is not a forkmap segment (another file, too short, wrong magic number or
    /// format version) or holds another element type or shape, or its sizes are
    /// inconsistent with its length (corrupt or truncated).
    pub fn open_named<Sh: IntoDimension<Dim = D>>(name: &str, shape: Sh) -> Result<Self, Error> {
        let dim = shape.into_dimension();
        let seg = Segment::open_named(&Layout::of::<A>(dim.slice()), name)?;
        Ok(SharedArray::from_segment(seg, dim))
    }

    /// The array's name in `/dev/shm`, for one made by
    /// [`create_named`](Self::create_named) (or `_unique`) or
    /// [`open_named`](Self::open_named); `None` for an anonymous array.
    pub fn name(&self) -> Option<&str> {
        self.segment().name()
    }
}

#[cfg(test)]
mod tests;
