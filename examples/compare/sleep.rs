//! Workloads (g) and (h) of issue 8: tasks that sleep, so that the cores are not the limit
//! and what is measured is the scheduler alone: whether every worker gets work, and
//! whether work queued behind a long task moves to a worker that is idle. Each case runs
//! forkmap (its own chunks), `multiprocessing.Pool.map` and tqdm's `process_map`, each
//! with chunksize 1 and with its default chunksize, all with the case's worker count.

use crate::Harness;
use crate::report::{Row, Sample, Target, find, ratio, secs, skipped, table};
use crate::work::Workload;

/// Worker counts of (g), one task each.
pub(crate) const FEW_WORKERS: [usize; 4] = [2, 4, 8, 16];

/// The sleep of every task of (g), milliseconds.
pub(crate) const FEW_MS: u64 = 200;

/// Worker counts of (h)'s equal tasks of 300 ms (issue 8's first table).
pub(crate) const EQUAL_WORKERS: [usize; 3] = [3, 4, 8];

/// How far above the bound a forkmap wall time may be (issue 8: within 5 %).
const SLACK: f64 = 1.05;

/// One map of sleeping tasks.
pub(crate) struct Case {
    /// What it is, in the table.
    pub(crate) name: String,
    /// Workers of every peer.
    pub(crate) workers: usize,
    /// Task `i` sleeps `sleeps_ms[i]` milliseconds.
    pub(crate) sleeps_ms: Vec<u64>,
}

impl Case {
    /// `n` tasks of `ms` on `workers` workers.
    fn equal(workers: usize, n: usize, ms: u64) -> Case {
        Case {
            name: format!("{n} × {ms} ms, {workers} workers"),
            workers,
            sleeps_ms: vec![ms; n],
        }
    }

    /// Issue 8's heterogeneous case: 2 workers, nine tasks of 100 ms and one of 1 s at
    /// index `long`.
    fn one_long(long: usize) -> Case {
        let mut sleeps_ms = vec![100; 10];
        sleeps_ms[long] = 1000;
        Case {
            name: format!("1 × 1 s at index {long} + 9 × 100 ms, 2 workers"),
            workers: 2,
            sleeps_ms,
        }
    }

    /// The lower bound of the makespan: `max(total / workers, longest task)`, seconds.
    pub(crate) fn bound(&self) -> f64 {
        let total: u64 = self.sleeps_ms.iter().sum();
        let longest = self.sleeps_ms.iter().copied().max().unwrap_or(0);
        (total as f64 / self.workers as f64).max(longest as f64) / 1e3
    }

    /// The makespan of one task at a time taken in index order by the first idle worker
    /// (`Pool.map` with chunksize 1 and no overhead), seconds.
    pub(crate) fn in_order(&self) -> f64 {
        let mut free = vec![0u64; self.workers.max(1)];
        for &ms in &self.sleeps_ms {
            let w = (0..free.len())
                .min_by_key(|&w| free[w])
                .expect("at least one worker");
            free[w] += ms;
        }
        free.into_iter().max().unwrap_or(0) as f64 / 1e3
    }

    /// The peers' `--sleeps` argument.
    fn args(&self) -> Vec<String> {
        let list: Vec<String> = self.sleeps_ms.iter().map(u64::to_string).collect();
        vec!["--sleeps".into(), list.join(",")]
    }
}

/// The cases of (g).
pub(crate) fn few_cases() -> Vec<Case> {
    FEW_WORKERS
        .iter()
        .map(|&w| Case::equal(w, w, FEW_MS))
        .collect()
}

/// The cases of (h).
pub(crate) fn uneven_cases() -> Vec<Case> {
    let mut cases = vec![Case::one_long(0), Case::one_long(3)];
    cases.extend(EQUAL_WORKERS.iter().map(|&w| Case::equal(w, w, 300)));
    cases
}

/// The peers of a case: key in the rows, Python peer name (None for forkmap), label.
fn peers(case: &Case, pool_default: usize) -> [(&'static str, Option<&'static str>, String); 5] {
    let w = case.workers;
    [
        (
            "forkmap",
            None,
            format!("forkmap, {w} workers, its own chunks"),
        ),
        (
            "py-pool_map_c1",
            Some("pool_map_c1"),
            format!("Python Pool({w}).map, chunksize 1"),
        ),
        (
            "py-pool_map_default",
            Some("pool_map_default"),
            format!("Python Pool({w}).map, default chunksize ({pool_default})"),
        ),
        (
            "py-process_map_c1",
            Some("process_map_c1"),
            format!("Python process_map, max_workers={w}, chunksize 1"),
        ),
        (
            "py-process_map_default",
            Some("process_map_default"),
            format!("Python process_map, max_workers={w}, default chunksize (1)"),
        ),
    ]
}

/// Distinct worker pids that ran a task, over the repetitions: `n` or `lo–hi`.
fn pids_cell(s: &Sample) -> String {
    let v: Vec<u64> = s.extra["pids"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
        .unwrap_or_default();
    match (v.iter().min(), v.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
        (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
        _ => "-".into(),
    }
}

/// The fewest distinct worker pids of any repetition.
fn fewest_pids(s: &Sample) -> Option<u64> {
    s.extra["pids"]
        .as_array()?
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .min()
}

impl Harness<'_> {
    /// (g) W workers, W tasks of 200 ms.
    pub(crate) fn few(&self) -> (String, Vec<Target>) {
        let mut text = format!(
            "### (g) W workers, W tasks of {FEW_MS} ms\n\nEach task sleeps {FEW_MS} ms (no \
             core needed, so worker counts past this machine's cores are meaningful) and \
             returns its index and its worker's pid; ideal {}: every worker runs one task. \
             `Pool.map`'s default chunksize is `ceil(n / (4 × workers))`, 1 here; \
             `process_map`'s default is 1. {} repetitions per row; *pids* is the number of \
             distinct worker processes that ran a task (a range when repetitions differ).\n\n",
            secs(FEW_MS as f64 / 1e3),
            self.p.reps,
        );
        let (body, targets) = self.sleep_cases(Workload::Few, &few_cases(), "g");
        text.push_str(&body);
        (text, targets)
    }

    /// (h) Uneven tasks: one long among short ones, and issue 8's equal tasks of 300 ms.
    pub(crate) fn uneven(&self) -> (String, Vec<Target>) {
        let mut text = format!(
            "### (h) Uneven tasks, and W tasks of 300 ms on W workers\n\nSleeping tasks, as \
             in (g). *bound* is `max(total / workers, longest task)`; *in order* the \
             makespan of one task at a time taken in index order by the first idle worker \
             (`Pool.map` with chunksize 1 and no overhead): with the long task at index 3 \
             it starts at 100 ms at best, so 1.100 s. Issue 8's target is the bound within \
             5 %. {} repetitions per row.\n\n",
            self.p.reps,
        );
        let (body, targets) = self.sleep_cases(Workload::Uneven, &uneven_cases(), "h");
        text.push_str(&body);
        (text, targets)
    }

    /// Runs every peer on every case; the table and forkmap's targets.
    fn sleep_cases(&self, w: Workload, cases: &[Case], letter: &str) -> (String, Vec<Target>) {
        let mut body = Vec::new();
        let mut targets = Vec::new();
        for case in cases {
            let n = case.sleeps_ms.len();
            let pool_default = self.p.pool_map_chunk(n, case.workers);
            let args = case.args();
            let rows: Vec<Row> = peers(case, pool_default)
                .into_iter()
                .map(|(key, py, label)| {
                    let mut r = match py {
                        None => self.rust_with(key, w, case.workers, false, &args),
                        Some(peer) => self.py_with(peer, &label, w, case.workers, false, &args),
                    };
                    r.label = label;
                    r
                })
                .collect();
            let (bound, in_order) = (case.bound(), case.in_order());
            let fm = find(&rows, "forkmap", None).and_then(|r| r.sample.as_ref().ok());
            for r in &rows {
                let mut v = vec![case.name.clone(), r.label.clone()];
                match &r.sample {
                    Ok(s) => v.extend([
                        secs(s.median()),
                        secs(s.min()),
                        secs(bound),
                        secs(in_order),
                        ratio(s.median() / bound),
                        fm.map_or("-".into(), |f| ratio(s.median() / f.median())),
                        format!("{} of {}", pids_cell(s), case.workers.min(n)),
                    ]),
                    Err(e) => v.push(skipped(e)),
                }
                v.resize(9, "-".into());
                body.push(v);
            }
            let want = case.workers.min(n) as u64;
            targets.push(Target::new(
                &format!("({letter}) forkmap, {}", case.name),
                &format!(
                    "≤ {SLACK}× bound ({}), all {want} workers run a task",
                    secs(bound)
                ),
                fm.map(|s| {
                    let r = s.median() / bound;
                    let fewest = fewest_pids(s).unwrap_or(0);
                    (
                        format!("{} ({}), fewest pids {fewest}", ratio(r), secs(s.median())),
                        r <= SLACK && fewest == want,
                    )
                }),
            ));
        }
        let mut text = table(
            &[
                "case",
                "peer",
                "wall (median)",
                "min",
                "bound",
                "in order",
                "vs bound",
                "vs forkmap",
                "pids",
            ],
            &body,
        );
        text.push('\n');
        (text, targets)
    }
}
