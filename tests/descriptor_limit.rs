//! Every `SharedArray` holds a descriptor. Under a low `ulimit -n`, forkmap raises the
//! soft limit to the hard one, and what cannot fit is an error that names the limit.
//! Each case runs in a re-run child, since the limit is process-wide.

mod common;

use forkmap::{Error, Pool, SharedArray};

fn set_nofile(soft: u64, hard: u64) {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit through a valid pointer.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

fn soft_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur
}

fn arrays_back(n: usize) -> Result<Vec<SharedArray<u32, forkmap::ndarray::Ix1>>, Error> {
    Pool::new().workers(2).progress(false).map(0..n, |i| {
        let a = SharedArray::<u32, _>::zeros(4).unwrap();
        a.write()[0] = i as u32;
        a
    })
}

#[test]
fn descriptor_limits() {
    match common::role().as_deref() {
        Some("raised") => {
            // The default soft limit of many systems, under a higher hard limit.
            set_nofile(256, 4096);
            let arrays = arrays_back(1100).expect("every array comes back");
            assert_eq!(arrays.len(), 1100);
            assert!(
                arrays
                    .iter()
                    .enumerate()
                    .all(|(i, a)| a.read()[0] == i as u32)
            );
            assert_eq!(soft_nofile(), 4096, "the soft limit was not raised");
        }
        Some("capped") => {
            // A hard limit that cannot be raised: the error says so.
            set_nofile(200, 200);
            let err = arrays_back(400).map(|v| v.len()).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("ulimit -n is 200"), "{text}");
            assert!(!text.contains("reserve memory"), "{text}");
            // Made in this process: named as the descriptor limit, not as memory.
            let mut held = Vec::new();
            let err = loop {
                match SharedArray::<u8, _>::zeros(8) {
                    Ok(a) => held.push(a),
                    Err(e) => break e,
                }
                assert!(held.len() < 1000, "the limit never bit");
            };
            let text = err.to_string();
            assert!(matches!(err, Error::Shm { .. }), "{text}");
            assert!(
                text.contains("could not create it: too many open descriptors (EMFILE")
                    && text.contains("ulimit -n is 200"),
                "{text}"
            );
            // Dropping arrays gives the descriptors back.
            held.truncate(held.len() / 2);
            assert_eq!(arrays_back(20).unwrap().len(), 20);
        }
        _ => {
            let _d = common::deadline(120);
            for role in ["raised", "capped"] {
                let mut child = common::rerun("descriptor_limits", role, &[]);
                let status = common::wait_child(&mut child, 100);
                assert!(status.success(), "role {role} failed: {status}");
            }
        }
    }
}
