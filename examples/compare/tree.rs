//! Running one peer as a child process (in its own process group, with a time limit) and,
//! for the memory workload, sampling the total PSS of its whole process tree from
//! `/proc/<pid>/smaps_rollup` while it runs.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use crate::sys::{self, Pid};

/// What a finished peer process left.
pub(crate) struct Finished {
    /// Its standard output.
    pub(crate) stdout: String,
    /// Its standard error.
    pub(crate) stderr: String,
    /// How it ended.
    pub(crate) status: ExitStatus,
    /// The largest total PSS of its process tree seen, when sampled.
    pub(crate) peak: Option<Peaks>,
}

/// Peaks of a sampled run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Peaks {
    /// Over the whole run, set-up included.
    pub(crate) overall: Peak,
    /// Over the samples in which the tree had at least the expected number of processes
    /// (the caller and all its workers).
    pub(crate) working: Peak,
}

/// The largest total PSS seen over a process tree.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Peak {
    /// Total PSS, in bytes.
    pub(crate) pss_bytes: u64,
    /// Processes in the tree at that moment.
    pub(crate) processes: usize,
}

/// Runs `cmd` to the end (killing its whole process group after `limit`), sampling its
/// tree's PSS every few milliseconds when `sample` gives the number of processes the tree
/// has while its workers run.
pub(crate) fn run(
    mut cmd: Command,
    sample: Option<usize>,
    limit: Duration,
) -> Result<Finished, String> {
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start {cmd:?}: {e}"))?;
    let pid = child.id() as Pid;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let started = Instant::now();
    let mut peak: Option<Peaks> = sample.map(|_| Peaks::default());
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > limit {
            sys::kill_group(pid);
            let _ = child.wait();
            return Err(format!(
                "timed out after {limit:?}; its process group was killed"
            ));
        }
        if let (Some(best), Some(expected)) = (&mut peak, sample) {
            let now = tree_pss(pid);
            if now.pss_bytes > best.overall.pss_bytes {
                best.overall = now;
            }
            if now.processes >= expected && now.pss_bytes > best.working.pss_bytes {
                best.working = now;
            }
        }
        std::thread::sleep(Duration::from_millis(if sample.is_some() { 10 } else { 2 }));
    };
    // Anything the peer left behind in its group is a bug: say so, and end it by pid.
    let leftovers = group_members(pid);
    for &p in &leftovers {
        sys::kill(p);
    }
    let stdout = out.join().unwrap_or_default();
    let mut stderr = err.join().unwrap_or_default();
    if !leftovers.is_empty() {
        stderr.push_str(&format!("\nleft processes behind (killed): {leftovers:?}"));
    }
    Ok(Finished {
        stdout,
        stderr,
        status,
        peak,
    })
}

/// Processes whose process group is `pgid`.
fn group_members(pgid: Pid) -> Vec<Pid> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<Pid>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                stat.rfind(')').is_some_and(|end| {
                    stat[end + 1..].split_whitespace().nth(2) == Some(&pgid.to_string())
                })
            })
        })
        .collect()
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

/// Total PSS of `root` and all its descendants, now.
pub(crate) fn tree_pss(root: Pid) -> Peak {
    let mut peak = Peak::default();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Some(kb) = pss_kb(pid) {
            peak.pss_bytes += kb * 1024;
            peak.processes += 1;
        }
        stack.extend(children(pid));
    }
    peak
}

fn pss_kb(pid: Pid) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The children of every thread of `pid`.
fn children(pid: Pid) -> Vec<Pid> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<Pid>>()
        })
        .collect()
}
