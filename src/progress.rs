//! The progress bar: drawn only by the coordinator, fed from the workers' counters on the
//! board, so it moves per task even when chunks are large.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar of one `map` call, or nothing when progress is off.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
}

/// The default look: count, bar, elapsed, ETA and rate, as tqdm shows them.
pub(crate) fn default_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{percent:>3}%|{wide_bar}| {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}]",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Progress {
    /// A bar for `len` tasks: the caller's own bar if given, else a new one on stderr when
    /// `enabled`. No steady-tick thread is ever started: the coordinator redraws from its
    /// event loop, so workers are always forked from a single-threaded coordinator.
    pub(crate) fn new(enabled: bool, custom: Option<&ProgressBar>, len: usize) -> Progress {
        let bar = match custom {
            Some(bar) => Some(bar.clone()),
            None if enabled => {
                let bar =
                    ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
                bar.set_style(default_style());
                Some(bar)
            }
            None => None,
        };
        if let Some(bar) = &bar {
            bar.set_length(len as u64);
            bar.set_position(0);
            bar.reset_eta();
        }
        Progress { bar }
    }

    /// Whether a bar is drawn at all (if not, the counters need not be read).
    pub(crate) fn is_on(&self) -> bool {
        self.bar.is_some()
    }

    /// Moves the bar to `done` tasks (it never moves back).
    pub(crate) fn update(&self, done: u64) {
        if let Some(bar) = &self.bar
            && done > bar.position()
        {
            bar.set_position(done.min(bar.length().unwrap_or(u64::MAX)));
        }
    }

    /// Draws the final state and leaves the bar on screen.
    pub(crate) fn finish(&self, done: u64) {
        if let Some(bar) = &self.bar {
            self.update(done);
            bar.finish();
        }
    }

    /// Leaves the bar where it stopped (on error).
    pub(crate) fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::InMemoryTerm;

    #[test]
    fn default_style_shows_count_percent_eta_and_rate() {
        let term = InMemoryTerm::new(2, 100);
        let bar = ProgressBar::with_draw_target(
            Some(40),
            ProgressDrawTarget::term_like(Box::new(term.clone())),
        );
        bar.set_style(default_style());
        let progress = Progress::new(false, Some(&bar), 40);
        progress.update(10);
        progress.update(5); // never moves back
        assert_eq!(bar.position(), 10);
        progress.finish(40);
        let screen = term.contents();
        assert!(
            screen.contains("100%") && screen.contains("40/40") && screen.contains("/s]"),
            "{screen:?}"
        );
        assert!(screen.contains("<00:00:00"), "ETA missing: {screen:?}");
    }
}
