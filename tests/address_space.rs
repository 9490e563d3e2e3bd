//! Under an address-space cap (`ulimit -v`), results too large to receive are named
//! errors of their tasks, never an abort of the parent. Runs in a re-run of this test
//! binary, since the limit is process-wide.

mod common;

use forkmap::{Error, Pool};

fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn results_beyond_the_address_space_are_named() {
    const MB: usize = 1 << 20;
    if common::role().as_deref() == Some("capped") {
        let _d = common::deadline(60);
        let cap = vm_size() + 90 * MB as u64;
        let limit = libc::rlimit {
            rlim_cur: cap,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: `limit` is a valid rlimit; this lowers the soft limit only.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
        let out = Pool::new()
            .workers(1)
            .chunk_size(1)
            .progress(false)
            .map_results(0..4, |i| vec![i as u8; 24 * MB])
            .unwrap();
        let mut refused = 0;
        for (i, r) in out.iter().enumerate() {
            match r {
                Ok(v) => assert!(v.len() == 24 * MB && v[0] == i as u8),
                Err(Error::ResultNotSent { index, message, .. }) => {
                    assert_eq!(*index, i);
                    assert!(
                        message.contains("RLIMIT_AS") || message.contains("map"),
                        "{message}"
                    );
                    refused += 1;
                }
                Err(e) => panic!("position {i}: {e}"),
            }
        }
        assert!(refused > 0, "four results of 24 MB fit under a 90 MB cap?");
        let errors: Vec<_> = out.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(refused < 4, "no result was received: {errors:?}");
        return;
    }
    let _d = common::deadline(120);
    // One malloc arena: a thread's arena reserves 64 MB of address space it may never use,
    // which would make the margins below depend on which threads allocate.
    let mut child = common::rerun(
        "results_beyond_the_address_space_are_named",
        "capped",
        &[("MALLOC_ARENA_MAX", "1")],
    );
    let status = common::wait_child(&mut child, 100);
    assert!(status.success(), "{status}");
}
