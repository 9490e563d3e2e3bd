//! How much memory this process can still get: the kernel's available memory, capped by
//! every memory cgroup limit above this process (its own cgroup and each ancestor, v2
//! or v1), so a reservation that would wake the OOM killer is refused up front.

use std::path::{Path, PathBuf};

/// Bytes of memory this process could still get: `MemAvailable` plus free swap, capped by
/// the tightest headroom of this process's memory cgroups. `None` when nothing can be read.
pub(crate) fn memory_budget() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.as_deref()?.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    };
    let system = field("MemAvailable:").map(|avail| avail + field("SwapFree:").unwrap_or(0));
    let cgroup = match (
        std::fs::read_to_string("/proc/self/cgroup"),
        std::fs::read_to_string("/proc/self/mountinfo"),
    ) {
        (Ok(cgroup), Ok(mountinfo)) => cgroup_headroom(&cgroup, &cgroup_mounts(&mountinfo)),
        _ => None,
    };
    match (system, cgroup) {
        (Some(s), Some(c)) => Some(s.min(c)),
        (s, c) => s.or(c),
    }
}

/// This process's resident memory in bytes (`/proc/self/statm`), `None` when unreadable.
pub(crate) fn resident_bytes() -> Option<u64> {
    parse_statm_resident(&std::fs::read_to_string("/proc/self/statm").ok()?)
        .map(|pages| pages.saturating_mul(rustix::param::page_size() as u64))
}

/// The resident page count, the second field of a `statm` line.
fn parse_statm_resident(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// A mounted cgroup hierarchy that can limit memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    /// cgroup v2 (the unified hierarchy), or v1's memory controller.
    pub(crate) v2: bool,
    /// Where it is mounted.
    pub(crate) dir: PathBuf,
    /// Which cgroup of the hierarchy the mount shows at `dir` (mountinfo's root field).
    pub(crate) root: String,
}

/// The cgroup v2 mounts and v1 memory-controller mounts listed in `mountinfo` (the text
/// of `/proc/self/mountinfo`).
pub(crate) fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let mut mount = mount.split(' ');
            let root = mount.nth(3)?;
            let dir = mount.next()?;
            let mut fs = fs.split(' ');
            let v2 = match fs.next()? {
                "cgroup2" => true,
                "cgroup" if fs.nth(1)?.split(',').any(|o| o == "memory") => false,
                _ => return None,
            };
            Some(CgroupMount {
                v2,
                dir: PathBuf::from(unescape(dir)),
                root: unescape(root),
            })
        })
        .collect()
}

/// mountinfo escapes spaces, tabs, newlines and backslashes as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(v) = b
                .get(i + 1..i + 4)
                .and_then(|o| std::str::from_utf8(o).ok())
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The tightest memory headroom (limit minus what is in use) over this process's cgroups
/// and all their ancestors, given `cgroup` (the text of `/proc/self/cgroup`) and the
/// mounted hierarchies. `None` when no level has a limit that can be read.
pub(crate) fn cgroup_headroom(cgroup: &str, mounts: &[CgroupMount]) -> Option<u64> {
    let mut best: Option<u64> = None;
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let v2 = id == "0" && controllers.is_empty();
        if !v2 && !controllers.split(',').any(|c| c == "memory") {
            continue;
        }
        for mount in mounts.iter().filter(|m| m.v2 == v2) {
            // The process's cgroup as seen under this mount; a path outside the mount's
            // root (another cgroup namespace) leaves only the mount's own level.
            let relative = path
                .strip_prefix(mount.root.trim_end_matches('/'))
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                .unwrap_or("");
            let mut dir = mount.dir.join(relative.trim_start_matches('/'));
            loop {
                if let Some(room) = level_headroom(&dir, v2) {
                    best = Some(best.map_or(room, |b| b.min(room)));
                }
                if dir == mount.dir || !dir.pop() || !dir.starts_with(&mount.dir) {
                    break;
                }
            }
        }
    }
    best
}

/// One cgroup's headroom: its limit minus its usage, not counting inactive file pages
/// (page cache the kernel reclaims before it kills anything). `None` without a limit.
fn level_headroom(dir: &Path, v2: bool) -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let (limit, usage, inactive) = if v2 {
        let limit = read("memory.max")?;
        let limit = limit.trim();
        if limit == "max" {
            return None;
        }
        (
            limit.parse::<u64>().ok()?,
            read("memory.current"),
            "inactive_file",
        )
    } else {
        let limit = read("memory.limit_in_bytes")?.trim().parse::<u64>().ok()?;
        // v1 reports "no limit" as a huge page-rounded number.
        if limit >= 1 << 60 {
            return None;
        }
        (limit, read("memory.usage_in_bytes"), "total_inactive_file")
    };
    let usage = usage
        .and_then(|u| u.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let reclaimable = read("memory.stat")
        .and_then(|stat| {
            stat.lines().find_map(|l| {
                l.strip_prefix(inactive)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0u64);
    Some(limit.saturating_sub(usage.saturating_sub(reclaimable)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_size_is_read_from_statm_and_grows_with_touched_memory() {
        assert_eq!(parse_statm_resident("1000 250 30 1 0 400 0\n"), Some(250));
        assert_eq!(parse_statm_resident("1000"), None);
        let before = resident_bytes().unwrap();
        let touched = vec![1u8; 64 << 20];
        let after = resident_bytes().unwrap();
        assert!(after >= before + (32 << 20), "{before} -> {after}");
        drop(std::hint::black_box(touched));
    }

    struct Tree(PathBuf);
    impl Tree {
        fn new(tag: &str) -> Tree {
            let dir = std::env::temp_dir().join(format!(
                "forkmap-cgroup-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Tree(dir)
        }
        fn set(&self, rel: &str, file: &str, value: &str) {
            let d = self.0.join(rel);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(file), value).unwrap();
        }
    }
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const G: u64 = 1 << 30;

    #[test]
    fn v2_takes_the_tightest_ancestor() {
        let t = Tree::new("v2");
        // A Slurm-like nesting: the job's limit is on an ancestor, the step has none.
        t.set("", "memory.max", "max\n"); // a namespaced root may have one; "max" is none
        t.set("slurm", "memory.max", &format!("{}\n", 64 * G));
        t.set("slurm", "memory.current", &format!("{}\n", 10 * G));
        t.set("slurm/job_7", "memory.max", &format!("{}\n", 8 * G));
        t.set("slurm/job_7", "memory.current", &format!("{}\n", 5 * G));
        t.set(
            "slurm/job_7",
            "memory.stat",
            &format!("anon 1\ninactive_file {}\n", G),
        );
        t.set("slurm/job_7/step_0", "memory.max", "max\n");
        t.set(
            "slurm/job_7/step_0",
            "memory.current",
            &format!("{}\n", 4 * G),
        );
        let mounts = [CgroupMount {
            v2: true,
            dir: t.0.clone(),
            root: "/".into(),
        }];
        // 8 G - (5 G - 1 G inactive file) = 4 G, tighter than 64 - 10 = 54 G.
        assert_eq!(
            cgroup_headroom("0::/slurm/job_7/step_0\n", &mounts),
            Some(4 * G)
        );
        // Without any limit on the way up: no cgroup budget.
        assert_eq!(cgroup_headroom("0::/elsewhere\n", &mounts), None);
        // The v1 lines of a hybrid system do not read v2 files.
        assert_eq!(cgroup_headroom("4:memory:/slurm/job_7\n", &mounts), None);
    }

    #[test]
    fn v1_reads_the_memory_controller_path() {
        let t = Tree::new("v1");
        t.set("", "memory.limit_in_bytes", "9223372036854771712\n");
        t.set("", "memory.usage_in_bytes", &format!("{}\n", 100 * G));
        t.set("docker", "memory.limit_in_bytes", &format!("{}\n", 2 * G));
        t.set("docker", "memory.usage_in_bytes", &format!("{}\n", G / 2));
        t.set(
            "docker/abc",
            "memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        t.set(
            "docker/abc",
            "memory.usage_in_bytes",
            &format!("{}\n", G / 4),
        );
        let mountinfo = format!(
            "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
             35 31 0:32 / {} rw,relatime - cgroup cgroup rw,memory\n",
            t.0.display()
        );
        let mounts = cgroup_mounts(&mountinfo);
        assert_eq!(mounts.len(), 1);
        assert!(!mounts[0].v2);
        let cgroup = "5:devices:/docker/abc\n4:memory:/docker/abc\n0::/\n";
        assert_eq!(cgroup_headroom(cgroup, &mounts), Some(2 * G - G / 2));
    }

    #[test]
    fn a_mount_of_a_cgroup_below_the_root_is_resolved() {
        let t = Tree::new("bind");
        // The container sees its own cgroup /kubepods/pod1 mounted at the mount point.
        t.set("", "memory.max", &format!("{}\n", 3 * G));
        t.set("", "memory.current", &format!("{}\n", G));
        t.set("app", "memory.max", &format!("{}\n", 10 * G));
        t.set("app", "memory.current", &format!("{}\n", G));
        let mountinfo = format!(
            "40 31 0:35 /kubepods/pod1 {} rw - cgroup2 cgroup2 rw\n",
            t.0.display()
        );
        let mounts = cgroup_mounts(&mountinfo);
        assert_eq!(mounts[0].root, "/kubepods/pod1");
        assert_eq!(
            cgroup_headroom("0::/kubepods/pod1/app\n", &mounts),
            Some(2 * G)
        );
        // A path outside the mount (another namespace) still counts the mount's level.
        assert_eq!(cgroup_headroom("0::/other\n", &mounts), Some(2 * G));
    }

    #[test]
    fn the_real_budget_is_readable_here() {
        assert!(memory_budget().is_some());
    }
}
