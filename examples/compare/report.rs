//! Measurements, their medians, and the markdown the harness prints: one table per
//! workload and a table of the targets, each marked hit or missed.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::tree::Peaks;

/// What one peer reported for one workload.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// Seconds per repetition.
    pub(crate) times: Vec<f64>,
    /// Sum of the results.
    pub(crate) checksum: f64,
    /// Peer-specific extras (`first`, `chunksize`).
    pub(crate) extra: Value,
    /// Peak total PSS of the peer's process tree, when sampled.
    pub(crate) peak: Option<Peaks>,
}

impl Sample {
    /// Parses a peer's JSON line.
    pub(crate) fn parse(stdout: &str, peak: Option<Peaks>) -> Result<Sample, String> {
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .ok_or("the peer printed no JSON line")?;
        let v: Value = serde_json::from_str(line).map_err(|e| format!("bad JSON: {e}"))?;
        let times: Vec<f64> = v["times"]
            .as_array()
            .ok_or("no times")?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        if times.is_empty() {
            return Err("no times".into());
        }
        Ok(Sample {
            times,
            checksum: v["checksum"].as_f64().unwrap_or(f64::NAN),
            extra: v["extra"].clone(),
            peak,
        })
    }

    /// The median time, seconds.
    pub(crate) fn median(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        let n = t.len();
        if n % 2 == 1 {
            t[n / 2]
        } else {
            (t[n / 2 - 1] + t[n / 2]) / 2.0
        }
    }

    /// Median CPU seconds per call of the calling process and of its worker processes.
    pub(crate) fn cpu(&self) -> Option<(f64, f64)> {
        self.extra_median("cpu_self")
            .zip(self.extra_median("cpu_children"))
    }

    /// The median of the per-repetition numbers under `extra[key]` (nulls left out), if
    /// there are any.
    pub(crate) fn extra_median(&self, key: &str) -> Option<f64> {
        let mut v: Vec<f64> = self.extra[key]
            .as_array()?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }

    /// The fastest repetition, seconds.
    pub(crate) fn min(&self) -> f64 {
        self.times.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// The slowest repetition, seconds.
    pub(crate) fn max(&self) -> f64 {
        self.times.iter().copied().fold(0.0, f64::max)
    }
}

/// One row of a workload: which peer, and what it gave (or why it did not run).
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// Short key (`forkmap`, `py-pool_map`, ...).
    pub(crate) key: String,
    /// The label in the table.
    pub(crate) label: String,
    /// Workers it ran with.
    pub(crate) workers: usize,
    /// The measurement, or why there is none.
    pub(crate) sample: Result<Sample, String>,
}

impl Row {
    /// The median of this row, if it ran.
    pub(crate) fn median(&self) -> Option<f64> {
        self.sample.as_ref().ok().map(Sample::median)
    }
}

/// Finds the row with this key (and worker count, when given).
pub(crate) fn find<'a>(rows: &'a [Row], key: &str, workers: Option<usize>) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.key == key && workers.is_none_or(|w| r.workers == w))
}

/// A target of the issue and how the run did against it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Which workload and what (`(b) forkmap vs rayon`).
    pub(crate) name: String,
    /// The goal, in words.
    pub(crate) goal: String,
    /// The measured value, in words.
    pub(crate) measured: String,
    /// Hit, missed, or not measured.
    pub(crate) hit: Option<bool>,
}

impl Target {
    /// A target whose measurement may be missing.
    pub(crate) fn new(name: &str, goal: &str, measured: Option<(String, bool)>) -> Target {
        let (measured, hit) = match measured {
            Some((m, h)) => (m, Some(h)),
            None => ("not measured".into(), None),
        };
        Target {
            name: name.into(),
            goal: goal.into(),
            measured,
            hit,
        }
    }
}

/// Formats seconds with a unit that keeps 3 significant digits.
pub(crate) fn secs(s: f64) -> String {
    if !s.is_finite() {
        "-".into()
    } else if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else if s >= 1e-6 {
        format!("{:.2} µs", s * 1e6)
    } else {
        format!("{:.0} ns", s * 1e9)
    }
}

/// Formats bytes as MB (10^6 bytes).
pub(crate) fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

/// A ratio such as `1.07×`.
pub(crate) fn ratio(r: f64) -> String {
    if r.is_finite() && r >= 0.01 {
        format!("{r:.2}×")
    } else if r.is_finite() {
        format!("{r:.1e}×")
    } else {
        "-".into()
    }
}

/// A markdown table.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(
        s,
        "|{}",
        header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { " --- |" } else { " ---: |" })
            .collect::<String>()
    );
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    s
}

/// The cell of a row that did not run.
pub(crate) fn skipped(e: &str) -> String {
    let e = e.lines().last().unwrap_or(e);
    format!("skipped: {}", e.replace('|', "/"))
}

/// The table of targets.
pub(crate) fn targets_table(targets: &[Target]) -> String {
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.goal.clone(),
                t.measured.clone(),
                match t.hit {
                    Some(true) => "**hit**".into(),
                    Some(false) => "**MISSED**".into(),
                    None => "not measured".into(),
                },
            ]
        })
        .collect();
    table(&["target", "goal", "measured", "result"], &rows)
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub(crate) fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// One line describing this machine.
pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or_else(String::new, |kb| format!(", {:.0} GiB RAM", kb / 1048576.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!(", Linux {}", s.trim()))
        .unwrap_or_default();
    let rustc = std::process::Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| format!(", {}", String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores{mem}{kernel}{rustc}")
}

/// The commit of the library measured, and whether `src/` had uncommitted changes.
pub(crate) fn source_state() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => match git(&["status", "--porcelain", "--", "src"]) {
            Some(s) if !s.is_empty() => format!("{head} with uncommitted changes in src/"),
            _ => head,
        },
        None => "unknown (not a git checkout)".into(),
    }
}

/// `/proc/loadavg`'s three load averages, or why they are unknown.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |e| format!("unknown ({e})"),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(", "),
    )
}
