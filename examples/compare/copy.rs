//! The naive process baseline: the tutorial's `MemoryError` pattern done in Rust. Every
//! chunk of tasks gets a freshly forked process, and the whole array travels to it over an
//! ipc-channel socket, so each live worker holds its own private copy. At most `workers`
//! run at once; results come back on one channel shared by all of them.
//!
//! It is given every advantage the pattern allows: raw bytes instead of pickling, no
//! intermediate buffer on the sending side, results as plain `f64`s. It uses nothing of
//! forkmap.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use forkmap::ndarray::{Array2, ArrayRef2, ArrayView2};
use ipc_channel::TryRecvError;
use ipc_channel::ipc::{self, IpcBytesReceiver, IpcSender};
use serde::{Deserialize, Serialize};

use crate::sys::{self, Forked, Pid};

/// A finished chunk, as a child reports it.
#[derive(Serialize, Deserialize)]
struct Done {
    chunk: usize,
    results: Vec<f64>,
}

/// Children not yet reaped. Dropping it kills and reaps them, so an early return leaves
/// no process behind.
struct Running(Vec<(Pid, usize)>);

impl Drop for Running {
    fn drop(&mut self) {
        for &(pid, _) in &self.0 {
            sys::kill(pid);
        }
        for &(pid, _) in &self.0 {
            let _ = sys::wait(pid);
        }
    }
}

/// Runs `task(array, i)` for `i in 0..n`, `chunk` tasks per forked process, at most
/// `workers` processes at a time, sending each one the whole array. Results in order.
pub(crate) fn copy_map<F>(
    array: &Array2<f64>,
    n: usize,
    chunk: usize,
    workers: usize,
    task: F,
) -> Result<Vec<f64>, String>
where
    F: Fn(&ArrayRef2<f64>, usize) -> f64,
{
    let data = array.as_slice().ok_or("the array is not contiguous")?;
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let shape = array.dim();
    let chunks: Vec<Range<usize>> = (0..n)
        .step_by(chunk.max(1))
        .map(|s| s..(s + chunk.max(1)).min(n))
        .collect();
    let (done_tx, done_rx) = ipc::channel::<Done>().map_err(|e| format!("channel: {e}"))?;
    let mut results = vec![f64::NAN; n];
    let mut running = Running(Vec::new());
    let parent = std::process::id();
    let (mut next, mut finished) = (0, 0);
    while finished < chunks.len() {
        while next < chunks.len() && running.0.len() < workers.max(1) {
            let (data_tx, data_rx) = ipc::bytes_channel().map_err(|e| format!("channel: {e}"))?;
            match sys::fork().map_err(|e| format!("fork: {e}"))? {
                Forked::Child => {
                    sys::die_with_parent();
                    if std::os::unix::process::parent_id() != parent {
                        sys::exit_now(3);
                    }
                    drop(data_tx);
                    let range = chunks[next].clone();
                    let ran = catch_unwind(AssertUnwindSafe(|| {
                        child(&data_rx, &done_tx, shape, next, range, &task)
                    }));
                    sys::exit_now(if matches!(ran, Ok(true)) { 0 } else { 1 });
                }
                Forked::Parent(pid) => {
                    drop(data_rx);
                    running.0.push((pid, next));
                    // The copy: the whole array, into this one task's process.
                    data_tx
                        .send(bytes)
                        .map_err(|e| format!("sending the array to pid {pid}: {e}"))?;
                    next += 1;
                }
            }
        }
        let done = receive(&done_rx, &mut running)?;
        let range = chunks[done.chunk].clone();
        if done.results.len() != range.len() {
            return Err(format!("chunk {} came back short", done.chunk));
        }
        results[range].copy_from_slice(&done.results);
        if let Some(at) = running.0.iter().position(|&(_, c)| c == done.chunk) {
            let (pid, _) = running.0.swap_remove(at);
            sys::wait(pid).map_err(|e| format!("waitpid {pid}: {e}"))?;
        }
        finished += 1;
    }
    Ok(results)
}

/// The child: receive the array, run the chunk on the private copy, send the results.
fn child<F>(
    data_rx: &IpcBytesReceiver,
    done_tx: &IpcSender<Done>,
    shape: (usize, usize),
    chunk: usize,
    range: Range<usize>,
    task: &F,
) -> bool
where
    F: Fn(&ArrayRef2<f64>, usize) -> f64,
{
    let Ok(bytes) = data_rx.recv() else {
        return false;
    };
    let owned: Vec<f64>;
    let values: &[f64] = match bytemuck::try_cast_slice(&bytes) {
        Ok(v) => v,
        Err(_) => {
            owned = bytes
                .chunks_exact(8)
                .map(|b| f64::from_ne_bytes(b.try_into().expect("8 bytes")))
                .collect();
            &owned
        }
    };
    let Ok(view) = ArrayView2::from_shape(shape, values) else {
        return false;
    };
    let results = range.map(|i| task(&view, i)).collect();
    done_tx.send(Done { chunk, results }).is_ok()
}

/// Waits for the next finished chunk, failing if a child dies without reporting.
fn receive(rx: &ipc::IpcReceiver<Done>, running: &mut Running) -> Result<Done, String> {
    loop {
        match rx.try_recv_timeout(Duration::from_millis(10)) {
            Ok(done) => return Ok(done),
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::IpcError(e)) => return Err(format!("receiving results: {e:?}")),
        }
        let mut at = 0;
        while at < running.0.len() {
            let (pid, chunk) = running.0[at];
            match sys::try_wait(pid).map_err(|e| format!("waitpid: {e}"))? {
                None => at += 1,
                // It sent its results before exiting: they are in the channel.
                Some(0) => {
                    running.0.swap_remove(at);
                }
                Some(status) => {
                    running.0.swap_remove(at);
                    return Err(format!(
                        "copy worker {pid} (chunk {chunk}) ended with status {status:#x} without results"
                    ));
                }
            }
        }
    }
}
