//! temporary probe (not to be committed)
use std::time::Instant;
use forkmap::{Pool, SharedArray};
#[path = "compare/work.rs"]
#[allow(dead_code, unreachable_pub)]
mod work;
#[path = "compare/sys.rs"]
#[allow(dead_code, unreachable_pub)]
mod sys;
fn now_ns() -> u64 { let mut ts = libc::timespec{tv_sec:0,tv_nsec:0}; unsafe{libc::clock_gettime(libc::CLOCK_MONOTONIC,&mut ts)}; ts.tv_sec as u64*1_000_000_000+ts.tv_nsec as u64 }
fn main() {
    let n: usize = std::env::args().nth(1).map_or(200_000, |s| s.parse().unwrap());
    let a = work::fill(1000, 1000);
    let b = SharedArray::from_array(&a).unwrap().freeze().unwrap();
    for _ in 0..3 {
        let t0 = now_ns();
        let start = Instant::now();
        let r: Vec<(u32, u64, u64)> = Pool::new().workers(2).progress(false).map(0..n, |i| {
            let s = now_ns();
            let v = work::fine_task(&b, i, 650, 0.999);
            std::hint::black_box(v);
            (std::process::id(), s - t0, now_ns() - t0)
        }).unwrap();
        let total = start.elapsed();
        let mut pids: Vec<u32> = r.iter().map(|x| x.0).collect(); pids.sort(); pids.dedup();
        for p in &pids {
            let mine: Vec<_> = r.iter().filter(|x| x.0 == *p).collect();
            let first = mine.iter().map(|x| x.1).min().unwrap();
            let last = mine.iter().map(|x| x.2).max().unwrap();
            let busy: u64 = mine.iter().map(|x| x.2 - x.1).sum();
            println!("pid {p}: tasks {} first start {:.2} ms last end {:.2} ms busy {:.2} ms", mine.len(), first as f64/1e6, last as f64/1e6, busy as f64/1e6);
        }
        println!("total {:.2} ms", total.as_secs_f64()*1e3);
    }
}
