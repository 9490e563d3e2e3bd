//! How much memory a large result costs: one task returns `MB` megabytes (default 1536);
//! the worker's and the parent's peak resident sizes are printed (the worker's is taken
//! when its result, already encoded, is dropped).
//!
//! ```text
//! cargo run --release --example result_memory -- 1536
//! ```

use serde::{Deserialize, Serialize};

fn max_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// The parent's pid, so a result's destructor knows it runs in the worker.
static PARENT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

#[derive(Serialize, Deserialize)]
struct Measured(Vec<u8>);

impl Drop for Measured {
    fn drop(&mut self) {
        if PARENT.get() != Some(&std::process::id()) {
            eprintln!("worker: peak resident {} MB", max_rss_mb());
        }
    }
}

fn main() -> Result<(), forkmap::Error> {
    let mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1536);
    PARENT.set(std::process::id()).unwrap();
    let before = max_rss_mb();
    let out = forkmap::Pool::new()
        .workers(1)
        .progress(false)
        .map(0..1, |_| Measured(vec![7u8; mb << 20]))?;
    assert_eq!(out[0].0.len(), mb << 20);
    println!(
        "result of {mb} MB: parent peak resident {} MB (was {before} MB before the map)",
        max_rss_mb()
    );
    Ok(())
}
