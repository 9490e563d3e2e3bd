//! How many CPUs this process may run on, and how many the machine has online.

use std::io;

/// The CPUs in this process's affinity mask (`sched_getaffinity`), which is what an MPI
/// launcher's binding or Slurm's `--cpus-per-task` restricts.
pub(crate) fn affinity_cpus() -> io::Result<usize> {
    // SAFETY: an all-zero `cpu_set_t` is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live `cpu_set_t` and the size passed is its size.
    let ret =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    super::check(ret)?;
    // SAFETY: `set` was filled by the kernel; CPU_COUNT only reads it.
    let n = unsafe { libc::CPU_COUNT(&set) };
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The CPUs the machine has online (`sysconf(_SC_NPROCESSORS_ONLN)`), whatever this
/// process's mask; `None` if the system does not say.
pub(crate) fn online_cpus() -> Option<usize> {
    // SAFETY: sysconf reads a system value; it has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).ok().filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_mask_fits_in_the_machine() {
        let mask = super::affinity_cpus().unwrap();
        let online = super::online_cpus().unwrap();
        assert!(mask >= 1 && mask <= online, "mask {mask}, online {online}");
        // available_parallelism reads the same mask (and may lower it for a cgroup quota).
        assert!(std::thread::available_parallelism().unwrap().get() <= mask);
    }
}
