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
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// Set when the array went to the parent in a task's result: the parent owns the
    /// name from then on, and this process must not remove it.
    handed_over: AtomicBool,
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
        if self.handed_over.load(Ordering::SeqCst) {
            return;
        }
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

/// What `create_named` says when the name is taken: what it probably is, and the ways
/// out. The source keeps the kind `AlreadyExists`.
fn exists_error(name: &str, path: &std::path::Path) -> Error {
    let creator = sys::open_existing(path)
        .ok()
        .and_then(|file| {
            Segment::attach(file, name.into(), |h, _| {
                if h.is_complete() {
                    Ok(())
                } else {
                    Err(Error::Mismatch {
                        segment: name.into(),
                        message: String::new(),
                    })
                }
            })
            .ok()
        })
        .map(|seg| seg.header().creator());
    let what = match creator {
        Some(Some((pid, start))) if sys::same_process_running(pid, start) => {
            format!("a forkmap segment whose creator (pid {pid}) still runs")
        }
        Some(Some((pid, _))) => format!(
            "a stale forkmap segment: its creator (pid {pid}) is gone, killed before it \
             could remove the name; SharedArray::remove_stale_named or \
             create_named_replacing_stale removes it"
        ),
        Some(None) => "a forkmap segment of unknown creator".to_string(),
        None => "a file that is not a complete forkmap segment".to_string(),
    };
    Error::shm(
        name,
        "create it",
        io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists already: {what}; if no program uses it, `rm {}` removes it",
                path.display(),
                path.display()
            ),
        ),
    )
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
        let file = sys::create_exclusive(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                exists_error(name, &path)
            } else {
                Error::shm(name, "create it", sys::fds::explain(e))
            }
        })?;
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
            handed_over: AtomicBool::new(false),
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
            handed_over: AtomicBool::new(false),
        }));
        Ok(seg)
    }

    /// For an array sent to the parent in a task's result: the name goes with it, and
    /// the sending process no longer removes it. `None` for an anonymous array or one
    /// this process only opened (whose name is not its to give).
    pub(crate) fn hand_over_name(&self) -> Option<&str> {
        let named = self.named.as_ref()?;
        named.owner.as_ref()?;
        named.handed_over.store(true, Ordering::SeqCst);
        Some(&named.name)
    }

    /// In the parent, for an array received with a name: takes over the duty to remove
    /// it, if `/dev/shm/<name>` is still this very file (device and inode).
    pub(crate) fn adopt_name(&mut self, name: &str) {
        if check_name(name).is_err() {
            return;
        }
        let path = path_of(name);
        let (Ok(ours), Ok(there)) = (self.file.metadata(), std::fs::symlink_metadata(&path)) else {
            return;
        };
        if ours.dev() != there.dev() || ours.ino() != there.ino() {
            return;
        }
        self.label = name.into();
        self.named = Some(Box::new(Name {
            name: name.into(),
            path,
            owner: Some(Owner {
                pid: sys::getpid(),
                dev: ours.dev(),
                ino: ours.ino(),
            }),
            handed_over: AtomicBool::new(false),
        }));
    }

    /// Removes `/dev/shm/<name>` if it is a forkmap segment whose creator no longer runs.
    /// `Ok(false)` when there is nothing under the name.
    pub(crate) fn remove_stale_named(name: &str) -> Result<bool, Error> {
        check_name(name)?;
        let path = path_of(name);
        let refuse = |why: String| {
            Error::shm(
                name,
                "remove it as stale",
                io::Error::new(io::ErrorKind::ResourceBusy, why),
            )
        };
        let file = match sys::open_existing(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::shm(name, "open it", e)),
        };
        let seg = Segment::attach(file, name.into(), |h, _| {
            if h.is_complete() {
                Ok(())
            } else {
                Err(refuse(
                    "it is not a complete forkmap segment; left alone".into(),
                ))
            }
        })
        .map_err(|e| match e {
            Error::Mismatch { message, .. } => refuse(format!("{message}; left alone")),
            e => e,
        })?;
        let (pid, start) = seg.header().creator().ok_or_else(|| {
            refuse("it does not record its creator (made by an older forkmap); left alone".into())
        })?;
        if sys::same_process_running(pid, start) {
            return Err(refuse(format!("its creator (pid {pid}) still runs")));
        }
        // Remove the name only while it still is the file judged stale.
        let ours = seg
            .file
            .metadata()
            .map_err(|e| Error::shm(name, "read its inode", e))?;
        match std::fs::symlink_metadata(&path) {
            Ok(there) if there.dev() == ours.dev() && there.ino() == ours.ino() => {
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(Error::shm(name, "remove it", e)),
                }
            }
            // Replaced or removed meanwhile by someone else: not ours to judge.
            _ => Ok(false),
        }
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

    /// As [`create_named`](Self::create_named), but a stale segment under `name` (one
    /// whose creating process no longer runs: it was killed before it could remove the
    /// name) is removed first. A segment whose creator still runs, or a file that is not
    /// a forkmap segment, is left alone and the call fails. Processes that still have
    /// the stale segment open keep their mapping of it; they no longer share memory with
    /// the new one.
    ///
    /// # Errors
    /// As [`create_named`](Self::create_named); [`Error::Shm`] with kind `ResourceBusy`
    /// when the segment under `name` is not stale.
    ///
    /// # Examples
    /// ```
    /// use forkmap::SharedArray;
    ///
    /// let name = format!("forkmap-doc-stale-{}", std::process::id());
    /// let first = SharedArray::<u8, _>::create_named(&name, 4)?;
    /// // Its creator (this process) runs: nothing is replaced.
    /// assert!(SharedArray::<u8, _>::create_named_replacing_stale(&name, 4).is_err());
    /// # drop(first);
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn create_named_replacing_stale<Sh: IntoDimension<Dim = D>>(
        name: &str,
        shape: Sh,
    ) -> Result<Self, Error> {
        let dim = shape.into_dimension();
        let layout = Layout::of::<A>(dim.slice());
        match Segment::create_named(&layout, name) {
            Err(Error::Shm { ref source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                Segment::remove_stale_named(name)?;
                let seg = Segment::create_named(&layout, name)?;
                Ok(SharedArray::from_segment(seg, dim))
            }
            Ok(seg) => Ok(SharedArray::from_segment(seg, dim)),
            Err(e) => Err(e),
        }
    }

    /// The array's name in `/dev/shm`, for one made by
    /// [`create_named`](Self::create_named) (or `_unique`) or
    /// [`open_named`](Self::open_named); `None` for an anonymous array.
    pub fn name(&self) -> Option<&str> {
        self.segment().name()
    }
}

impl SharedArray<u8, ndarray::Ix1> {
    /// Removes the segment `/dev/shm/<name>` if it is stale: a forkmap segment whose
    /// creating process no longer runs (killed before its drop could remove the name:
    /// `SIGKILL`, or a `SIGINT`/`SIGTERM` during a `map`, which re-raises the signal and
    /// runs no destructor). Returns whether a segment was removed (`false` when nothing
    /// is under the name). Callable with any element type's name; the type here only
    /// anchors the function.
    ///
    /// # Errors
    /// [`Error::Shm`] for an invalid name, a segment whose creator still runs (kind
    /// `ResourceBusy`), a file that is not a complete forkmap segment or does not record
    /// its creator (left alone: remove it by hand if you know it is stale), or a failed
    /// removal.
    ///
    /// # Examples
    /// ```
    /// use forkmap::SharedArray;
    ///
    /// assert!(!SharedArray::remove_stale_named("forkmap-doc-never-made")?);
    /// # Ok::<(), forkmap::Error>(())
    /// ```
    pub fn remove_stale_named(name: &str) -> Result<bool, Error> {
        Segment::remove_stale_named(name)
    }
}

#[cfg(test)]
mod tests;
