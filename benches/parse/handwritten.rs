//! The hand-written loader of the tutorial's rows as it was before `#[derive(Row)]`
//! (forkmap 8edc7bf, `src/records.rs`), kept verbatim apart from building a `Record`
//! through `Zeroable` (its padding field is private): the reference the generic loader
//! is measured against.
#![allow(dead_code, clippy::all)]

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;

use bytemuck::Zeroable;
use forkmap::ndarray::{Array1, Ix1};
use forkmap::records::{CHR_LEN, Record};
use forkmap::{Error, SharedArray};

/// The `chr` token `block[start..end]`, checked and padded like [`chr_field`], built in
/// a register from a 16-byte window of the block: byte-wise copies into the array cost a
/// store-forwarding stall per row, a call to `memcpy` about as much.
#[inline]
fn chr_in_block(block: &[u8], start: usize, end: usize) -> Result<[u8; CHR_LEN], String> {
    let token = &block[start..end];
    let len = token.len();
    if len == 0 || len > CHR_LEN || !token.iter().all(u8::is_ascii_graphic) {
        return Err(chr_problem(token));
    }
    let word = match block.get(start..start + 16) {
        Some(window) => u128::from_le_bytes(window.try_into().expect("16 bytes")),
        None => {
            let mut window = [0u8; 16];
            window[..len].copy_from_slice(token);
            u128::from_le_bytes(window)
        }
    };
    // len <= 10, so the shift stays below 128.
    let bytes = (word & ((1u128 << (8 * len)) - 1)).to_le_bytes();
    Ok(bytes[..CHR_LEN].try_into().expect("10 bytes"))
}

#[cold]
fn chr_problem(token: &[u8]) -> String {
    if token.is_empty() {
        return "chr is empty".into();
    }
    if token.len() > CHR_LEN {
        return format!(
            "chr {} is {} bytes, longer than {CHR_LEN}",
            quote(token),
            token.len()
        );
    }
    let bad = token.iter().find(|b| !b.is_ascii_graphic()).copied();
    format!(
        "chr {} has a byte that is not printable ASCII (0x{:02x})",
        quote(token),
        bad.unwrap_or(0)
    )
}

/// A token for an error message: quoted, shortened when long.
fn quote(token: &[u8]) -> String {
    const MAX: usize = 40;
    if token.len() > MAX {
        format!(
            "\"{}...\"",
            String::from_utf8_lossy(&token[..MAX]).escape_debug()
        )
    } else {
        format!("\"{}\"", String::from_utf8_lossy(token).escape_debug())
    }
}

// ---------------------------------------------------------------------------------------
// Loading

/// Bytes read from the file at a time; a longer line grows the buffer.
const BLOCK: usize = 1 << 20;

const TOKEN: u8 = 0;
const BLANK: u8 = 1;
const NEWLINE: u8 = 2;
const COMMENT: u8 = 3;

/// What each byte is to the tokenizer: the blanks of C's `isspace` except the newline,
/// the newline, the comment mark, and everything else part of a token.
static CLASS: [u8; 256] = {
    let mut class = [TOKEN; 256];
    class[b' ' as usize] = BLANK;
    class[b'\t' as usize] = BLANK;
    class[b'\r' as usize] = BLANK;
    class[0x0b] = BLANK;
    class[0x0c] = BLANK;
    class[b'\n' as usize] = NEWLINE;
    class[b'#' as usize] = COMMENT;
    class
};

const FIELDS: [&str; 5] = ["chr", "pos", "pct", "c", "t"];
/// Loads a text file of records (see the [module docs](self) for the format).
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened or read; [`Error::Parse`] for the first
/// malformed row: a missing or extra field, a number that does not parse or does not fit
/// its type, or a `chr` that is longer than [`CHR_LEN`] bytes or not printable ASCII.
///
/// # Examples
/// ```no_run
/// let rows = forkmap::records::load("data1.txt")?;
/// println!("{} rows, first on {}", rows.len(), rows[0].chr_str());
/// # Ok::<(), forkmap::Error>(())
/// ```
pub(crate) fn load(path: impl AsRef<Path>) -> Result<Array1<Record>, Error> {
    let path = path.as_ref();
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    // A first guess at the row count (about 30 bytes a row) saves most regrowth.
    let guess = file
        .metadata()
        .map_or(0, |m| (m.len() / 32).min(1 << 24) as usize);
    let mut rows = Vec::with_capacity(guess);
    for_each_block(path, &mut file, |block, line| {
        parse_block(block, line, path, |r| {
            rows.push(r);
            true
        })
        .map(drop)
    })?;
    Ok(Array1::from_vec(rows))
}

/// Loads a text file of records straight into a new [`SharedArray`], without an
/// intermediate copy: a first pass counts the rows, a second parses them into the
/// shared memory. Use it in a worker to hand a file's rows to other processes.
///
/// # Errors
/// As [`load`]; also [`Error::Shm`] when the shared memory cannot be made, and
/// [`Error::Parse`] when the file changes between the two passes.
///
/// # Examples
/// ```no_run
/// let shared = forkmap::records::load_shared("data1.txt")?;
/// let total: i64 = shared.read().iter().map(|r| i64::from(r.c)).sum();
/// # Ok::<(), forkmap::Error>(())
/// ```
pub(crate) fn load_shared(path: impl AsRef<Path>) -> Result<SharedArray<Record, Ix1>, Error> {
    let path = path.as_ref();
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut count = 0usize;
    for_each_block(path, &mut file, |block, _| {
        count += count_rows(block);
        Ok(())
    })?;
    let shared = SharedArray::<Record, Ix1>::zeros(count)?;
    {
        let mut guard = shared.write();
        let out = guard
            .as_slice_mut()
            .expect("a new one-dimensional array is contiguous");
        let mut filled = 0usize;
        file.rewind().map_err(|e| io_error(path, e))?;
        let mut last_line = 1;
        for_each_block(path, &mut file, |block, line| {
            last_line = line;
            parse_block(block, line, path, |r| match out.get_mut(filled) {
                Some(slot) => {
                    *slot = r;
                    filled += 1;
                    true
                }
                None => false,
            })
            .map(drop)
        })?;
        if filled != count {
            return Err(changed(path, last_line));
        }
    }
    Ok(shared)
}

fn io_error(path: &Path, source: io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn changed(path: &Path, line: usize) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        line,
        column: 1,
        message: "the file changed while it was being read".into(),
    }
}

/// Reads `file` block by block and calls `each` with runs of whole lines (the last one
/// may lack its newline at the end of the file) and the 1-based number of the first.
fn for_each_block(
    path: &Path,
    file: &mut File,
    mut each: impl FnMut(&[u8], usize) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut buf = vec![0u8; BLOCK];
    let mut filled = 0;
    let mut line = 1;
    loop {
        if filled == buf.len() {
            // One line fills the whole buffer: make room for the rest of it.
            buf.resize(buf.len() * 2, 0);
        }
        let n = match file.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(path, e)),
        };
        if n == 0 {
            if filled > 0 {
                each(&buf[..filled], line)?;
            }
            return Ok(());
        }
        let searched = filled;
        filled += n;
        if let Some(last) = buf[searched..filled].iter().rposition(|&b| b == b'\n') {
            let end = searched + last + 1;
            each(&buf[..end], line)?;
            line += count_newlines(&buf[..end]);
            buf.copy_within(end..filled, 0);
            filled -= end;
        }
    }
}

/// How many lines of `block` hold a row (anything before a comment but blanks).
fn count_rows(block: &[u8]) -> usize {
    let Some(&first) = block.first() else {
        return 0;
    };
    // Fast path, in a form the compiler vectorises: when no line starts with a blank, a
    // control byte or '#', every line is a row.
    let doubtful = |b: u8| b <= b' ' || b == b'#';
    let doubtful_starts =
        usize::from(doubtful(first)) + count_pairs(block, |prev, b| prev == b'\n' && doubtful(b));
    if doubtful_starts == 0 {
        return 1 + count_newlines(&block[..block.len() - 1]);
    }
    let mut rows = 0;
    let mut i = 0;
    while i < block.len() {
        while i < block.len() && CLASS[block[i] as usize] == BLANK {
            i += 1;
        }
        if i < block.len() && CLASS[block[i] as usize] == TOKEN {
            rows += 1;
        }
        match block[i.min(block.len())..].iter().position(|&b| b == b'\n') {
            Some(nl) => i += nl + 1,
            None => break,
        }
    }
    rows
}

/// How many `'\n'` bytes `bytes` holds.
fn count_newlines(bytes: &[u8]) -> usize {
    // Per-chunk byte counters keep the vectorised loop in byte lanes.
    bytes
        .chunks(255)
        .map(|chunk| {
            let n: u8 = chunk.iter().map(|&b| u8::from(b == b'\n')).sum();
            usize::from(n)
        })
        .sum()
}

/// How many neighbouring byte pairs `(bytes[i], bytes[i + 1])` satisfy `pred`.
#[inline]
fn count_pairs(bytes: &[u8], pred: impl Fn(u8, u8) -> bool) -> usize {
    if bytes.len() < 2 {
        return 0;
    }
    let (prev, next) = (&bytes[..bytes.len() - 1], &bytes[1..]);
    prev.chunks(255)
        .zip(next.chunks(255))
        .map(|(p, q)| {
            let n: u8 = p.iter().zip(q).map(|(&a, &b)| u8::from(pred(a, b))).sum();
            usize::from(n)
        })
        .sum()
}

/// Parses the rows of `block`, whose first line is number `line`, handing each to `emit`;
/// `emit` returns `false` when it can take no more (the file grew since it was counted).
/// Returns the number of rows.
fn parse_block(
    block: &[u8],
    mut line: usize,
    path: &Path,
    mut emit: impl FnMut(Record) -> bool,
) -> Result<usize, Error> {
    let n = block.len();
    let mut rows = 0;
    let mut i = 0;
    while i < n {
        let line_start = i;
        let fail = move |at: usize, message: String| Error::Parse {
            path: path.to_path_buf(),
            line,
            column: at - line_start + 1,
            message,
        };
        let mut tokens: [(usize, usize); 5] = [(0, 0); 5];
        let mut found = 0;
        // Split the line into tokens, up to its end or a comment.
        loop {
            while i < n && CLASS[block[i] as usize] == BLANK {
                i += 1;
            }
            if i == n || CLASS[block[i] as usize] != TOKEN {
                break;
            }
            let start = i;
            while i < n && CLASS[block[i] as usize] == TOKEN {
                i += 1;
            }
            if found == FIELDS.len() {
                return Err(fail(
                    start,
                    format!(
                        "unexpected sixth field {}: a row has 5 fields (chr pos pct c t)",
                        quote(&block[start..i])
                    ),
                ));
            }
            tokens[found] = (start, i);
            found += 1;
        }
        let end_of_content = i;
        // Skip a comment, then the newline.
        match block[i..].iter().position(|&b| b == b'\n') {
            Some(nl) => i += nl + 1,
            None => i = n,
        }
        if found == 0 {
            line += 1;
            continue;
        }
        if found < FIELDS.len() {
            return Err(fail(
                end_of_content,
                format!(
                    "missing field {} (found {found} of 5 fields: chr pos pct c t)",
                    FIELDS[found]
                ),
            ));
        }
        let token = |k: usize| &block[tokens[k].0..tokens[k].1];
        let chr =
            chr_in_block(block, tokens[0].0, tokens[0].1).map_err(|m| fail(tokens[0].0, m))?;
        let int = |k: usize| {
            parse_i32(token(k)).ok_or_else(|| {
                fail(
                    tokens[k].0,
                    format!(
                        "field {} is {}, not an integer that fits in 32 bits",
                        FIELDS[k],
                        quote(token(k))
                    ),
                )
            })
        };
        let pos = int(1)?;
        let pct = parse_f32(token(2)).ok_or_else(|| {
            fail(
                tokens[2].0,
                format!("field pct is {}, not a number", quote(token(2))),
            )
        })?;
        let c = int(3)?;
        let t = int(4)?;
        let mut record = Record::zeroed();
        record.chr = chr;
        record.pos = pos;
        record.pct = pct;
        record.c = c;
        record.t = t;
        if !emit(record) {
            return Err(changed(path, line));
        }
        rows += 1;
        line += 1;
    }
    Ok(rows)
}

/// A decimal integer with an optional sign, as `int()` reads it, if it fits an `i32`.
fn parse_i32(token: &[u8]) -> Option<i32> {
    let (negative, digits) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, token),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        value = value * 10 + i64::from(d);
        if value > 1 << 31 {
            return None;
        }
    }
    i32::try_from(if negative { -value } else { value }).ok()
}

/// A floating-point number, read exactly as `str::parse::<f32>` reads it (the nearest
/// `f32`; `inf`, `nan` and exponents accepted), with a fast path for plain decimals.
///
/// The fast path takes `m / 10^k` for up to 15 digits `m` and `k <= 8` fraction digits,
/// divides in `f64` and rounds to `f32`. That is exact: `m < 2^53` and `10^k` are exact
/// `f64` values, so the quotient is the nearest `f64` to `q = m / 10^k`, off by at most
/// 2^-53 relative. Rounding it again to `f32` gives the nearest `f32` to `q` unless
/// that error crosses a midpoint `M * 2^E` between two `f32` (`M` odd, `M < 2^25`); when
/// `q` is not itself such a midpoint it is further away than that: for `E >= 0`,
/// `|q - M 2^E| >= 10^-k`, at least 1/m > 2^-53 relative; for `E < 0`,
/// `|q - M 2^E| >= 10^-k 2^E`, at least 1/(M 10^k) >= 1/(2^25 10^8) > 2^-53 relative.
fn parse_f32(token: &[u8]) -> Option<f32> {
    let (negative, rest) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, token),
    };
    let mut mantissa: u64 = 0;
    let mut digits = 0;
    let mut fraction_digits = 0;
    let mut seen_point = false;
    let mut fast = !rest.is_empty() && rest.len() <= 16;
    if fast {
        for &b in rest {
            match b {
                b'0'..=b'9' => {
                    mantissa = mantissa * 10 + u64::from(b - b'0');
                    digits += 1;
                    fraction_digits += usize::from(seen_point);
                }
                b'.' if !seen_point => seen_point = true,
                _ => {
                    fast = false;
                    break;
                }
            }
        }
    }
    if fast && digits > 0 && digits <= 15 && fraction_digits <= 8 {
        let value = (mantissa as f64 / POW10[fraction_digits]) as f32;
        return Some(if negative { -value } else { value });
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

static POW10: [f64; 9] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];
