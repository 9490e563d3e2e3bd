//! Every variant of `Error` crosses a serde round trip (postcard, the result channel's
//! format, and JSON) with its message, fields and OS reason kept; bad bytes are errors.

use std::error::Error as _;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::static_str::{INTERN_LIMIT, Interned, intern, intern_in};
use super::*;
use crate::error::{Error, ExitKind};

fn os(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// At least one error of every variant, and of every shape a variant's fields take.
fn samples() -> Vec<Error> {
    let not_utf8 = PathBuf::from(OsStr::from_bytes(b"data/caf\xe9.txt"));
    vec![
        Error::TaskPanicked {
            index: 7,
            position: 2,
            worker: 1,
            pid: 4242,
            message: "boom at src/main.rs:3:5".into(),
        },
        Error::WorkerDied {
            worker: 0,
            pid: 17,
            status: ExitKind::Signal(libc::SIGKILL),
            task: Some((5, 1)),
        },
        Error::WorkerDied {
            worker: 3,
            pid: i32::MAX,
            status: ExitKind::Code(101),
            task: None,
        },
        Error::WorkerDied {
            worker: 2,
            pid: 1,
            status: ExitKind::Unknown,
            task: Some((usize::MAX, 0)),
        },
        Error::WorkerStopped {
            worker: 1,
            pid: 99,
            task: Some((3, 3)),
            stopped_for: Duration::from_millis(5_250),
        },
        Error::TaskTimedOut {
            index: 11,
            position: 4,
            worker: 0,
            pid: 12,
            timeout: Duration::new(2, 500_000_001),
        },
        Error::Interrupted {
            signal: libc::SIGINT,
            done: 3,
            total: 10,
        },
        Error::ResultNotSent {
            index: 9,
            worker: 1,
            pid: 8,
            message: "its Serialize panicked: no".into(),
        },
        Error::TooManyTasks {
            count: usize::MAX,
            reason: "needs 16 EiB, 2 GiB available".into(),
        },
        Error::NoWorkers,
        Error::Config("FORKMAP_WORKERS=\"lots\" is not a number".into()),
        Error::Fork {
            worker: 3,
            source: os(libc::EAGAIN),
        },
        Error::Channel {
            worker: Some(2),
            message: "send failed".into(),
        },
        Error::Channel {
            worker: None,
            message: "result channel closed".into(),
        },
        Error::shm("/forkmap-1-2", "map it", os(libc::ENOMEM)),
        Error::shm(
            "anonymous (3 MiB)",
            "seal it",
            io::Error::other("custom reason"),
        ),
        Error::WouldBlock {
            segment: "/forkmap-9".into(),
            reason: "a writer holds it",
        },
        Error::Mismatch {
            segment: "/forkmap-9".into(),
            message: "element size 8, expected 4".into(),
        },
        Error::Parse {
            path: "rows.txt".into(),
            line: 12,
            column: 3,
            message: "field pos: expected an integer, found \"x\"".into(),
        },
        Error::LineTooLong {
            path: not_utf8.clone(),
            line: 1,
            limit: 1 << 20,
        },
        Error::Npy {
            path: "a.npy".into(),
            action: "read it",
            message: "dtype <f8, expected <i4".into(),
        },
        Error::Io {
            path: "nope.txt".into(),
            source: os(libc::ENOENT),
        },
        Error::Io {
            path: not_utf8,
            source: io::Error::new(io::ErrorKind::InvalidData, "row 2, field name"),
        },
        Error::Hdf5 {
            path: "out.h5".into(),
            action: "write the dataset",
            message: "H5Dwrite failed".into(),
        },
        Error::InitFailed {
            worker: 1,
            pid: 77,
            reason: "panicked: no model file".into(),
        },
    ]
}

fn encode(err: &Error) -> Vec<u8> {
    postcard::to_allocvec(err).expect("every error serialises")
}

fn decode(bytes: &[u8]) -> postcard::Result<Error> {
    postcard::from_bytes(bytes)
}

/// `back` says what `err` said, about the same task, with the same OS reason.
fn assert_same(err: &Error, back: &Error) {
    assert_eq!(back.to_string(), err.to_string());
    assert_eq!(format!("{back:?}"), format!("{err:?}"));
    assert_eq!(back.task_index(), err.task_index(), "{err}");
    match (err.source(), back.source()) {
        (None, None) => {}
        (Some(a), Some(b)) => {
            assert_eq!(b.to_string(), a.to_string());
            let (a, b) = (
                a.downcast_ref::<io::Error>().unwrap(),
                b.downcast_ref::<io::Error>()
                    .expect("the source is an io::Error again"),
            );
            assert_eq!(b.raw_os_error(), a.raw_os_error(), "{err}");
            assert_eq!(b.kind(), a.kind(), "{err}");
        }
        (a, b) => panic!("{err}: source {a:?} came back as {b:?}"),
    }
}

#[test]
fn every_variant_round_trips_through_postcard() {
    let samples = samples();
    for err in &samples {
        let bytes = encode(err);
        let back = decode(&bytes).unwrap_or_else(|e| panic!("{err}: {e}"));
        assert_same(err, &back);
        // Every field, the io errors' numbers, kinds and messages included, is what it
        // was: the decoded error encodes to the same bytes.
        assert_eq!(encode(&back), bytes, "{err}");
    }
    // The samples cover every variant: postcard writes the variant's index first (one
    // byte below 128), the indices seen run from 0 without a gap, and the next index is
    // not a variant. A variant added without a sample fails here.
    let mut tags: Vec<u8> = samples.iter().map(|e| encode(e)[0]).collect();
    tags.dedup();
    let count = tags.len() as u8;
    assert_eq!(tags, (0..count).collect::<Vec<_>>());
    let err = decode(&[count]).unwrap_err();
    assert!(
        matches!(err, postcard::Error::SerdeDeCustom),
        "tag {count}: {err:?}"
    );
}

#[test]
fn every_variant_round_trips_through_json() {
    for err in samples() {
        let text = serde_json::to_string(&err).unwrap();
        let back: Error = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_same(&err, &back);
    }
}

#[test]
fn an_os_error_keeps_its_number_and_the_oss_words() {
    let err = Error::Io {
        path: "nope.txt".into(),
        source: os(libc::ENOENT),
    };
    let back = decode(&encode(&err)).unwrap();
    assert_eq!(
        back.to_string(),
        "could not read or write nope.txt: No such file or directory (os error 2)"
    );
    let Error::Io { source, .. } = &back else {
        panic!("{back:?}")
    };
    assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
    assert_eq!(source.kind(), io::ErrorKind::NotFound);
    // An OS error this table of kinds does not know (its kind is `Uncategorized`) and
    // numbers no OS uses still come back as themselves.
    for code in [libc::EHWPOISON, 4095, -1, i32::MAX] {
        let err = Error::Fork {
            worker: 0,
            source: os(code),
        };
        assert_same(&err, &decode(&encode(&err)).unwrap());
    }
}

#[test]
fn io_errors_without_a_number_keep_kind_and_message() {
    // The three representations io::Error has besides an OS number: a bare kind, a
    // constant message (read_exact's), a boxed error.
    let mut short: &[u8] = b"ab";
    let eof = io::Read::read_exact(&mut short, &mut [0; 4]).unwrap_err();
    for source in [
        io::Error::from(io::ErrorKind::UnexpectedEof),
        io::Error::from(io::ErrorKind::Unsupported),
        eof,
        io::Error::new(io::ErrorKind::StorageFull, "quota of 3 files"),
        io::Error::other(std::fmt::Error),
    ] {
        let err = Error::Io {
            path: "x".into(),
            source,
        };
        let back = decode(&encode(&err)).unwrap();
        assert_eq!(back.to_string(), err.to_string());
        let (Error::Io { source: a, .. }, Error::Io { source: b, .. }) = (&err, &back) else {
            unreachable!()
        };
        assert_eq!(b.kind(), a.kind(), "{err}");
        assert_eq!(b.raw_os_error(), None);
        assert_eq!(
            back.source().map(|s| s.to_string()),
            Some(a.to_string()),
            "{err}"
        );
    }
}

#[test]
fn every_kind_has_its_own_code() {
    for (i, &(code, kind)) in KINDS.iter().enumerate() {
        assert_ne!(code, 0, "{kind:?}");
        assert_eq!(kind_code(kind), code, "{kind:?}");
        assert_eq!(kind_from_code(code), kind);
        assert!(
            KINDS[i + 1..].iter().all(|&(c, k)| c != code && k != kind),
            "{kind:?} or code {code} appears twice"
        );
    }
    // Unknown codes (a newer sender, corruption) decode as Other.
    assert_eq!(kind_from_code(0), io::ErrorKind::Other);
    assert_eq!(kind_from_code(u16::MAX), io::ErrorKind::Other);
}

#[test]
fn a_description_is_interned_once() {
    let a = intern("an action no literal has, 1".to_string()).unwrap();
    let b = intern("an action no literal has, 1".to_string()).unwrap();
    assert!(std::ptr::eq(a, b));
    let err = Error::shm("s", a, os(libc::EBADF));
    let (x, y) = (
        decode(&encode(&err)).unwrap(),
        decode(&encode(&err)).unwrap(),
    );
    let (Error::Shm { action: x, .. }, Error::Shm { action: y, .. }) = (&x, &y) else {
        unreachable!()
    };
    assert!(std::ptr::eq(*x, *y));
    assert!(std::ptr::eq(*x, a));
}

#[test]
fn the_intern_table_is_bounded() {
    // A private table: filling the process's own would break the other tests.
    let table = Mutex::new(Interned::new());
    let chunk = "x".repeat(1000);
    let mut kept = 0;
    let refused = loop {
        match intern_in(&table, format!("{kept} {chunk}")) {
            Ok(_) => kept += 1,
            Err(e) => break e,
        }
        assert!(kept <= INTERN_LIMIT / 1000, "the table grew past its limit");
    };
    assert!(kept >= INTERN_LIMIT / 1010, "{kept}");
    assert!(
        refused.contains("not sent by this program's forkmap"),
        "{refused}"
    );
    // What is already there is still handed out.
    assert!(intern_in(&table, format!("0 {chunk}")).is_ok());
    // And the refusal reaches the decoder as an error, not a panic.
    let huge = Error::WouldBlock {
        segment: "s".into(),
        reason: Box::leak("r".repeat(INTERN_LIMIT + 1).into_boxed_str()),
    };
    assert!(decode(&encode(&huge)).is_err());
}

#[test]
fn huge_strings_and_paths_cross() {
    let big = "é".repeat(8 << 20);
    let path = PathBuf::from(OsStr::from_bytes(&vec![0xff; 1 << 20]));
    for err in [
        Error::Config(big.clone()),
        Error::Parse {
            path: path.clone(),
            line: 1,
            column: 1,
            message: big.clone(),
        },
        Error::Io {
            path,
            source: io::Error::other(big),
        },
    ] {
        let back = decode(&encode(&err)).unwrap();
        assert_same(&err, &back);
    }
}

#[test]
fn bad_bytes_are_an_error_never_a_panic() {
    // Unknown variant tags, up to the largest a varint u32 holds.
    for tag in [samples().len() as u32 + 40, 1000, u32::MAX] {
        let bytes = postcard::to_allocvec(&tag).unwrap();
        assert!(decode(&bytes).is_err(), "tag {tag}");
    }
    assert!(decode(&[0xff; 6]).is_err());
    assert!(decode(&[]).is_err());
    // Every truncation of every sample, and every byte of it replaced by a few values:
    // Ok or Err, but no panic, no hang, no huge allocation.
    let mut rng = fastrand::Rng::with_seed(9);
    for err in samples() {
        let bytes = encode(&err);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "{err}: cut at {cut}");
        }
        for at in 0..bytes.len() {
            for value in [0, 1, 0x7f, 0x80, 0xff, rng.u8(..)] {
                let mut bad = bytes.clone();
                bad[at] = value;
                let _ = decode(&bad);
            }
        }
    }
}

/// The variant index postcard writes for `err`.
fn tag(err: &Error) -> u32 {
    u32::from(encode(err)[0])
}

#[test]
fn out_of_range_fields_are_refused() {
    // Shaped like WorkerStopped with a duration of u64::MAX s + 4.29 s: serde refuses the
    // overflow.
    let stopped = tag(&Error::WorkerStopped {
        worker: 0,
        pid: 0,
        task: None,
        stopped_for: Duration::ZERO,
    });
    let fields = (1usize, 2i32, None::<(usize, usize)>, (u64::MAX, u32::MAX));
    let bytes = postcard::to_allocvec(&(stopped, fields)).unwrap();
    assert!(decode(&bytes).is_err());
    // Shaped like Fork with an io error of an unknown kind and no number: it comes back
    // as Other, with its message.
    let fork = tag(&Error::Fork {
        worker: 0,
        source: os(1),
    });
    let bytes = postcard::to_allocvec(&(fork, 0usize, (None::<i32>, 999u16, "strange"))).unwrap();
    let back = decode(&bytes).unwrap();
    assert_eq!(back.to_string(), "could not fork worker 0: strange");
    let Error::Fork { source, .. } = back else {
        panic!("{back:?}")
    };
    assert_eq!(source.kind(), io::ErrorKind::Other);
    // Bytes that are not UTF-8 where a message goes.
    let config = tag(&Error::Config(String::new()));
    let bytes = postcard::to_allocvec(&(config, &[0xffu8, 0xfe][..])).unwrap();
    assert!(decode(&bytes).is_err());
}

#[test]
fn a_decoded_error_owns_its_data() {
    // What `map`'s results need, and what a caller's `?` into `Box<dyn Error>` needs.
    fn owned<T: serde::de::DeserializeOwned + Send + Sync + 'static>() {}
    owned::<Error>();
    owned::<ExitKind>();
    owned::<Result<Vec<u8>, Error>>();
}
