//! Runs forkmap side by side with its peers and prints a markdown table of medians and
//! ratios per workload, then the issue's targets marked hit or missed.
//!
//! ```text
//! cargo run --release --example compare                  # everything, a few minutes
//! cargo run --release --example compare -- --quick       # smaller sizes, about 2 minutes
//! cargo run --release --example compare -- --workloads b,e --workers 2 --no-python
//! cargo run --release --features hdf5 --example compare -- --workloads f
//! cargo run --release --example compare -- --workloads b,c,g,h   # issue 8's rows
//! ```
//!
//! Peers: forkmap; sequential; rayon with the same number of threads; a naive process
//! baseline that forks per chunk and sends the whole array to every chunk (the tutorial's
//! `MemoryError` pattern); and the Python peers from `bench/python/peers.py`, tutorial 1's
//! `process_map` with `multiprocessing.Array` and plain `multiprocessing.Pool.map`, run
//! from a virtualenv this harness makes at `target/bench-venv` (numpy and tqdm from PyPI;
//! the Python peers are skipped, with the reason, where that is not possible).
//! Workload (f) adds tutorial 2's two Python versions, with h5py installed into the same
//! virtualenv.
//!
//! Workloads: (a) tutorial 1 exactly; (b) 1,000,000 tasks of about 1 µs reading the shared
//! array; (c) 2,000 tasks whose cost grows linearly with the index; (d) a 200 MB array
//! shared with 2 and 8 workers, total PSS of the process tree; (e) one trivial task;
//! (f) tutorial 2 end to end: 4 text files of 1,000,000 records loaded in workers, handed
//! to the parent in shared memory and written to one HDF5 file by the parent. (f) needs
//! `--features hdf5` (it is skipped, saying so, without it), and its files are checked
//! to hold the same data on every side. (g) W workers and W tasks that sleep 200 ms, for
//! W = 2, 4, 8, 16; (h) uneven sleeping tasks: one of 1 s among nine of 100 ms on 2
//! workers (the long one at index 0, then at index 3), and W tasks of 300 ms on W workers
//! for W = 3, 4, 8. Sleep needs no core, so (g) and (h) measure the scheduler alone
//! (every worker busy while work is left) at worker counts past this machine's cores;
//! their tables give the wall time against the ideal and the number of distinct worker
//! pids that ran a task, for forkmap, `Pool.map` and `process_map` with chunksize 1 and
//! with their default chunksize.
//!
//! Every peer runs in a child process of this one (`--peer`), in its own process group,
//! so that no peer inherits another's threads or heap and the memory of each peer's
//! process tree can be sampled on its own. Results are in `bench/RESULTS.md`.

mod copy;
mod peers;
mod python;
mod records;
mod report;
mod sections;
mod sleep;
mod sys;
mod tree;
mod work;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use report::{Row, Sample, mb, secs};
use work::{Params, Workload};

const USAGE: &str = "usage: compare [--quick] [--workloads a,b,c,d,e,f,g,h] [--workers N] \
[--no-python] [--venv DIR] [--output FILE]";

/// How long one peer may run before its process group is killed.
const PEER_LIMIT: Duration = Duration::from_secs(600);

/// Worker counts of the memory workload.
pub(crate) const MEM_WORKERS: [usize; 2] = [2, 8];

struct Args {
    quick: bool,
    workloads: Vec<Workload>,
    workers: usize,
    python: bool,
    venv: PathBuf,
    output: Option<PathBuf>,
    peer: Option<String>,
    workload: Option<Workload>,
    /// A peer's per-task sleeps of (g) and (h), milliseconds (`--sleeps 1000,100,...`).
    sleeps: Vec<u64>,
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
        sleeps: Vec::new(),
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
            "--sleeps" => {
                a.sleeps = value()?
                    .split(',')
                    .map(|s| s.trim().parse().map_err(|e| format!("--sleeps {s:?}: {e}")))
                    .collect::<Result<_, _>>()?;
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
            match peers::run(peer, w, &p, args.workers, &args.sleeps) {
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
pub(crate) struct Harness<'a> {
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
        let h5py = cfg!(feature = "hdf5") && args.workloads.contains(&Workload::Records);
        python::setup(&args.venv, h5py)
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
    let features = if cfg!(feature = "hdf5") {
        " --features hdf5"
    } else {
        ""
    };
    let command = if args.line.is_empty() {
        format!("cargo run --release{features} --example compare")
    } else {
        format!(
            "cargo run --release{features} --example compare -- {}",
            args.line
        )
    };
    let mut out = format!(
        "## forkmap compared with its peers\n\n\
         - date: {}\n- machine: {}\n- forkmap: {}\n- Python: {}\n- command: `{command}`\n\
         - every time is the median of several repetitions, each timing one whole call: \
         start the workers (fork, or rayon's thread pool), run, collect the results in \
         order, stop the workers. Ratios are peer / forkmap unless said otherwise.\n\
         - load average (1, 5, 15 min) at the start: {load}\n\n",
        report::today(),
        report::machine(),
        report::source_state(),
        match &h.python {
            Ok(py) => py.version.clone(),
            Err(e) => format!("skipped ({e})"),
        },
        load = report::load_average(),
    );
    let mut targets = Vec::new();
    for &w in &args.workloads {
        let (text, t) = match w {
            Workload::Tutorial => h.tutorial(),
            Workload::Fine => h.fine(),
            Workload::Skewed => h.skewed(),
            Workload::Memory => h.memory(),
            Workload::Startup => h.startup(),
            Workload::Records => h.records(),
            Workload::Few => h.few(),
            Workload::Uneven => h.uneven(),
        };
        out.push_str(&text);
        targets.extend(t);
    }
    if !targets.is_empty() {
        out.push_str("### Targets (issues 3, 4 and 8), measured in this run\n\n");
        out.push_str(&report::targets_table(&targets));
    }
    out.push_str(&format!(
        "\nWhole run: {:.0} s; load average (1, 5, 15 min) at the end: {}.\n",
        began.elapsed().as_secs_f64(),
        report::load_average()
    ));
    print!("{out}");
    if let Some(path) = &args.output
        && let Err(e) = std::fs::write(path, &out)
    {
        eprintln!("compare: could not write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

impl Harness<'_> {
    /// Runs Rust peer `key` on `w` in a child process.
    pub(crate) fn rust(&self, key: &str, w: Workload, workers: usize, sample: bool) -> Row {
        self.rust_with(key, w, workers, sample, &[])
    }

    /// [`Harness::rust`] with more arguments for the peer (`--sleeps ...`).
    pub(crate) fn rust_with(
        &self,
        key: &str,
        w: Workload,
        workers: usize,
        sample: bool,
        extra: &[String],
    ) -> Row {
        let label = peers::RUST_PEERS
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(key, |(_, l)| l);
        let sample = std::env::current_exe()
            .map_err(|e| format!("cannot find this program: {e}"))
            .and_then(|exe| {
                let mut cmd = Command::new(exe);
                cmd.args(["--peer", key, "--workload", w.letter()])
                    .args(["--workers", &workers.to_string()])
                    .args(extra);
                if self.args.quick {
                    cmd.arg("--quick");
                }
                measure(cmd, sample.then_some(workers + 1))
            });
        self.row(key, label, w, workers, sample)
    }

    /// Runs Python peer `peer` on `w`, or records why it was skipped.
    pub(crate) fn py(
        &self,
        peer: &str,
        label: &str,
        w: Workload,
        workers: usize,
        sample: bool,
    ) -> Row {
        self.py_with(peer, label, w, workers, sample, &[])
    }

    /// [`Harness::py`] with more arguments for the peer (`--sleeps ...`).
    pub(crate) fn py_with(
        &self,
        peer: &str,
        label: &str,
        w: Workload,
        workers: usize,
        sample: bool,
        extra: &[String],
    ) -> Row {
        let sample = match &self.python {
            Ok(py) => measure(
                {
                    let mut cmd = python::command(py, peer, w.letter(), workers, &self.params_json);
                    cmd.args(extra);
                    cmd
                },
                sample.then_some(workers + 1),
            ),
            Err(e) => Err(format!("no Python ({e})")),
        };
        self.row(&format!("py-{peer}"), label, w, workers, sample)
    }

    pub(crate) fn row(
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
                    ", peak PSS {} with {} processes",
                    mb(p.working.pss_bytes as f64),
                    p.working.processes
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
}

/// Runs a peer command and parses its JSON report.
fn measure(cmd: Command, sample: Option<usize>) -> Result<Sample, String> {
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
