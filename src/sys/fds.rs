//! The descriptor limit (`RLIMIT_NOFILE`): raised to its hard maximum once per process,
//! as Go's runtime does, and named in errors when it is what ran out.

use std::io;
use std::sync::Once;

/// Raises this process's soft limit on open descriptors to its hard limit, once (the
/// first time an array is made or a map starts). Every `SharedArray` holds a descriptor,
/// so the usual soft limit of 1024 would otherwise cap a map returning arrays at about a
/// thousand. Failure is ignored: the limit then stays where it was, and running out is
/// reported by [`explain`].
pub(crate) fn raise_nofile_limit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit through a valid pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return;
        }
        // An unlimited hard limit cannot be the soft one (the kernel caps it at
        // fs.nr_open): take nr_open then.
        let target = if lim.rlim_max == libc::RLIM_INFINITY {
            std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
                .unwrap_or(lim.rlim_cur)
        } else {
            lim.rlim_max
        };
        if target > lim.rlim_cur {
            lim.rlim_cur = target;
            // SAFETY: setrlimit reads one rlimit through a valid pointer.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        }
    });
}

/// The soft limit on open descriptors (`ulimit -n`), if it can be read.
pub(crate) fn nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

/// How many descriptors this process has open, if `/proc` says.
pub(crate) fn open_descriptors() -> Option<usize> {
    Some(
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .count()
            .saturating_sub(1),
    )
}

/// Whether `err` says that descriptors ran out (`EMFILE` for this process, `ENFILE` for
/// the whole system).
pub(crate) fn is_exhaustion(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// What is known about this process's descriptors, for an error message.
pub(crate) fn usage() -> String {
    let limit = nofile_limit().map_or("unknown".to_string(), |n| n.to_string());
    // Counting needs a descriptor too, which is exactly what may have run out.
    let open =
        open_descriptors().map_or("is at its limit".to_string(), |n| format!("has {n} open"));
    format!(
        "this process {open} and ulimit -n is {limit}; every SharedArray holds one until \
         it is dropped"
    )
}

/// `err` unchanged, unless it is [`is_exhaustion`]: then the same kind with a message
/// that names the cause and the limit.
pub(crate) fn explain(err: io::Error) -> io::Error {
    match err.raw_os_error() {
        Some(libc::EMFILE) => io::Error::new(
            err.kind(),
            format!("too many open descriptors (EMFILE, {err}): {}", usage()),
        ),
        Some(libc::ENFILE) => io::Error::new(
            err.kind(),
            format!(
                "the system's table of open files is full (ENFILE, {err}; fs.file-max): {}",
                usage()
            ),
        ),
        _ => err,
    }
}
