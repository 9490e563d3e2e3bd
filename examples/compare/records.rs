//! The Rust peers of (f), tutorial 2 end to end: text files of records loaded, then
//! written by one process to one HDF5 file, one compound dataset per input file.
//!
//! - `forkmap`: one task per file; each worker parses its file straight into a new
//!   `SharedArray<Methylation, Ix1>` (`text::load_shared`, the row declared here with
//!   `#[derive(forkmap::Row)]` as a user would) and returns it; the parent
//!   receives the same memory (the segment's descriptor crosses the IPC channel), writes
//!   every array with `forkmap::h5::Writer`, and drops them (nothing to unlink).
//! - `sequential`: `text::load` of every file, then the same writer, in one process.
//!
//! Every repetition is timed whole, from the first load to the arrays dropped, with its
//! split: load (until the last worker has its array filled), hand-off (from there until the
//! parent holds every array), write (create, write and close the HDF5 file), and the
//! seconds spent parsing, summed over files. The output file of the previous repetition is
//! removed before the clock starts, as the Python peers do.

/// Why (f) cannot run in this build.
#[cfg(not(feature = "hdf5"))]
pub(crate) const NO_HDF5: &str = "this harness was built without the `hdf5` feature; run \
`cargo run --release --features hdf5 --example compare -- --workloads f`";

/// Runs Rust peer `peer` of (f): without the `hdf5` feature, says why it cannot.
#[cfg(not(feature = "hdf5"))]
pub(crate) fn run(
    _peer: &str,
    _p: &crate::work::Params,
    _workers: usize,
) -> Result<serde_json::Value, String> {
    Err(NO_HDF5.into())
}

#[cfg(feature = "hdf5")]
pub(crate) use with_hdf5::{ensure_inputs, run};

#[cfg(feature = "hdf5")]
mod with_hdf5 {
    use std::path::{Path, PathBuf};
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    use forkmap::h5::Writer;
    use forkmap::ndarray::{ArrayView1, Ix1};
    use forkmap::text::{self, Format};
    use forkmap::{Pool, SharedArray, records};
    use serde_json::{Value, json};

    use crate::sys;
    use crate::work::Params;

    /// The tutorial's row: numpy's `[('chr', 'S10'), ('pos', '<i4'), ('pct', '<f4'), ('c',
    /// '<i4'), ('t', '<i4')]` with C's alignment (itemsize 28, `_pad` a hole).
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

    /// A file's rows in shared memory, the seconds its parsing took, and when (wall clock,
    /// shared by all processes) the worker had it filled.
    type Loaded = (SharedArray<Methylation, Ix1>, f64, f64);

    /// One repetition's split, seconds.
    struct Split {
        rows: usize,
        load: f64,
        handoff: Option<f64>,
        write: f64,
        parse: f64,
    }

    /// Runs Rust peer `peer` of (f) and returns its JSON report.
    pub(crate) fn run(peer: &str, p: &Params, workers: usize) -> Result<Value, String> {
        let inputs: Vec<PathBuf> = p.records_inputs.iter().map(PathBuf::from).collect();
        let out = p.records_output(peer);
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let once: fn(&[PathBuf], &Path, usize) -> Result<Split, String> = match peer {
            "forkmap" => forkmap_once,
            "sequential" => sequential_once,
            _ => return Err(format!("peer {peer} does not run workload (f)")),
        };
        let mut v = Reps::default();
        for _ in 0..p.reps.max(1) {
            match std::fs::remove_file(&out) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", out.display())),
            }
            let [s0, c0] = sys::usage();
            let start = Instant::now();
            let split = once(&inputs, &out, workers)?;
            v.times.push(start.elapsed().as_secs_f64());
            let [s1, c1] = sys::usage();
            v.cpu_self.push((s1.0 - s0.0).as_secs_f64());
            v.cpu_children.push((c1.0 - c0.0).as_secs_f64());
            v.load.push(split.load);
            v.handoff.push(split.handoff);
            v.write.push(split.write);
            v.parse.push(split.parse);
            v.rows = split.rows;
        }
        Ok(json!({
            "times": v.times,
            "checksum": v.rows as f64,
            "extra": {
                "load": v.load,
                "handoff": v.handoff,
                "write": v.write,
                "parse": v.parse,
                "copy": Value::Null,
                "cpu_self": v.cpu_self,
                "cpu_children": v.cpu_children,
                "output": out.display().to_string(),
            },
        }))
    }

    /// The measurements of every repetition.
    #[derive(Default)]
    struct Reps {
        times: Vec<f64>,
        cpu_self: Vec<f64>,
        cpu_children: Vec<f64>,
        load: Vec<f64>,
        handoff: Vec<Option<f64>>,
        write: Vec<f64>,
        parse: Vec<f64>,
        rows: usize,
    }

    /// forkmap: load in the workers, hand each shared array to the parent as soon as it is
    /// filled (`imap_unordered`), and write it there while the other files still load.
    fn forkmap_once(inputs: &[PathBuf], out: &Path, workers: usize) -> Result<Split, String> {
        let began = wall_clock();
        let pool = Pool::new().workers(workers).chunk_size(1).progress(false);
        let arrivals = pool
            .imap_unordered(0..inputs.len(), |i| -> Result<Loaded, forkmap::Error> {
                let t = Instant::now();
                let array = text::load_shared::<Methylation>(&inputs[i], &Format::whitespace())?;
                Ok((array, t.elapsed().as_secs_f64(), wall_clock()))
            })
            .map_err(|e| e.to_string())?;
        let writer = Writer::create(out).map_err(|e| e.to_string())?;
        let (mut rows, mut parse, mut last_done, mut handoff, mut write) =
            (0, 0.0, began, 0.0f64, 0.0);
        for done in arrivals {
            let file = &inputs[done.position];
            let loaded = done.result.and_then(|r| r);
            let (array, secs, filled) = loaded.map_err(|e| format!("{}: {e}", file.display()))?;
            handoff = handoff.max((wall_clock() - filled).max(0.0));
            parse += secs;
            last_done = last_done.max(filled);
            let t = Instant::now();
            let g = array.read();
            rows += g.len();
            writer
                .write(&dataset_name(file), g.view())
                .map_err(|e| e.to_string())?;
            write += t.elapsed().as_secs_f64();
        }
        writer.close().map_err(|e| e.to_string())?;
        Ok(Split {
            rows,
            load: last_done - began,
            handoff: Some(handoff),
            write,
            parse,
        })
    }

    /// Sequential Rust: load every file, then write them, in this one process.
    fn sequential_once(inputs: &[PathBuf], out: &Path, _workers: usize) -> Result<Split, String> {
        let t = Instant::now();
        let arrays = inputs
            .iter()
            .map(|f| text::load::<Methylation>(f, &Format::whitespace()).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let load = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let rows = write(out, inputs, arrays.iter(), |a| a.view())?;
        let write = t.elapsed().as_secs_f64();
        drop(arrays);
        Ok(Split {
            rows,
            load,
            handoff: None,
            write,
            parse: load,
        })
    }

    /// Writes one dataset per input file, named after the file's stem as the Python peers
    /// do, and returns the rows written. `view` gives the rows of one item of `arrays`
    /// (so that a shared array's read guard lives while its rows are written).
    fn write<T>(
        out: &Path,
        inputs: &[PathBuf],
        arrays: impl Iterator<Item = T>,
        view: impl for<'a> Fn(&'a T) -> ArrayView1<'a, Methylation>,
    ) -> Result<usize, String> {
        let writer = Writer::create(out).map_err(|e| e.to_string())?;
        let mut rows = 0;
        for (file, a) in inputs.iter().zip(arrays) {
            let rows_of = view(&a);
            rows += rows_of.len();
            writer
                .write(&dataset_name(file), rows_of)
                .map_err(|e| e.to_string())?;
        }
        writer.close().map_err(|e| e.to_string())?;
        Ok(rows)
    }

    /// The dataset of an input file: its stem, as the Python peers name it.
    fn dataset_name(file: &Path) -> String {
        file.file_stem()
            .map_or_else(|| "data".into(), |s| s.to_string_lossy().into_owned())
    }

    /// Makes the input files of (f) that do not exist yet (`records::write_sample`, seed
    /// `i` for the `i`-th file, written under a temporary name and then renamed, so an
    /// interrupted run leaves no short file behind). Returns the seconds it took when it
    /// made any, and the total size of the files in bytes.
    pub(crate) fn ensure_inputs(p: &Params) -> Result<(Option<f64>, u64), String> {
        let t = Instant::now();
        let mut made = false;
        let mut bytes = 0;
        for (i, file) in p.records_inputs.iter().enumerate() {
            let path = Path::new(file);
            if !path.exists() {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                let tmp = path.with_extension("txt.partial");
                records::write_sample(&tmp, p.records_rows, i as u64 + 1)
                    .map_err(|e| e.to_string())?;
                std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
                made = true;
            }
            bytes += std::fs::metadata(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .len();
        }
        Ok((made.then(|| t.elapsed().as_secs_f64()), bytes))
    }

    /// Seconds since the epoch: a clock that workers and parent share.
    fn wall_clock() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }
}
