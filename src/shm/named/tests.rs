use std::os::unix::fs::FileExt;

use super::*;

/// A file put in /dev/shm by the test itself, removed on drop.
struct Foreign(PathBuf);

impl Foreign {
    fn new(contents: &[u8]) -> (Foreign, String) {
        let name = random_name("forkmap-unit-foreign-");
        let path = path_of(&name);
        std::fs::write(&path, contents).unwrap();
        (Foreign(path), name)
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn random_name(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    sys::random_bytes(&mut bytes).unwrap();
    format!("{prefix}{}", u64::from_le_bytes(bytes))
}

fn mismatch_message(err: Error) -> String {
    match err {
        Error::Mismatch { message, .. } => message,
        other => panic!("not a mismatch: {other:?}"),
    }
}

fn shm_kind(err: &Error) -> io::ErrorKind {
    match err {
        Error::Shm { source, .. } => source.kind(),
        other => panic!("not a shm error: {other:?}"),
    }
}

#[test]
fn names_are_checked() {
    let long = "x".repeat(256);
    for bad in ["", "a/b", "/a", "a\0b", ".", "..", long.as_str()] {
        let err = SharedArray::<u8, _>::create_named(bad, 4).unwrap_err();
        assert_eq!(shm_kind(&err), io::ErrorKind::InvalidInput, "{bad:?}");
        let err = SharedArray::<u8, _>::open_named(bad, 4).unwrap_err();
        assert_eq!(shm_kind(&err), io::ErrorKind::InvalidInput, "{bad:?}");
    }
    let err = SharedArray::<u8, _>::create_named_unique("a/", 4).unwrap_err();
    assert_eq!(shm_kind(&err), io::ErrorKind::InvalidInput);
    let err = SharedArray::<u8, _>::create_named_unique(&"p".repeat(224), 4).unwrap_err();
    assert_eq!(shm_kind(&err), io::ErrorKind::InvalidInput);
    // The longest prefix and the longest name are fine.
    let a = SharedArray::<u8, _>::create_named_unique(&"p".repeat(223), 4).unwrap();
    assert_eq!(a.name().unwrap().len(), 255);
}

#[test]
fn unique_names_differ_and_read_back() {
    let a = SharedArray::<u8, _>::create_named_unique("forkmap-unit-", 1).unwrap();
    let b = SharedArray::<u8, _>::create_named_unique("forkmap-unit-", 1).unwrap();
    let (na, nb) = (a.name().unwrap(), b.name().unwrap());
    assert_ne!(na, nb);
    assert!(na.starts_with("forkmap-unit-") && na.len() == "forkmap-unit-".len() + 32);
    assert!(
        na["forkmap-unit-".len()..]
            .bytes()
            .all(|c| c.is_ascii_hexdigit())
    );
    assert!(path_of(na).exists());
    assert_eq!(SharedArray::<u8, _>::zeros(1).unwrap().name(), None);
    let meta = std::fs::metadata(path_of(na)).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
}

#[test]
fn open_sees_writes_both_ways() {
    let owner = SharedArray::<u64, _>::create_named_unique("forkmap-unit-", (3, 5)).unwrap();
    owner.write()[[2, 4]] = 99;
    let other = SharedArray::<u64, _>::open_named(owner.name().unwrap(), (3, 5)).unwrap();
    assert_eq!(other.name(), owner.name());
    assert_eq!(other.read()[[2, 4]], 99);
    other.write()[[0, 0]] = 7;
    assert_eq!(owner.read()[[0, 0]], 7);
    assert_eq!(owner.read().sum(), 106);
}

#[test]
fn type_mismatch() {
    let owner = SharedArray::<f64, _>::create_named_unique("forkmap-unit-", 8).unwrap();
    let name = owner.name().unwrap();
    // Same size and alignment, another type.
    let message = mismatch_message(SharedArray::<i64, _>::open_named(name, 8).unwrap_err());
    assert!(message.contains("holds elements of type f64"), "{message}");
    assert!(message.contains("not i64"), "{message}");
    let message = mismatch_message(SharedArray::<u8, _>::open_named(name, 64).unwrap_err());
    assert!(
        message.contains("f64 (8 bytes, align 8), not u8"),
        "{message}"
    );
}

#[test]
fn shape_mismatch() {
    let owner = SharedArray::<i32, _>::create_named_unique("forkmap-unit-", (4, 6)).unwrap();
    let name = owner.name().unwrap();
    let message = mismatch_message(SharedArray::<i32, _>::open_named(name, (6, 4)).unwrap_err());
    assert_eq!(message, "has shape [4, 6], not [6, 4]");
    let message = mismatch_message(SharedArray::<i32, _>::open_named(name, 24).unwrap_err());
    assert_eq!(message, "has shape [4, 6], not [24]");
    let err = SharedArray::<i32, _>::open_named(name, (4, 6, 1)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("shared memory segment {name}: "))
    );
}

#[test]
fn missing_segment() {
    let name = random_name("forkmap-unit-missing-");
    let err = SharedArray::<u8, _>::open_named(&name, 1).unwrap_err();
    assert_eq!(shm_kind(&err), io::ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        format!(
            "shared memory segment {name}: could not open it: No such file or directory \
             (os error 2)"
        )
    );
}

#[test]
fn foreign_files() {
    // Long enough for a header, but something else.
    let text: Vec<u8> = b"chr1 10 0.5 1 1\n".repeat(4096);
    let (_f, name) = Foreign::new(&text);
    let message = mismatch_message(SharedArray::<u8, _>::open_named(&name, 1).unwrap_err());
    assert_eq!(message, "not a forkmap segment (bad magic number)");
    // Too short for a header.
    let (_g, name) = Foreign::new(b"hello");
    let message = mismatch_message(SharedArray::<u8, _>::open_named(&name, 1).unwrap_err());
    assert!(
        message.contains("5 bytes, shorter than a header"),
        "{message}"
    );
    // Empty, as a segment is for a moment while it is being created.
    let (_h, name) = Foreign::new(b"");
    let message = mismatch_message(SharedArray::<u8, _>::open_named(&name, 1).unwrap_err());
    assert!(message.contains("still being created"), "{message}");
    // A directory.
    let name = random_name("forkmap-unit-dir-");
    std::fs::create_dir(path_of(&name)).unwrap();
    let _d = Foreign(path_of(&name));
    assert!(SharedArray::<u8, _>::open_named(&name, 1).is_err());
    // A symlink to a real segment is refused, not followed.
    let owner = SharedArray::<u8, _>::create_named_unique("forkmap-unit-", 1).unwrap();
    let name = random_name("forkmap-unit-link-");
    std::os::unix::fs::symlink(path_of(owner.name().unwrap()), path_of(&name)).unwrap();
    let _l = Foreign(path_of(&name));
    assert!(SharedArray::<u8, _>::open_named(&name, 1).is_err());
}

#[test]
fn truncated_segment() {
    let owner = SharedArray::<u32, _>::create_named_unique("forkmap-unit-", 10_000).unwrap();
    let name = owner.name().unwrap();
    let path = path_of(name);
    let header = std::mem::size_of::<Header>() as u64;
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // The header survives, the data is cut short. (The owner touches no data after this.)
    file.set_len(header + 100).unwrap();
    let message = mismatch_message(SharedArray::<u32, _>::open_named(name, 10_000).unwrap_err());
    assert!(message.starts_with("header is corrupt"), "{message}");
    assert!(
        message.contains(&format!("in a {}-byte file", header + 100)),
        "{message}"
    );
    // Cut into the header.
    file.set_len(100).unwrap();
    let message = mismatch_message(SharedArray::<u32, _>::open_named(name, 10_000).unwrap_err());
    assert!(
        message.contains("100 bytes, shorter than a header"),
        "{message}"
    );
}

#[test]
fn wrong_version() {
    let owner = SharedArray::<u32, _>::create_named_unique("forkmap-unit-", 16).unwrap();
    let name = owner.name().unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path_of(name))
        .unwrap();
    // The version is the u32 right after the 8-byte magic number.
    file.write_all_at(&7u32.to_ne_bytes(), 8).unwrap();
    let message = mismatch_message(SharedArray::<u32, _>::open_named(name, 16).unwrap_err());
    assert_eq!(message, "segment format version 7 is not the supported 1");
    // A wrong magic number.
    file.write_all_at(b"NOTFORKM", 0).unwrap();
    let message = mismatch_message(SharedArray::<u32, _>::open_named(name, 16).unwrap_err());
    assert_eq!(message, "not a forkmap segment (bad magic number)");
}

#[test]
fn name_collision() {
    let first = SharedArray::<u8, _>::create_named_unique("forkmap-unit-", 3).unwrap();
    first.write()[1] = 5;
    let name = first.name().unwrap();
    let err = SharedArray::<u8, _>::create_named(name, 3).unwrap_err();
    assert_eq!(shm_kind(&err), io::ErrorKind::AlreadyExists);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "shared memory segment {name}: could not create it: /dev/shm/{name} exists \
             already: a forkmap segment whose creator (pid {}) still runs",
            std::process::id()
        )),
        "{text}"
    );
    assert!(text.contains(&format!("`rm /dev/shm/{name}`")), "{text}");
    // Not stale: neither removal nor replacement touches it.
    let err = SharedArray::remove_stale_named(name).unwrap_err();
    assert_eq!(shm_kind(&err), io::ErrorKind::ResourceBusy);
    let err = SharedArray::<u8, _>::create_named_replacing_stale(name, 3).unwrap_err();
    assert_eq!(shm_kind(&err), io::ErrorKind::ResourceBusy);
    // The refused creator removed nothing: the first segment is intact and still named.
    let again = SharedArray::<u8, _>::open_named(name, 3).unwrap();
    assert_eq!(again.read()[1], 5);
    // A foreign file is not adopted either.
    let (_f, foreign) = Foreign::new(b"x");
    let err = SharedArray::<u8, _>::create_named(&foreign, 3).unwrap_err();
    assert_eq!(shm_kind(&err), io::ErrorKind::AlreadyExists);
    assert!(
        err.to_string().contains("not a complete forkmap segment"),
        "{err}"
    );
    // Nor removed as stale.
    let err = SharedArray::<u8, _>::create_named_replacing_stale(&foreign, 3).unwrap_err();
    assert_eq!(shm_kind(&err), io::ErrorKind::ResourceBusy);
    assert_eq!(std::fs::read(path_of(&foreign)).unwrap(), b"x");
}

#[test]
fn named_segments_do_not_freeze() {
    let owner = SharedArray::<u8, _>::create_named_unique("forkmap-unit-", 3).unwrap();
    let (owner, err) = owner.try_freeze().unwrap_err();
    assert_eq!(shm_kind(&err), io::ErrorKind::Unsupported);
    assert!(err.to_string().contains("cannot be sealed"), "{err}");
    owner.write()[0] = 1;
    let other = SharedArray::<u8, _>::open_named(owner.name().unwrap(), 3).unwrap();
    assert!(other.freeze().is_err());
    assert_eq!(owner.read()[0], 1);
}

#[test]
fn only_the_creating_process_removes_the_name() {
    let _fork = crate::fork_test_lock();
    let owner = SharedArray::<u8, _>::create_named_unique("forkmap-unit-", 3).unwrap();
    let path = path_of(owner.name().unwrap());
    // An opener's drop leaves the name.
    drop(SharedArray::<u8, _>::open_named(owner.name().unwrap(), 3).unwrap());
    assert!(path.exists());
    // A forked copy of the owner's handle, dropped in the child, leaves it too.
    match sys::fork().unwrap() {
        sys::Forked::Child => {
            drop(owner);
            sys::exit_immediately(0);
        }
        sys::Forked::Parent(pid) => {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let status = loop {
                if let Some(status) = sys::try_wait(pid).unwrap() {
                    break status;
                }
                if std::time::Instant::now() > deadline {
                    let _ = sys::kill(pid, sys::SIGKILL);
                    let _ = sys::wait(pid);
                    panic!("the forked child did not exit");
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            };
            assert_eq!(status, sys::ExitKind::Code(0));
            assert!(path.exists());
            owner.write()[0] = 1;
            drop(owner);
            assert!(!path.exists());
        }
    }
}

#[test]
fn the_owner_leaves_a_replacement_alone() {
    let owner = SharedArray::<u8, _>::create_named_unique("forkmap-unit-", 3).unwrap();
    let path = path_of(owner.name().unwrap());
    // Someone removes the name and puts another file there: the owner's drop keeps it.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"new").unwrap();
    let _cleanup = Foreign(path.clone());
    drop(owner);
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
}
