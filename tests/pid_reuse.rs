//! Pid reuse for real: in a fresh pid namespace (root only; skipped with a message
//! otherwise), a reader is SIGKILLed while it holds a read guard, and the next process
//! is given the very same pid (through the namespace's `ns_last_pid`, as CRIU does). That
//! process must neither share the dead reader's count nor wait for itself in `write`.

mod common;

use forkmap::SharedArray;

/// Exit codes of the namespace's init process.
const SKIP_NS_LAST_PID: i32 = 77;
const SKIP_PID_TAKEN: i32 = 78;
const WRITE_NOT_RECOVERED: i32 = 3;

fn fork() -> i32 {
    // The children of this test must be plain processes whose pids it places by hand;
    // forkmap's own fork is crate-private.
    #[allow(clippy::disallowed_methods)]
    // SAFETY: the children below only touch the shared array, read /proc and _exit.
    unsafe {
        libc::fork()
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends this forked child without running the test harness's code.
    unsafe { libc::_exit(code) }
}

fn wait(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: status is a valid c_int.
    let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(ret, pid);
    status
}

/// Runs as pid 1 of the new namespace.
fn init(a: &SharedArray<u64, forkmap::ndarray::Ix1>) -> ! {
    // SAFETY: alarm takes an integer; a hang below ends this namespace with SIGALRM.
    unsafe { libc::alarm(40) };
    let reader = fork();
    if reader == 0 {
        let _g = a.read();
        // SAFETY: kill with integer arguments, on this process, holding the guard.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        exit(1);
    }
    let status = wait(reader);
    if !(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL) {
        exit(2);
    }
    // A pid comes back only after the kernel has cycled through the pid space, which
    // takes far longer than a clock tick; start times are kept in ticks (10 ms), so wait
    // a few before handing the pid out again (the same pid *and* tick is the documented
    // limit of the identity).
    std::thread::sleep(std::time::Duration::from_millis(50));
    // The next pid this namespace hands out is the dead reader's.
    if std::fs::write("/proc/sys/kernel/ns_last_pid", (reader - 1).to_string()).is_err() {
        exit(SKIP_NS_LAST_PID);
    }
    let heir = fork();
    if heir == 0 {
        // SAFETY: alarm takes an integer.
        unsafe { libc::alarm(20) };
        // SAFETY: getpid cannot fail.
        if unsafe { libc::getpid() } != reader {
            exit(SKIP_PID_TAKEN);
        }
        // Under the old pid-only identity, this read joined the dead reader's slot and
        // the write below waited for its own pid for ever.
        drop(a.read());
        let mut w = a.write();
        w[0] = 5;
        let recovered = w.recovered();
        drop(w);
        exit(if recovered { 0 } else { WRITE_NOT_RECOVERED });
    }
    let status = wait(heir);
    exit(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        100 + libc::WTERMSIG(status)
    })
}

#[test]
fn a_new_process_with_a_dead_readers_pid_is_not_that_reader() {
    if common::role().as_deref() == Some("namespace") {
        let a = SharedArray::<u64, _>::zeros(4).unwrap();
        // SAFETY: unshare with a flag; it only affects the children forked after it.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            println!(
                "SKIP: cannot make a pid namespace: {}",
                std::io::Error::last_os_error()
            );
            return;
        }
        let pid = fork();
        if pid == 0 {
            init(&a);
        }
        let status = wait(pid);
        assert!(libc::WIFEXITED(status), "init ended with status {status}");
        match libc::WEXITSTATUS(status) {
            0 => {
                assert_eq!(a.read()[0], 5);
                assert_eq!(a.lock_recoveries(), 1);
                println!("PID REUSED");
            }
            SKIP_NS_LAST_PID => println!("SKIP: ns_last_pid is not writable"),
            SKIP_PID_TAKEN => println!("SKIP: the pid was taken by another process"),
            code => panic!("the process with the reused pid failed with {code}"),
        }
        return;
    }
    let _d = common::deadline(90);
    let mut child = common::rerun(
        "a_new_process_with_a_dead_readers_pid_is_not_that_reader",
        "namespace",
        &[],
    );
    let status = common::wait_child(&mut child, 80);
    assert!(status.success(), "{status}");
}
