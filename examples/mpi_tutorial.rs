//! Tutorial 1 across MPI ranks (feature `mpi`): the same N x N `f64` array in shared memory
//! on every rank, read by every rank's workers without a copy, then written under its lock.
//!
//! Each rank (node) has its own shared array: workers share memory with their own rank,
//! never across nodes. So every rank fills its copy the same way (here from one seed; in
//! real work, by reading the same file), and what workers write lands in their own rank's
//! copy; `map_all` then gives every rank all the written values, to apply to its copy.
//!
//! ```text
//! cargo build --release --features mpi --example mpi_tutorial
//! mpirun --bind-to none -np 2 target/release/examples/mpi_tutorial [--n 1000] [--tasks 4] [--workers 2] [--sleep 0.1]
//! ```

use std::time::{Duration, Instant};

use forkmap::mpi::Cluster;
use forkmap::mpi::rsmpi::{self, Threading, traits::Communicator};
use forkmap::ndarray::Array2;
use forkmap::{Pool, SharedArray};

struct Args {
    n: usize,
    tasks: usize,
    workers: usize,
    sleep: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        n: 1000,
        tasks: 4,
        workers: 2,
        sleep: 0.1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--n" => args.n = value.parse().map_err(|e| bad(&e))?,
            "--tasks" => args.tasks = value.parse().map_err(|e| bad(&e))?,
            "--workers" => args.workers = value.parse().map_err(|e| bad(&e))?,
            "--sleep" => args.sleep = value.parse().map_err(|e| bad(&e))?,
            _ => {
                return Err(format!(
                    "unknown flag {flag}; usage: mpi_tutorial [--n N] [--tasks T] [--workers W] [--sleep SECONDS]"
                ));
            }
        }
    }
    if args.tasks > args.n {
        return Err(format!("--tasks {} exceeds --n {}", args.tasks, args.n));
    }
    if !(args.sleep.is_finite() && args.sleep >= 0.0) {
        return Err(format!("--sleep {} must be >= 0", args.sleep));
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
    // Threading::Multiple: the cluster's MPI traffic runs on a second thread.
    let Some((universe, _)) = rsmpi::initialize_with_threading(Threading::Multiple) else {
        eprintln!("MPI was already initialised");
        return std::process::ExitCode::FAILURE;
    };
    let world = universe.world();
    match run(&world, args) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rank {}: error: {e}", world.rank());
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(world: &impl Communicator, args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let Args {
        n,
        tasks,
        workers,
        sleep,
    } = args;
    let work = Duration::from_secs_f64(sleep);
    let cluster = Cluster::new(world, Pool::new().workers(workers).chunk_size(1))?;
    let rank = cluster.rank();

    // 1. The shared array, filled the same way on every rank (one seed for all).
    let b = SharedArray::<f64, _>::zeros((n, n))?;
    let mut rng = fastrand::Rng::with_seed(2024);
    b.write()
        .assign(&Array2::from_shape_simple_fn((n, n), || rng.f64()));
    let agrid: Vec<usize> = (0..tasks).collect();

    // 2. Read-only tasks over every rank's workers: each reads B[a, a] from its rank's copy.
    let t = Instant::now();
    let read = cluster.map(agrid.iter().copied(), |a| {
        std::thread::sleep(work);
        b.read()[[a, a]]
    })?;
    let read_secs = t.elapsed().as_secs_f64();

    // 3. Writing tasks: each writes its diagonal element in its own rank's copy, under the
    //    lock; every rank gets all the written values and applies them to its copy.
    let t = Instant::now();
    let written = cluster.map_all(agrid.iter().copied(), |a| {
        std::thread::sleep(work);
        let mut guard = b.write();
        guard[[a, a]] = -(a as f64) - 1.0;
        guard[[a, a]]
    })?;
    let write_secs = t.elapsed().as_secs_f64();
    let own = agrid
        .iter()
        .filter(|&&a| b.read()[[a, a]] == -(a as f64) - 1.0)
        .count();
    {
        let mut guard = b.write();
        for (&a, &v) in agrid.iter().zip(&written) {
            guard[[a, a]] = v;
        }
    }
    println!("rank {rank}: its workers wrote {own} of {tasks} elements into its copy");
    let all_applied = agrid.iter().all(|&a| b.read()[[a, a]] == -(a as f64) - 1.0);

    // 4. On the root: compare with a sequential run of the same workload.
    let Some(read) = read else {
        return Ok(all_applied);
    };
    let mut rng = fastrand::Rng::with_seed(2024);
    let fresh = Array2::from_shape_simple_fn((n, n), || rng.f64());
    let seq_read: Vec<f64> = agrid.iter().map(|&a| fresh[[a, a]]).collect();
    let seq_written: Vec<f64> = agrid.iter().map(|&a| -(a as f64) - 1.0).collect();
    println!(
        "parallel results on {} ranks: {read:?}  ({read_secs:.3} s)",
        cluster.size()
    );
    println!("written by the workers: {written:?}  ({write_secs:.3} s)");
    let same = read == seq_read && written == seq_written && all_applied;
    println!("matches the sequential run: {same}");
    Ok(same)
}
