//! The result path: whatever goes wrong after a task returns (its `Serialize` panics or
//! stalls, its result cannot be decoded, the task closed the worker's descriptors) is
//! blamed on that task alone, lands in its own slot of `map_results`, and innocent tasks of
//! the same chunk are not run again.

mod common;

use std::time::Duration;

use forkmap::ndarray::Ix1;
use forkmap::{Error, Pool, SharedArray};
use serde::{Deserialize, Serialize};

/// Counts attempts in shared memory, so the test sees how often a task really ran.
fn bump(counter: &SharedArray<u32, Ix1>, i: usize) {
    counter.write()[i] += 1;
}

/// A result whose `Serialize` panics for one value.
#[derive(Debug, Deserialize)]
struct PanicsOnSerialize(usize);

impl Serialize for PanicsOnSerialize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        assert!(self.0 != 3, "three refuses to be serialised");
        s.serialize_u64(self.0 as u64)
    }
}

#[test]
fn a_serialize_that_panics_is_its_tasks_failure_alone() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let attempts = SharedArray::<u32, Ix1>::zeros(8).unwrap();
    let out = Pool::new()
        .workers(2)
        .chunk_size(8)
        .progress(false)
        .map_results(0..8, |i| {
            bump(&attempts, i);
            PanicsOnSerialize(i)
        })
        .unwrap();
    for (i, r) in out.iter().enumerate() {
        match (i, r) {
            (3, Err(Error::ResultNotSent { index, message, .. })) => {
                assert_eq!(*index, 3);
                assert!(message.contains("Serialize panicked"), "{message}");
                assert!(message.contains("three refuses"), "{message}");
            }
            (_, Ok(v)) => assert_eq!(v.0, i),
            (_, r) => panic!("position {i}: {r:?}"),
        }
    }
    // One chunk of eight on one worker: nobody ran twice.
    assert!(
        attempts.read().iter().all(|&n| n == 1),
        "{:?}",
        attempts.read().view()
    );
    assert!(common::children().is_empty());
}

/// A result that serialises fine but fails to decode in the parent for one value.
#[derive(Debug, Serialize)]
struct RefusedOnArrival(u64);

impl<'de> Deserialize<'de> for RefusedOnArrival {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        if v == 2 {
            return Err(serde::de::Error::custom("two is not welcome"));
        }
        Ok(RefusedOnArrival(v))
    }
}

#[test]
fn a_result_that_fails_to_decode_is_its_tasks_failure_alone() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let attempts = SharedArray::<u32, Ix1>::zeros(6).unwrap();
    let out = Pool::new()
        .workers(2)
        .chunk_size(6)
        .progress(false)
        .map_results(0..6, |i| {
            bump(&attempts, i);
            RefusedOnArrival(i as u64)
        })
        .unwrap();
    for (i, r) in out.iter().enumerate() {
        match (i, r) {
            (
                2,
                Err(Error::ResultNotSent {
                    index: 2, message, ..
                }),
            ) => {
                assert!(message.contains("could not decode"), "{message}");
            }
            (_, Ok(v)) => assert_eq!(v.0, i as u64),
            (_, r) => panic!("position {i}: {r:?}"),
        }
    }
    assert!(attempts.read().iter().all(|&n| n == 1));
    let err = Pool::new()
        .workers(2)
        .progress(false)
        .map(0..6, |i| RefusedOnArrival(i as u64))
        .unwrap_err();
    assert!(
        matches!(err, Error::ResultNotSent { index: 2, .. }),
        "{err}"
    );
}

/// A struct whose derive skips a field: postcard cannot carry that.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Sparse {
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    value: u32,
}

#[test]
fn serde_attributes_postcard_cannot_carry_are_named_per_task() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let out = Pool::new()
        .workers(2)
        .progress(false)
        .map_results(0..4, |i| Sparse {
            note: (i % 2 == 0).then(|| format!("even {i}")),
            value: i as u32,
        })
        .unwrap();
    for (i, r) in out.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(r.as_ref().unwrap().value, i as u32);
        } else {
            let e = r.as_ref().unwrap_err();
            assert_eq!(e.task_index(), Some(i));
            assert!(e.to_string().contains("skip_serializing_if"), "{e}");
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Inner {
    b: u32,
}

/// `flatten` serialises a map of unknown length: refused in the worker.
#[derive(Debug, Serialize, Deserialize)]
struct Flat {
    a: u32,
    #[serde(flatten)]
    inner: Inner,
}

/// An internally tagged enum needs `deserialize_any`: refused in the parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind")]
enum Tagged {
    One { x: u32 },
}

#[test]
fn flatten_and_internally_tagged_enums_are_named() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let pool = Pool::new().workers(2).progress(false);
    let flat = pool
        .map_results(0..2, |i| Flat {
            a: i as u32,
            inner: Inner { b: 1 },
        })
        .unwrap();
    for r in &flat {
        let e = r.as_ref().unwrap_err().to_string();
        assert!(e.contains("flatten"), "{e}");
    }
    let tagged = pool
        .map_results(0..2, |i| Tagged::One { x: i as u32 })
        .unwrap();
    for r in &tagged {
        let e = r.as_ref().unwrap_err().to_string();
        assert!(e.contains("internally tagged"), "{e}");
    }
}

/// A result whose `Serialize` stalls.
#[derive(Debug, Deserialize)]
struct Slow(usize);

impl Serialize for Slow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 1 {
            std::thread::sleep(Duration::from_secs(30));
        }
        s.serialize_u64(self.0 as u64)
    }
}

#[test]
fn the_timeout_covers_serialising() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let out = Pool::new()
        .workers(2)
        .chunk_size(1)
        .max_retries(0)
        .task_timeout(Duration::from_secs(1))
        .progress(false)
        .map_results(0..4, Slow)
        .unwrap();
    for (i, r) in out.iter().enumerate() {
        match (i, r) {
            (1, Err(Error::TaskTimedOut { index: 1, .. })) => {}
            (1, r) => panic!("a 30 s Serialize passed a 1 s timeout: {r:?}"),
            (_, Ok(v)) => assert_eq!(v.0, i),
            (_, r) => panic!("position {i}: {r:?}"),
        }
    }
    assert!(common::children().is_empty());
}

#[test]
fn a_task_that_closes_every_descriptor_is_named() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let attempts = SharedArray::<u32, Ix1>::zeros(6).unwrap();
    let out = Pool::new()
        .workers(2)
        .chunk_size(6)
        .max_retries(1)
        .progress(false)
        .map_results(0..6, |i| {
            bump(&attempts, i);
            if i == 4 {
                for fd in 3..4096 {
                    // SAFETY: closing descriptors in this worker only; nothing here uses
                    // them again (the worker notices and leaves).
                    unsafe { libc::close(fd) };
                }
            }
            i
        })
        .unwrap();
    for (i, r) in out.iter().enumerate() {
        match (i, r) {
            (
                4,
                Err(Error::WorkerDied {
                    task: Some((4, 4)), ..
                }),
            ) => {}
            (4, r) => panic!("the task that closed the descriptors was not named: {r:?}"),
            (_, Ok(v)) => assert_eq!(*v, i),
            (_, r) => panic!("position {i}: {r:?}"),
        }
    }
    let a = attempts.read();
    // Run once and retried once alone, plus once more when it first ran with others in
    // its chunk (the scheduler may also have left it alone from the start).
    assert!((2..=3).contains(&a[4]), "{:?}", a.view());
    // The other tasks of its chunk ran again once, one by one (their results were never
    // sent); none more than twice.
    assert!(
        (0..6).filter(|&i| i != 4).all(|i| (1..=2).contains(&a[i])),
        "{:?}",
        a.view()
    );
}

#[test]
fn large_results_travel_in_a_file_and_arrive_whole() {
    let _d = common::deadline(120);
    let _s = common::serial();
    // 4 MiB each, above the size from which a batch travels in a memory file.
    let out = Pool::new()
        .workers(2)
        .chunk_size(2)
        .progress(false)
        .map(0..6, |i| vec![i as u8; 4 << 20])
        .unwrap();
    for (i, v) in out.iter().enumerate() {
        assert_eq!(v.len(), 4 << 20);
        assert!(v.iter().all(|&b| b == i as u8));
    }
}

/// A row for the files the next test's tasks load.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable, forkmap::Row)]
#[repr(C)]
struct Point {
    x: i32,
    y: f32,
}

/// A task's own forkmap error (here from `text::load_shared` in the worker) comes back as
/// it was made there: the same message, the same fields, and the OS's error number and
/// words in its source.
#[test]
fn a_task_returns_forkmaps_own_errors_with_the_oss_reason() {
    use std::error::Error as _;
    use std::ffi::OsStr;
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;

    use forkmap::text::{self, Format};

    let _d = common::deadline(60);
    let _s = common::serial();
    let dir = std::env::temp_dir().join(format!(
        "forkmap-result-path-errors-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bad.txt"), "1 2.5\n3 four\n").unwrap();
    std::fs::write(dir.join("good.txt"), "1 2.5\n3 4.5\n").unwrap();
    let files: Vec<PathBuf> = vec![
        dir.join("missing.txt"),
        dir.join(OsStr::from_bytes(b"caf\xe9-missing.txt")),
        dir.clone(), // a directory: it opens, then reading it fails with EISDIR
        dir.join("bad.txt"),
        dir.join("good.txt"),
    ];
    let format = Format::whitespace();
    // What the same calls say in the caller, word for word.
    let here: Vec<String> = files[..4]
        .iter()
        .map(|f| {
            text::load_shared::<Point>(f, &format)
                .unwrap_err()
                .to_string()
        })
        .collect();
    let out = Pool::new()
        .workers(2)
        .chunk_size(1)
        .progress(false)
        .map(0..files.len(), |i| {
            let loaded: Result<SharedArray<Point, Ix1>, Error> =
                text::load_shared::<Point>(&files[i], &format);
            (std::process::id(), loaded)
        })
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(common::children().is_empty());
    assert!(out.iter().all(|(pid, _)| *pid != std::process::id()));
    let mut errors: Vec<Error> = Vec::new();
    let mut arrays = Vec::new();
    for (_, loaded) in out {
        match loaded {
            Ok(a) => arrays.push(a),
            Err(e) => errors.push(e),
        }
    }
    assert_eq!(errors.len(), 4, "{errors:?}");
    for (err, want) in errors.iter().zip(&here) {
        assert_eq!(&err.to_string(), want);
    }
    let os = |err: &Error| {
        let source = err.source().unwrap_or_else(|| panic!("{err}: no source"));
        let source = source.downcast_ref::<io::Error>().expect("an io::Error");
        (source.raw_os_error(), source.kind(), source.to_string())
    };
    // A missing file, named as it is, also when its name is not UTF-8.
    for (err, file) in errors.iter().zip(&files[..2]) {
        let Error::Io { path, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(path, file);
        assert!(
            err.to_string()
                .ends_with(": No such file or directory (os error 2)"),
            "{err}"
        );
        let reason = "No such file or directory (os error 2)".to_string();
        assert_eq!(
            os(err),
            (Some(libc::ENOENT), io::ErrorKind::NotFound, reason)
        );
    }
    assert!(matches!(&errors[2], Error::Io { .. }), "{:?}", errors[2]);
    assert_eq!(os(&errors[2]).0, Some(libc::EISDIR), "{}", errors[2]);
    let Error::Parse { path, line, .. } = &errors[3] else {
        panic!("{:?}", errors[3])
    };
    assert_eq!((path, *line), (&files[3], 2));
    // The one that loaded arrived as a shared array.
    assert_eq!(arrays.len(), 1);
    assert_eq!(
        arrays[0].read().to_vec(),
        vec![Point { x: 1, y: 2.5 }, Point { x: 3, y: 4.5 }]
    );
}

/// An error the coordinator refuses to decode (a description longer than forkmap keeps
/// for `&'static str` fields) is that task's `ResultNotSent`, not a panic; the other
/// tasks' errors and values arrive.
#[test]
fn an_error_too_odd_to_decode_is_its_tasks_failure_alone() {
    let _d = common::deadline(60);
    let _s = common::serial();
    let out = Pool::new()
        .workers(2)
        .chunk_size(4)
        .progress(false)
        .map_results(0..4, |i| -> Result<usize, Error> {
            match i {
                1 => Err(Error::WouldBlock {
                    segment: "s".into(),
                    reason: Box::leak("x".repeat(1 << 20).into_boxed_str()),
                }),
                2 => Err(Error::WouldBlock {
                    segment: "s".into(),
                    reason: "a writer holds it",
                }),
                _ => Ok(i),
            }
        })
        .unwrap();
    for (i, r) in out.iter().enumerate() {
        match (i, r) {
            (
                1,
                Err(Error::ResultNotSent {
                    index: 1, message, ..
                }),
            ) => {
                assert!(message.contains("could not decode"), "{message}")
            }
            (2, Ok(Err(e @ Error::WouldBlock { reason, .. }))) => {
                assert_eq!(*reason, "a writer holds it");
                assert_eq!(
                    e.to_string(),
                    "shared memory segment s: the lock is busy: a writer holds it"
                );
            }
            (0 | 3, Ok(Ok(v))) => assert_eq!(*v, i),
            (_, r) => panic!("position {i}: {r:?}"),
        }
    }
    assert!(common::children().is_empty());
}
