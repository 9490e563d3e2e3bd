//! How much memory a large result costs the parent: one task returns `MB` megabytes
//! (default 1536) and the parent's peak resident size is printed.
//!
//! ```text
//! cargo run --release --example result_memory -- 1536
//! ```

fn max_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn main() -> Result<(), forkmap::Error> {
    let mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1536);
    let before = max_rss_mb();
    let out = forkmap::Pool::new()
        .workers(1)
        .progress(false)
        .map(0..1, |_| vec![7u8; mb << 20])?;
    assert_eq!(out[0].len(), mb << 20);
    println!(
        "result of {mb} MB: parent peak resident {} MB (was {before} MB before the map)",
        max_rss_mb()
    );
    Ok(())
}
