//! What a call costs when the caller has a big private heap: a forking `Pool::map` (fork
//! the workers, run, reap them) against a call on a `Crew` forked once (`Pool::spawn`),
//! and the forking map again under `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` and with the
//! same amount of memory in a `SharedArray` instead of the heap, for 0 to 4 GiB and 1 to 8
//! workers (issue 9, items 2 and 10).
//!
//! ```text
//! cargo bench --bench crew                        # 0, 1, 2, 4 GiB x 1, 2, 4, 8 workers, 3 rounds
//! cargo bench --bench crew -- --quick             # 0 and 1 GiB x 1 and 2 workers, 1 round
//! cargo bench --bench crew -- --heaps 4 --workers 2 --calls 20
//! ```
//!
//! Every size runs in child processes of this program (`--child`), so that the heap is the
//! caller's own and the tunable, which glibc reads at start, applies: one child per way of
//! holding the memory (heap, heap with the tunable, `SharedArray`), in an order that
//! rotates, `--rounds` times (3 by default). A child allocates the heap with `malloc`
//! (`Vec`s of 256 MiB, every page written, so it is resident) or fills a `SharedArray`,
//! then for each worker count makes a crew, times its first call (spawn included) and then
//! alternates forking maps and crew calls, 256 trivial tasks each. Times are medians over
//! every call of every round; ratios are taken within one run, as the machine is shared.
//! The child says how much of its heap the kernel backed with transparent huge pages
//! (`AnonHugePages`): the tunable only helps where
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use forkmap::ndarray::Ix1;
use forkmap::{Pool, SharedArray};

/// Tasks per call: trivial ones, enough for every worker to get some.
const TASKS: usize = 256;
/// The heap is made of blocks of this size, as a program's big buffers would be.
const BLOCK: usize = 256 << 20;
const TUNABLE: &str = "glibc.malloc.hugetlb=1";

/// What the command line asks for.
struct Args {
    heaps: Vec<usize>,
    workers: Vec<usize>,
    calls: usize,
    rounds: usize,
}

impl Args {
    fn parse(args: &[String]) -> Args {
        let quick = args.iter().any(|a| a == "--quick");
        let mut out = if quick {
            Args {
                heaps: vec![0, 1],
                workers: vec![1, 2],
                calls: 4,
                rounds: 1,
            }
        } else {
            Args {
                heaps: vec![0, 1, 2, 4],
                workers: vec![1, 2, 4, 8],
                calls: 6,
                rounds: 3,
            }
        };
        let list = |s: &str| -> Vec<usize> {
            s.split(',')
                .map(|x| x.parse().unwrap_or_else(|_| panic!("not a number: {x}")))
                .collect()
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
            match a.as_str() {
                "--heaps" => out.heaps = list(value()),
                "--workers" => out.workers = list(value()),
                "--calls" => out.calls = list(value())[0],
                "--rounds" => out.rounds = list(value())[0],
                _ => {}
            }
        }
        out
    }
}

/// How the child holds its memory.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Mode {
    /// `malloc`ed and written: private to the process, copied on write.
    Heap,
    /// The same under `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`.
    Huge,
    /// A `SharedArray`: a shared mapping.
    Shared,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Heap, Mode::Huge, Mode::Shared];

    fn arg(self) -> &'static str {
        match self {
            Mode::Heap => "heap",
            Mode::Huge => "huge",
            Mode::Shared => "shared",
        }
    }
}

/// Which call a time is for.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    /// `Pool::map`: fork, run, reap.
    Forking,
    /// `Pool::spawn` and the crew's first call.
    CrewFirst,
    /// A crew call after the first.
    Crew,
}

impl Kind {
    fn parse(s: &str) -> Kind {
        match s {
            "forking" => Kind::Forking,
            "crew_first" => Kind::CrewFirst,
            "crew" => Kind::Crew,
            _ => panic!("unknown kind {s}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Forking => "forking",
            Kind::CrewFirst => "crew_first",
            Kind::Crew => "crew",
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        child(&args[at + 1..]);
        return;
    }
    let args = Args::parse(&args);
    print_machine();
    // (size, mode, workers, kind) -> seconds
    let mut times: BTreeMap<(usize, Mode, usize, Kind), Vec<f64>> = BTreeMap::new();
    let mut huge: BTreeMap<(usize, Mode), u64> = BTreeMap::new();
    let mut restarts: BTreeMap<usize, usize> = BTreeMap::new();
    for &heap in &args.heaps {
        for round in 0..args.rounds {
            for k in 0..Mode::ALL.len() {
                let mode = Mode::ALL[(k + round) % Mode::ALL.len()];
                let mut out = run_child(heap, mode, &args);
                // A child in which glibc ignored the tunable says so: start another.
                for _ in 0..20 {
                    if !out.starts_with("no_thp") {
                        break;
                    }
                    *restarts.entry(heap).or_default() += 1;
                    out = run_child(heap, mode, &args);
                }
                assert!(!out.starts_with("no_thp"), "glibc never applied {TUNABLE}");
                for line in out.lines() {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    match f.as_slice() {
                        ["time", w, kind, secs] => times
                            .entry((heap, mode, w.parse().unwrap(), Kind::parse(kind)))
                            .or_default()
                            .push(secs.parse().unwrap()),
                        ["huge_kb", kb] => {
                            huge.insert((heap, mode), kb.parse().unwrap());
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    report(&args, &times, &huge, &restarts);
}

/// The machine's state, for the record.
fn print_machine() {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_else(|e| format!("({e})"));
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(String::new, |s| s.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: {cpu}, {cores} cores; Linux {}; load average {}",
        read("/proc/sys/kernel/osrelease").trim(),
        read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "transparent_hugepage/enabled: {}; defrag: {}",
        read("/sys/kernel/mm/transparent_hugepage/enabled").trim(),
        read("/sys/kernel/mm/transparent_hugepage/defrag").trim()
    );
    println!("{TASKS} trivial tasks per call; times are medians over every call\n");
}

/// Runs one child for `heap` GiB and returns what it printed.
fn run_child(heap: usize, mode: Mode, args: &Args) -> String {
    let exe = std::env::current_exe().expect("this program's path");
    let mut cmd = Command::new(exe);
    cmd.arg("--child")
        .arg(mode.arg())
        .arg(heap.to_string())
        .arg(args.calls.to_string())
        .args(args.workers.iter().map(usize::to_string));
    if mode == Mode::Huge {
        let env = match std::env::var("GLIBC_TUNABLES") {
            Ok(old) if !old.is_empty() => format!("{old}:{TUNABLE}"),
            _ => TUNABLE.to_string(),
        };
        cmd.env("GLIBC_TUNABLES", env);
    } else {
        cmd.env_remove("GLIBC_TUNABLES");
    }
    let out = cmd.output().expect("start the child");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child for {heap} GiB ({mode:?}) failed: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `--child heap|huge|shared GIB CALLS WORKERS...`: allocates the memory, then times the
/// calls.
fn child(args: &[String]) {
    let shared = args[0] == "shared";
    let n: Vec<usize> = args[1..]
        .iter()
        .map(|a| a.parse().expect("number"))
        .collect();
    let (heap_gib, calls, worker_counts) = (n[0], n[1], &n[2..]);
    let tunable = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains(TUNABLE));
    let blocks = if shared {
        0
    } else {
        heap_gib * ((1 << 30) / BLOCK)
    };
    // `vec![1; n]` writes every byte: the heap is resident, and private to this process.
    let mut heap: Vec<Vec<u8>> = Vec::with_capacity(blocks);
    for b in 0..blocks {
        heap.push(vec![b as u8 | 1; BLOCK]);
        if b == 0 && tunable && smaps_field("AnonHugePages:") == 0 {
            // glibc 2.35 and 2.36 compare the THP mode they read from sysfs without
            // terminating the string, so the tunable takes effect in some processes only.
            println!("no_thp");
            return;
        }
    }
    let array = shared
        .then(|| {
            let a = SharedArray::<u8, Ix1>::zeros(heap_gib << 30).expect("shared array");
            a.write().fill(1);
            a
        })
        .filter(|_| heap_gib > 0);
    println!("huge_kb {}", smaps_field("AnonHugePages:"));
    for &w in worker_counts {
        let pool = Pool::new().workers(w).progress(false);
        let f = |i: usize| i as u64 * 2;
        let want: Vec<u64> = (0..TASKS).map(f).collect();
        let time = |kind: Kind, call: &mut dyn FnMut() -> Vec<u64>| {
            let t = Instant::now();
            let out = call();
            let secs = t.elapsed().as_secs_f64();
            assert!(out == want, "wrong results");
            println!("time {w} {} {secs:.9}", kind.name());
        };
        // One forking map first, so both start from a warm coordinator.
        assert!(pool.map(0..TASKS, f).expect("map") == want);
        let mut crew = None;
        time(Kind::CrewFirst, &mut || {
            let c = crew.insert(pool.spawn(f).expect("spawn"));
            c.map(0..TASKS).expect("crew map")
        });
        let crew = crew.as_mut().expect("crew");
        for _ in 0..calls {
            time(Kind::Forking, &mut || pool.map(0..TASKS, f).expect("map"));
            time(Kind::Crew, &mut || crew.map(0..TASKS).expect("crew map"));
        }
        assert_eq!(crew.forks(), w as u64, "the crew forked again");
    }
    black_box((&heap, &array));
}

/// A field of `/proc/self/smaps_rollup`, in kB.
fn smaps_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn ms(secs: f64) -> String {
    if secs < 0.01 {
        format!("{:.3} ms", secs * 1e3)
    } else {
        format!("{:.1} ms", secs * 1e3)
    }
}

fn report(
    args: &Args,
    times: &BTreeMap<(usize, Mode, usize, Kind), Vec<f64>>,
    huge: &BTreeMap<(usize, Mode), u64>,
    restarts: &BTreeMap<usize, usize>,
) {
    for &heap in &args.heaps {
        let mib = |m| huge.get(&(heap, m)).copied().unwrap_or(0) / 1024;
        println!(
            "{heap} GiB: AnonHugePages {} MiB without the tunable, {} MiB with it \
             (children restarted because glibc ignored the tunable: {})",
            mib(Mode::Heap),
            mib(Mode::Huge),
            restarts.get(&heap).copied().unwrap_or(0)
        );
    }
    println!(
        "\n| memory | workers | forking `map` | forking `map`, hugetlb=1 \
         | forking `map`, memory in a `SharedArray` | crew: spawn + first call \
         | crew call after the first | forking / crew | hugetlb forking / crew |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &heap in &args.heaps {
        for &w in &args.workers {
            let m = |mode: Mode, kind: Kind| {
                times
                    .get(&(heap, mode, w, kind))
                    .map_or(f64::NAN, |v| median(v))
            };
            // Crew calls of both heap children: the tunable does not change them.
            let crew_all: Vec<f64> = [Mode::Heap, Mode::Huge]
                .iter()
                .flat_map(|&m| times.get(&(heap, m, w, Kind::Crew)).into_iter().flatten())
                .copied()
                .collect();
            let crew = median(&crew_all);
            let (fork, fork_huge) = (m(Mode::Heap, Kind::Forking), m(Mode::Huge, Kind::Forking));
            println!(
                "| {heap} GiB | {w} | {} | {} | {} | {} | {} | {:.0}x | {:.0}x |",
                ms(fork),
                ms(fork_huge),
                ms(m(Mode::Shared, Kind::Forking)),
                ms(m(Mode::Heap, Kind::CrewFirst)),
                ms(crew),
                fork / crew,
                fork_huge / crew
            );
        }
    }
    let calls = args.calls * args.rounds;
    println!(
        "\n{calls} forking calls per cell and column, {} crew calls per cell (from the heap \
         children, with and without the tunable); {} first calls per cell",
        2 * calls,
        args.rounds
    );
}
