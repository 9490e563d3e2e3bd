//! The progress bar reaches the task count, drawn into an in-memory terminal.

mod common;

use indicatif::{InMemoryTerm, ProgressBar, ProgressDrawTarget};

#[test]
fn bar_reaches_the_task_count() {
    let _d = common::deadline(60);
    let term = InMemoryTerm::new(4, 120);
    let bar =
        ProgressBar::with_draw_target(None, ProgressDrawTarget::term_like(Box::new(term.clone())));
    let pool = forkmap::Pool::new().workers(2).progress_bar(bar.clone());
    let out = pool
        .map(0..100, |i| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            i
        })
        .unwrap();
    assert_eq!(out.len(), 100);
    assert_eq!(bar.length(), Some(100));
    assert_eq!(bar.position(), 100);
    assert!(bar.is_finished());
    let screen = term.contents();
    assert!(screen.contains("100/100"), "screen: {screen:?}");
}

#[test]
fn progress_off_draws_nothing_and_the_map_still_works() {
    let _d = common::deadline(60);
    let out = forkmap::Pool::new()
        .workers(2)
        .progress(false)
        .map(0..10, |i| i * 3)
        .unwrap();
    assert_eq!(out[9], 27);
}

/// Run in a child whose stderr is a pipe (as in a batch log): progress lines, no bar.
#[test]
fn a_log_gets_plain_lines_with_count_rate_and_eta() {
    let _d = common::deadline(60);
    if common::role().as_deref() == Some("log") {
        let out = forkmap::Pool::new()
            .workers(2)
            .progress_every(std::time::Duration::from_millis(50))
            .map(0..40, |i| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                i
            })
            .unwrap();
        assert_eq!(out.len(), 40);
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_log_gets_plain_lines_with_count_rate_and_eta",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FORKMAP_TEST_ROLE", "log")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("re-run the test binary");
    assert!(out.status.success(), "child failed: {out:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("forkmap: ")).collect();
    assert!(lines.len() >= 2, "too few progress lines in {log:?}");
    assert!(!log.contains('\r'), "carriage return in a log: {log:?}");
    assert!(lines.iter().any(|l| l.contains(", eta ")), "{lines:?}");
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("forkmap: 40/40 tasks (100%), ") && last.ends_with(", done"),
        "{last}"
    );
}
