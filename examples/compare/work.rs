//! The workloads: their parameters (shared with the Python peers as JSON) and the task
//! kernels, written once and called by every Rust peer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use forkmap::ndarray::{Array2, ArrayRef2};
use serde::Serialize;

use crate::sys;

/// The workloads: (a)-(e) of issue 3, (f) of issue 4, (g) and (h) of issue 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// Tutorial 1 exactly: N=1000 array, indices 0..4, 0.1 s sleep, 2 workers, chunk 1.
    Tutorial,
    /// 1,000,000 tasks of about 1 us of compute each, reading the shared array.
    Fine,
    /// 2,000 tasks whose CPU cost grows linearly with the index.
    Skewed,
    /// A 200 MB array shared with 2 and 8 workers: total PSS of the process tree.
    Memory,
    /// One trivial task: call-to-result latency.
    Startup,
    /// Tutorial 2 end to end: record files loaded in workers, handed to the parent in
    /// shared memory, written to HDF5 by the parent.
    Records,
    /// W workers, W tasks that sleep 200 ms, for W = 2, 4, 8, 16: does every worker get one?
    Few,
    /// Uneven sleeping tasks: one of 1 s among nine of 100 ms on 2 workers (at index 0 and
    /// at index 3), and W tasks of 300 ms on W workers for W = 3, 4, 8.
    Uneven,
}

impl Workload {
    /// Every workload, in report order.
    pub(crate) const ALL: [Workload; 8] = [
        Workload::Tutorial,
        Workload::Fine,
        Workload::Skewed,
        Workload::Memory,
        Workload::Startup,
        Workload::Records,
        Workload::Few,
        Workload::Uneven,
    ];

    /// The one-letter name used on the command line and in the report.
    pub(crate) fn letter(self) -> &'static str {
        match self {
            Workload::Tutorial => "a",
            Workload::Fine => "b",
            Workload::Skewed => "c",
            Workload::Memory => "d",
            Workload::Startup => "e",
            Workload::Records => "f",
            Workload::Few => "g",
            Workload::Uneven => "h",
        }
    }

    /// Parses a one-letter name.
    pub(crate) fn from_letter(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.letter() == s.trim())
    }
}

/// Every size and count of a run. Serialised to JSON for the Python peers, so both sides
/// run exactly the same work.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Params {
    /// Workers for (b), (c) and (e); (a) always uses the tutorial's 2.
    pub(crate) workers: usize,
    /// Repetitions of each Rust measurement.
    pub(crate) reps: usize,
    /// Repetitions of each Python measurement.
    pub(crate) py_reps: usize,
    /// Repetitions of the start-up measurement (Rust / Python).
    pub(crate) startup_reps: usize,
    /// Python start-up repetitions.
    pub(crate) py_startup_reps: usize,
    /// Side of the tutorial's square array (1000).
    pub(crate) tutorial_n: usize,
    /// The tutorial's per-task sleep, seconds.
    pub(crate) tutorial_sleep_s: f64,
    /// Side of the square array read by (b), (c) and (e).
    pub(crate) side: usize,
    /// Number of fine-grained tasks in (b).
    pub(crate) fine_tasks: usize,
    /// Elements of a row each fine-grained task folds (Horner's rule): sets its cost.
    pub(crate) fine_k: usize,
    /// The point at which the row polynomial is evaluated.
    pub(crate) fine_x: f64,
    /// Number of skewed tasks in (c).
    pub(crate) skew_tasks: usize,
    /// Task `i` of (c) spins `(i + 1) * skew_unit_ns` of thread CPU time.
    pub(crate) skew_unit_ns: u64,
    /// Shape of the memory workload's array (5000 x 5000 f64 = 200 MB).
    pub(crate) mem_rows: usize,
    /// Columns of the memory workload's array.
    pub(crate) mem_cols: usize,
    /// Every memory task holds until `mem_hold_s + mem_hold_per_worker_s * workers`
    /// after the call started, so all workers are alive, array touched, when sampled.
    pub(crate) mem_hold_s: f64,
    /// See `mem_hold_s`.
    pub(crate) mem_hold_per_worker_s: f64,
    /// The text files of records that every peer of (f) loads (made once by the harness
    /// with `records::write_sample`, seeds 1, 2, ...).
    pub(crate) records_inputs: Vec<String>,
    /// Rows in each of them.
    pub(crate) records_rows: usize,
    /// The folder where each peer of (f) writes its HDF5 file, `<peer key>.h5`.
    pub(crate) records_out: String,
}

impl Params {
    /// The default run, or the `--quick` one.
    pub(crate) fn new(quick: bool, workers: usize) -> Params {
        let records_rows = if quick { 200_000 } else { 1_000_000 };
        Params {
            workers,
            reps: if quick { 3 } else { 5 },
            py_reps: if quick { 1 } else { 3 },
            startup_reps: if quick { 20 } else { 50 },
            py_startup_reps: if quick { 3 } else { 10 },
            tutorial_n: 1000,
            tutorial_sleep_s: 0.1,
            side: 1000,
            fine_tasks: if quick { 200_000 } else { 1_000_000 },
            fine_k: 650,
            fine_x: 0.999,
            skew_tasks: 2000,
            skew_unit_ns: if quick { 250 } else { 1000 },
            mem_rows: 5000,
            mem_cols: 5000,
            mem_hold_s: 0.5,
            mem_hold_per_worker_s: 0.15,
            records_inputs: (1..=RECORDS_FILES)
                .map(|i| {
                    records_dir()
                        .join(format!("data{i}_{records_rows}.txt"))
                        .display()
                        .to_string()
                })
                .collect(),
            records_rows,
            records_out: records_dir().join("out").display().to_string(),
        }
    }

    /// The HDF5 file that peer `key` of (f) writes (`py-<peer>` for the Python peers,
    /// which build the same path from `records_out`).
    #[cfg(feature = "hdf5")]
    pub(crate) fn records_output(&self, key: &str) -> PathBuf {
        Path::new(&self.records_out).join(format!("{key}.h5"))
    }

    /// Total CPU time of the skewed tasks, by construction: `unit * n (n + 1) / 2`.
    pub(crate) fn skew_total(&self) -> Duration {
        let n = self.skew_tasks as u64;
        Duration::from_nanos(self.skew_unit_ns * n * (n + 1) / 2)
    }

    /// How long each memory task holds its copy or mapping of the array.
    pub(crate) fn mem_hold(&self, workers: usize) -> Duration {
        Duration::from_secs_f64(self.mem_hold_s + self.mem_hold_per_worker_s * workers as f64)
    }

    /// Bytes of the memory workload's array.
    pub(crate) fn mem_bytes(&self) -> usize {
        self.mem_rows * self.mem_cols * std::mem::size_of::<f64>()
    }

    /// `multiprocessing.Pool.map`'s default chunk size for `n` tasks: `ceil(n / (4 w))`.
    pub(crate) fn pool_map_chunk(&self, n: usize, workers: usize) -> usize {
        n.div_ceil(4 * workers).max(1)
    }
}

/// Input files of (f), as in tutorial 2 (`data1.txt`, `data2.txt`, ...).
pub(crate) const RECORDS_FILES: usize = 4;

/// Where the harness keeps (f)'s input files (made once, kept for later runs) and the
/// peers' HDF5 output.
pub(crate) fn records_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compare-records")
}

/// The deterministic array every peer of (b)-(e) builds: element `k` (row-major) is
/// `(k * 7919 mod 10007) / 10007`. numpy computes the same values.
pub(crate) fn fill(rows: usize, cols: usize) -> Array2<f64> {
    Array2::from_shape_fn((rows, cols), |(i, j)| value(i * cols + j))
}

/// Element `k` (row-major) of the deterministic array.
pub(crate) fn value(k: usize) -> f64 {
    ((k as u64 * 7919) % 10007) as f64 / 10007.0
}

/// The tutorial's array: uniform random numbers.
pub(crate) fn random_fill(n: usize) -> Array2<f64> {
    let mut rng = fastrand::Rng::with_seed(1);
    Array2::from_shape_fn((n, n), |_| rng.f64())
}

/// Task of (a): sleep, then read one diagonal element.
pub(crate) fn tutorial_task(a: &ArrayRef2<f64>, i: usize, sleep: Duration) -> f64 {
    std::thread::sleep(sleep);
    a[[i, i]]
}

/// Task of (b): Horner's rule over the first `k` elements of row `i mod side`, a chain of
/// dependent multiply-adds (about 1 µs for k = 650 on the 2-core benchmark machine). numpy computes the same polynomial as
/// a dot product with the powers of `x`.
#[inline]
pub(crate) fn fine_task(a: &ArrayRef2<f64>, i: usize, k: usize, x: f64) -> f64 {
    let row = a.row(i % a.nrows());
    let row = row
        .as_slice()
        .expect("rows of a standard-layout array are contiguous");
    let mut acc = 0.0;
    for &v in &row[..k] {
        acc = acc * x + v;
    }
    acc
}

/// Task of (c): spin `(i + 1) * unit_ns` of this thread's CPU time, then read one element.
pub(crate) fn skew_task(a: &ArrayRef2<f64>, i: usize, unit_ns: u64) -> f64 {
    spin_cpu((i as u64 + 1) * unit_ns);
    let side = a.nrows().min(a.ncols());
    a[[i % side, i % side]]
}

/// Burns `ns` nanoseconds of the calling thread's CPU time.
pub(crate) fn spin_cpu(ns: u64) {
    let end = sys::thread_cpu_ns() + ns;
    let mut x = 1.0f64;
    while sys::thread_cpu_ns() < end {
        x = std::hint::black_box(x * 1.000_000_1);
    }
}

/// Task of (d): sum the whole array (every page touched), then hold until `deadline`.
pub(crate) fn mem_task(a: &ArrayRef2<f64>, deadline: Instant) -> f64 {
    let sum = a.sum();
    let now = Instant::now();
    std::thread::sleep(
        deadline
            .saturating_duration_since(now)
            .max(Duration::from_millis(20)),
    );
    sum
}
