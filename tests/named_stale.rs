//! A named segment outlives a creator killed before its drop (SIGKILL, or SIGTERM during
//! a map); the next creation names it as stale, and it can be replaced. A named array
//! made in a task keeps its name in the parent, which then removes it. This file counts
//! /dev/shm entries with its own prefix, so it is its own test binary.

mod common;

use std::path::Path;
use std::time::Duration;

use forkmap::{Error, Pool, SharedArray};

fn exists(name: &str) -> bool {
    Path::new("/dev/shm").join(name).exists()
}

/// Removes a name left by a failed test.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(&self.0));
    }
}

#[test]
fn a_killed_creator_leaves_a_stale_segment_that_can_be_replaced() {
    let name = format!(
        "forkmap-stale-{}-kill",
        std::env::var("FORKMAP_TEST_PARENT").unwrap_or_else(|_| std::process::id().to_string())
    );
    if common::role().as_deref() == Some("creator") {
        let a = SharedArray::<u32, _>::create_named(&name, 4).unwrap();
        a.write()[0] = 42;
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let _d = common::deadline(60);
    let _c = Cleanup(name.clone());
    let parent = std::process::id().to_string();
    let mut child = common::rerun(
        "a_killed_creator_leaves_a_stale_segment_that_can_be_replaced",
        "creator",
        &[("FORKMAP_TEST_PARENT", &parent)],
    );
    let pid = child.id();
    assert!(common::wait_until(20, || exists(&name)
        && SharedArray::<u32, _>::open_named(&name, 4)
            .is_ok_and(|a| a.read()[0] == 42)));
    // While the creator runs, the segment is not stale.
    let err = SharedArray::<u32, _>::create_named_replacing_stale(&name, 4).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("creator (pid {pid}) still runs")),
        "{err}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(exists(&name), "SIGKILL ran the creator's drop?");
    // The plain creation says what is there and what to do.
    let err = SharedArray::<u32, _>::create_named(&name, 4).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, Error::Shm { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists)
    );
    assert!(
        text.contains(&format!(
            "a stale forkmap segment: its creator (pid {pid}) is gone"
        )) && text.contains("create_named_replacing_stale")
            && text.contains(&format!("rm /dev/shm/{name}")),
        "{text}"
    );
    // Replacing it gives a fresh segment under the same name, owned here.
    let fresh = SharedArray::<u32, _>::create_named_replacing_stale(&name, 4).unwrap();
    assert_eq!(fresh.read()[0], 0);
    assert_eq!(fresh.name(), Some(name.as_str()));
    drop(fresh);
    assert!(
        !exists(&name),
        "the replacement's drop did not remove the name"
    );
    assert!(!SharedArray::remove_stale_named(&name).unwrap());
}

#[test]
fn sigterm_during_a_map_leaves_a_name_that_remove_stale_named_clears() {
    let name = format!(
        "forkmap-stale-{}-term",
        std::env::var("FORKMAP_TEST_PARENT").unwrap_or_else(|_| std::process::id().to_string())
    );
    if common::role().as_deref() == Some("mapper") {
        let a = SharedArray::<u32, _>::create_named(&name, 4).unwrap();
        let _ = Pool::new().workers(2).progress(false).map(0..4, |i| {
            std::thread::sleep(Duration::from_secs(60));
            a.read()[i]
        });
        return;
    }
    let _d = common::deadline(60);
    let _c = Cleanup(name.clone());
    let parent = std::process::id().to_string();
    let mut child = common::rerun(
        "sigterm_during_a_map_leaves_a_name_that_remove_stale_named_clears",
        "mapper",
        &[("FORKMAP_TEST_PARENT", &parent)],
    );
    let pid = child.id() as i32;
    assert!(common::wait_until(20, || exists(&name) && common::children_of(pid).len() == 2));
    // SAFETY: kill with integer arguments.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = common::wait_child(&mut child, 30);
    assert!(!status.success());
    assert!(
        exists(&name),
        "expected the name to outlive the re-raised SIGTERM"
    );
    assert!(SharedArray::remove_stale_named(&name).unwrap());
    assert!(!exists(&name));
}

#[test]
fn a_named_array_made_in_a_task_keeps_its_name_in_the_parent() {
    let _d = common::deadline(60);
    let prefix = format!("forkmap-stale-{}-task-", std::process::id());
    let arrays = Pool::new()
        .workers(2)
        .progress(false)
        .map(0..3, |i| {
            let a = SharedArray::<u64, _>::create_named(&format!("{prefix}{i}"), 2).unwrap();
            a.write()[1] = i as u64 * 10;
            a
        })
        .unwrap();
    let _c: Vec<_> = (0..3).map(|i| Cleanup(format!("{prefix}{i}"))).collect();
    for (i, a) in arrays.iter().enumerate() {
        let name = format!("{prefix}{i}");
        assert_eq!(a.name(), Some(name.as_str()));
        assert!(exists(&name), "the worker removed {name}");
        assert_eq!(a.read()[1], i as u64 * 10);
        // Another opener sees the same memory.
        let other = SharedArray::<u64, _>::open_named(&name, 2).unwrap();
        other.write()[0] = 7;
        assert_eq!(a.read()[0], 7);
    }
    drop(arrays);
    for i in 0..3 {
        assert!(
            !exists(&format!("{prefix}{i}")),
            "the parent did not remove the name"
        );
    }
}
