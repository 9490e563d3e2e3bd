//! The tutorial's rows (`chr pos pct c t`): [`Record`], a `#[derive(forkmap::Row)]` type
//! like any user's, with the loader and writer of [`crate::text`] for its files, and
//! a generator of sample files.
//!
//! The text format is what `np.loadtxt(path, dtype=[('chr', 'S10'), ('pos', '<i4'),
//! ('pct', '<f4'), ('c', '<i4'), ('t', '<i4')])` reads: five whitespace-separated fields
//! per line, blank lines skipped, and everything from a `#` to the end of its line a
//! comment ([`Format::whitespace`]).
//!
//! # Examples
//! ```
//! use forkmap::records::{self, Record};
//!
//! let dir = std::env::temp_dir().join(format!("forkmap-doc-records-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("data1.txt");
//! records::write_sample(&path, 1000, 7)?;
//!
//! let rows = records::load(&path)?;
//! assert_eq!(rows.len(), 1000);
//! let shared = records::load_shared(&path)?;
//! assert_eq!(shared.read()[0], rows[0]);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), forkmap::Error>(())
//! ```

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use bytemuck::{Pod, Zeroable};
use ndarray::{Array1, Ix1};

use crate::error::Error;
use crate::shm::SharedArray;
use crate::text::{self, Format};

/// Bytes in the `chr` field, as numpy's `S10`.
pub const CHR_LEN: usize = 10;

/// One row of the tutorial's files: a chromosome name and four numbers.
///
/// The layout is fixed (`#[repr(C)]`, 28 bytes, alignment 4): `chr` at offset 0, two
/// bytes of explicit, always-zero padding, then `pos`, `pct`, `c` and `t` at offsets 12,
/// 16, 20 and 24. It is numpy's
/// `np.dtype({'names': ['chr', 'pos', 'pct', 'c', 't'], 'formats': ['S10', '<i4', '<f4',
/// '<i4', '<i4'], 'offsets': [0, 12, 16, 20, 24], 'itemsize': 28})`.
///
/// # Examples
/// ```
/// use forkmap::SharedArray;
/// use forkmap::records::Record;
///
/// let r = Record::new("chr1", 10_468, 87.5, 7, 1).unwrap();
/// assert_eq!(r.chr_str(), "chr1");
/// assert_eq!(r.to_string(), "chr1\t10468\t87.5\t7\t1");
///
/// let shared = SharedArray::<Record, _>::zeros(3)?;
/// shared.write()[1] = r;
/// assert_eq!(shared.read()[1].pos, 10_468);
/// # Ok::<(), forkmap::Error>(())
/// ```
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Default, Pod, Zeroable, crate::Row)]
pub struct Record {
    /// The chromosome name: ASCII, padded with NUL bytes (numpy's `S10`).
    pub chr: [u8; CHR_LEN],
    /// Explicit padding so that `pos` is aligned; always zero.
    _pad: [u8; 2],
    /// The position.
    pub pos: i32,
    /// The percentage.
    pub pct: f32,
    /// The first count (`c`).
    pub c: i32,
    /// The second count (`t`).
    pub t: i32,
}

const _: () = assert!(std::mem::size_of::<Record>() == 28);
const _: () = assert!(std::mem::align_of::<Record>() == 4);
const _: () = assert!(std::mem::offset_of!(Record, pos) == 12);
const _: () = assert!(std::mem::offset_of!(Record, pct) == 16);
const _: () = assert!(std::mem::offset_of!(Record, c) == 20);
const _: () = assert!(std::mem::offset_of!(Record, t) == 24);

impl Record {
    /// A record; `None` when `chr` is empty, longer than [`CHR_LEN`] bytes, or not made
    /// of printable, non-space ASCII (what the text format can carry).
    pub fn new(chr: &str, pos: i32, pct: f32, c: i32, t: i32) -> Option<Record> {
        let chr = chr_field(chr.as_bytes())?;
        Some(Record {
            chr,
            _pad: [0; 2],
            pos,
            pct,
            c,
            t,
        })
    }

    /// The chromosome name's bytes, without the NUL padding.
    pub fn chr_bytes(&self) -> &[u8] {
        let len = self
            .chr
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |last| last + 1);
        &self.chr[..len]
    }

    /// The chromosome name as text, without the NUL padding. Borrowed whenever the bytes
    /// are UTF-8 (always for records made by [`Record::new`] or the loader, which only
    /// accept ASCII); otherwise invalid bytes become `U+FFFD`.
    pub fn chr_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.chr_bytes())
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("chr", &self.chr_str())
            .field("pos", &self.pos)
            .field("pct", &self.pct)
            .field("c", &self.c)
            .field("t", &self.t)
            .finish()
    }
}

/// One line of the text format, tab separated, without the newline. `pct` is written
/// with the fewest digits that read back as the same `f32`.
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\t{}\t{}\t{}\t{}",
            self.chr_str(),
            self.pos,
            self.pct,
            self.c,
            self.t
        )
    }
}

/// Checks a `chr` token and pads it to the field.
fn chr_field(token: &[u8]) -> Option<[u8; CHR_LEN]> {
    let mut chr = [0u8; CHR_LEN];
    if !token.is_empty() && token.len() <= CHR_LEN && token.iter().all(u8::is_ascii_graphic) {
        chr[..token.len()].copy_from_slice(token);
        return Some(chr);
    }
    None
}

// ---------------------------------------------------------------------------------------
// Loading

/// Bytes the writer buffers.
const BLOCK: usize = 1 << 20;

/// Loads a text file of records: [`text::load`] with [`Format::whitespace`].
///
/// # Errors
/// As [`text::load`]: [`Error::Io`] when the file cannot be opened or read;
/// [`Error::Parse`] for the first malformed row: a missing or extra field, a number that
/// does not parse or does not fit its type, or a `chr` that is longer than [`CHR_LEN`]
/// bytes or not printable ASCII; [`Error::LineTooLong`] for a line past 16 MiB.
///
/// # Examples
/// ```no_run
/// let rows = forkmap::records::load("data1.txt")?;
/// println!("{} rows, first on {}", rows.len(), rows[0].chr_str());
/// # Ok::<(), forkmap::Error>(())
/// ```
pub fn load(path: impl AsRef<Path>) -> Result<Array1<Record>, Error> {
    text::load(path, &Format::whitespace())
}

/// Loads a text file of records straight into a new [`SharedArray`]:
/// [`text::load_shared`] with [`Format::whitespace`]. Use it in a worker to hand a file's
/// rows to other processes.
///
/// # Errors
/// As [`load`]; also [`Error::Shm`] when the shared memory cannot be made.
///
/// # Examples
/// ```no_run
/// let shared = forkmap::records::load_shared("data1.txt")?;
/// let total: i64 = shared.read().iter().map(|r| i64::from(r.c)).sum();
/// # Ok::<(), forkmap::Error>(())
/// ```
pub fn load_shared(path: impl AsRef<Path>) -> Result<SharedArray<Record, Ix1>, Error> {
    text::load_shared(path, &Format::whitespace())
}

fn io_error(path: &Path, source: io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------
// Writing

/// Writes records as a text file that [`load`] and `np.loadtxt` read back exactly: one
/// tab-separated line per record. An existing file is replaced.
///
/// # Errors
/// [`Error::Io`] when the file cannot be created or written.
///
/// # Examples
/// ```no_run
/// use forkmap::records::{self, Record};
///
/// let rows = [Record::new("chrX", 1, 50.0, 1, 1).unwrap()];
/// records::write("one.txt", &rows)?;
/// # Ok::<(), forkmap::Error>(())
/// ```
pub fn write<R: Borrow<Record>>(
    path: impl AsRef<Path>,
    records: impl IntoIterator<Item = R>,
) -> Result<(), Error> {
    write_with_header(path.as_ref(), None, records)
}

/// Writes a sample file of `rows` plausible records, the same for the same `seed`: a
/// `# chr pos pct c t` comment line, then rows sorted by chromosome (`chr1` to `chr22`,
/// `chrX`, `chrY`, `chrM`) and position, with counts `c` and `t` and `pct` = 100·c/(c+t).
///
/// # Errors
/// [`Error::Io`] when the file cannot be created or written.
///
/// # Examples
/// ```no_run
/// forkmap::records::write_sample("data1.txt", 1_000_000, 1)?;
/// # Ok::<(), forkmap::Error>(())
/// ```
pub fn write_sample(path: impl AsRef<Path>, rows: usize, seed: u64) -> Result<(), Error> {
    write_with_header(path.as_ref(), Some("# chr pos pct c t"), sample(rows, seed))
}

/// The records [`write_sample`] writes, without a file.
pub fn sample(rows: usize, seed: u64) -> Sample {
    Sample {
        state: seed ^ 0x5851_f42d_4c95_7f2d,
        row: 0,
        rows,
        pos: 0,
        chrom: usize::MAX,
    }
}

/// The iterator of [`sample`].
#[derive(Debug, Clone)]
pub struct Sample {
    state: u64,
    row: usize,
    rows: usize,
    pos: i32,
    chrom: usize,
}

const CHROMOSOMES: [&str; 25] = [
    "chr1", "chr2", "chr3", "chr4", "chr5", "chr6", "chr7", "chr8", "chr9", "chr10", "chr11",
    "chr12", "chr13", "chr14", "chr15", "chr16", "chr17", "chr18", "chr19", "chr20", "chr21",
    "chr22", "chrX", "chrY", "chrM",
];

impl Sample {
    /// splitmix64: small, fast and good enough for sample data.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

impl Iterator for Sample {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.row >= self.rows {
            return None;
        }
        let chrom = (self.row as u128 * CHROMOSOMES.len() as u128 / self.rows as u128) as usize;
        if chrom != self.chrom {
            self.chrom = chrom;
            self.pos = 0;
        }
        self.row += 1;
        self.pos = self.pos.saturating_add(1 + self.below(200) as i32);
        let c = self.below(31) as i32;
        let t = self.below(31) as i32 + i32::from(c == 0);
        let pct = 100.0 * c as f32 / (c + t) as f32;
        Record::new(CHROMOSOMES[chrom], self.pos, pct, c, t)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.rows - self.row;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Sample {}

fn write_with_header<R: Borrow<Record>>(
    path: &Path,
    header: Option<&str>,
    records: impl IntoIterator<Item = R>,
) -> Result<(), Error> {
    let run = || -> io::Result<()> {
        let mut out = BufWriter::with_capacity(BLOCK, File::create(path)?);
        if let Some(header) = header {
            writeln!(out, "{header}")?;
        }
        let mut line = Vec::with_capacity(64);
        for r in records {
            line.clear();
            format_record(r.borrow(), &mut line);
            out.write_all(&line)?;
        }
        out.flush()
    };
    run().map_err(|e| io_error(path, e))
}

/// Appends `record` as a text line, newline included. Integers are formatted by hand;
/// `pct` goes through `Display`, which gives the shortest digits that read back exactly.
fn format_record(record: &Record, line: &mut Vec<u8>) {
    line.extend_from_slice(record.chr_bytes());
    line.push(b'\t');
    push_int(line, record.pos);
    line.push(b'\t');
    // Writing into a Vec cannot fail.
    let _ = write!(line, "{}", record.pct);
    line.push(b'\t');
    push_int(line, record.c);
    line.push(b'\t');
    push_int(line, record.t);
    line.push(b'\n');
}

fn push_int(line: &mut Vec<u8>, value: i32) {
    let mut digits = [0u8; 10];
    let mut k = digits.len();
    let mut v = value.unsigned_abs();
    loop {
        k -= 1;
        digits[k] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if value < 0 {
        line.push(b'-');
    }
    line.extend_from_slice(&digits[k..]);
}

#[cfg(test)]
pub(crate) mod tests;
