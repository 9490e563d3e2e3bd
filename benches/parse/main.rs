//! Parsing speed of the generic text loader (`text::load::<T>` for a `#[derive(Row)]`
//! type) against the hand-written loader of the tutorial's rows that it replaced, in one
//! run, on tutorial 2's files (4 x 10^6 rows, `records::write_sample`, seeds 1-4, about
//! 106 MB; made once in `target/parse-bench`).
//!
//! ```text
//! cargo bench --bench parse [-- REPS]
//! ```
//! One thread; every repetition loads the four files with each loader in turn (from the
//! page cache), so the loaders share the machine's state. MB/s is text bytes over wall
//! time, per core.

mod handwritten;

use std::path::PathBuf;
use std::time::Instant;

use forkmap::records::{self, Record};
use forkmap::text::{self, Format};

/// The tutorial's row as a user declares it.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, forkmap::Row)]
#[repr(C)]
struct Methylation {
    chr: [u8; 10],
    _pad: [u8; 2],
    pos: i32,
    pct: f32,
    c: i32,
    t: i32,
}

type Loader = (&'static str, fn(&PathBuf) -> Vec<u8>);

fn bytes<T: bytemuck::Pod>(rows: &[T]) -> Vec<u8> {
    bytemuck::cast_slice(rows).to_vec()
}

const LOADERS: [Loader; 5] = [
    ("hand-written records::load (before)", |p| {
        bytes(handwritten::load(p).unwrap().as_slice().unwrap())
    }),
    ("hand-written records::load_shared (before)", |p| {
        bytes(
            handwritten::load_shared(p)
                .unwrap()
                .read()
                .as_slice()
                .unwrap(),
        )
    }),
    ("generic text::load::<Methylation>", |p| {
        bytes(
            text::load::<Methylation>(p, &Format::whitespace())
                .unwrap()
                .as_slice()
                .unwrap(),
        )
    }),
    ("generic text::load_shared::<Methylation>", |p| {
        let a = text::load_shared::<Methylation>(p, &Format::whitespace()).unwrap();
        bytes(a.read().as_slice().unwrap())
    }),
    ("generic records::load_shared (Record)", |p| {
        bytes::<Record>(records::load_shared(p).unwrap().read().as_slice().unwrap())
    }),
];

fn main() {
    let reps: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(7);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/parse-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<PathBuf> = (1..=4)
        .map(|i| {
            let path = dir.join(format!("data{i}_1000000.txt"));
            if !path.exists() {
                let tmp = path.with_extension("partial");
                records::write_sample(&tmp, 1_000_000, i).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            }
            path
        })
        .collect();
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    // Same rows, byte for byte, from every loader.
    let reference: Vec<Vec<u8>> = files.iter().map(LOADERS[0].1).collect();
    for (name, load) in &LOADERS[1..] {
        for (f, want) in files.iter().zip(&reference) {
            assert!(load(f) == *want, "{name} differs on {}", f.display());
        }
    }
    let mut secs = vec![Vec::new(); LOADERS.len()];
    for _ in 0..reps {
        for (k, (_, load)) in LOADERS.iter().enumerate() {
            let t = Instant::now();
            for f in &files {
                std::hint::black_box(load(f));
            }
            secs[k].push(t.elapsed().as_secs_f64());
        }
    }
    println!(
        "{} files, {:.1} MB of text, {reps} repetitions, one thread\n",
        files.len(),
        total as f64 / 1e6
    );
    println!("| loader | min | median | MB/s (min) |\n|---|---:|---:|---:|");
    for ((name, _), s) in LOADERS.iter().zip(&mut secs) {
        s.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.0} |",
            s[0] * 1e3,
            s[s.len() / 2] * 1e3,
            total as f64 / 1e6 / s[0]
        );
    }
}
