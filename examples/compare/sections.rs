//! The report's sections, one per workload: which peers run, the table of their results,
//! and the targets measured against them.

use crate::report::{Row, Sample, Target, find, mb, ratio, secs, skipped, table};
use crate::work::Workload;
use crate::{Harness, MEM_WORKERS, peers, records};
#[cfg(feature = "hdf5")]
use crate::{python, report, work::records_dir};

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

/// (f) Tutorial 2 end to end.
impl Harness<'_> {
    /// (f) Tutorial 2 end to end: load record files in workers, hand the arrays to the
    /// parent, write HDF5 there.
    pub(crate) fn records(&self) -> (String, Vec<Target>) {
        let text = String::from("### (f) Tutorial 2 end to end\n\n");
        let goal = "forkmap ≥ 10× faster";
        let targets = |measured: [Option<(String, bool)>; 2]| {
            let [q, pm] = measured;
            vec![
                Target::new(
                    "(f) Python Process + queues (tutorial 2) vs forkmap, end to end",
                    goal,
                    q,
                ),
                Target::new(
                    "(f) Python Pool.map (tutorial 2) vs forkmap, end to end",
                    goal,
                    pm,
                ),
            ]
        };
        #[cfg(not(feature = "hdf5"))]
        {
            let mut text = text;
            text.push_str(&format!(
                "Skipped: {}. Every peer writes HDF5 (forkmap with `forkmap::h5`, Python with \
                 h5py), so the comparison is only fair with the feature.\n\n",
                records::NO_HDF5
            ));
            (text, targets([None, None]))
        }
        #[cfg(feature = "hdf5")]
        self.records_measured(text, targets)
    }

    #[cfg(feature = "hdf5")]
    fn records_measured(
        &self,
        mut text: String,
        targets: impl Fn([Option<(String, bool)>; 2]) -> Vec<Target>,
    ) -> (String, Vec<Target>) {
        let w = Workload::Records;
        let workers = self.p.workers;
        let (files, rows) = (self.p.records_inputs.len(), self.p.records_rows);
        let bytes = match records::ensure_inputs(&self.p) {
            Ok((made, bytes)) => {
                if let Some(secs) = made {
                    eprintln!(
                        "compare: (f) made {files} input files of {rows} rows in {}",
                        report::secs(secs)
                    );
                }
                bytes
            }
            Err(e) => {
                text.push_str(&format!("Skipped: could not make the input files: {e}\n\n"));
                return (text, targets([None, None]));
            }
        };
        let mut rows_out = vec![
            self.rust("forkmap", w, workers, false),
            self.rust("sequential", w, workers, false),
            self.py_h5(
                "process_queues",
                "Python Process + two queues (tutorial 2, first version), one process per file",
                w,
                workers,
            ),
            self.py_h5(
                "pool_map",
                &format!("Python Pool.map (tutorial 2, second version), Pool({workers})"),
                w,
                workers,
            ),
        ];
        rows_out[0].label = format!("forkmap, {workers} workers, chunk size 1");
        rows_out[1].label = "sequential Rust: `text::load`, then the same writer".into();
        let dir = records_dir();
        text.push_str(&format!(
            "{files} text files of {rows} records each ({size} in all, `chr pos pct c t`, \
             made once with `records::write_sample`, seeds 1-{files}, in `{dir}`). Every \
             peer loads every file, gets its rows into the parent process, and the parent \
             writes one HDF5 file with one compound dataset per input file, then frees the \
             shared memory. One repetition is timed whole: from starting the workers to the \
             file closed, the shared memory freed and the workers gone; the previous \
             repetition's output file is removed before the clock starts.\n\n\
             - forkmap: one task per file; each worker parses its file straight into a new \
             shared array (`text::load_shared`, a `#[derive(forkmap::Row)]` row) and returns it; the parent receives the \
             same memory (the segment's descriptor crosses the IPC channel, nothing to \
             unlink) and writes it with `forkmap::h5::Writer` (hdf5-metno, the system's \
             libhdf5).\n\
             - Python, tutorial 2's two versions as written (`bench/python/peers.py`): each \
             child runs `np.loadtxt(path, dtype=[('chr', 'S10'), ('pos', '<i4'), ('pct', \
             '<f4'), ('c', '<i4'), ('t', '<i4')])`, copies the result into a new \
             `SharedMemory` block and sends name, shape and dtype back; the parent attaches, \
             writes with h5py's `create_dataset`, closes, and the block is unlinked (by the \
             child on \"done\" in the first version, by the parent in the second). Three \
             departures, none of them making Python slower: the messages also carry the \
             file's name and timestamps; the first version gives each child its own \
             \"done\" queue (with the tutorial's one shared queue, any waiting child can take \
             another's \"done\" and unlink its block before the parent attaches it, which \
             ended 1 of 5 trial runs on these files with `FileNotFoundError`); and the parent starts \
             multiprocessing's resource tracker once before timing (otherwise each child \
             starts its own, which costs more and outlives it).\n\n\
             Split (medians): *load* from the start until the last worker has its rows in \
             shared memory; *hand-off* from there until the parent holds the array \
             (first version: each message's time in the queue after the parent asked for it, \
             plus attaching, summed); *write* creating, writing and closing the HDF5 file; \
             *parse + copy* the workers' seconds in the parser and in copying into shared \
             memory, summed over files (wall time: where more processes than cores run at \
             once, as in the first Python version, each file's seconds stretch). The first \
             Python version writes each array as it \
             arrives, so its write overlaps its load. CPU: the calling process's own CPU time \
             + that of its reaped worker processes, per repetition.\n\n",
            size = mb(bytes as f64),
            dir = dir
                .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                .unwrap_or(&dir)
                .display(),
        ));
        let fm = find(&rows_out, "forkmap", None).and_then(Row::median);
        let cell = |s: &Sample, key: &str| s.extra_median(key).map_or("-".into(), secs);
        let body: Vec<Vec<String>> = rows_out
            .iter()
            .map(|r| match &r.sample {
                Ok(s) => vec![
                    r.label.clone(),
                    secs(s.median()),
                    secs(s.min()),
                    cell(s, "load"),
                    cell(s, "handoff"),
                    cell(s, "write"),
                    match s.extra_median("copy") {
                        Some(c) => format!("{} + {}", cell(s, "parse"), secs(c)),
                        None => format!("{} + none", cell(s, "parse")),
                    },
                    cpu_cell(s),
                    fm.map_or("-".into(), |f| ratio(s.median() / f)),
                ],
                Err(e) => {
                    let mut v = vec![r.label.clone(), skipped(e)];
                    v.resize(9, "-".into());
                    v
                }
            })
            .collect();
        text.push_str(&table(
            &[
                "peer",
                "end to end (median)",
                "min",
                "load",
                "hand-off",
                "write",
                "parse + copy (workers, Σ files)",
                "CPU: caller + workers",
                "vs forkmap",
            ],
            &body,
        ));
        text.push_str(&self.records_check(&rows_out));
        text.push_str(&records_profile(&rows_out, bytes as f64));
        text.push('\n');
        let vs = |key: &str| {
            fm.zip(find(&rows_out, key, None).and_then(Row::median))
                .map(|(f, py)| {
                    (
                        format!("{} faster ({} vs {})", ratio(py / f), secs(f), secs(py)),
                        py / f >= 10.0,
                    )
                })
        };
        let measured = [vs("py-process_queues"), vs("py-pool_map")];
        (text, targets(measured))
    }

    /// Runs a Python peer of (f), which needs h5py.
    #[cfg(feature = "hdf5")]
    fn py_h5(&self, peer: &str, label: &str, w: Workload, workers: usize) -> Row {
        match &self.python {
            Ok(py) => match &py.h5py {
                Ok(_) => self.py(peer, label, w, workers, false),
                Err(e) => self.row(
                    &format!("py-{peer}"),
                    label,
                    w,
                    workers,
                    Err(format!("no h5py ({e})")),
                ),
            },
            Err(_) => self.py(peer, label, w, workers, false),
        }
    }

    /// Says whether every peer's HDF5 file holds the same data as the tutorial's
    /// (Pool.map version), field by field.
    #[cfg(feature = "hdf5")]
    fn records_check(&self, rows: &[Row]) -> String {
        let ran: Vec<(&str, std::path::PathBuf)> = rows
            .iter()
            .filter(|r| r.sample.is_ok())
            .map(|r| (short_name(&r.key), self.p.records_output(&r.key)))
            .collect();
        let Ok(py) = &self.python else {
            return "\nThe files were not compared: no Python with h5py.\n".into();
        };
        let reference = self.p.records_output("py-pool_map");
        let Some((ref_label, _)) = ran.iter().find(|(_, path)| *path == reference) else {
            return "\nThe files were not compared: the Python Pool.map peer did not run.\n".into();
        };
        let others: Vec<&std::path::Path> = ran
            .iter()
            .filter(|(_, path)| *path != reference)
            .map(|(_, path)| path.as_path())
            .collect();
        match python::check_h5(py, &reference, &others) {
            Ok(what) => format!(
                "\nSame data: the HDF5 files of {} hold exactly what {ref_label}'s does, read \
                 back with h5py ({what}).\n",
                ran.iter()
                    .filter(|(_, path)| *path != reference)
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => format!("\n**The HDF5 files differ** ({e}).\n"),
        }
    }
}

/// A peer of (f) in a few words.
#[cfg(feature = "hdf5")]
fn short_name(key: &str) -> &str {
    match key {
        "sequential" => "sequential Rust",
        "py-process_queues" => "Python Process + queues",
        "py-pool_map" => "Python Pool.map",
        other => other,
    }
}

/// Where the time of (f) goes: parsing speed per worker and the shares of load and write.
#[cfg(feature = "hdf5")]
fn records_profile(rows: &[Row], bytes: f64) -> String {
    let mut parts = Vec::new();
    for key in ["forkmap", "py-pool_map"] {
        let name = short_name(key);
        let Some(s) = find(rows, key, None).and_then(|r| r.sample.as_ref().ok()) else {
            continue;
        };
        let total = s.median();
        let (Some(parse), Some(load), Some(write)) = (
            s.extra_median("parse"),
            s.extra_median("load"),
            s.extra_median("write"),
        ) else {
            continue;
        };
        let copy = s.extra_median("copy").unwrap_or(0.0);
        let handoff = s.extra_median("handoff").unwrap_or(0.0);
        parts.push(format!(
            "{name}: parsing runs at {} per worker ({} of text in {} of worker time{}); \
             load {} of the end-to-end time, hand-off {}, write {}, the rest (starting and \
             stopping workers, freeing memory) {}",
            rate(bytes / parse),
            mb(bytes),
            secs(parse),
            if copy > 0.0 {
                format!(", then {} copying into shared memory", secs(copy))
            } else {
                String::new()
            },
            percent(load / total),
            percent(handoff / total),
            percent(write / total),
            percent((total - load - handoff - write).max(0.0) / total),
        ));
    }
    let fm = find(rows, "forkmap", None).and_then(|r| r.sample.as_ref().ok());
    let fastest_py = ["py-process_queues", "py-pool_map"]
        .iter()
        .filter_map(|k| find(rows, k, None).and_then(Row::median))
        .min_by(f64::total_cmp);
    if let (Some(s), Some(py)) = (fm, fastest_py)
        && let (Some(load), Some(write)) = (s.extra_median("load"), s.extra_median("write"))
    {
        parts.push(format!(
            "A 10× lead over the faster Python version needs forkmap at {} or less end to \
                 end; its load alone took {}, its write {}",
            secs(py / 10.0),
            secs(load),
            secs(write)
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("\nWhere the time goes. {}.\n", parts.join(". "))
    }
}

#[cfg(feature = "hdf5")]
fn rate(bytes_per_s: f64) -> String {
    format!("{:.0} MB/s", bytes_per_s / 1e6)
}

#[cfg(feature = "hdf5")]
fn percent(x: f64) -> String {
    format!("{:.0} %", x * 100.0)
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
