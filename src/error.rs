//! The one public error type.

use std::io;

use serde::{Deserialize, Serialize};

pub use crate::sys::ExitKind;

mod wire;

/// Everything that can go wrong in forkmap. Variants about a task carry its index (the
/// value from `indices`), its position in `indices`, and the worker and pid that ran it.
///
/// Variants caused by an OS error (`Fork`, `Shm`, `Io`) end their message with the OS's
/// reason (`could not read or write nope.txt: No such file or directory (os error 2)`)
/// and also return it from [`source`](std::error::Error::source), so a reporter that
/// walks the chain shows it again.
///
/// # Across the process boundary
///
/// `Error` is `Serialize` and `Deserialize`, so a task can return forkmap's own errors
/// (`Result<T, forkmap::Error>`, from [`text::load_shared`](crate::text::load_shared),
/// [`npy::read_shared`](crate::npy::read_shared) and the like) and the caller gets each back as the
/// worker made it: the same message, the same fields and
/// [`task_index`](Error::task_index). The `io::Error` of `Fork`, `Shm` and `Io` is
/// rebuilt from the OS's error number, so its `raw_os_error()`, `kind()` and words
/// (`No such file or directory (os error 2)`) are the OS's own and `source()` still
/// returns it; an `io::Error` without a number (made with `io::Error::new`) keeps its
/// kind and message, and the error it wrapped stays behind. Paths travel as bytes, so a
/// name that is not UTF-8 arrives unchanged. The encoding needs no self-describing format
/// (the result channel's postcard is not one); it is meant for processes of the same
/// program, not for storage.
///
/// ```
/// use forkmap::{Error, Pool};
///
/// let files = ["/no/such/dir/a.txt", "/no/such/dir/b.txt"];
/// let loaded: Vec<Result<usize, Error>> = Pool::new()
///     .workers(2)
///     .progress(false)
///     .map(0..files.len(), |i| Ok(forkmap::records::load(files[i])?.len()))?;
/// for result in &loaded {
///     let err = result.as_ref().unwrap_err();
///     assert!(err.to_string().ends_with("No such file or directory (os error 2)"));
///     assert!(matches!(err, Error::Io { source, .. } if source.raw_os_error() == Some(2)));
/// }
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// A task panicked in its worker.
    #[error(
        "task {index} (position {position}) panicked in worker {worker} (pid {pid}): {message}"
    )]
    TaskPanicked {
        /// The task's index, as given in `indices`.
        index: usize,
        /// Its position in `indices`.
        position: usize,
        /// The worker that ran it (0-based).
        worker: usize,
        /// That worker's process id.
        pid: i32,
        /// The panic message, with its source location when known.
        message: String,
    },
    /// A worker process ended while it still had tasks to run.
    #[error("worker {worker} (pid {pid}) died with {status}{}", describe_task(*.task))]
    WorkerDied {
        /// The worker (0-based).
        worker: usize,
        /// Its process id.
        pid: i32,
        /// How it ended.
        status: ExitKind,
        /// The task it was running, `(index, position)`, when known.
        task: Option<(usize, usize)>,
    },
    /// A worker stayed stopped (by `SIGSTOP`, or `SIGTTIN` for a task that reads the
    /// terminal) with tasks in hand for longer than forkmap waits (5 s); it was killed
    /// and its tasks were run elsewhere, and this is what remained after the retries.
    #[error(
        "worker {worker} (pid {pid}) was stopped for {stopped_for:.1?}{}; it was killed",
        describe_task(*.task)
    )]
    WorkerStopped {
        /// The worker (0-based).
        worker: usize,
        /// Its process id.
        pid: i32,
        /// The task it was running, `(index, position)`, when known.
        task: Option<(usize, usize)>,
        /// How long it had been seen stopped.
        stopped_for: std::time::Duration,
    },
    /// A task ran past the pool's `task_timeout` (on every attempt the retry policy
    /// allowed); its worker was killed.
    #[error(
        "task {index} (position {position}) timed out after {timeout:?} in worker {worker} (pid {pid})"
    )]
    TaskTimedOut {
        /// The task's index, as given in `indices`.
        index: usize,
        /// Its position in `indices`.
        position: usize,
        /// The worker that ran it (0-based).
        worker: usize,
        /// That worker's process id.
        pid: i32,
        /// The deadline it exceeded.
        timeout: std::time::Duration,
    },
    /// The coordinator received SIGINT or SIGTERM; every worker was killed and reaped.
    #[error("interrupted by {} after {done} of {total} tasks", crate::sys::signal_name(*signal))]
    Interrupted {
        /// The signal number.
        signal: i32,
        /// Tasks finished when it arrived.
        done: usize,
        /// Tasks in the call.
        total: usize,
    },
    /// A task's result could not be brought back: its `Serialize` failed or panicked in
    /// the worker, it could not be sent, or it could not be decoded in the coordinator
    /// (the message says which). It is about this task alone; it is not retried.
    #[error("worker {worker} (pid {pid}) could not send the result of task {index}: {message}")]
    ResultNotSent {
        /// The task whose result could not be sent.
        index: usize,
        /// The worker (0-based).
        worker: usize,
        /// Its process id.
        pid: i32,
        /// What went wrong.
        message: String,
    },
    /// The task list of a call cannot be held in memory (for example `0..usize::MAX`);
    /// nothing was forked.
    #[error("{count} tasks cannot be held in memory: {reason}")]
    TooManyTasks {
        /// How many tasks the list holds (or the list's length when allocation failed).
        count: usize,
        /// Why: the bytes needed and the memory available, or the allocator's refusal.
        reason: String,
    },
    /// The pool was asked for zero workers.
    #[error("a pool needs at least one worker (got 0)")]
    NoWorkers,
    /// A setting was invalid, such as an unparsable `FORKMAP_WORKERS`.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Forking a worker failed (for example `EAGAIN` under `RLIMIT_NPROC`).
    #[error("could not fork worker {worker}: {source}")]
    Fork {
        /// The worker being started.
        worker: usize,
        /// The OS error.
        #[source]
        #[serde(with = "wire::io_error")]
        source: io::Error,
    },
    /// Talking to a worker over its channel failed.
    #[error("{}: {message}", describe_channel(*.worker))]
    Channel {
        /// The worker (0-based), or `None` for the result channel all workers share and
        /// the coordinator's own set-up.
        worker: Option<usize>,
        /// What failed.
        message: String,
    },
    /// Creating, sizing, mapping or sealing a shared-memory segment failed.
    #[error("shared memory segment {segment}: could not {action}: {source}")]
    Shm {
        /// Which segment (its name, or a description of an anonymous one).
        segment: String,
        /// What was being done.
        // `std::primitive::str`, not `str`: serde's derive would borrow a `&'static str`
        // from the input and the error would not be `DeserializeOwned` (see wire.rs).
        #[serde(with = "wire::static_str")]
        action: &'static std::primitive::str,
        /// The OS error.
        #[source]
        #[serde(with = "wire::io_error")]
        source: io::Error,
    },
    /// A `try_` lock call found the lock busy (see
    /// [`SharedArray::try_read`](crate::SharedArray::try_read)).
    #[error("shared memory segment {segment}: the lock is busy: {reason}")]
    WouldBlock {
        /// Which segment.
        segment: String,
        /// Why it would have to wait.
        #[serde(with = "wire::static_str")]
        reason: &'static std::primitive::str,
    },
    /// A segment's header did not match what the caller asked for.
    #[error("shared memory segment {segment}: {message}")]
    Mismatch {
        /// Which segment.
        segment: String,
        /// What differed, with both values.
        message: String,
    },
    /// A text file had a malformed row (see [`text`](crate::text)): the message names the
    /// field, what was expected and what was found.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The file.
        #[serde(with = "wire::path")]
        path: std::path::PathBuf,
        /// The line, counting from 1.
        line: usize,
        /// The column in bytes, counting from 1.
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// A text file has a line longer than the format's limit
    /// ([`Format::max_line_bytes`](crate::text::Format::max_line_bytes)): reading stops
    /// there instead of growing its buffer without bound (a binary file, `/dev/zero`).
    #[error(
        "{}:{line}: line longer than {limit} bytes (the format's max_line_bytes); not a text file?",
        path.display()
    )]
    LineTooLong {
        /// The file.
        #[serde(with = "wire::path")]
        path: std::path::PathBuf,
        /// The line, counting from 1.
        line: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A `.npy` file could not be read or written as the element type asked for (see
    /// [`npy`](crate::npy)).
    #[error("npy file {}: could not {action}: {message}", path.display())]
    Npy {
        /// The file.
        #[serde(with = "wire::path")]
        path: std::path::PathBuf,
        /// What was being done.
        #[serde(with = "wire::static_str")]
        action: &'static std::primitive::str,
        /// What went wrong, with the file's and the type's dtypes where they differ.
        message: String,
    },
    /// Opening, reading or writing a file failed.
    #[error("could not read or write {}: {source}", path.display())]
    Io {
        /// The file.
        #[serde(with = "wire::path")]
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        #[serde(with = "wire::io_error")]
        source: io::Error,
    },
    /// The HDF5 library refused an operation (with the `hdf5` feature).
    #[error("hdf5 file {}: could not {action}: {message}", path.display())]
    Hdf5 {
        /// The HDF5 file.
        #[serde(with = "wire::path")]
        path: std::path::PathBuf,
        /// What was being done.
        #[serde(with = "wire::static_str")]
        action: &'static std::primitive::str,
        /// The library's message.
        message: String,
    },
    /// A worker's `init` (see [`Pool::map_init`](crate::Pool::map_init)) panicked, or
    /// killed its worker on every attempt the pool's `max_retries` allows: the call ends,
    /// whatever its mode, since no task can run without it.
    #[error("the init of worker {worker} (pid {pid}) failed: it {reason}")]
    InitFailed {
        /// The worker (0-based).
        worker: usize,
        /// Its process id.
        pid: i32,
        /// What happened: its panic message, or how the process ended.
        reason: String,
    },
}

fn describe_channel(worker: Option<usize>) -> String {
    match worker {
        Some(w) => format!("channel to worker {w}"),
        None => "coordinator".to_string(),
    }
}

fn describe_task(task: Option<(usize, usize)>) -> String {
    match task {
        Some((index, position)) => format!(" while running task {index} (position {position})"),
        None => String::new(),
    }
}

impl Error {
    /// The index of the task this error is about, when it is about one task.
    pub fn task_index(&self) -> Option<usize> {
        match self {
            Error::TaskPanicked { index, .. }
            | Error::ResultNotSent { index, .. }
            | Error::TaskTimedOut { index, .. } => Some(*index),
            Error::WorkerDied { task, .. } | Error::WorkerStopped { task, .. } => {
                task.map(|(index, _)| index)
            }
            _ => None,
        }
    }

    pub(crate) fn shm(segment: impl Into<String>, action: &'static str, source: io::Error) -> Self {
        Error::Shm {
            segment: segment.into(),
            action,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn every_variant_with_a_source_displays_it() {
        let os = || io::Error::from_raw_os_error(libc::EAGAIN);
        let cause = os().to_string();
        for err in [
            Error::Fork {
                worker: 3,
                source: os(),
            },
            Error::shm("seg", "map it", os()),
            Error::Io {
                path: "nope.txt".into(),
                source: os(),
            },
        ] {
            let text = err.to_string();
            assert!(text.ends_with(&format!(": {cause}")), "{text}");
            assert_eq!(err.source().map(|s| s.to_string()), Some(cause.clone()));
        }
    }
}
