//! `forkmap::mpi` for real: this test binary re-runs itself as the ranks of an MPI job,
//! without mpirun (a singleton: one rank) and under
//! `mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2` and `-np 3`, and each
//! rank checks every result against a sequential run. Where `mpirun` is missing the
//! multi-rank tests say so and pass, except in CI (`CI=true`), where they fail.
#![cfg(feature = "mpi")]

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forkmap::mpi::Cluster;
use forkmap::mpi::rsmpi::{self, Threading, traits::Communicator};
use forkmap::{Error, Pool};

// ---------------------------------------------------------------------------------------
// The launcher side.

/// Where mpirun is, or `None` (after saying so) when it is absent outside CI.
fn mpirun() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("mpirun"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").ok().as_deref() != Some("true"),
            "mpirun is not installed, and CI must run the MPI tests (.ci/setup installs openmpi-bin)"
        );
        eprintln!("skipped: mpirun is not on the PATH (Debian: apt-get install openmpi-bin)");
    }
    found
}

struct Ran {
    code: Option<i32>,
    out: String,
    took: Duration,
}

/// Runs `cmd` to the end with a deadline, keeping what it printed (stdout and stderr).
fn run(mut cmd: Command, secs: u64) -> Ran {
    let began = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let mut pipes = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    let readers: Vec<_> = pipes
        .iter_mut()
        .map(|p| {
            let mut p = p.take().unwrap();
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = p.read_to_string(&mut s);
                s
            })
        })
        .collect();
    let status = common::wait_child(&mut child, secs);
    let out = readers
        .into_iter()
        .map(|r| r.join().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    Ran {
        code: status.code(),
        out,
        took: began.elapsed(),
    }
}

/// This binary again, as rank(s) running `test` in `role`.
fn ranks(
    np: Option<usize>,
    test: &str,
    role: &str,
    envs: &[(&str, &str)],
    bind_none: bool,
) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match np {
        None => Command::new(&exe),
        Some(np) => {
            let mut c = Command::new("mpirun");
            c.args(["--allow-run-as-root", "--oversubscribe"]);
            if bind_none {
                c.args(["--bind-to", "none"]);
            }
            c.args(["-np", &np.to_string(), "-x", "FORKMAP_TEST_ROLE"]);
            for (k, _) in envs {
                c.args(["-x", k]);
            }
            c.arg(&exe);
            c
        }
    };
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("FORKMAP_TEST_ROLE", role)
        .env("FORKMAP_MPI_MARK", format!("{}-{role}", std::process::id()));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// Processes that still carry this test run's marker for `role` (none may outlive a job).
fn marked(role: &str) -> Vec<i32> {
    let mark = format!("FORKMAP_MPI_MARK={}-{role}", std::process::id());
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|kv| kv == mark.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

fn launch(np: Option<usize>, test: &str, role: &str, envs: &[(&str, &str)]) -> Ran {
    let ran = run(ranks(np, test, role, envs, true), 240);
    assert!(
        common::wait_until(10, || marked(role).is_empty()),
        "processes left behind by {role}: {:?}",
        marked(role)
    );
    ran
}

fn expect_ok(ran: &Ran, lines: &str, count: usize) {
    assert_eq!(ran.code, Some(0), "job failed:\n{}", ran.out);
    assert_eq!(ran.out.matches(lines).count(), count, "{}", ran.out);
}

#[test]
fn single_rank_without_mpirun() {
    if let Some(role) = common::role() {
        return rank_main(&role);
    }
    let _d = common::deadline(300);
    let ran = launch(None, "single_rank_without_mpirun", "compare", &[]);
    expect_ok(&ran, "compare ok", 1);
}

#[test]
fn single_threaded_mpi_is_refused() {
    if let Some(role) = common::role() {
        return rank_main(&role);
    }
    let _d = common::deadline(120);
    let ran = launch(None, "single_threaded_mpi_is_refused", "threading", &[]);
    expect_ok(&ran, "threading ok", 1);
}

#[test]
fn two_and_three_ranks_match_a_sequential_run() {
    if let Some(role) = common::role() {
        return rank_main(&role);
    }
    let Some(_) = mpirun() else { return };
    let _d = common::deadline(600);
    for np in [2, 3] {
        let ran = launch(
            Some(np),
            "two_and_three_ranks_match_a_sequential_run",
            "compare",
            &[],
        );
        expect_ok(&ran, "compare ok", np);
        eprintln!("-np {np}: {:.1} s\n{}", ran.took.as_secs_f64(), ran.out);
    }
    // The path between nodes without RDMA: TCP only, no shared-memory transport.
    let test = "two_and_three_ranks_match_a_sequential_run";
    let ran = launch(Some(2), test, "compare", &[("OMPI_MCA_btl", "tcp,self")]);
    expect_ok(&ran, "compare ok", 2);
}

#[test]
fn crews_forked_before_mpi_init_serve_every_block() {
    if let Some(role) = common::role() {
        return rank_main(&role);
    }
    let Some(_) = mpirun() else { return };
    let _d = common::deadline(300);
    let test = "crews_forked_before_mpi_init_serve_every_block";
    let ran = launch(Some(3), test, "crew", &[]);
    expect_ok(&ran, "crew ok", 3);
}

#[test]
fn a_failure_on_rank_1_is_reported_with_its_rank_and_index() {
    if let Some(role) = common::role() {
        return rank_main(&role);
    }
    let Some(_) = mpirun() else { return };
    let _d = common::deadline(400);
    for np in [2, 3] {
        let test = "a_failure_on_rank_1_is_reported_with_its_rank_and_index";
        let ran = launch(Some(np), test, "fail", &[]);
        expect_ok(&ran, "fail ok", np);
    }
}

#[test]
fn differing_indices_are_an_error_on_every_rank() {
    if let Some(role) = common::role() {
        return rank_main(&role);
    }
    let Some(_) = mpirun() else { return };
    let _d = common::deadline(200);
    let ran = launch(
        Some(3),
        "differing_indices_are_an_error_on_every_rank",
        "mismatch",
        &[],
    );
    expect_ok(&ran, "mismatch ok", 3);
}

#[test]
fn a_stopped_rank_aborts_the_job_naming_it() {
    if let Some(role) = common::role() {
        return rank_main(&role);
    }
    let Some(_) = mpirun() else { return };
    let _d = common::deadline(200);
    let ran = launch(
        Some(2),
        "a_stopped_rank_aborts_the_job_naming_it",
        "hang",
        &[],
    );
    assert_ne!(ran.code, Some(0), "{}", ran.out);
    assert!(
        ran.out.contains("forkmap: rank 1 has sent nothing for"),
        "{}",
        ran.out
    );
    assert!(!ran.out.contains("hang returned"), "{}", ran.out);
    // rank_timeout is 3 s: the job ends in seconds, not at the test's deadline.
    assert!(ran.took < Duration::from_secs(60), "took {:?}", ran.took);
}

#[test]
fn mpiruns_default_binding_is_caught() {
    if let Some(role) = common::role() {
        return rank_main(&role);
    }
    let Some(_) = mpirun() else { return };
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: one CPU, so mpirun's binding cannot take any away");
        return;
    }
    let _d = common::deadline(200);
    let test = "mpiruns_default_binding_is_caught";
    // Plain `mpirun -np 2` binds each rank to one core on a 2-CPU machine.
    let ran = run(ranks(Some(2), test, "bound", &[], false), 120);
    expect_ok(&ran, "bound ok", 2);
    let envs = [("FORKMAP_WORKERS", "2")];
    let ran = run(ranks(Some(2), test, "bound-but-told", &envs, false), 120);
    expect_ok(&ran, "bound-but-told ok", 2);
}

#[test]
fn the_tutorial_example_runs_on_two_and_three_ranks() {
    if common::role().is_some() {
        return;
    }
    let Some(_) = mpirun() else { return };
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/mpi_tutorial");
    if !example.is_file() {
        assert!(
            std::env::var("CI").ok().as_deref() != Some("true"),
            "examples/mpi_tutorial was not built (CI runs the whole `cargo test --features mpi`)"
        );
        eprintln!(
            "skipped: {} not built (run the whole suite)",
            example.display()
        );
        return;
    }
    let _d = common::deadline(300);
    for np in ["2", "3"] {
        let mut cmd = Command::new("mpirun");
        cmd.args([
            "--allow-run-as-root",
            "--oversubscribe",
            "--bind-to",
            "none",
            "-np",
            np,
        ])
        .arg(&example)
        .args([
            "--n",
            "300",
            "--tasks",
            "40",
            "--sleep",
            "0.01",
            "--workers",
            "2",
        ]);
        let ran = run(cmd, 200);
        expect_ok(&ran, "matches the sequential run: true", 1);
    }
}

// ---------------------------------------------------------------------------------------
// The rank side.

/// A deterministic, skewed task: cost grows with `i % 97`.
fn work(i: usize) -> u64 {
    (0..(i % 97) * 40).fold(i as u64, |a, k| {
        a.wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(k as u64 | 1)
    })
}

fn call_indices() -> Vec<usize> {
    // Out of order, with repeats.
    (0..3000).map(|i| (i * 7919) % 2003).collect()
}

fn rank_main(role: &str) {
    let _d = common::deadline(150);
    if role == "threading" {
        let universe = rsmpi::initialize().expect("MPI initialises once");
        let err = Cluster::new(&universe.world(), Pool::new().workers(2)).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(
            err.to_string().contains("initialize_with_threading"),
            "{err}"
        );
        println!("threading ok");
        return;
    }
    if role == "crew" {
        return crew_rank();
    }
    let (universe, level) =
        rsmpi::initialize_with_threading(Threading::Multiple).expect("MPI initialises once");
    assert!(level >= Threading::Serialized, "{level:?}");
    let world = universe.world();
    let pool = Pool::new().workers(2).progress(false);
    if role == "bound" || role == "bound-but-told" {
        let made = Cluster::new(&world, pool);
        if role == "bound" {
            let err = made.unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::Config(_)), "{text}");
            for fix in [
                "--bind-to none",
                "--map-by ppr:1:node:PE=",
                "srun --cpus-per-task",
                "FORKMAP_WORKERS",
            ] {
                assert!(text.contains(fix), "{fix} missing in: {text}");
            }
        } else {
            let c = made.unwrap();
            let got = c.map_all(0..50, |i| i * 2).unwrap();
            assert_eq!(got, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        }
        println!("{role} ok");
        return;
    }
    let cluster = Cluster::new(&world, pool)
        .unwrap()
        .block_time(Duration::from_millis(20))
        .max_message_bytes(1000)
        .rank_timeout(Duration::from_secs(if role == "hang" { 3 } else { 60 }));
    let me = cluster.rank();
    // A failed check must end the job: unwinding would reach MPI_Finalize, which waits
    // for the other ranks, which wait in the next call.
    let checked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&cluster, role)));
    if checked.is_err() {
        eprintln!("rank {me}: {role} failed; aborting the job");
        world.abort(1);
    }
    // Forked workers carry this binary's name; a singleton's helper (orted) does not.
    let comm = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let mine = comm(std::process::id() as i32);
    let workers: Vec<i32> = common::children()
        .into_iter()
        .filter(|&c| comm(c) == mine)
        .collect();
    assert!(workers.is_empty(), "rank {me} left workers {workers:?}");
    println!("rank {me}: {role} ok");
}

fn scenario(cluster: &Cluster, role: &str) {
    let me = cluster.rank();
    match role {
        "compare" => compare(cluster),
        "fail" => fail(cluster),
        "mismatch" => mismatch(cluster),
        "hang" => {
            let got = cluster.map(0..4000, |i| {
                if me == 1 {
                    // A worker stops its own rank: the rank goes silent.
                    let ppid = std::os::unix::process::parent_id().to_string();
                    let _ = Command::new("kill").args(["-STOP", &ppid]).status();
                }
                std::thread::sleep(Duration::from_millis(2));
                i
            });
            println!("hang returned on rank {me}: {}", got.is_ok());
        }
        other => panic!("unknown role {other}"),
    }
}

/// Crews forked before `MPI_Init` serve every block of every call, forking nothing more.
fn crew_rank() {
    let pool = Pool::new().workers(2).progress(false);
    let mut maps = pool.spawn(work).unwrap();
    let mut folds = pool
        .spawn_fold(|| 0u64, |a: u64, i| a.wrapping_add(work(i)))
        .unwrap();
    let (universe, _) = rsmpi::initialize_with_threading(Threading::Multiple).unwrap();
    let world = universe.world();
    let cluster = Cluster::new(&world, pool)
        .unwrap()
        .block_time(Duration::from_millis(20));
    let me = cluster.rank();
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let indices = call_indices();
        let seq: Vec<u64> = indices.iter().map(|&i| work(i)).collect();
        for _ in 0..3 {
            let got = cluster
                .map_crew(&mut maps, indices.iter().copied())
                .unwrap();
            assert_eq!(got.is_some(), cluster.is_root());
            if let Some(got) = got {
                assert!(got == seq, "results differ from the sequential run");
            }
        }
        let got = cluster
            .map_results_crew(&mut maps, indices.iter().copied())
            .unwrap();
        if let Some(got) = got {
            assert!(got.into_iter().map(|r| r.unwrap()).eq(seq.iter().copied()));
        }
        let total = cluster
            .fold_crew(&mut folds, indices.iter().copied(), u64::wrapping_add)
            .unwrap();
        if let Some(total) = total {
            assert_eq!(total, seq.iter().fold(0u64, |a, &b| a.wrapping_add(b)));
        }
        // Two workers each, forked once, whatever the number of blocks and calls.
        assert_eq!(maps.forks(), 2);
        assert_eq!(folds.forks(), 2);
    }));
    if checked.is_err() {
        eprintln!("rank {me}: crew failed; aborting the job");
        world.abort(1);
    }
    println!("rank {me}: crew ok");
}

fn compare(cluster: &Cluster) {
    let me = cluster.rank();
    let root = cluster.is_root();
    let indices = call_indices();
    let seq: Vec<u64> = indices.iter().map(|&i| work(i)).collect();

    // map: results on the root, in the order of the indices; which rank ran each.
    let got = cluster
        .map(indices.iter().copied(), |i| (work(i), me))
        .unwrap();
    assert_eq!(got.is_some(), root);
    if let Some(got) = got {
        let values: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert!(values == seq, "results differ from the sequential run");
        for r in 0..cluster.size() {
            let n = got.iter().filter(|g| g.1 == r).count();
            assert!(n > 0, "rank {r} ran nothing");
            println!("rank {r} ran {n} of {} tasks", got.len());
        }
    }

    // map_results: every slot Ok.
    let got = cluster.map_results(indices.iter().copied(), work).unwrap();
    if let Some(got) = got {
        let values: Vec<u64> = got.into_iter().map(|r| r.unwrap()).collect();
        assert!(values == seq, "results differ from the sequential run");
    }

    // fold with a reduce that is associative but not commutative: the order survives.
    let got = cluster
        .fold(
            indices.iter().copied(),
            Vec::new,
            |mut v, i| {
                v.push(i);
                v
            },
            |mut a, b| {
                a.extend(b);
                a
            },
        )
        .unwrap();
    assert_eq!(got.is_some(), root);
    if let Some(got) = got {
        assert!(got == indices, "the fold lost the order of the indices");
    }
    let total = cluster
        .fold_all(
            indices.iter().copied(),
            || 0u64,
            |a, i| a.wrapping_add(work(i)),
            u64::wrapping_add,
        )
        .unwrap();
    assert_eq!(total, seq.iter().fold(0u64, |a, &b| a.wrapping_add(b)));

    // map_all: every rank gets them; results of 3 KB each travel in 1000-byte pieces.
    let got = cluster
        .map_all(0..400, |i| vec![(i % 251) as u8; 3000])
        .unwrap();
    assert_eq!(got.len(), 400);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, v)| v.len() == 3000 && v.iter().all(|&b| b == (i % 251) as u8))
    );

    // Nothing to do is no error.
    let empty = cluster.map(std::iter::empty(), work).unwrap();
    assert_eq!(empty, root.then(Vec::new));
}

fn fail(cluster: &Cluster) {
    let me = cluster.rank();
    let indices = call_indices();

    // map: the first failure on rank 1 stops every rank, which all report it.
    let err = cluster
        .map(indices.iter().copied(), |i| {
            assert!(!(me == 1 && i % 10 == 3), "rank one refuses {i}");
            work(i)
        })
        .unwrap_err();
    let Error::OnRank { rank, ref error } = err else {
        panic!("rank {me}: {err}")
    };
    let Error::TaskPanicked {
        index,
        position,
        ref message,
        ..
    } = **error
    else {
        panic!("rank {me}: {err}")
    };
    assert_eq!(rank, 1, "{err}");
    assert_eq!(index % 10, 3, "{err}");
    assert_eq!(err.task_index(), Some(index));
    // The position is the task's place in the whole call's indices.
    assert_eq!(indices[position], index, "{err}");
    assert!(message.contains("rank one refuses"), "{err}");
    assert!(err.to_string().starts_with("rank 1: task "), "{err}");

    // The cluster is whole again: the next call is exact.
    let got = cluster.map(0..500, work).unwrap();
    if let Some(got) = got {
        assert!(
            got == (0..500).map(work).collect::<Vec<_>>(),
            "results differ"
        );
    }

    // map_results: tasks failing on rank 1 (a panic, a worker that aborts) take their slots.
    let pool_cluster = cluster;
    let got = pool_cluster
        .map_results(indices.iter().copied(), |i| {
            if me == 1 && i % 10 == 3 {
                panic!("rank one refuses {i}");
            }
            if me == 1 && i % 10 == 7 {
                std::process::abort();
            }
            (work(i), me)
        })
        .unwrap();
    if let Some(got) = got {
        let mut failed = 0;
        for (p, slot) in got.iter().enumerate() {
            match slot {
                Ok((v, _)) => assert_eq!(*v, work(indices[p])),
                Err(e) => {
                    failed += 1;
                    let Error::OnRank { rank: 1, error } = e else {
                        panic!("{e}")
                    };
                    let i = e.task_index().expect("a task's error");
                    assert_eq!(i, indices[p], "{e}");
                    match **error {
                        Error::TaskPanicked { position, .. } => {
                            assert_eq!(i % 10, 3, "{e}");
                            assert_eq!(position, p, "{e}");
                        }
                        Error::WorkerDied {
                            task: Some((_, position)),
                            ..
                        } => {
                            assert_eq!(i % 10, 7, "{e}");
                            assert_eq!(position, p, "{e}");
                        }
                        _ => panic!("{e}"),
                    }
                }
            }
        }
        assert!(got.iter().any(|s| matches!(s, Ok((_, 1)))) || failed > 0);
        println!("map_results: {failed} tasks failed on rank 1");
    }
}

fn mismatch(cluster: &Cluster) {
    let me = cluster.rank();
    let n = if me == 1 { 101 } else { 100 };
    let err = cluster.map(0..n, work).unwrap_err();
    assert!(
        err.to_string()
            .contains("rank 1 has 101 indices, rank 0 has 100"),
        "{err}"
    );
    let err = cluster
        .map(
            (0..100).map(|i| if me == 1 && i == 50 { 7 } else { i }),
            work,
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("rank 1's 100 indices differ from rank 0's"),
        "{err}"
    );
    let err = if me == 1 {
        cluster
            .fold(0..10, || 0, |a, i| a + i, |a, b| a + b)
            .map(|_| ())
    } else {
        cluster.map(0..10, work).map(|_| ())
    }
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("rank 1 called Cluster::fold while rank 0 called Cluster::map"),
        "{err}"
    );
    // And then all agree again.
    let got = cluster.map_all(0..100, work).unwrap();
    assert!(
        got == (0..100).map(work).collect::<Vec<_>>(),
        "results differ"
    );
}
