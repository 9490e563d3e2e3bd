//! The Rust peers, each run in its own process (`compare --peer NAME --workload W`), so no
//! peer inherits another's threads or heap: forkmap, forkmap through `read()` guards,
//! sequential, rayon with the same number of threads, and the copy baseline. Each prints
//! one JSON line: the wall time of every repetition, a checksum of the results and extras.
//!
//! Every timed call covers starting the workers (fork, or rayon's thread pool), running
//! the tasks, collecting the results in order and stopping the workers: forkmap forks per
//! `map` call, so every peer is timed the same way.

use std::time::{Duration, Instant};

use forkmap::ndarray::Array2;
use forkmap::{FrozenArray, Pool, SharedArray};
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::copy::copy_map;
use crate::sys;
use crate::work::{self, Params, Workload};

/// The Rust peers: (key, label) in report order.
pub(crate) const RUST_PEERS: [(&str, &str); 5] = [
    ("forkmap", "forkmap"),
    ("forkmap-guard", "forkmap, `read()` guard per task"),
    ("sequential", "sequential (one thread)"),
    ("rayon", "rayon (same thread count)"),
    ("copy", "copy baseline (fork per chunk, array sent to each)"),
];

/// Runs `peer` on `workload` and returns its JSON report.
pub(crate) fn run(
    peer: &str,
    workload: Workload,
    p: &Params,
    workers: usize,
    sleeps_ms: &[u64],
) -> Result<Value, String> {
    match workload {
        Workload::Tutorial => tutorial(peer, p),
        Workload::Fine => fine(peer, p, workers),
        Workload::Skewed => skewed(peer, p, workers),
        Workload::Memory => memory(peer, p, workers),
        Workload::Startup => startup(peer, p, workers),
        Workload::Records => crate::records::run(peer, p, workers),
        Workload::Few | Workload::Uneven => sleepers(peer, workload, p, workers, sleeps_ms),
    }
}

/// Wall and CPU times of some repetitions, and the last result.
pub(crate) struct Timed<T> {
    times: Vec<f64>,
    /// CPU seconds of this process (all its threads) per repetition.
    cpu_self: Vec<f64>,
    /// CPU seconds of the child processes reaped during each repetition.
    cpu_children: Vec<f64>,
    /// Minor page faults of this process, and of its reaped children, per repetition.
    faults: Vec<[u64; 2]>,
    last: T,
}

/// Times `reps` calls of `f`.
fn timed<T>(reps: usize, mut f: impl FnMut() -> Result<T, String>) -> Result<Timed<T>, String> {
    let mut t = Timed {
        times: Vec::with_capacity(reps),
        cpu_self: Vec::with_capacity(reps),
        cpu_children: Vec::with_capacity(reps),
        faults: Vec::with_capacity(reps),
        last: None,
    };
    for _ in 0..reps.max(1) {
        let [s0, c0] = sys::usage();
        let start = Instant::now();
        let out = f()?;
        t.times.push(start.elapsed().as_secs_f64());
        let [s1, c1] = sys::usage();
        t.cpu_self.push((s1.0 - s0.0).as_secs_f64());
        t.cpu_children.push((c1.0 - c0.0).as_secs_f64());
        t.faults.push([s1.1 - s0.1, c1.1 - c0.1]);
        t.last = Some(out);
    }
    Ok(Timed {
        times: t.times,
        cpu_self: t.cpu_self,
        cpu_children: t.cpu_children,
        faults: t.faults,
        last: t.last.expect("at least one repetition"),
    })
}

fn report(t: Timed<Vec<f64>>, mut extra: Value) -> Value {
    extra["cpu_self"] = json!(t.cpu_self);
    extra["cpu_children"] = json!(t.cpu_children);
    extra["faults"] = json!(t.faults);
    json!({ "times": t.times, "checksum": t.last.iter().sum::<f64>(), "extra": extra })
}

fn pool(workers: usize) -> Pool {
    Pool::new().workers(workers).progress(false)
}

fn rayon_pool(workers: usize) -> Result<rayon::ThreadPool, String> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .map_err(|e| e.to_string())
}

fn frozen(a: &Array2<f64>) -> Result<FrozenArray<f64, forkmap::ndarray::Ix2>, String> {
    SharedArray::from_array(a)
        .and_then(SharedArray::freeze)
        .map_err(|e| e.to_string())
}

fn unknown(peer: &str, w: Workload) -> Result<Value, String> {
    Err(format!(
        "peer {peer} does not run workload ({})",
        w.letter()
    ))
}

/// (a) Tutorial 1: 4 tasks, 0.1 s each, 2 workers, chunk size 1, `read()` as in DESIGN.md.
fn tutorial(peer: &str, p: &Params) -> Result<Value, String> {
    let (workers, n) = (2, 4);
    let sleep = Duration::from_secs_f64(p.tutorial_sleep_s);
    let a = work::random_fill(p.tutorial_n);
    let t = match peer {
        "forkmap" => {
            let b = SharedArray::<f64, _>::zeros((p.tutorial_n, p.tutorial_n))
                .map_err(|e| e.to_string())?;
            b.write().assign(&a);
            drop(a);
            timed(p.reps, || {
                pool(workers)
                    .chunk_size(1)
                    .map(0..n, |i| work::tutorial_task(&b.read(), i, sleep))
                    .map_err(|e| e.to_string())
            })?
        }
        "sequential" => timed(p.reps, || {
            Ok((0..n)
                .map(|i| work::tutorial_task(&a, i, sleep))
                .collect::<Vec<f64>>())
        })?,
        "rayon" => timed(p.reps, || {
            let tp = rayon_pool(workers)?;
            Ok(tp.install(|| {
                (0..n)
                    .into_par_iter()
                    .with_max_len(1)
                    .map(|i| work::tutorial_task(&a, i, sleep))
                    .collect::<Vec<f64>>()
            }))
        })?,
        "copy" => timed(p.reps, || {
            copy_map(&a, n, 1, workers, |v, i| work::tutorial_task(v, i, sleep))
        })?,
        _ => return unknown(peer, Workload::Tutorial),
    };
    Ok(report(t, json!({})))
}

/// (b) 1,000,000 tasks of about 1 us each, reading the shared array.
fn fine(peer: &str, p: &Params, workers: usize) -> Result<Value, String> {
    let (n, k, x) = (p.fine_tasks, p.fine_k, p.fine_x);
    let a = work::fill(p.side, p.side);
    let t = match peer {
        "forkmap" => {
            let b = frozen(&a)?;
            drop(a);
            timed(p.reps, || {
                pool(workers)
                    .map(0..n, |i| work::fine_task(&b, i, k, x))
                    .map_err(|e| e.to_string())
            })?
        }
        "forkmap-guard" => {
            let b = SharedArray::from_array(&a).map_err(|e| e.to_string())?;
            drop(a);
            timed(p.reps, || {
                pool(workers)
                    .map(0..n, |i| work::fine_task(&b.read(), i, k, x))
                    .map_err(|e| e.to_string())
            })?
        }
        "sequential" => timed(p.reps, || {
            Ok((0..n)
                .map(|i| work::fine_task(&a, i, k, x))
                .collect::<Vec<f64>>())
        })?,
        "rayon" => timed(p.reps, || {
            let tp = rayon_pool(workers)?;
            Ok(tp.install(|| {
                (0..n)
                    .into_par_iter()
                    .map(|i| work::fine_task(&a, i, k, x))
                    .collect::<Vec<f64>>()
            }))
        })?,
        "copy" => {
            let chunk = p.pool_map_chunk(n, workers);
            timed(p.reps, || {
                copy_map(&a, n, chunk, workers, |v, i| work::fine_task(v, i, k, x))
            })?
        }
        _ => return unknown(peer, Workload::Fine),
    };
    Ok(report(t, json!({})))
}

/// (c) 2,000 tasks, task `i` spinning `(i + 1) * unit` of CPU time.
fn skewed(peer: &str, p: &Params, workers: usize) -> Result<Value, String> {
    let (n, unit) = (p.skew_tasks, p.skew_unit_ns);
    let a = work::fill(p.side, p.side);
    let t = match peer {
        "forkmap" => {
            let b = frozen(&a)?;
            drop(a);
            timed(p.reps, || {
                pool(workers)
                    .map(0..n, |i| work::skew_task(&b, i, unit))
                    .map_err(|e| e.to_string())
            })?
        }
        // The sequential run is the measured total task CPU: once is enough.
        "sequential" => timed(1, || {
            Ok((0..n)
                .map(|i| work::skew_task(&a, i, unit))
                .collect::<Vec<f64>>())
        })?,
        "rayon" => timed(p.reps, || {
            let tp = rayon_pool(workers)?;
            Ok(tp.install(|| {
                (0..n)
                    .into_par_iter()
                    .map(|i| work::skew_task(&a, i, unit))
                    .collect::<Vec<f64>>()
            }))
        })?,
        "copy" => {
            let chunk = p.pool_map_chunk(n, workers);
            timed(p.reps, || {
                copy_map(&a, n, chunk, workers, |v, i| work::skew_task(v, i, unit))
            })?
        }
        _ => return unknown(peer, Workload::Skewed),
    };
    Ok(report(t, json!({})))
}

/// (d) A 200 MB array, one task per worker: each sums the whole array, then holds it until
/// every worker has done the same, while the harness samples the tree's PSS.
fn memory(peer: &str, p: &Params, workers: usize) -> Result<Value, String> {
    let (rows, cols) = (p.mem_rows, p.mem_cols);
    let hold = p.mem_hold(workers);
    let t = match peer {
        "forkmap" => {
            // Filled in place: no private 200 MB copy in the coordinator.
            let b = SharedArray::<f64, _>::zeros((rows, cols)).map_err(|e| e.to_string())?;
            for ((i, j), v) in b.write().indexed_iter_mut() {
                *v = work::value(i * cols + j);
            }
            let b = b.freeze().map_err(|e| e.to_string())?;
            timed(1, || {
                let deadline = Instant::now() + hold;
                pool(workers)
                    .chunk_size(1)
                    .map(0..workers, |_| work::mem_task(&b, deadline))
                    .map_err(|e| e.to_string())
            })?
        }
        "copy" => {
            // The caller holds the array in its own heap, as the tutorial's B.
            let a = work::fill(rows, cols);
            timed(1, || {
                let deadline = Instant::now() + hold;
                copy_map(&a, workers, 1, workers, |v, _| work::mem_task(v, deadline))
            })?
        }
        _ => return unknown(peer, Workload::Memory),
    };
    Ok(report(t, json!({})))
}

/// (e) One trivial task: from the call to the result in hand.
fn startup(peer: &str, p: &Params, workers: usize) -> Result<Value, String> {
    let a = work::fill(p.side, p.side);
    let reps = p.startup_reps;
    let t = match peer {
        "forkmap" => {
            let b = frozen(&a)?;
            drop(a);
            timed(reps, || {
                pool(workers)
                    .map([0], |i| b[[i, i]])
                    .map_err(|e| e.to_string())
            })?
        }
        "sequential" => timed(reps, || Ok(vec![std::hint::black_box(&a)[[0, 0]]]))?,
        "rayon" => timed(reps, || {
            let tp = rayon_pool(workers)?;
            Ok(tp.install(|| {
                [0usize]
                    .into_par_iter()
                    .map(|i| a[[i, i]])
                    .collect::<Vec<f64>>()
            }))
        })?,
        "copy" => timed(reps, || copy_map(&a, 1, 1, 1, |v, i| v[[i, i]]))?,
        _ => return unknown(peer, Workload::Startup),
    };
    let first = t.times.first().copied();
    Ok(report(t, json!({ "first": first })))
}

/// (g) and (h): task `i` sleeps `sleeps_ms[i]` and returns its index and its worker's pid.
/// forkmap chooses its own chunks: what is measured is its scheduler. Reports, besides
/// the times, the number of distinct worker pids that ran a task in each repetition.
fn sleepers(
    peer: &str,
    w: Workload,
    p: &Params,
    workers: usize,
    sleeps_ms: &[u64],
) -> Result<Value, String> {
    if peer != "forkmap" {
        return unknown(peer, w);
    }
    if sleeps_ms.is_empty() {
        return Err(format!("workload ({}) needs --sleeps", w.letter()));
    }
    let mut pids = Vec::with_capacity(p.reps);
    let t = timed(p.reps, || {
        let out = pool(workers)
            .map(0..sleeps_ms.len(), |i| {
                std::thread::sleep(Duration::from_millis(sleeps_ms[i]));
                (i as u64, std::process::id())
            })
            .map_err(|e| e.to_string())?;
        if let Some((pos, _)) = out.iter().enumerate().find(|(k, r)| r.0 != *k as u64) {
            return Err(format!("result {pos} is out of order"));
        }
        let mut ran: Vec<u32> = out.iter().map(|r| r.1).collect();
        ran.sort_unstable();
        ran.dedup();
        if ran.contains(&std::process::id()) {
            return Err("a task ran in the calling process, not in a worker".into());
        }
        pids.push(ran.len());
        Ok(out.iter().map(|r| r.0 as f64).collect::<Vec<f64>>())
    })?;
    Ok(report(t, json!({ "pids": pids })))
}
