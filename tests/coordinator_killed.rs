//! SIGKILL of the coordinator leaves no worker running.

mod common;

use std::time::Duration;

#[test]
fn workers_die_with_their_coordinator() {
    if common::role().as_deref() == Some("coordinator") {
        // The doomed coordinator: workers that would sleep for a minute.
        let _ = forkmap::Pool::new()
            .workers(2)
            .chunk_size(1)
            .progress(false)
            .map(0..4, |i| {
                std::thread::sleep(Duration::from_secs(60));
                i
            });
        return;
    }
    let _d = common::deadline(60);
    // Become a subreaper so orphaned workers are re-parented to us and can be reaped
    // (and checked) here instead of by whatever init this machine runs.
    // SAFETY: prctl with an integer argument.
    let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(ret, 0);
    let mut child = common::rerun("workers_die_with_their_coordinator", "coordinator", &[]);
    let coordinator = child.id() as i32;
    assert!(
        common::wait_until(20, || common::children_of(coordinator).len() == 2),
        "workers never started"
    );
    let workers = common::children_of(coordinator);
    // SAFETY: kill with integer arguments.
    assert_eq!(unsafe { libc::kill(coordinator, libc::SIGKILL) }, 0);
    let _ = child.wait();
    for pid in workers {
        let mut status = 0;
        // The worker is now our child (subreaper): wait for it, bounded by the deadline.
        // SAFETY: status is a valid c_int.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(ret, pid, "worker {pid} was not re-parented to the test");
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
            "worker {pid} ended with status {status}"
        );
    }
}
