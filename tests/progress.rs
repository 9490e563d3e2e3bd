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
