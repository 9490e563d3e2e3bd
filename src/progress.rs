//! Progress: drawn only by the coordinator, fed from the workers' counters on the board,
//! so it moves per task even when chunks are large. On a terminal, an indicatif bar; in a
//! log (stderr redirected to a file, as under Slurm or CI), a plain line now and then.

use std::cell::Cell;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown, as the pool's settings say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setting {
    /// Nothing.
    Off,
    /// A bar on a terminal, lines (at this interval) in a log.
    On(Duration),
}

impl Setting {
    /// The default: a bar when stderr is a terminal, else nothing.
    pub(crate) fn default_for_stderr() -> Setting {
        if std::io::stderr().is_terminal() {
            Setting::On(LINE_EVERY)
        } else {
            Setting::Off
        }
    }
}

/// How often a plain progress line is written at most (also at every tenth done).
pub(crate) const LINE_EVERY: Duration = Duration::from_secs(10);

/// The progress of one `map` call.
#[derive(Debug)]
pub(crate) struct Progress {
    shown: Shown,
}

#[derive(Debug)]
enum Shown {
    Off,
    Bar(ProgressBar),
    Lines(Lines),
}

/// Plain lines on stderr: count, percentage, rate, elapsed time and ETA, no carriage
/// returns, so a log keeps one readable line per report.
#[derive(Debug)]
struct Lines {
    len: u64,
    every: Duration,
    started: Instant,
    last_line: Cell<Instant>,
    last_tenth: Cell<u64>,
    done: Cell<u64>,
}

/// The default look: count, bar, elapsed, ETA and rate, as tqdm shows them.
pub(crate) fn default_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{percent:>3}%|{wide_bar}| {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}]",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Progress {
    /// Progress for `len` tasks: the caller's own bar if given; else, when `setting` is on, a
    /// new bar when stderr is a terminal and plain lines when it is not. No steady-tick
    /// thread is ever started: the coordinator redraws from its event loop, so workers are
    /// always forked from a single-threaded coordinator.
    pub(crate) fn new(setting: Setting, custom: Option<&ProgressBar>, len: usize) -> Progress {
        let shown = match (custom, setting) {
            (Some(bar), _) => Shown::Bar(bar.clone()),
            (None, Setting::Off) => Shown::Off,
            (None, Setting::On(_)) if std::io::stderr().is_terminal() => {
                let bar =
                    ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
                bar.set_style(default_style());
                Shown::Bar(bar)
            }
            (None, Setting::On(every)) => {
                let now = Instant::now();
                Shown::Lines(Lines {
                    len: len as u64,
                    every,
                    started: now,
                    last_line: Cell::new(now),
                    last_tenth: Cell::new(0),
                    done: Cell::new(0),
                })
            }
        };
        if let Shown::Bar(bar) = &shown {
            bar.set_length(len as u64);
            bar.set_position(0);
            bar.reset_eta();
        }
        Progress { shown }
    }

    /// Whether anything is shown at all (if not, the counters need not be read).
    pub(crate) fn is_on(&self) -> bool {
        !matches!(self.shown, Shown::Off)
    }

    /// Moves progress to `done` tasks (it never moves back).
    pub(crate) fn update(&self, done: u64) {
        match &self.shown {
            Shown::Off => {}
            Shown::Bar(bar) => {
                if done > bar.position() {
                    bar.set_position(done.min(bar.length().unwrap_or(u64::MAX)));
                }
            }
            Shown::Lines(lines) => lines.update(done),
        }
    }

    /// Shows the final state (the bar stays on screen; a log gets a last line).
    pub(crate) fn finish(&self, done: u64) {
        self.update(done);
        match &self.shown {
            Shown::Off => {}
            Shown::Bar(bar) => bar.finish(),
            Shown::Lines(lines) => lines.write("done"),
        }
    }

    /// Leaves the progress where it stopped (on error).
    pub(crate) fn abandon(&self) {
        match &self.shown {
            Shown::Off => {}
            Shown::Bar(bar) => bar.abandon(),
            Shown::Lines(lines) => lines.write("stopped"),
        }
    }
}

impl Lines {
    fn update(&self, done: u64) {
        let done = done.min(self.len);
        if done <= self.done.get() {
            return;
        }
        self.done.set(done);
        let tenth = done * 10 / self.len.max(1);
        let now = Instant::now();
        if tenth > self.last_tenth.get() || now - self.last_line.get() >= self.every {
            self.last_tenth.set(tenth);
            self.last_line.set(now);
            if done < self.len {
                self.write("");
            }
        }
    }

    /// Writes one line to stderr (a failing stderr is not worth failing the map for).
    fn write(&self, tag: &str) {
        let line = self.line(tag, self.started.elapsed());
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    /// `forkmap: 450/1000 tasks (45%), 150.0/s, elapsed 0:00:03, eta 0:00:04`.
    fn line(&self, tag: &str, elapsed: Duration) -> String {
        let done = self.done.get();
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let pct = (done * 100).checked_div(self.len).unwrap_or(100);
        let mut line = format!(
            "forkmap: {done}/{} tasks ({pct}%), {rate:.1}/s, elapsed {}",
            self.len,
            clock(elapsed)
        );
        if tag.is_empty() {
            if rate > 0.0 {
                let left = (self.len - done) as f64 / rate;
                line.push_str(&format!(", eta {}", clock(Duration::from_secs_f64(left))));
            }
        } else {
            line.push_str(&format!(", {tag}"));
        }
        line
    }
}

/// `h:mm:ss`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
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
        let progress = Progress::new(Setting::Off, Some(&bar), 40);
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

    #[test]
    fn a_log_line_has_count_percent_rate_elapsed_and_eta() {
        let start = Instant::now();
        let lines = Lines {
            len: 1000,
            every: LINE_EVERY,
            started: start,
            last_line: Cell::new(start),
            last_tenth: Cell::new(0),
            done: Cell::new(450),
        };
        assert_eq!(
            lines.line("", Duration::from_secs(3)),
            "forkmap: 450/1000 tasks (45%), 150.0/s, elapsed 0:00:03, eta 0:00:03"
        );
        assert_eq!(
            lines.line("done", Duration::from_secs(3723)),
            "forkmap: 450/1000 tasks (45%), 0.1/s, elapsed 1:02:03, done"
        );
        assert!(!lines.line("", Duration::from_secs(3)).contains('\r'));
    }
}
