//! What a task starts and leaves running does not outlive the map: every worker has a
//! process group of its own, killed with it.

mod common;

#[test]
fn processes_a_task_leaves_behind_die_with_the_map() {
    let _d = common::deadline(60);
    // Orphans come to this process (not to init), so they can be checked and reaped.
    // SAFETY: prctl with integer arguments.
    let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(ret, 0);
    let pids = forkmap::Pool::new()
        .workers(2)
        .progress(false)
        .map(0..4, |_| {
            let child = std::process::Command::new("sleep")
                .arg("1000")
                .spawn()
                .unwrap();
            let pid = child.id() as i32;
            // Left running on purpose, as a careless task would.
            std::mem::forget(child);
            pid
        })
        .unwrap();
    for pid in pids {
        assert!(
            common::wait_until(20, || matches!(common::state(pid), None | Some('Z'))),
            "sleep {pid} started by a task outlived the map"
        );
        let mut status = 0;
        // SAFETY: status is a valid c_int; WNOHANG never blocks.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
}
