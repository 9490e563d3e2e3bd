//! `FORKMAP_WORKERS` sets the default worker count; a bad value is an error, not ignored.

mod common;

#[test]
fn env_sets_the_worker_count() {
    match common::role().as_deref() {
        Some("three") => {
            assert_eq!(forkmap::Pool::new().worker_count().unwrap(), 3);
            assert_eq!(
                forkmap::Pool::new()
                    .progress(false)
                    .map(0..9, |i| i)
                    .unwrap()
                    .len(),
                9
            );
        }
        Some("bad") => {
            let err = forkmap::Pool::new().map(0..9, |i| i).unwrap_err();
            assert!(matches!(err, forkmap::Error::Config(_)), "{err}");
            assert!(err.to_string().contains("FORKMAP_WORKERS"), "{err}");
            // An explicit count overrides the bad variable.
            assert_eq!(
                forkmap::Pool::new()
                    .workers(2)
                    .progress(false)
                    .map(0..3, |i| i)
                    .unwrap(),
                vec![0, 1, 2]
            );
        }
        Some("zero") => {
            assert!(matches!(
                forkmap::Pool::new().map(0..3, |i| i),
                Err(forkmap::Error::NoWorkers)
            ));
        }
        Some("huge") => {
            // Refused by name, not 1,000 processes forked for 1,000 tasks without a word.
            let before = common::children().len();
            let err = forkmap::Pool::new()
                .progress(false)
                .map(0..1000, |i| i)
                .unwrap_err();
            assert!(matches!(err, forkmap::Error::Config(_)), "{err}");
            assert!(
                err.to_string().contains("FORKMAP_WORKERS=\"100000\""),
                "{err}"
            );
            assert!(common::children().len() <= before);
        }
        _ => {
            let _d = common::deadline(60);
            for (role, value) in [
                ("three", "3"),
                ("bad", "lots"),
                ("zero", "0"),
                ("huge", "100000"),
            ] {
                let mut child = common::rerun(
                    "env_sets_the_worker_count",
                    role,
                    &[("FORKMAP_WORKERS", value)],
                );
                let status = common::wait_child(&mut child, 50);
                assert!(status.success(), "role {role} failed: {status}");
            }
        }
    }
}
