//! Tutorial 2, the forkmap way: each worker loads a text file of records straight into a
//! new shared array and returns it; the parent receives the same memory (the segment's
//! descriptor crosses over, no copy, no name to leak) as soon as that file is done
//! (`imap_unordered`), and writes it to one HDF5 file (with `--features hdf5`) or to one
//! `.npy` file per input (without it) while the workers parse the others.
//!
//! The Python original loads with `np.loadtxt`, copies into a `SharedMemory` block, passes
//! name, shape and dtype back by hand, and must remember to `unlink`.
//!
//! The row type is declared here, with `#[derive(forkmap::Row)]`, as any user would: its
//! fields are the file's columns, `_pad` is the padding numpy and HDF5 see as a hole.
//!
//! ```text
//! cargo run --release --example loadtxt_hdf5 [--features hdf5] -- [FILE ...]
//!     [--generate FILES ROWS] [--dir DIR] [--out PATH] [--workers N]
//! ```
//! With no FILE, sample files are generated first (4 files x 1,000,000 rows by default).

use std::path::{Path, PathBuf};
use std::time::Instant;

use forkmap::ndarray::{ArrayView1, Ix1};
use forkmap::text::{self, Format};
use forkmap::{Error, Pool, SharedArray, records};

/// One row of the tutorial's files: numpy's `[('chr', 'S10'), ('pos', '<i4'), ('pct',
/// '<f4'), ('c', '<i4'), ('t', '<i4')]` with C's alignment (itemsize 28).
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

impl std::fmt::Display for Methylation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self
            .chr
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.chr.len());
        let chr = String::from_utf8_lossy(&self.chr[..len]);
        write!(
            f,
            "{chr}\t{}\t{}\t{}\t{}",
            self.pos, self.pct, self.c, self.t
        )
    }
}

/// A file's rows in shared memory, the seconds its parsing took, and when it finished.
type Loaded = (SharedArray<Methylation, Ix1>, f64, f64);

struct Args {
    files: Vec<PathBuf>,
    generate: (usize, usize),
    dir: PathBuf,
    out: Option<PathBuf>,
    workers: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        files: Vec::new(),
        generate: (4, 1_000_000),
        dir: PathBuf::from("target/loadtxt-sample"),
        out: None,
        workers: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => {
                return Err("usage: loadtxt_hdf5 [FILE ...] [--generate FILES ROWS] [--dir DIR] [--out PATH] [--workers N]".into());
            }
            "--generate" => {
                let files = value("--generate")?
                    .parse()
                    .map_err(|e| format!("--generate FILES: {e}"))?;
                let rows = value("--generate")?
                    .parse()
                    .map_err(|e| format!("--generate ROWS: {e}"))?;
                args.generate = (files, rows);
            }
            "--dir" => args.dir = PathBuf::from(value("--dir")?),
            "--out" => args.out = Some(PathBuf::from(value("--out")?)),
            "--workers" => {
                args.workers = Some(
                    value("--workers")?
                        .parse()
                        .map_err(|e| format!("--workers: {e}"))?,
                )
            }
            flag if flag.starts_with("--") => {
                return Err(format!("unknown flag {flag} (try --help)"));
            }
            file => args.files.push(PathBuf::from(file)),
        }
    }
    Ok(args)
}

fn main() -> std::process::ExitCode {
    match parse_args().and_then(|a| run(a).map_err(|e| e.to_string())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let files = if args.files.is_empty() {
        generate(&args.dir, args.generate)?
    } else {
        args.files
    };
    let mut pool = Pool::new();
    if let Some(n) = args.workers {
        pool = pool.workers(n);
    }

    // Load: one task per file. Each worker parses its file straight into a new shared
    // array and returns it; only the segment's descriptor travels back. Each array is
    // written as soon as it arrives, while the other files are still being parsed.
    let start = Instant::now();
    let arrivals = pool.imap_unordered(0..files.len(), |i| -> Result<Loaded, Error> {
        let t = Instant::now();
        let array = text::load_shared::<Methylation>(&files[i], &Format::whitespace())?;
        Ok((array, t.elapsed().as_secs_f64(), wall_clock()))
    })?;
    let mut output = Output::create(args.out.as_deref())?;
    let (mut load_cpu, mut last_done, mut handoff, mut write_secs, mut rows) =
        (0.0, 0.0f64, 0.0f64, 0.0, 0);
    for done in arrivals {
        let file = &files[done.position];
        // A task's error names the file (forkmap's own error, with the OS's reason).
        let (array, secs, filled) = done.result??;
        handoff = handoff.max(wall_clock() - filled);
        load_cpu += secs;
        last_done = last_done.max(filled);
        let t = Instant::now();
        let g = array.read();
        let first = g.first().map(|r| r.to_string()).unwrap_or_default();
        println!("{}: {} rows, first: {first}", file.display(), g.len());
        rows += g.len();
        // Written in the parent, from the shared memory the worker filled.
        output.write(file, g.view())?;
        write_secs += t.elapsed().as_secs_f64();
    }
    let written = output.close()?;
    let total = start.elapsed().as_secs_f64();
    let load_secs = last_done - (wall_clock() - total);

    println!("\n{} files, {rows} rows -> {written}", files.len());
    let workers = pool.worker_count()?.min(files.len());
    println!(
        "load in workers         {load_secs:8.3} s  ({load_cpu:.3} s of parsing over {workers} workers)"
    );
    println!(
        "hand-off to the parent  {:8.3} s  (longest: array done -> parent holds it)",
        handoff.max(0.0)
    );
    println!("write, in the parent    {write_secs:8.3} s  (overlapping the loads)");
    println!("total                   {total:8.3} s");
    Ok(())
}

/// Seconds since the epoch: a clock that workers and parent share.
fn wall_clock() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Writes sample files (once; kept for later runs) and returns their paths.
fn generate(
    dir: &Path,
    (files, rows): (usize, usize),
) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let paths: Vec<PathBuf> = (0..files)
        .map(|i| dir.join(format!("data{}_{rows}.txt", i + 1)))
        .collect();
    let missing: Vec<usize> = (0..files).filter(|&i| !paths[i].exists()).collect();
    if !missing.is_empty() {
        let t = Instant::now();
        // Generating is itself a parallel map; each task writes its own file (forkmap's
        // sample generator of the tutorial's rows).
        let made = Pool::new().map(missing.iter().copied(), |i| {
            records::write_sample(&paths[i], rows, i as u64 + 1)
        })?;
        made.into_iter().collect::<Result<Vec<()>, Error>>()?;
        println!(
            "generated {} sample files of {rows} rows in {} ({:.2} s)",
            missing.len(),
            dir.display(),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(paths)
}

fn dataset_name(file: &Path) -> String {
    file.file_stem()
        .map_or_else(|| "data".to_string(), |s| s.to_string_lossy().into_owned())
}

/// Where the arrays go: one HDF5 file with a dataset per input (feature `hdf5`).
#[cfg(feature = "hdf5")]
struct Output {
    out: PathBuf,
    writer: forkmap::h5::Writer,
}

#[cfg(feature = "hdf5")]
impl Output {
    fn create(out: Option<&Path>) -> Result<Output, Error> {
        let out = out.map_or_else(
            || PathBuf::from("target/loadtxt-sample/records.h5"),
            Path::to_path_buf,
        );
        let writer = forkmap::h5::Writer::create(&out)?;
        Ok(Output { out, writer })
    }

    fn write(&mut self, file: &Path, rows: ArrayView1<'_, Methylation>) -> Result<(), Error> {
        self.writer.write(&dataset_name(file), rows)
    }

    fn close(self) -> Result<String, Error> {
        self.writer.close()?;
        Ok(format!(
            "{} (HDF5, one compound dataset per file)",
            self.out.display()
        ))
    }
}

/// Where the arrays go: one `.npy` file per input (without the `hdf5` feature).
#[cfg(not(feature = "hdf5"))]
struct Output {
    dir: PathBuf,
}

#[cfg(not(feature = "hdf5"))]
impl Output {
    fn create(out: Option<&Path>) -> Result<Output, Box<dyn std::error::Error>> {
        let dir = out.map_or_else(
            || PathBuf::from("target/loadtxt-sample/npy"),
            Path::to_path_buf,
        );
        std::fs::create_dir_all(&dir)?;
        Ok(Output { dir })
    }

    fn write(&mut self, file: &Path, rows: ArrayView1<'_, Methylation>) -> Result<(), Error> {
        let path = self.dir.join(format!("{}.npy", dataset_name(file)));
        forkmap::npy::write(path, rows)
    }

    fn close(self) -> Result<String, Error> {
        Ok(format!(
            "{}/*.npy (build with --features hdf5 for HDF5)",
            self.dir.display()
        ))
    }
}
