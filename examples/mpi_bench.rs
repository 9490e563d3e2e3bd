//! What MPI costs forkmap on one machine (feature `mpi`): a skewed load over 2 ranks x 1
//! worker against 1 rank x 2 workers (same total workers), and the cost of one block.
//!
//! ```text
//! cargo build --release --features mpi --example mpi_bench
//! target/release/examples/mpi_bench [--tasks 2000] [--reps 5]   # launches mpirun itself
//! ```
//!
//! Skewed load: task `i` spins `(i + 1)` us of its thread's CPU time (as the comparison
//! harness's workload (c) does), so the total is `tasks * (tasks + 1) / 2` us
//! and the ideal makespan on 2 workers half of that. Rows: `Pool::map` with 2 workers (no
//! MPI), then `Cluster::map` under `mpirun --bind-to none -np 1` with 2 workers and
//! `-np 2` with 1 worker each. Block cost: a map of 200 trivial tasks cut into blocks of
//! one task (`block_time` of 1 ns), per block; against one `Pool::map` of one task (a
//! fork and reap of one worker), which every block pays too.

use std::process::Command;
use std::time::{Duration, Instant};

use forkmap::Pool;
use forkmap::mpi::Cluster;
use forkmap::mpi::rsmpi::{self, Threading, traits::*};

/// This thread's CPU time: a task spins on it, as the harness's (c) does, so time the
/// thread spends descheduled on this shared machine does not count as work done.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID always exists
    // on Linux. std offers no thread CPU clock.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn skew(i: usize) -> usize {
    let end = thread_cpu_ns() + (i as u64 + 1) * 1000;
    let mut x = 1.0f64;
    while thread_cpu_ns() < end {
        x = std::hint::black_box(x * 1.000_000_1);
    }
    i
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|p| args.get(p + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

/// Inside mpirun: time `reps` cluster maps of the skewed load, then the block cost.
fn rank(workers: usize, tasks: usize, reps: usize) -> Result<(), forkmap::Error> {
    let (universe, _) = rsmpi::initialize_with_threading(Threading::Multiple).expect("MPI");
    let world = universe.world();
    let pool = Pool::new().workers(workers).progress(false);
    let cluster = Cluster::new(&world, pool)?;
    let mut times = Vec::new();
    for _ in 0..reps {
        world.barrier();
        let t = Instant::now();
        let out = cluster.map(0..tasks, skew)?;
        world.barrier();
        times.push(t.elapsed());
        if let Some(out) = out {
            assert!(out.iter().copied().eq(0..tasks), "results out of order");
        }
    }
    let blocks = Cluster::new(&world, Pool::new().workers(1).progress(false))?
        .block_time(Duration::from_nanos(1));
    let mut per_block = Vec::new();
    for _ in 0..reps {
        world.barrier();
        let t = Instant::now();
        blocks.map(0..200, |i| i)?;
        world.barrier();
        per_block.push(t.elapsed() / 200 * world.size() as u32);
    }
    if cluster.is_root() {
        println!("skew_ns {}", median(times).as_nanos());
        println!("block_ns {}", median(per_block).as_nanos());
    }
    Ok(())
}

fn launch(np: usize, workers: usize, tasks: usize, reps: usize) -> (Duration, Duration) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("mpirun")
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .args(["-np", &np.to_string(), "-x", "FORKMAP_MPI_BENCH"])
        .arg(exe)
        .args(["--tasks", &tasks.to_string(), "--reps", &reps.to_string()])
        .args(["--workers", &workers.to_string()])
        .env("FORKMAP_MPI_BENCH", "rank")
        .output()
        .expect("run mpirun (Debian: openmpi-bin)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mpirun -np {np} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |key: &str| {
        let ns: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .expect("the root's figures")
            .trim()
            .parse()
            .unwrap();
        Duration::from_nanos(ns)
    };
    (get("skew_ns"), get("block_ns"))
}

fn main() -> Result<(), forkmap::Error> {
    let tasks = arg("--tasks", 2000);
    let reps = arg("--reps", 5);
    if std::env::var_os("FORKMAP_MPI_BENCH").is_some() {
        return rank(arg("--workers", 1), tasks, reps);
    }
    let ideal = Duration::from_micros((tasks * (tasks + 1) / 2) as u64) / 2;
    let pool = Pool::new().workers(2).progress(false);
    let fork = median(
        (0..reps * 10)
            .map(|_| {
                let t = Instant::now();
                Pool::new()
                    .workers(1)
                    .progress(false)
                    .map(0..1, |i| i)
                    .map(|_| t.elapsed())
            })
            .collect::<Result<_, _>>()?,
    );
    // The three configurations alternate, one repetition each, so a change in the load of
    // this shared machine hits them alike; the ratio is the median of the per-round ratios.
    let (mut local, mut one, mut two, mut blocks, mut ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        pool.map(0..tasks, skew)?;
        local.push(t.elapsed());
        let (a, _) = launch(1, 2, tasks, 1);
        let (b, block) = launch(2, 1, tasks, 1);
        ratios.push(b.as_secs_f64() / a.as_secs_f64());
        one.push(a);
        two.push(b);
        blocks.push(block);
    }
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let (local, one, two, block) = (median(local), median(one), median(two), median(blocks));
    let row = |name: &str, d: Duration| {
        println!(
            "| {name} | {:.3} s | {:.2}x | {:.2}x |",
            d.as_secs_f64(),
            d.as_secs_f64() / ideal.as_secs_f64(),
            d.as_secs_f64() / local.as_secs_f64()
        );
    };
    println!(
        "skewed load: {tasks} tasks, task i spins (i + 1) us of CPU; ideal on 2 workers {:.3} s; median of {reps}\n",
        ideal.as_secs_f64()
    );
    println!("| configuration | makespan | vs ideal | vs Pool::map |");
    println!("| --- | ---: | ---: | ---: |");
    row("Pool::map, 2 workers (no MPI)", local);
    row("Cluster::map, 1 rank x 2 workers", one);
    row("Cluster::map, 2 ranks x 1 worker", two);
    println!(
        "\n2 ranks x 1 worker / 1 rank x 2 workers, median of the rounds' ratios: {ratio:.3} \
         (rounds: {})",
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "block round trip (2 ranks, blocks of 1 task, request to result at the root, with \
         the block's fork of 1 worker): {:.1} us per block; a local Pool::map of 1 task \
         (fork + reap of 1 worker): {:.1} us",
        block.as_secs_f64() * 1e6,
        fork.as_secs_f64() * 1e6
    );
    Ok(())
}
