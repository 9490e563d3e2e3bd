//! The report's sections, one per workload: which peers run, the table of their results,
//! and the targets measured against them.

use crate::report::{Row, Sample, Target, find, mb, ratio, secs, skipped, table};
use crate::work::Workload;
use crate::{Harness, MEM_WORKERS, peers};

impl Harness<'_> {
    /// (a) Tutorial 1 exactly.
    pub(crate) fn tutorial(&self) -> (String, Vec<Target>) {
        let w = Workload::Tutorial;
        let mut rows: Vec<Row> = ["forkmap", "sequential", "rayon", "copy"]
            .iter()
            .map(|k| self.rust(k, w, 2, false))
            .collect();
        rows.push(self.py(
            "process_map",
            "Python process_map + multiprocessing.Array (tutorial 1)",
            w,
            2,
            false,
        ));
        rows.push(self.py(
            "pool_map",
            "Python Pool.map + multiprocessing.Array",
            w,
            2,
            false,
        ));
        let ideal = 4.0 * self.p.tutorial_sleep_s / 2.0;
        let mut text = format!(
            "### (a) Tutorial 1 exactly\n\n{n}×{n} f64 array of random numbers in shared \
             memory; tasks 0..4, each sleeps {s} s and returns `B[a, a]`; 2 workers, chunk \
             size 1. Ideal: {ideal} s.\n\n",
            n = self.p.tutorial_n,
            s = self.p.tutorial_sleep_s,
        );
        text.push_str(&time_table(&rows, "forkmap", None, false));
        if let Some(m) = find(&rows, "forkmap", None).and_then(Row::median) {
            text.push_str(&format!(
                "\nforkmap's overhead over the ideal: {}.\n\n",
                secs(m - ideal)
            ));
        }
        (text, Vec::new())
    }

    /// (b) 1,000,000 fine-grained tasks.
    pub(crate) fn fine(&self) -> (String, Vec<Target>) {
        let (w, n) = (Workload::Fine, self.p.fine_tasks);
        let workers = self.p.workers;
        let mut rows: Vec<Row> = peers::RUST_PEERS
            .iter()
            .map(|(k, _)| self.rust(k, w, workers, false))
            .collect();
        let chunk = self.p.pool_map_chunk(n, workers);
        rows.push(self.py(
            "pool_map",
            &format!("Python Pool.map, numpy task, default chunks ({chunk})"),
            w,
            workers,
            false,
        ));
        rows.push(self.py(
            "pool_map_loop",
            "Python Pool.map, the same Horner loop in pure Python, default chunks",
            w,
            workers,
            false,
        ));
        rows.push(self.py(
            "process_map",
            &format!("Python process_map, numpy task, tutorial's view per task, chunksize {chunk}"),
            w,
            workers,
            false,
        ));
        rows.push(self.py(
            "sequential",
            "Python, numpy task in one process (no pool)",
            w,
            1,
            false,
        ));
        let per_task = find(&rows, "sequential", None)
            .and_then(Row::median)
            .map_or("-".into(), |m| secs(m / n as f64));
        let mut text = format!(
            "### (b) {n} fine-grained tasks\n\nTask `i` folds the first {k} elements of row \
             `i mod {side}` of a {side}×{side} f64 array with Horner's rule, a chain of \
             dependent multiply-adds; compute per task, measured by the sequential peer: \
             {per_task}. Python runs it two ways: as numpy would (one dot product with the \
             powers of x: same value, vectorised, the fastest Python task) and as the same \
             loop in pure Python (one repetition). {workers} workers; forkmap reads through \
             a `FrozenArray` (lock-free) and, in the second row, through a `read()` guard \
             per task. forkmap and rayon choose their own chunks; the copy baseline uses \
             Pool.map's. CPU: the calling process's own CPU time (all its threads) + that \
             of the worker processes, per call.\n\n",
            k = self.p.fine_k,
            side = self.p.side,
        );
        text.push_str(&time_table(&rows, "forkmap", Some(n), true));
        let fm = find(&rows, "forkmap", None).and_then(Row::median);
        let rayon = find(&rows, "rayon", None).and_then(Row::median);
        let guard = find(&rows, "forkmap-guard", None).and_then(Row::median);
        let pool = find(&rows, "py-pool_map", None).and_then(Row::median);
        let pool_loop = find(&rows, "py-pool_map_loop", None).and_then(Row::median);
        if let (Some(fm), Some(g)) = (fm, guard) {
            text.push_str(&format!(
                "\nThe `read()` guard variant differs from the frozen read by {} per task \
                 ({} in all); `benches/read.rs` measures the guard alone.\n",
                secs((g - fm) / n as f64 * workers as f64),
                ratio(g / fm)
            ));
        }
        text.push('\n');
        let targets = vec![
            Target::new(
                "(b) forkmap vs rayon, wall time",
                "≤ 1.15×",
                fm.zip(rayon).map(|(f, r)| {
                    (
                        format!("{} ({} vs {})", ratio(f / r), secs(f), secs(r)),
                        f / r <= 1.15,
                    )
                }),
            ),
            Target::new(
                "(b) Python Pool.map (numpy task) vs forkmap",
                "forkmap ≥ 20× faster",
                fm.zip(pool).map(|(f, py)| {
                    (
                        format!("{} faster ({} vs {})", ratio(py / f), secs(f), secs(py)),
                        py / f >= 20.0,
                    )
                }),
            ),
            Target::new(
                "(b) Python Pool.map (pure-Python task) vs forkmap",
                "forkmap ≥ 20× faster",
                fm.zip(pool_loop).map(|(f, py)| {
                    (
                        format!("{} faster ({} vs {})", ratio(py / f), secs(f), secs(py)),
                        py / f >= 20.0,
                    )
                }),
            ),
        ];
        (text, targets)
    }

    /// (c) Skewed load.
    pub(crate) fn skewed(&self) -> (String, Vec<Target>) {
        let (w, n) = (Workload::Skewed, self.p.skew_tasks);
        let workers = self.p.workers;
        let mut rows: Vec<Row> = ["forkmap", "rayon", "copy", "sequential"]
            .iter()
            .map(|k| self.rust(k, w, workers, false))
            .collect();
        let chunk = self.p.pool_map_chunk(n, workers);
        rows.push(self.py(
            "pool_map",
            &format!("Python Pool.map, default chunks ({chunk})"),
            w,
            workers,
            false,
        ));
        rows.push(self.py(
            "process_map",
            "Python process_map, chunksize 1 (tutorial)",
            w,
            workers,
            false,
        ));
        let total = self.p.skew_total().as_secs_f64();
        // More workers than cores cannot go faster than the cores.
        let cores = std::thread::available_parallelism().map_or(workers, |n| n.get());
        let ideal = total / workers.min(cores) as f64;
        let greedy = greedy_makespan(n, chunk, workers, self.p.skew_unit_ns as f64 * 1e-9);
        let mut text = format!(
            "### (c) Skewed load\n\n{n} tasks; task `i` spins `(i + 1) × {unit} µs` of its \
             thread's CPU time (Rust and Python alike), then reads one element. Total task \
             CPU {total:.3} s; ideal makespan (total / min(workers, cores)) with {workers} \
             workers {ideal:.3} s. Pool.map's \
             default chunks ({chunk} tasks) cannot finish before {greedy:.3} s \
             ({g_ratio}) even with zero overhead; the copy baseline uses the same chunks.\n\n",
            unit = self.p.skew_unit_ns as f64 / 1000.0,
            g_ratio = ratio(greedy / ideal),
        );
        let mut body = Vec::new();
        let fm = find(&rows, "forkmap", None).and_then(Row::median);
        for r in &rows {
            body.push(match &r.sample {
                Ok(s) => vec![
                    r.label.clone(),
                    secs(s.median()),
                    secs(s.min()),
                    ratio(s.median() / ideal),
                    fm.map_or("-".into(), |f| ratio(s.median() / f)),
                ],
                Err(e) => vec![
                    r.label.clone(),
                    skipped(e),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ],
            });
        }
        text.push_str(&table(
            &["peer", "makespan (median)", "min", "vs ideal", "vs forkmap"],
            &body,
        ));
        text.push_str(&checksum_note(&rows, "sequential"));
        text.push('\n');
        let pool = find(&rows, "py-pool_map", None).and_then(Row::median);
        let targets = vec![
            Target::new(
                "(c) forkmap makespan vs ideal",
                "≤ 1.05×",
                fm.map(|f| {
                    (
                        format!("{} ({} vs {})", ratio(f / ideal), secs(f), secs(ideal)),
                        f / ideal <= 1.05,
                    )
                }),
            ),
            Target::new(
                "(c) forkmap vs Pool.map default chunks",
                "shorter makespan",
                fm.zip(pool).map(|(f, p)| {
                    (
                        format!("{} vs {} ({})", secs(f), secs(p), ratio(p / f)),
                        f < p,
                    )
                }),
            ),
        ];
        (text, targets)
    }

    /// (d) Memory: total PSS of each peer's process tree.
    pub(crate) fn memory(&self) -> (String, Vec<Target>) {
        let w = Workload::Memory;
        let array = self.p.mem_bytes() as f64;
        let mut rows = Vec::new();
        for &n in &MEM_WORKERS {
            rows.push(self.rust("forkmap", w, n, true));
            rows.push(self.rust("copy", w, n, true));
            rows.push(self.py(
                "process_map",
                "Python process_map + multiprocessing.Array (tutorial 1)",
                w,
                n,
                true,
            ));
            rows.push(self.py(
                "pool_map",
                "Python Pool.map + multiprocessing.Array",
                w,
                n,
                true,
            ));
        }
        let mut text = format!(
            "### (d) Memory\n\nA {r}×{c} f64 array ({a}) is made and filled by the caller; \
             one task per worker sums all of it (every page touched) and holds until all \
             have done so. Peak of the total PSS (`/proc/<pid>/smaps_rollup`) summed over \
             the peer's whole process tree (caller and workers), sampled every 10 ms. \
             Budget: the array + 10 MB per worker.\n\n",
            r = self.p.mem_rows,
            c = self.p.mem_cols,
            a = mb(array),
        );
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let budget = array + 10e6 * r.workers as f64;
                let mut v = vec![r.label.clone(), r.workers.to_string()];
                match r.sample.as_ref().map(|s| s.peak) {
                    Ok(Some(p)) => v.extend([
                        mb(p.working.pss_bytes as f64),
                        p.working.processes.to_string(),
                        mb(budget),
                        mb((p.working.pss_bytes as f64 - array) / r.workers as f64),
                        mb(p.overall.pss_bytes as f64),
                    ]),
                    Ok(None) => v.push("not sampled".into()),
                    Err(e) => v.push(skipped(e)),
                }
                v.resize(7, "-".into());
                v
            })
            .collect();
        text.push_str(&table(
            &[
                "peer",
                "workers",
                "peak total PSS, workers alive",
                "processes",
                "budget",
                "(PSS − array) / worker",
                "peak incl. set-up",
            ],
            &body,
        ));
        text.push_str(&checksum_note(&per_task_sums(&rows), "forkmap"));
        text.push('\n');
        let pss = |key: &str, n: usize| {
            find(&rows, key, Some(n))
                .and_then(|r| r.sample.as_ref().ok())
                .and_then(|s| s.peak)
                .map(|p| p.working.pss_bytes as f64)
        };
        let mut targets: Vec<Target> = MEM_WORKERS
            .iter()
            .map(|&n| {
                let budget = array + 10e6 * n as f64;
                Target::new(
                    &format!("(d) forkmap total PSS, {n} workers"),
                    &format!("≤ array + 10 MB × {n} = {}", mb(budget)),
                    pss("forkmap", n).map(|p| (mb(p), p <= budget)),
                )
            })
            .collect();
        let (lo, hi) = (MEM_WORKERS[0], MEM_WORKERS[1]);
        targets.push(Target::new(
            "(d) copy baseline grows with workers",
            "about one array per added worker",
            pss("copy", lo).zip(pss("copy", hi)).map(|(a2, a8)| {
                let per = (a8 - a2) / (hi - lo) as f64;
                (
                    format!("{} → {} (+{} per worker)", mb(a2), mb(a8), mb(per)),
                    per >= array / 2.0,
                )
            }),
        ));
        (text, targets)
    }

    /// (e) Start-up: one trivial task.
    pub(crate) fn startup(&self) -> (String, Vec<Target>) {
        let w = Workload::Startup;
        let workers = self.p.workers;
        let mut rows: Vec<Row> = ["forkmap", "sequential", "rayon", "copy"]
            .iter()
            .map(|k| self.rust(k, w, workers, false))
            .collect();
        rows.push(self.py(
            "process_map",
            "Python process_map (tutorial)",
            w,
            workers,
            false,
        ));
        rows.push(self.py("pool_map", "Python Pool.map", w, workers, false));
        let mut text = format!(
            "### (e) Start-up: one trivial task\n\nFrom the call to the result in hand for \
             one task that returns `B[0, 0]` of a {s}×{s} array, {workers} workers asked for \
             (forkmap forks one for one task; rayon builds its pool in the call; the copy \
             baseline sends the {m} array). {r} repetitions ({pr} for Python); `first` is \
             the first call of a fresh process.\n\n",
            s = self.p.side,
            m = mb((self.p.side * self.p.side * 8) as f64),
            r = self.p.startup_reps,
            pr = self.p.py_startup_reps,
        );
        let fm = find(&rows, "forkmap", None).and_then(Row::median);
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|r| match &r.sample {
                Ok(s) => vec![
                    r.label.clone(),
                    secs(s.median()),
                    secs(s.min()),
                    s.extra["first"].as_f64().map_or("-".into(), secs),
                    fm.map_or("-".into(), |f| ratio(s.median() / f)),
                ],
                Err(e) => vec![
                    r.label.clone(),
                    skipped(e),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ],
            })
            .collect();
        text.push_str(&table(
            &["peer", "median", "min", "first", "vs forkmap"],
            &body,
        ));
        text.push('\n');
        let targets = vec![Target::new(
            "(e) forkmap call-to-result, one task",
            "≤ 2 ms",
            fm.map(|f| (secs(f), f <= 2e-3)),
        )];
        (text, targets)
    }
}

/// The usual time table: median, min, max (or per task), ratio to `base`, and with
/// `per_task` the CPU time of the caller and of the workers.
fn time_table(rows: &[Row], base: &str, per_task: Option<usize>, checks: bool) -> String {
    let base = find(rows, base, None).and_then(Row::median);
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| match &r.sample {
            Ok(s) => {
                let mut v = vec![
                    r.label.clone(),
                    secs(s.median()),
                    secs(s.min()),
                    per_task.map_or_else(|| secs(s.max()), |n| secs(s.median() / n as f64)),
                    base.map_or("-".into(), |b| ratio(s.median() / b)),
                ];
                if per_task.is_some() {
                    v.push(cpu_cell(s));
                }
                v
            }
            Err(e) => {
                let mut v = vec![r.label.clone(), skipped(e)];
                v.resize(if per_task.is_some() { 6 } else { 5 }, "-".into());
                v
            }
        })
        .collect();
    let mut s = if per_task.is_some() {
        table(
            &[
                "peer",
                "median",
                "min",
                "wall / task",
                "vs forkmap",
                "CPU: caller + workers",
            ],
            &body,
        )
    } else {
        table(&["peer", "median", "min", "max", "vs forkmap"], &body)
    };
    if checks {
        s.push_str(&checksum_note(rows, "sequential"));
    }
    s
}

/// `caller + workers` CPU time per call.
fn cpu_cell(s: &Sample) -> String {
    s.cpu().map_or("-".into(), |(me, kids)| {
        format!("{} + {}", secs(me), secs(kids))
    })
}

/// Says whether every peer's results sum to the reference peer's (to 1e-9, relative).
fn checksum_note(rows: &[Row], reference: &str) -> String {
    let Some(want) = find(rows, reference, None)
        .and_then(|r| r.sample.as_ref().ok())
        .map(|s| s.checksum)
    else {
        return String::new();
    };
    let off: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.sample.as_ref().ok().map(|s| (r, s)))
        .filter(|(_, s)| (s.checksum - want).abs() > 1e-9 * want.abs().max(1.0))
        .map(|(r, _)| r.label.as_str())
        .collect();
    if off.is_empty() {
        "\nEvery peer's results agree (sum of results equal to 1e-9).\n".into()
    } else {
        format!(
            "\n**Results differ** from {reference}'s for: {}.\n",
            off.join(", ")
        )
    }
}

/// The rows of the memory workload with each checksum divided by its number of tasks
/// (one per worker), so runs with different worker counts compare.
fn per_task_sums(rows: &[Row]) -> Vec<Row> {
    rows.iter()
        .map(|r| {
            let mut r = r.clone();
            if let Ok(s) = &mut r.sample {
                s.checksum /= r.workers as f64;
            }
            r
        })
        .collect()
}

/// The makespan of chunks of `chunk` consecutive tasks of the skewed load (task `i` costs
/// `(i + 1) × unit` s), each taken in order by the first idle worker, with no overhead.
fn greedy_makespan(n: usize, chunk: usize, workers: usize, unit: f64) -> f64 {
    let mut free = vec![0.0f64; workers.max(1)];
    for start in (0..n).step_by(chunk.max(1)) {
        let end = (start + chunk).min(n);
        let cost: f64 = (start..end).map(|i| (i + 1) as f64 * unit).sum();
        let w = (0..free.len())
            .min_by(|&a, &b| free[a].total_cmp(&free[b]))
            .expect("at least one worker");
        free[w] += cost;
    }
    free.into_iter().fold(0.0, f64::max)
}
