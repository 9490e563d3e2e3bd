//! How the fields of [`Error`](super::Error) that serde cannot derive cross a process
//! boundary: `io::Error`s, paths and `&'static str`s.
//!
//! All three are encoded without relying on a self-describing format (postcard, the
//! result channel's, is not one): plain structs, byte strings and strings, no untagged
//! enums, no skipped fields.

use std::io;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An `io::Error` as it travels: the OS's error number when it has one, its kind as a
/// stable code (see [`KINDS`]) and its message.
///
/// An error with an OS number is rebuilt with `io::Error::from_raw_os_error`, so its
/// `raw_os_error()`, `kind()` and message (`No such file or directory (os error 2)`) are
/// the OS's own again; any other is rebuilt from its kind and message, which is what its
/// `Display` showed.
#[derive(Serialize, Deserialize)]
struct WireIo {
    os: Option<i32>,
    kind: u16,
    message: String,
}

/// Stable codes for `io::ErrorKind`. The kind enum is `#[non_exhaustive]` and its
/// discriminants are not promised, so each kind has its own number here; code 0 is a kind
/// this table does not know (a kind unstable on the crate's minimum Rust, or a newer one)
/// and decodes as `ErrorKind::Other`. Codes are never reused or renumbered.
const KINDS: &[(u16, io::ErrorKind)] = {
    use io::ErrorKind::*;
    &[
        (1, NotFound),
        (2, PermissionDenied),
        (3, ConnectionRefused),
        (4, ConnectionReset),
        (5, HostUnreachable),
        (6, NetworkUnreachable),
        (7, ConnectionAborted),
        (8, NotConnected),
        (9, AddrInUse),
        (10, AddrNotAvailable),
        (11, NetworkDown),
        (12, BrokenPipe),
        (13, AlreadyExists),
        (14, WouldBlock),
        (15, NotADirectory),
        (16, IsADirectory),
        (17, DirectoryNotEmpty),
        (18, ReadOnlyFilesystem),
        (19, StaleNetworkFileHandle),
        (20, InvalidInput),
        (21, InvalidData),
        (22, TimedOut),
        (23, WriteZero),
        (24, StorageFull),
        (25, NotSeekable),
        (26, QuotaExceeded),
        (27, FileTooLarge),
        (28, ResourceBusy),
        (29, ExecutableFileBusy),
        (30, Deadlock),
        (31, CrossesDevices),
        (32, TooManyLinks),
        (33, InvalidFilename),
        (34, ArgumentListTooLong),
        (35, Interrupted),
        (36, Unsupported),
        (37, UnexpectedEof),
        (38, OutOfMemory),
        (39, Other),
    ]
};

fn kind_code(kind: io::ErrorKind) -> u16 {
    KINDS
        .iter()
        .find(|&&(_, k)| k == kind)
        .map_or(0, |&(code, _)| code)
}

fn kind_from_code(code: u16) -> io::ErrorKind {
    KINDS
        .iter()
        .find(|&&(c, _)| c == code)
        .map_or(io::ErrorKind::Other, |&(_, kind)| kind)
}

/// `#[serde(with = "wire::io_error")]` for an `io::Error` field.
pub(super) mod io_error {
    use super::*;

    pub(in crate::error) fn serialize<S: Serializer>(
        err: &io::Error,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        WireIo {
            os: err.raw_os_error(),
            kind: kind_code(err.kind()),
            message: err.to_string(),
        }
        .serialize(s)
    }

    pub(in crate::error) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<io::Error, D::Error> {
        let wire = WireIo::deserialize(d)?;
        Ok(match wire.os {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(kind_from_code(wire.kind), wire.message),
        })
    }
}

/// `#[serde(with = "wire::path")]` for a `PathBuf` field: the path's bytes, so a name
/// that is not UTF-8 crosses unchanged (serde's own impl refuses to serialise one).
pub(super) mod path {
    use std::ffi::OsString;
    use std::fmt;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use serde::de::{self, SeqAccess, Visitor};

    use super::*;

    pub(in crate::error) fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(path.as_os_str().as_bytes())
    }

    pub(in crate::error) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<PathBuf, D::Error> {
        d.deserialize_byte_buf(PathVisitor)
    }

    struct PathVisitor;

    fn from_bytes(bytes: Vec<u8>) -> PathBuf {
        PathBuf::from(OsString::from_vec(bytes))
    }

    impl<'de> Visitor<'de> for PathVisitor {
        type Value = PathBuf;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a path as bytes")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<PathBuf, E> {
            Ok(from_bytes(v.to_vec()))
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<PathBuf, E> {
            Ok(from_bytes(v))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<PathBuf, E> {
            Ok(PathBuf::from(v))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<PathBuf, E> {
            Ok(PathBuf::from(v))
        }

        // Self-describing formats without a byte type (JSON) write bytes as a sequence.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PathBuf, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<u8>()? {
                bytes.push(b);
            }
            Ok(from_bytes(bytes))
        }
    }
}

/// `#[serde(with = "wire::static_str")]` for a `&'static str` field (what was being done,
/// why a lock is busy: always one of the program's string literals). Such fields are
/// written `&'static std::primitive::str`: serde's derive borrows any field spelled
/// `&str` from the input, even with `with`, which would tie `Error` to the input's
/// lifetime.
///
/// The decoded text is interned: each distinct string is leaked once and handed out
/// again afterwards, so decoding a million errors from the same call site costs one
/// allocation. Since the sender is a fork of the same program, the strings that arrive
/// are its literals and the table stays small; a stream that is not (corrupted, or
/// crafted) fails to decode once the table would pass [`INTERN_LIMIT`] bytes instead of
/// growing without bound.
pub(super) mod static_str {
    use std::collections::BTreeSet;
    use std::sync::{Mutex, PoisonError};

    use serde::de;

    use super::*;

    /// The most bytes of text the intern table holds.
    pub(in crate::error) const INTERN_LIMIT: usize = 64 * 1024;

    pub(in crate::error) struct Interned {
        strings: BTreeSet<&'static str>,
        bytes: usize,
    }

    impl Interned {
        pub(in crate::error) const fn new() -> Self {
            Interned {
                strings: BTreeSet::new(),
                bytes: 0,
            }
        }
    }

    static INTERNED: Mutex<Interned> = Mutex::new(Interned::new());

    pub(in crate::error) fn serialize<S: Serializer>(
        text: &&'static str,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(text)
    }

    pub(in crate::error) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<&'static str, D::Error> {
        let text = String::deserialize(d)?;
        intern(text).map_err(de::Error::custom)
    }

    /// The one `&'static str` with this text.
    pub(in crate::error) fn intern(text: String) -> Result<&'static str, String> {
        intern_in(&INTERNED, text)
    }

    /// [`intern`] in `table`.
    pub(in crate::error) fn intern_in(
        table: &Mutex<Interned>,
        text: String,
    ) -> Result<&'static str, String> {
        // A panic while the lock is held cannot leave the table inconsistent (an insert
        // is the last step), so a poisoned lock is used as it is.
        let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&known) = table.strings.get(text.as_str()) {
            return Ok(known);
        }
        if table.bytes.saturating_add(text.len()) > INTERN_LIMIT {
            return Err(format!(
                "a description of {} bytes would take forkmap's table of error descriptions \
                 past {INTERN_LIMIT} bytes; the error was not sent by this program's forkmap",
                text.len()
            ));
        }
        table.bytes += text.len();
        let leaked: &'static str = Box::leak(text.into_boxed_str());
        table.strings.insert(leaked);
        Ok(leaked)
    }
}

#[cfg(test)]
mod tests;
