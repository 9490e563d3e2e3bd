//! The one public error type.

use std::io;

pub use crate::sys::ExitKind;

/// Everything that can go wrong in forkmap. Variants about a task carry its index (the
/// value from `indices`), its position in `indices`, and the worker and pid that ran it.
#[derive(Debug, thiserror::Error)]
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
    /// A task could not be sent its result back: the result failed to serialize, or the
    /// channel broke.
    #[error("worker {worker} (pid {pid}) could not send the results of task {index}: {message}")]
    ResultNotSent {
        /// The first task of the batch that could not be sent.
        index: usize,
        /// The worker (0-based).
        worker: usize,
        /// Its process id.
        pid: i32,
        /// What went wrong.
        message: String,
    },
    /// The pool was asked for zero workers.
    #[error("a pool needs at least one worker (got 0)")]
    NoWorkers,
    /// A setting was invalid, such as an unparsable `FORKMAP_WORKERS`.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Forking a worker failed (for example `EAGAIN` under `RLIMIT_NPROC`).
    #[error("could not fork worker {worker}")]
    Fork {
        /// The worker being started.
        worker: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Talking to a worker over its channel failed.
    #[error("channel to worker {worker}: {message}")]
    Channel {
        /// The worker (0-based), or `usize::MAX` for the shared result channel.
        worker: usize,
        /// What failed.
        message: String,
    },
    /// Creating, sizing, mapping or sealing a shared-memory segment failed.
    #[error("shared memory segment {segment}: could not {action}")]
    Shm {
        /// Which segment (its name, or a description of an anonymous one).
        segment: String,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A segment's header did not match what the caller asked for.
    #[error("shared memory segment {segment}: {message}")]
    Mismatch {
        /// Which segment.
        segment: String,
        /// What differed, with both values.
        message: String,
    },
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
            Error::TaskPanicked { index, .. } | Error::ResultNotSent { index, .. } => Some(*index),
            Error::WorkerDied { task, .. } => task.map(|(index, _)| index),
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
