//! Tutorial 1, the forkmap way: a large N x N `f64` array placed once in shared memory,
//! read by worker processes without a copy, then written under the array's lock.
//!
//! The Python original uses `tqdm.contrib.concurrent.process_map` with a
//! `multiprocessing.Array` viewed through numpy (N = 1000, indices [0, 1, 2, 3], 0.1 s of
//! simulated work per task, 2 workers, chunksize 1).
//!
//! ```text
//! cargo run --release --example tutorial -- [--n 1000] [--tasks 4] [--workers 2] [--sleep 0.1] [--chunk-size 1]
//! ```

use std::time::{Duration, Instant};

use forkmap::ndarray::{Array2, s};
use forkmap::{Pool, SharedArray};

struct Args {
    n: usize,
    tasks: usize,
    workers: usize,
    sleep: f64,
    chunk_size: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        n: 1000,
        tasks: 4,
        workers: 2,
        sleep: 0.1,
        chunk_size: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err("usage: tutorial [--n N] [--tasks T] [--workers W] [--sleep SECONDS] [--chunk-size C]".into());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--n" => args.n = value.parse().map_err(|e| bad(&e))?,
            "--tasks" => args.tasks = value.parse().map_err(|e| bad(&e))?,
            "--workers" => args.workers = value.parse().map_err(|e| bad(&e))?,
            "--sleep" => args.sleep = value.parse().map_err(|e| bad(&e))?,
            "--chunk-size" => args.chunk_size = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag} (try --help)")),
        }
    }
    if args.tasks > args.n {
        return Err(format!(
            "--tasks {} exceeds --n {}: every task reads a diagonal element",
            args.tasks, args.n
        ));
    }
    if !(args.sleep.is_finite() && args.sleep >= 0.0) {
        return Err(format!(
            "--sleep {} must be a non-negative number of seconds",
            args.sleep
        ));
    }
    Ok(args)
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let Args {
        n,
        tasks,
        workers,
        sleep,
        chunk_size,
    } = args;
    let work = Duration::from_secs_f64(sleep);

    // 1. The shared array: one copy in shared memory, filled with uniform random numbers.
    let b = SharedArray::<f64, _>::zeros((n, n))?;
    let mut rng = fastrand::Rng::with_seed(2024);
    b.write()
        .assign(&Array2::from_shape_simple_fn((n, n), || rng.f64()));
    println!(
        "first 2x2 block of the shared array:\n{}",
        b.read().slice(s![..2, ..2])
    );

    // 2. The indices to work on, and the pool: 2 workers, chunk size 1, a progress bar.
    let agrid: Vec<usize> = (0..tasks).collect();
    let pool = Pool::new().workers(workers).chunk_size(chunk_size);

    // 3. Read-only tasks: each worker reads B[a, a] from the same memory, no copy.
    let t = Instant::now();
    let results: Vec<f64> = pool.map(agrid.iter().copied(), |a| {
        std::thread::sleep(work); // simulated work
        b.read()[[a, a]]
    })?;
    println!(
        "\nparallel results: {results:?}  ({:.3} s)",
        t.elapsed().as_secs_f64()
    );

    // 4. Writing tasks: each one writes its diagonal element under the array's lock.
    let t = Instant::now();
    let written: Vec<f64> = pool.map(agrid.iter().copied(), |a| {
        std::thread::sleep(work);
        let mut guard = b.write();
        guard[[a, a]] = -(a as f64) - 1.0;
        guard[[a, a]]
    })?;
    println!(
        "\nwritten by the workers: {written:?}  ({:.3} s)",
        t.elapsed().as_secs_f64()
    );
    let seen = b.read();
    println!(
        "first 2x2 block as the parent sees it now:\n{}",
        seen.slice(s![..2, ..2])
    );
    let all_seen = agrid.iter().all(|&a| seen[[a, a]] == -(a as f64) - 1.0);
    println!("parent sees every write: {all_seen}");
    if !all_seen {
        return Err("a write made in a worker is missing in the parent".into());
    }
    Ok(())
}
