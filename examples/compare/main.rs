//! Runs forkmap side by side with its peers and prints a markdown table of medians and
//! ratios per workload, then the issue's targets marked hit or missed.
//!
//! ```text
//! cargo run --release --example compare                  # everything, a few minutes
//! cargo run --release --example compare -- --quick       # smaller sizes, under a minute
//! cargo run --release --example compare -- --workloads b,e --workers 2 --no-python
//! ```
//!
//! Peers: forkmap; sequential; rayon with the same number of threads; a naive process
//! baseline that forks per chunk and sends the whole array to every chunk (the tutorial's
//! `MemoryError` pattern); and the Python peers from `bench/python/peers.py`, tutorial 1's
//! `process_map` with `multiprocessing.Array` and plain `multiprocessing.Pool.map`, run
//! from a virtualenv this harness makes at `target/bench-venv` (numpy and tqdm from PyPI;
//! the Python peers are skipped, with the reason, where that is not possible).
//!
//! Workloads: (a) tutorial 1 exactly; (b) 1,000,000 tasks of about 1 µs reading the shared
//! array; (c) 2,000 tasks whose cost grows linearly with the index; (d) a 200 MB array
//! shared with 2 and 8 workers, total PSS of the process tree; (e) one trivial task.
//!
//! Every peer runs in a child process of this one (`--peer`), in its own process group,
//! so that no peer inherits another's threads or heap and the memory of each peer's
//! process tree can be sampled on its own. Results are in `bench/RESULTS.md`.

mod copy;
mod peers;
mod python;
mod report;
mod sys;
mod tree;
mod work;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use report::{Row, Sample, Target, find, mb, ratio, secs, skipped, table};
use work::{Params, Workload};

const USAGE: &str = "usage: compare [--quick] [--workloads a,b,c,d,e] [--workers N] \
[--no-python] [--venv DIR] [--output FILE]";

/// How long one peer may run before its process group is killed.
const PEER_LIMIT: Duration = Duration::from_secs(600);

/// Worker counts of the memory workload.
const MEM_WORKERS: [usize; 2] = [2, 8];

struct Args {
    quick: bool,
    workloads: Vec<Workload>,
    workers: usize,
    python: bool,
    venv: PathBuf,
    output: Option<PathBuf>,
    peer: Option<String>,
    workload: Option<Workload>,
    line: String,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        workloads: Workload::ALL.to_vec(),
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        python: true,
        venv: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-venv"),
        output: None,
        peer: None,
        workload: None,
        line: String::new(),
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    a.line = raw.join(" ");
    let mut it = raw.into_iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--no-python" => a.python = false,
            "--workloads" => {
                a.workloads = value()?
                    .split(',')
                    .map(|s| Workload::from_letter(s).ok_or(format!("no workload {s:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--workers" => {
                a.workers = value()?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--workers needs a positive number")?;
            }
            "--venv" => a.venv = PathBuf::from(value()?),
            "--output" => a.output = Some(PathBuf::from(value()?)),
            "--peer" => a.peer = Some(value()?),
            "--workload" => {
                let w = value()?;
                a.workload = Some(Workload::from_letter(&w).ok_or(format!("no workload {w}"))?);
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match (&args.peer, args.workload) {
        (Some(peer), Some(w)) => {
            let p = Params::new(args.quick, args.workers);
            match peers::run(peer, w, &p, args.workers) {
                Ok(v) => {
                    println!("{v}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        (Some(_), None) => {
            eprintln!("--peer needs --workload");
            ExitCode::from(2)
        }
        _ => orchestrate(&args),
    }
}

/// The orchestrating process: runs every peer as a child and writes the report.
struct Harness<'a> {
    args: &'a Args,
    p: Params,
    params_json: String,
    python: Result<python::Python, String>,
}

fn orchestrate(args: &Args) -> ExitCode {
    let began = Instant::now();
    let p = Params::new(args.quick, args.workers);
    let params_json = serde_json::to_string(&p).expect("parameters serialise");
    let python = if args.python {
        python::setup(&args.venv)
    } else {
        Err("--no-python was given".into())
    };
    match &python {
        Ok(py) => eprintln!("compare: Python peers: {}", py.version),
        Err(e) => eprintln!("compare: Python peers skipped: {e}"),
    }
    let h = Harness {
        args,
        p,
        params_json,
        python,
    };
    let command = if args.line.is_empty() {
        "cargo run --release --example compare".to_string()
    } else {
        format!("cargo run --release --example compare -- {}", args.line)
    };
    let mut out = format!(
        "## forkmap compared with its peers\n\n\
         - date: {}\n- machine: {}\n- Python: {}\n- command: `{command}`\n\
         - every time is the median of several repetitions, each timing one whole call: \
         start the workers (fork, or rayon's thread pool), run, collect the results in \
         order, stop the workers. Ratios are peer / forkmap unless said otherwise.\n\n",
        report::today(),
        report::machine(),
        match &h.python {
            Ok(py) => py.version.clone(),
            Err(e) => format!("skipped ({e})"),
        }
    );
    let mut targets = Vec::new();
    for &w in &args.workloads {
        let (text, t) = match w {
            Workload::Tutorial => h.tutorial(),
            Workload::Fine => h.fine(),
            Workload::Skewed => h.skewed(),
            Workload::Memory => h.memory(),
            Workload::Startup => h.startup(),
        };
        out.push_str(&text);
        targets.extend(t);
    }
    out.push_str("### Targets (issue 3), measured in this run\n\n");
    out.push_str(&report::targets_table(&targets));
    out.push_str(&format!(
        "\nWhole run: {:.0} s.\n",
        began.elapsed().as_secs_f64()
    ));
    print!("{out}");
    if let Some(path) = &args.output {
        if let Err(e) = std::fs::write(path, &out) {
            eprintln!("compare: could not write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

impl Harness<'_> {
    /// Runs Rust peer `key` on `w` in a child process.
    fn rust(&self, key: &str, w: Workload, workers: usize, sample: bool) -> Row {
        let label = peers::RUST_PEERS
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(key, |(_, l)| l);
        let sample = std::env::current_exe()
            .map_err(|e| format!("cannot find this program: {e}"))
            .and_then(|exe| {
                let mut cmd = Command::new(exe);
                cmd.args(["--peer", key, "--workload", w.letter()])
                    .args(["--workers", &workers.to_string()]);
                if self.args.quick {
                    cmd.arg("--quick");
                }
                measure(cmd, sample)
            });
        self.row(key, label, w, workers, sample)
    }

    /// Runs Python peer `peer` on `w`, or records why it was skipped.
    fn py(&self, peer: &str, label: &str, w: Workload, workers: usize, sample: bool) -> Row {
        let sample = match &self.python {
            Ok(py) => measure(
                python::command(py, peer, w.letter(), workers, &self.params_json),
                sample,
            ),
            Err(e) => Err(format!("no Python ({e})")),
        };
        self.row(&format!("py-{peer}"), label, w, workers, sample)
    }

    fn row(
        &self,
        key: &str,
        label: &str,
        w: Workload,
        workers: usize,
        sample: Result<Sample, String>,
    ) -> Row {
        match &sample {
            Ok(s) => eprintln!(
                "compare: ({}) {key}, {workers} workers: median {}{}",
                w.letter(),
                secs(s.median()),
                s.peak.map_or(String::new(), |p| format!(
                    ", peak PSS {}",
                    mb(p.pss_bytes as f64)
                ))
            ),
            Err(e) => eprintln!("compare: ({}) {key}: {e}", w.letter()),
        }
        Row {
            key: key.into(),
            label: label.into(),
            workers,
            sample,
        }
    }

    /// (a) Tutorial 1 exactly.
    fn tutorial(&self) -> (String, Vec<Target>) {
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
    fn fine(&self) -> (String, Vec<Target>) {
        let (w, n) = (Workload::Fine, self.p.fine_tasks);
        let workers = self.p.workers;
        let mut rows: Vec<Row> = peers::RUST_PEERS
            .iter()
            .map(|(k, _)| self.rust(k, w, workers, false))
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
            &format!("Python process_map (tutorial's per-task view), chunksize {chunk}"),
            w,
            workers,
            false,
        ));
        rows.push(self.py(
            "sequential",
            "Python, one process (the task alone)",
            w,
            1,
            false,
        ));
        let per_task = find(&rows, "sequential", None)
            .and_then(Row::median)
            .map_or("-".into(), |m| secs(m / n as f64));
        let mut text = format!(
            "### (b) {n} fine-grained tasks\n\nTask `i` folds the first {k} elements of row \
             `i mod {side}` of a {side}×{side} f64 array with Horner's rule (numpy: the same \
             polynomial as one dot product); compute per task, measured by the sequential \
             peer: {per_task}. {workers} workers; forkmap reads through a `FrozenArray` \
             (lock-free) and, in the second row, through a `read()` guard per task. forkmap \
             and rayon choose their own chunks; the copy baseline uses Pool.map's.\n\n",
            k = self.p.fine_k,
            side = self.p.side,
        );
        text.push_str(&time_table(&rows, "forkmap", Some(n), true));
        let fm = find(&rows, "forkmap", None).and_then(Row::median);
        let rayon = find(&rows, "rayon", None).and_then(Row::median);
        let guard = find(&rows, "forkmap-guard", None).and_then(Row::median);
        let pool = find(&rows, "py-pool_map", None).and_then(Row::median);
        if let (Some(fm), Some(g)) = (fm, guard) {
            text.push_str(&format!(
                "\nA `read()` guard per task costs {} per task over the frozen read ({} in all).\n",
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
                "(b) Python Pool.map vs forkmap",
                "forkmap ≥ 20× faster",
                fm.zip(pool).map(|(f, py)| {
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
    fn skewed(&self) -> (String, Vec<Target>) {
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
        let ideal = total / workers as f64;
        let greedy = greedy_makespan(n, chunk, workers, self.p.skew_unit_ns as f64 * 1e-9);
        let mut text = format!(
            "### (c) Skewed load\n\n{n} tasks; task `i` spins `(i + 1) × {unit} µs` of its \
             thread's CPU time (Rust and Python alike), then reads one element. Total task \
             CPU {total:.3} s; ideal makespan with {workers} workers {ideal:.3} s. Pool.map's \
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
                Err(e) => vec![r.label.clone(), skipped(e), "-".into(), "-".into(), "-".into()],
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
    fn memory(&self) -> (String, Vec<Target>) {
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
                match r.sample.as_ref().map(|s| s.peak) {
                    Ok(Some(p)) => vec![
                        r.label.clone(),
                        r.workers.to_string(),
                        mb(p.pss_bytes as f64),
                        p.processes.to_string(),
                        mb(budget),
                        mb((p.pss_bytes as f64 - array) / r.workers as f64),
                    ],
                    Ok(None) => vec![r.label.clone(), r.workers.to_string(), "not sampled".into()],
                    Err(e) => vec![r.label.clone(), r.workers.to_string(), skipped(e)],
                }
            })
            .map(|mut v| {
                v.resize(6, "-".into());
                v
            })
            .collect();
        text.push_str(&table(
            &[
                "peer",
                "workers",
                "peak total PSS",
                "processes",
                "budget",
                "(PSS − array) / worker",
            ],
            &body,
        ));
        text.push_str(&checksum_note(&rows, "forkmap"));
        text.push('\n');
        let pss = |key: &str, n: usize| {
            find(&rows, key, Some(n))
                .and_then(|r| r.sample.as_ref().ok())
                .and_then(|s| s.peak)
                .map(|p| p.pss_bytes as f64)
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
    fn startup(&self) -> (String, Vec<Target>) {
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
                Err(e) => vec![r.label.clone(), skipped(e), "-".into(), "-".into(), "-".into()],
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

/// Runs a peer command and parses its JSON report.
fn measure(cmd: Command, sample: bool) -> Result<Sample, String> {
    let done = tree::run(cmd, sample, PEER_LIMIT)?;
    if !done.status.success() {
        let tail: Vec<&str> = done.stderr.lines().rev().take(3).collect();
        return Err(format!(
            "failed ({}): {}",
            done.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    }
    if done.stderr.contains("left processes behind") {
        eprintln!("compare: {}", done.stderr.trim());
    }
    Sample::parse(&done.stdout, done.peak)
}

/// The usual time table: median, min, max (or per task), ratio to `base`.
fn time_table(rows: &[Row], base: &str, per_task: Option<usize>, checks: bool) -> String {
    let base = find(rows, base, None).and_then(Row::median);
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| match &r.sample {
            Ok(s) => vec![
                r.label.clone(),
                secs(s.median()),
                secs(s.min()),
                per_task.map_or_else(|| secs(s.max()), |n| secs(s.median() / n as f64)),
                base.map_or("-".into(), |b| ratio(s.median() / b)),
            ],
            Err(e) => vec![r.label.clone(), skipped(e), "-".into(), "-".into(), "-".into()],
        })
        .collect();
    let third = if per_task.is_some() {
        "wall / task"
    } else {
        "max"
    };
    let mut s = table(&["peer", "median", "min", third, "vs forkmap"], &body);
    if checks {
        s.push_str(&checksum_note(rows, "sequential"));
    }
    s
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
        format!("\n**Results differ** from {reference}'s for: {}.\n", off.join(", "))
    }
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
