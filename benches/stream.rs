//! Streaming results: 2,000,000 tasks each returning 1 KB (`vec![i as u8; 1024]`),
//! consumed through `Pool::imap` and `Pool::imap_unordered` (one byte of each result
//! summed, the rest dropped), against `Pool::map` collecting all 2 GB first and against a
//! crew mapping chunks of 16,384 tasks (issue 9, item 3): the coordinator's peak resident
//! memory and the throughput, side by side.
//!
//! ```text
//! cargo bench --bench stream                 # 2,000,000 tasks, 2 workers, 5 rounds
//! cargo bench --bench stream -- --quick      # 200,000 tasks, 2 rounds
//! cargo bench --bench stream -- --tasks 500000 --workers 2 --rounds 3
//! cargo bench --bench stream -- --tasks 20000000 --payload 1   # the coordinator's cost per task
//! ```
//!
//! Every run of a variant is a child process of this program (`--child`), whose peak
//! resident size (`VmHWM` of `/proc/self/status`, read by the child after its run) is the
//! coordinator's alone: the workers are processes of their own. Each round runs every
//! variant once, in an order that rotates from round to round, since the machine is
//! shared. Times are whole calls (fork, run, consume, reap), medians over the rounds;
//! ratios are variant / `map` in the same run.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use forkmap::Pool;

/// Bytes per result, unless `--payload` says otherwise.
const PAYLOAD: usize = 1024;
/// Tasks per call of the crew variant.
const CHUNK: usize = 16_384;

const VARIANTS: [(&str, &str); 4] = [
    ("map", "`Pool::map`, all results collected, then summed"),
    ("imap", "`Pool::imap` (in order)"),
    ("imap_unordered", "`Pool::imap_unordered` (as completed)"),
    ("crew_chunks", "`Crew::map` over chunks of 16,384 tasks"),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        child(&args[at + 1..]);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (mut tasks, mut workers, mut rounds, mut payload) = if quick {
        (200_000, 2, 2, PAYLOAD)
    } else {
        (2_000_000, 2, 5, PAYLOAD)
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || -> usize {
            let v = it.next().unwrap_or_else(|| panic!("{a} needs a value"));
            v.parse().unwrap_or_else(|_| panic!("not a number: {v}"))
        };
        match a.as_str() {
            "--tasks" => tasks = value(),
            "--workers" => workers = value(),
            "--rounds" => rounds = value(),
            "--payload" => payload = value(),
            _ => {}
        }
    }
    assert!(payload > 0, "--payload must be at least 1");
    print_machine(tasks, workers, rounds, payload);
    let mut secs: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut hwm: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for round in 0..rounds {
        for k in 0..VARIANTS.len() {
            let (name, _) = VARIANTS[(k + round) % VARIANTS.len()];
            let (s, kb) = run_child(name, [tasks, workers, payload]);
            secs.entry(name).or_default().push(s);
            hwm.entry(name).or_default().push(kb);
        }
    }
    let map = median(&secs["map"]);
    println!(
        "| consumer | median | min | tasks/s | MB/s of results | vs `map` | coordinator peak RSS (median, max) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, label) in VARIANTS {
        let s = &secs[name];
        let m = median(s);
        let h = &hwm[name];
        let mut hs = h.clone();
        hs.sort_unstable();
        println!(
            "| {label} | {:.3} s | {:.3} s | {:.0} | {:.0} | {:.2}x | {:.1} MB, {:.1} MB |",
            m,
            s.iter().copied().fold(f64::INFINITY, f64::min),
            tasks as f64 / m,
            (tasks * payload) as f64 / 1e6 / m,
            m / map,
            hs[hs.len() / 2] as f64 / 1e3,
            hs[hs.len() - 1] as f64 / 1e3,
        );
    }
    println!(
        "\n{rounds} rounds; every time is a child's whole call; MB = 10^6 bytes; RSS from VmHWM"
    );
}

fn print_machine(tasks: usize, workers: usize, rounds: usize, payload: usize) {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(String::new, |s| s.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let loadavg = read("/proc/loadavg");
    let load: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    let load = load.join(" ");
    println!(
        "machine: {cpu}, {cores} cores; Linux {}; load average {load}",
        read("/proc/sys/kernel/osrelease").trim()
    );
    println!(
        "{tasks} tasks x {payload} B ({:.0} MB of results), {workers} workers, {rounds} rounds\n",
        (tasks * payload) as f64 / 1e6
    );
}

/// Runs one variant in a child (tasks, workers, payload); its time in seconds and its
/// peak RSS in kB.
fn run_child(name: &str, numbers: [usize; 3]) -> (f64, u64) {
    let exe = std::env::current_exe().expect("this program's path");
    let out = Command::new(exe)
        .args(["--child", name])
        .args(numbers.map(|n| n.to_string()))
        .output()
        .expect("start the child");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let f: Vec<&str> = text.split_whitespace().collect();
    match f.as_slice() {
        ["done", secs, kb] => (secs.parse().unwrap(), kb.parse().unwrap()),
        _ => panic!("{name} said {text:?}"),
    }
}

/// `--child VARIANT TASKS WORKERS PAYLOAD`: one call, then its time and this process's
/// peak RSS.
fn child(args: &[String]) {
    let name = args[0].as_str();
    let tasks: usize = args[1].parse().expect("tasks");
    let workers: usize = args[2].parse().expect("workers");
    let payload: usize = args[3].parse().expect("payload");
    let task = move |i: usize| vec![i as u8; payload];
    let pool = Pool::new().workers(workers).progress(false);
    let want: u64 = (0..tasks).map(|i| u64::from(i as u8)).sum();
    let byte = |v: &[u8]| {
        assert_eq!(v.len(), payload, "a result of the wrong size");
        u64::from(v[0])
    };
    let t = Instant::now();
    let sum: u64 = match name {
        "map" => {
            let all = pool.map(0..tasks, task).expect("map");
            all.iter().map(|v| byte(v)).sum()
        }
        "imap" => pool
            .imap(0..tasks, task)
            .expect("imap")
            .map(|r| byte(&r.expect("task")))
            .sum(),
        "imap_unordered" => pool
            .imap_unordered(0..tasks, task)
            .expect("imap_unordered")
            .map(|done| byte(&done.result.expect("task")))
            .sum(),
        "crew_chunks" => {
            let mut crew = pool.spawn(task).expect("spawn");
            let mut sum = 0;
            for start in (0..tasks).step_by(CHUNK) {
                let part = crew.map(start..tasks.min(start + CHUNK)).expect("crew map");
                sum += part.iter().map(|v| byte(v)).sum::<u64>();
            }
            sum
        }
        _ => panic!("unknown variant {name}"),
    };
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(sum, want, "{name}: wrong sum");
    println!("done {secs:.6} {}", status_field("VmHWM:"));
}

/// A field of `/proc/self/status`, in kB.
fn status_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
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
