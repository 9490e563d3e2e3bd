//! Shared-memory segments: a memfd (or a named file in `/dev/shm`, see `named`) mapped
//! shared, with a self-describing header at offset 0 and the data 64-byte aligned after.

mod array;
mod board;
pub(crate) mod handoff;
mod named;

pub use array::{FrozenArray, ReadGuard, SharedArray, WriteGuard};
pub(crate) use board::Board;

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Mmap, MmapOptions, MmapRaw};

use crate::error::Error;
use crate::sync::RawRwLock;
use crate::sys;

/// Most dimensions a shared array may have.
pub(crate) const MAX_DIMS: usize = 8;
const MAGIC: u64 = u64::from_le_bytes(*b"FORKMAP\0");
const VERSION: u32 = 1;
const TYPE_NAME_LEN: usize = 64;

/// The header at offset 0 of every segment. `magic` is written last, with `Release`,
/// so a process that sees it sees a complete header and an initialised lock.
#[repr(C, align(64))]
pub(crate) struct Header {
    magic: AtomicU64,
    version: u32,
    ndim: u32,
    elem_size: u64,
    elem_align: u64,
    type_tag: u64,
    type_name: [u8; TYPE_NAME_LEN],
    shape: [u64; MAX_DIMS],
    data_offset: u64,
    data_len: u64,
    /// Pid of the process that created the segment (0 in segments of older builds).
    creator_pid: u64,
    /// That process's start time, clock ticks after boot (0 when unknown), so a later
    /// process given the same pid is not taken for the creator.
    creator_start: u64,
    reserved: [u64; 2],
    pub(crate) lock: RawRwLock,
}

const _: () = assert!(std::mem::align_of::<Header>() == 64);
const _: () = assert!(std::mem::size_of::<Header>().is_multiple_of(64));

/// What a segment holds: the element type and the shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) elem_size: usize,
    pub(crate) elem_align: usize,
    pub(crate) type_tag: u64,
    pub(crate) type_name: &'static str,
    pub(crate) shape: Vec<usize>,
}

impl Layout {
    pub(crate) fn of<A>(shape: &[usize]) -> Layout {
        let type_name = std::any::type_name::<A>();
        Layout {
            elem_size: std::mem::size_of::<A>(),
            elem_align: std::mem::align_of::<A>(),
            type_tag: fnv1a(type_name.as_bytes()),
            type_name,
            shape: shape.to_vec(),
        }
    }

    fn elements(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    fn data_offset(&self) -> usize {
        std::mem::size_of::<Header>().next_multiple_of(self.elem_align.max(64))
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

enum Mapping {
    Writable(MmapRaw),
    ReadOnly(Mmap),
}

/// One mapped segment. The mapping is shared, so writes are seen by every process that
/// maps the same file, including workers forked after it was made.
pub(crate) struct Segment {
    file: File,
    map: Mapping,
    label: String,
    /// The segment's name in `/dev/shm`, for one made or opened by name.
    named: Option<Box<named::Name>>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("label", &self.label)
            .field("len", &self.len())
            .finish()
    }
}

impl Segment {
    /// Creates an anonymous segment holding `layout`, header written and lock ready.
    pub(crate) fn create(layout: &Layout) -> Result<Segment, Error> {
        let label = format!("memfd forkmap[{}; {:?}]", layout.type_name, layout.shape);
        if layout.shape.len() > MAX_DIMS {
            return Err(Error::Mismatch {
                segment: label,
                message: format!(
                    "{} dimensions requested, at most {MAX_DIMS} are supported",
                    layout.shape.len()
                ),
            });
        }
        let too_big = || {
            Error::shm(
                label.clone(),
                "size it",
                io::Error::from(io::ErrorKind::OutOfMemory),
            )
        };
        let data_len = layout
            .elements()
            .and_then(|n| n.checked_mul(layout.elem_size))
            .ok_or_else(too_big)?;
        let total = layout
            .data_offset()
            .checked_add(data_len)
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or_else(too_big)?;
        sys::fds::raise_nofile_limit();
        let file = sys::memfd_reserved("forkmap", total).map_err(|e| {
            if sys::fds::is_exhaustion(&e) {
                Error::shm(label.clone(), "create it", sys::fds::explain(e))
            } else {
                Error::shm(label.clone(), "reserve memory", e)
            }
        })?;
        let map = MmapOptions::new()
            .len(total)
            .map_raw(&file)
            .map_err(|e| Error::shm(label.clone(), "map it", e))?;
        let header = map.as_mut_ptr() as *mut Header;
        // SAFETY: the mapping is at least size_of::<Header>() bytes (data_offset >= it),
        // page aligned (so 64-byte aligned), freshly zeroed by the kernel and not yet
        // visible to any other process or thread.
        unsafe { write_header(header, layout, data_len) }
            .map_err(|e| Error::shm(label.clone(), "initialise its lock", e))?;
        Ok(Segment {
            file,
            map: Mapping::Writable(map),
            label,
            named: None,
        })
    }

    /// Maps an existing file that should hold a segment (opened by name, or received
    /// from a worker) and lets `check` judge its header against what the caller expects,
    /// given the file's length. A foreign, truncated or half-written file is an error,
    /// never garbage.
    pub(crate) fn attach(
        file: File,
        label: String,
        check: impl FnOnce(&Header, usize) -> Result<(), Error>,
    ) -> Result<Segment, Error> {
        let mismatch = |message: String| Error::Mismatch {
            segment: label.clone(),
            message,
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::shm(label.clone(), "read its size", e))?;
        if !meta.file_type().is_file() {
            return Err(mismatch(
                "not a forkmap segment (not a regular file)".into(),
            ));
        }
        let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
        let header_len = std::mem::size_of::<Header>();
        if len < header_len {
            return Err(mismatch(format!(
                "not a forkmap segment, truncated, or still being created: {len} bytes, \
                 shorter than a header ({header_len} bytes)"
            )));
        }
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|e| Error::shm(label.clone(), "map it", e))?;
        // (1) The mapping is at least size_of::<Header>() bytes and page aligned; (2) every
        // field of Header is an integer, a byte array, an atomic or the lock's plain C
        // words, for which any bytes are a valid value, so even a foreign file reads as a
        // Header; (3) `check` must read the magic first, with Acquire (`Header::check`
        // does), so a header still being written is not trusted.
        // SAFETY: (1)-(3) above.
        let header = unsafe { &*(map.as_ptr() as *const Header) };
        check(header, len)?;
        Ok(Segment {
            file,
            map: Mapping::Writable(map),
            label,
            named: None,
        })
    }

    /// How errors name this segment.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn len(&self) -> usize {
        match &self.map {
            Mapping::Writable(m) => m.len(),
            Mapping::ReadOnly(m) => m.len(),
        }
    }

    pub(crate) fn header(&self) -> &Header {
        let ptr = match &self.map {
            Mapping::Writable(m) => m.as_ptr(),
            Mapping::ReadOnly(m) => m.as_ptr(),
        };
        // SAFETY: every segment is created or validated to start with a complete,
        // initialised Header; the mapping is page aligned and lives as long as self.
        unsafe { &*(ptr as *const Header) }
    }

    /// Pointer to the first data byte.
    pub(crate) fn data_ptr(&self) -> *mut u8 {
        let offset = self.header().data_offset as usize;
        let base = match &self.map {
            Mapping::Writable(m) => m.as_mut_ptr(),
            Mapping::ReadOnly(m) => m.as_ptr() as *mut u8,
        };
        // SAFETY: data_offset <= len was checked when the header was written or validated.
        unsafe { base.add(offset) }
    }

    /// Seals the file against writes and remaps it read-only. Fails (and leaves the
    /// segment writable) while any other process still maps it writable.
    // Handing the array back on a refused freeze is the point; freezing is rare.
    #[allow(clippy::result_large_err)]
    pub(crate) fn freeze(self) -> Result<Segment, (Segment, Error)> {
        if self.named.is_some() {
            let err = named::cannot_freeze(&self.label);
            return Err((self, err));
        }
        let Segment {
            file,
            map,
            label,
            named,
        } = self;
        let len = match &map {
            Mapping::Writable(m) => m.len(),
            Mapping::ReadOnly(_) => {
                return Ok(Segment {
                    file,
                    map,
                    label,
                    named,
                });
            }
        };
        // A private read-only mapping: it does not count as a writable mapping (a shared
        // one would, and the kernel would refuse the seal), and since neither we nor, once
        // sealed, anyone else writes, it always shows the file's contents.
        // SAFETY: nothing writes through this mapping; writers elsewhere are excluded by
        // the write seal below, and if sealing fails this view is dropped unused.
        let read_only = match unsafe { MmapOptions::new().len(len).map_copy_read_only(&file) } {
            Ok(m) => m,
            Err(e) => {
                return Err((
                    Segment {
                        file,
                        map,
                        label: label.clone(),
                        named,
                    },
                    Error::shm(label, "map it read-only", e),
                ));
            }
        };
        // The write seal is refused while any writable shared mapping exists, ours included.
        drop(map);
        match sys::seal_read_only(&file) {
            Ok(()) => Ok(Segment {
                file,
                map: Mapping::ReadOnly(read_only),
                label,
                named,
            }),
            Err(e) => {
                drop(read_only);
                let err = Error::shm(
                    label.clone(),
                    "seal it read-only (another process still maps it writable)",
                    e,
                );
                match MmapOptions::new().len(len).map_raw(&file) {
                    Ok(map) => Err((
                        Segment {
                            file,
                            map: Mapping::Writable(map),
                            label,
                            named,
                        },
                        err,
                    )),
                    Err(e2) => panic!(
                        "forkmap: segment {label} could not be mapped again after a refused freeze: {e2}"
                    ),
                }
            }
        }
    }

    pub(crate) fn is_frozen(&self) -> bool {
        matches!(self.map, Mapping::ReadOnly(_)) && sys::is_write_sealed(&self.file)
    }
}

/// Writes a fresh header and initialises its lock, magic last.
///
/// # Safety
/// `header` points to zeroed, writable, 64-byte aligned memory of at least
/// `size_of::<Header>()` bytes, shared with nobody yet.
unsafe fn write_header(header: *mut Header, layout: &Layout, data_len: usize) -> io::Result<()> {
    let mut shape = [0u64; MAX_DIMS];
    for (s, &d) in shape.iter_mut().zip(&layout.shape) {
        *s = d as u64;
    }
    let mut type_name = [0u8; TYPE_NAME_LEN];
    let name = layout.type_name.as_bytes();
    let n = name.len().min(TYPE_NAME_LEN);
    type_name[..n].copy_from_slice(&name[..n]);
    // SAFETY: (1) `header` is valid for writes per the contract; raw-place writes avoid
    // forming a reference to the not-yet-initialised lock. (2) RawRwLock::init gets
    // zeroed, unshared memory. (3) The magic store is an atomic on aligned memory.
    unsafe {
        (&raw mut (*header).version).write(VERSION);
        (&raw mut (*header).ndim).write(layout.shape.len() as u32);
        (&raw mut (*header).elem_size).write(layout.elem_size as u64);
        (&raw mut (*header).elem_align).write(layout.elem_align as u64);
        (&raw mut (*header).type_tag).write(layout.type_tag);
        (&raw mut (*header).type_name).write(type_name);
        (&raw mut (*header).shape).write(shape);
        (&raw mut (*header).data_offset).write(layout.data_offset() as u64);
        (&raw mut (*header).data_len).write(data_len as u64);
        let (pid, start) = sys::self_identity();
        (&raw mut (*header).creator_pid).write(pid as u64);
        (&raw mut (*header).creator_start).write(start);
        RawRwLock::init(&raw mut (*header).lock)?;
        (*header).magic.store(MAGIC, Ordering::Release);
    }
    Ok(())
}

impl Header {
    /// Checks that this header describes exactly `layout` in a file of `file_len` bytes.
    pub(crate) fn check(
        &self,
        layout: &Layout,
        file_len: usize,
        segment: &str,
    ) -> Result<(), Error> {
        let mismatch = |message: String| {
            Err(Error::Mismatch {
                segment: segment.to_string(),
                message,
            })
        };
        if self.magic.load(Ordering::Acquire) != MAGIC {
            return mismatch("not a forkmap segment (bad magic number)".into());
        }
        if self.version != VERSION {
            return mismatch(format!(
                "segment format version {} is not the supported {VERSION}",
                self.version
            ));
        }
        let stored_name = String::from_utf8_lossy(&self.type_name)
            .trim_end_matches('\0')
            .to_string();
        if self.type_tag != layout.type_tag
            || self.elem_size as usize != layout.elem_size
            || self.elem_align as usize != layout.elem_align
        {
            return mismatch(format!(
                "holds elements of type {stored_name} ({} bytes, align {}), not {} ({} bytes, align {})",
                self.elem_size,
                self.elem_align,
                layout.type_name,
                layout.elem_size,
                layout.elem_align
            ));
        }
        let ndim = self.ndim as usize;
        if ndim > MAX_DIMS {
            return mismatch(format!("header claims {ndim} dimensions"));
        }
        let shape: Vec<usize> = self.shape[..ndim].iter().map(|&d| d as usize).collect();
        if shape != layout.shape {
            return mismatch(format!("has shape {shape:?}, not {:?}", layout.shape));
        }
        let data_len = layout
            .elements()
            .and_then(|n| n.checked_mul(layout.elem_size));
        if data_len != Some(self.data_len as usize)
            || self.data_offset as usize != layout.data_offset()
            || (self.data_offset as usize)
                .checked_add(self.data_len as usize)
                .is_none_or(|end| end > file_len)
        {
            return mismatch(format!(
                "header is corrupt: data {}+{} bytes in a {file_len}-byte file",
                self.data_offset, self.data_len
            ));
        }
        Ok(())
    }

    /// Whether the magic number says this is a complete forkmap header (`Acquire`: the
    /// rest of the header is then visible).
    pub(crate) fn is_complete(&self) -> bool {
        self.magic.load(Ordering::Acquire) == MAGIC
    }

    /// The creating process's pid and start time, when recorded.
    pub(crate) fn creator(&self) -> Option<(sys::Pid, u64)> {
        (self.creator_pid != 0).then_some((self.creator_pid as sys::Pid, self.creator_start))
    }

    pub(crate) fn shape(&self) -> Vec<usize> {
        self.shape[..(self.ndim as usize).min(MAX_DIMS)]
            .iter()
            .map(|&d| d as usize)
            .collect()
    }
}
