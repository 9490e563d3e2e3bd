//! A memory cgroup limit on this process's own cgroup (not the root's) is what a
//! reservation is checked against: an array larger than the cgroup allows is an
//! `Error::Shm` at creation, never an OOM kill later. Creates a child cgroup (needs root
//! and a writable cgroup file system; skips with a message otherwise) and re-runs this
//! test binary inside it.

mod common;

use std::path::PathBuf;

const LIMIT: u64 = 96 << 20;

/// This process's memory cgroup directory and whether it is v2.
fn own_memory_cgroup() -> Option<(PathBuf, bool)> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount_of = |v2: bool| {
        mountinfo.lines().find_map(|l| {
            let (m, fs) = l.split_once(" - ")?;
            let mut m = m.split(' ');
            let root = m.nth(3)?.to_string();
            let dir = m.next()?.to_string();
            let mut fs = fs.split(' ');
            let ok = match fs.next()? {
                "cgroup2" => v2,
                "cgroup" => !v2 && fs.nth(1)?.split(',').any(|o| o == "memory"),
                _ => false,
            };
            ok.then_some((root, dir))
        })
    };
    for (v2, prefix) in [(false, ":memory:"), (true, "0::")] {
        if let Some(line) = cgroup.lines().find(|l| l.contains(prefix)) {
            let path = &line[line.find(prefix)? + prefix.len()..];
            let (root, dir) = mount_of(v2)?;
            let rel = path.strip_prefix(root.trim_end_matches('/')).unwrap_or("");
            return Some((PathBuf::from(dir).join(rel.trim_start_matches('/')), v2));
        }
    }
    None
}

#[test]
fn a_nested_cgroup_limit_refuses_the_reservation() {
    if common::role().as_deref() == Some("inside") {
        let want = std::env::var("FORKMAP_TEST_CGROUP").unwrap();
        assert!(
            common::wait_until(20, || std::fs::read_to_string("/proc/self/cgroup")
                .is_ok_and(|c| c.contains(&want))),
            "never moved into {want}"
        );
        // 256 MiB against a 96 MiB limit, while the machine has plenty free: only the
        // process's own cgroup can refuse this.
        let err = forkmap::SharedArray::<u8, _>::zeros(256 << 20).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, forkmap::Error::Shm { .. }), "{text}");
        assert!(text.contains("bytes of memory available"), "{text}");
        // What fits is still given, and the map works inside the cgroup.
        let small = forkmap::SharedArray::<u8, _>::zeros(8 << 20).unwrap();
        let out = forkmap::Pool::new()
            .workers(2)
            .progress(false)
            .map(0..4, |i| small.read()[i] as usize + i)
            .unwrap();
        assert_eq!(out, vec![0, 1, 2, 3]);
        return;
    }
    let _d = common::deadline(90);
    let Some((own, v2)) = own_memory_cgroup() else {
        eprintln!("SKIP: no memory cgroup found for this process");
        return;
    };
    let dir = own.join(format!("forkmap-test-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&dir) {
        eprintln!(
            "SKIP: cannot create a child cgroup at {}: {e}",
            dir.display()
        );
        return;
    }
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _remove = Remove(dir.clone());
    let limit_file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    if let Err(e) = std::fs::write(dir.join(limit_file), LIMIT.to_string()) {
        eprintln!("SKIP: cannot set {limit_file}: {e}");
        return;
    }
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut child = common::rerun(
        "a_nested_cgroup_limit_refuses_the_reservation",
        "inside",
        &[("FORKMAP_TEST_CGROUP", &name)],
    );
    if let Err(e) = std::fs::write(dir.join("cgroup.procs"), child.id().to_string()) {
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("SKIP: cannot move a process into {}: {e}", dir.display());
        return;
    }
    let status = common::wait_child(&mut child, 80);
    assert!(
        status.success(),
        "the child inside the cgroup failed: {status}"
    );
    // Its workers are gone too, so the cgroup is empty and removable.
    assert!(
        common::wait_until(10, || std::fs::read_to_string(dir.join("cgroup.procs"))
            .is_ok_and(|p| p.trim().is_empty())),
        "processes left in the test cgroup"
    );
}
