//! Two independent processes share a named segment. The other process is this test
//! binary run again (`--exact <test>`), told its role by an environment variable; it
//! opens the segment by name, so nothing is inherited through `fork`.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use forkmap::{Error, SharedArray};
use ndarray::Ix2;

const ROLE: &str = "FORKMAP_TEST_NAMED_ROLE";
const NAME: &str = "FORKMAP_TEST_NAMED_SEGMENT";
const SHAPE: (usize, usize) = (64, 32);

/// The role this process plays, when it is the other process.
fn role() -> Option<(String, String)> {
    Some((std::env::var(ROLE).ok()?, std::env::var(NAME).ok()?))
}

/// Runs test `test` of this binary as the other process, killing it at the deadline.
fn run_other(test: &str, role: &str, name: &str) -> Output {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(NAME, name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the other process ({role}) did not finish within 60 s:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn another_process_writes_under_the_lock() {
    if let Some((role, name)) = role() {
        assert_eq!(role, "writer");
        // Wrong type or shape from the other process: refused, with the name.
        match SharedArray::<f64, Ix2>::open_named(&name, SHAPE) {
            Err(Error::Mismatch { segment, message }) => {
                assert_eq!(segment, name);
                assert!(message.contains("holds elements of type i64"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(SharedArray::<i64, Ix2>::open_named(&name, (SHAPE.1, SHAPE.0)).is_err());
        let shared = SharedArray::<i64, Ix2>::open_named(&name, SHAPE).unwrap();
        assert_eq!(shared.name(), Some(name.as_str()));
        // This waits until the parent lets go of its write guard.
        let mut guard = shared.write();
        assert_eq!(guard.sum(), (SHAPE.0 * SHAPE.1) as i64);
        guard[[5, 7]] = 4242;
        guard.row_mut(3).fill(-1);
        drop(guard);
        println!("OTHER PROCESS WROTE");
        return;
    }

    let shared = SharedArray::<i64, Ix2>::create_named_unique("forkmap-it-", SHAPE).unwrap();
    let name = shared.name().unwrap().to_string();
    let mut guard = shared.write();
    guard.fill(1);
    let other = std::thread::scope(|s| {
        let other = s.spawn(|| run_other("another_process_writes_under_the_lock", "writer", &name));
        // The other process cannot write while this guard is held.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(guard[[5, 7]], 1);
        drop(guard);
        other.join().unwrap()
    });
    assert!(other.status.success(), "{}", describe(&other));
    let stdout = String::from_utf8_lossy(&other.stdout);
    assert!(
        stdout.contains("OTHER PROCESS WROTE"),
        "{}",
        describe(&other)
    );
    assert!(stdout.contains("1 passed"), "{}", describe(&other));
    let view = shared.read();
    assert_eq!(view[[5, 7]], 4242);
    assert!(view.row(3).iter().all(|&v| v == -1));
    assert_eq!(view[[0, 0]], 1);
    drop(view);
    // The other process's exit left the name in place; the owner's drop removes it.
    let path = std::path::Path::new("/dev/shm").join(&name);
    assert!(path.exists());
    drop(shared);
    assert!(!path.exists());
}

#[test]
fn another_process_dies_holding_the_lock() {
    if let Some((role, name)) = role() {
        assert_eq!(role, "crasher");
        let shared = SharedArray::<i64, Ix2>::open_named(&name, SHAPE).unwrap();
        let mut guard = shared.write();
        guard[[0, 0]] = 7;
        println!("OTHER PROCESS ABORTS HOLDING THE LOCK");
        std::process::abort();
    }

    let shared = SharedArray::<i64, Ix2>::create_named_unique("forkmap-it-", SHAPE).unwrap();
    let name = shared.name().unwrap().to_string();
    let other = run_other("another_process_dies_holding_the_lock", "crasher", &name);
    assert!(!other.status.success(), "{}", describe(&other));
    assert!(
        String::from_utf8_lossy(&other.stdout).contains("ABORTS HOLDING THE LOCK"),
        "{}",
        describe(&other)
    );
    // The lock is recovered, not stuck, and says so.
    let guard = shared.write();
    assert!(guard.recovered());
    assert_eq!(guard[[0, 0]], 7);
    drop(guard);
    assert!(shared.lock_recoveries() >= 1);
    assert_eq!(shared.read()[[0, 0]], 7);
}

#[test]
fn a_panic_while_the_owner_lives_removes_the_name() {
    let mut path = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let owner = SharedArray::<u8, _>::create_named_unique("forkmap-it-", 8).unwrap();
        let p = std::path::Path::new("/dev/shm").join(owner.name().unwrap());
        assert!(p.exists());
        path = Some(p);
        owner.write()[0] = 1;
        panic!("on purpose");
    }));
    assert!(result.is_err());
    assert!(!path.unwrap().exists());
}
