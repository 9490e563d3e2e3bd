//! The block reader and the tokenizer: the file is read in blocks of whole lines, each
//! line split into tokens by a 256-entry class table, and each row built by the row
//! type's own monomorphised parser.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::{Columns, Format, io_error};
use crate::error::Error;
use crate::row::{Kind, Row, Tokens, ascii_problem};

/// Bytes read from the file at a time; a longer line grows the buffer up to the format's
/// line limit.
pub(super) const BLOCK: usize = 1 << 20;

const TOKEN: u8 = 0;
const BLANK: u8 = 1;
const NEWLINE: u8 = 2;
const COMMENT: u8 = 3;
const DELIM: u8 = 4;

/// What each byte is to the tokenizer for one format.
pub(super) struct Syntax {
    class: [u8; 256],
    delimited: bool,
    comment: Option<u8>,
}

impl Syntax {
    pub(super) fn new(format: &Format) -> Syntax {
        let mut class = [TOKEN; 256];
        // The blanks of C's `isspace` but the newline; in a delimited format only the
        // ones that pad fields (spaces, tabs, the CR of CRLF).
        let blanks: &[u8] = match format.delimiter {
            None => b" \t\r\x0b\x0c",
            Some(_) => b" \t\r",
        };
        for &b in blanks {
            class[b as usize] = BLANK;
        }
        if let Some(d) = format.delimiter {
            class[d as usize] = DELIM;
        }
        if let Some(c) = format.comments {
            class[c as usize] = COMMENT;
        }
        class[b'\n' as usize] = NEWLINE;
        Syntax {
            class,
            delimited: format.delimiter.is_some(),
            comment: format.comments,
        }
    }

    /// Splits the line at `block[i..]` into `spans`; returns where its content ends (a
    /// comment, the newline or the block's end).
    #[inline(always)]
    fn tokenize(&self, block: &[u8], mut i: usize, spans: &mut Vec<(usize, usize)>) -> usize {
        let n = block.len();
        let class = &self.class;
        spans.clear();
        if !self.delimited {
            loop {
                while i < n && class[block[i] as usize] == BLANK {
                    i += 1;
                }
                if i == n || class[block[i] as usize] != TOKEN {
                    return i;
                }
                let start = i;
                i = self.token_end(block, i + 1);
                spans.push((start, i));
            }
        }
        // Delimited: a line of blanks only has no fields; otherwise every delimiter
        // separates two fields, each trimmed of blanks (and possibly empty).
        let mut j = i;
        while j < n && class[block[j] as usize] == BLANK {
            j += 1;
        }
        if j == n || matches!(class[block[j] as usize], NEWLINE | COMMENT) {
            return j;
        }
        loop {
            while i < n && class[block[i] as usize] == BLANK {
                i += 1;
            }
            let start = i;
            while i < n && class[block[i] as usize] <= BLANK {
                i += 1;
            }
            let mut end = i;
            while end > start && class[block[end - 1] as usize] == BLANK {
                end -= 1;
            }
            spans.push((start, end));
            if i < n && class[block[i] as usize] == DELIM {
                i += 1;
            } else {
                return i;
            }
        }
    }

    /// Where the token that continues at `block[i..]` ends (in a whitespace format): eight
    /// bytes at a time while none of them can end it, then byte by byte. A byte can end
    /// a token only if it is at most `b' '` or the comment mark; the lowest byte flagged
    /// by the word tests below is exact (a borrow only carries to higher bytes), and the
    /// class table decides for that byte.
    #[inline(always)]
    pub(super) fn token_end(&self, block: &[u8], mut i: usize) -> usize {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let n = block.len();
        let class = &self.class;
        let mark = ONES * u64::from(self.comment.unwrap_or(b' '));
        while let Some(bytes) = block.get(i..i + 8) {
            let word = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
            // Bytes below 0x21, and bytes equal to the comment mark.
            let low = word.wrapping_sub(ONES * 0x21) & !word & HIGH;
            let same = word ^ mark;
            let marked = same.wrapping_sub(ONES) & !same & HIGH;
            let flagged = low | marked;
            if flagged == 0 {
                i += 8;
                continue;
            }
            let j = i + (flagged.trailing_zeros() / 8) as usize;
            if class[block[j] as usize] != TOKEN {
                return j;
            }
            // A control byte inside the token: go on byte by byte from there.
            i = j + 1;
            break;
        }
        while i < n && class[block[i] as usize] == TOKEN {
            i += 1;
        }
        i
    }

    /// How many lines of `block` hold a row: anything but blanks before the newline or a
    /// comment (what [`tokenize`](Self::tokenize) finds fields in).
    fn count_rows(&self, block: &[u8]) -> usize {
        let Some(&first) = block.first() else {
            return 0;
        };
        let class = &self.class;
        // Fast path, in a form the compiler vectorises: when no line starts with a blank,
        // a control byte, the comment mark or a delimiter, every line is a row.
        let doubtful = |b: u8| b <= b' ' || class[b as usize] != TOKEN;
        let doubtful_starts = usize::from(doubtful(first))
            + count_pairs(block, |prev, b| prev == b'\n' && doubtful(b));
        if doubtful_starts == 0 {
            return 1 + count_newlines(&block[..block.len() - 1]);
        }
        let n = block.len();
        let mut rows = 0;
        let mut i = 0;
        while i < n {
            while i < n && class[block[i] as usize] == BLANK {
                i += 1;
            }
            if i < n && !matches!(class[block[i] as usize], NEWLINE | COMMENT) {
                rows += 1;
            }
            match block[i..].iter().position(|&b| b == b'\n') {
                Some(nl) => i += nl + 1,
                None => break,
            }
        }
        rows
    }

    /// Splits a header line into names: a leading comment mark is dropped (so
    /// `# chr pos pct` names columns), then the line splits like a row.
    fn header(&self, line: &[u8], comments: Option<u8>) -> Vec<String> {
        let mut line = line.trim_ascii();
        if let Some(c) = comments
            && line.first() == Some(&c)
        {
            line = &line[1..];
        }
        let names: Vec<&[u8]> = if self.delimited {
            line.split(|&b| self.class[b as usize] == DELIM)
                .map(<[u8]>::trim_ascii)
                .collect()
        } else {
            line.split(u8::is_ascii_whitespace)
                .filter(|t| !t.is_empty())
                .collect()
        };
        names
            .into_iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect()
    }
}

/// Reads `file` block by block and calls `each` with runs of whole lines (the last one
/// may lack its newline at the end of the file) and the 1-based number of the first,
/// until `each` returns `false`. A line longer than `max_line` bytes is
/// [`Error::LineTooLong`].
pub(super) fn for_each_block(
    path: &Path,
    file: &mut File,
    max_line: usize,
    mut each: impl FnMut(&[u8], usize) -> Result<bool, Error>,
) -> Result<(), Error> {
    let mut buf = vec![0u8; BLOCK.min(max_line.saturating_add(1)).max(64)];
    let mut filled = 0;
    let mut line = 1;
    loop {
        if filled == buf.len() {
            // One line fills the whole buffer: make room for the rest of it, up to the
            // limit (a line of max_line bytes plus its newline fits).
            if buf.len() > max_line {
                return Err(Error::LineTooLong {
                    path: path.to_path_buf(),
                    line,
                    limit: max_line,
                });
            }
            let grown = buf.len().saturating_mul(2).min(max_line.saturating_add(1));
            buf.resize(grown, 0);
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
            if !each(&buf[..end], line)? {
                return Ok(());
            }
            line += count_newlines(&buf[..end]);
            buf.copy_within(end..filled, 0);
            filled -= end;
        }
    }
}

/// How many `'\n'` bytes `bytes` holds.
pub(super) fn count_newlines(bytes: &[u8]) -> usize {
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

/// The parsing state of one file: lines still to skip, the header, the column plan, the
/// rows still wanted.
pub(super) struct Parser<'a> {
    path: &'a Path,
    format: &'a Format,
    syntax: Syntax,
    skip: usize,
    header_pending: bool,
    /// For each field, the file column it comes from; `None` when field k is column k.
    plan: Option<Vec<usize>>,
    /// Columns a line must have at least (with a plan) or exactly (without).
    needed: usize,
    rows_left: usize,
    counted: usize,
    first_line: bool,
    spans: Vec<(usize, usize)>,
    picked: Vec<(usize, usize)>,
}

impl<'a> Parser<'a> {
    pub(super) fn new<T: Row>(path: &'a Path, format: &'a Format) -> Result<Parser<'a>, Error> {
        format.check()?;
        let fields = T::FIELDS.len();
        let (plan, needed) = match &format.columns {
            Columns::Index(cols) => {
                if cols.len() != fields {
                    return Err(Error::Config(format!(
                        "usecols names {} columns but {} has {fields} fields",
                        cols.len(),
                        std::any::type_name::<T>()
                    )));
                }
                (Some(cols.clone()), cols.iter().max().map_or(0, |m| m + 1))
            }
            // Filled in from the header.
            Columns::Named(_) => (None, fields),
            Columns::All => (None, fields),
        };
        Ok(Parser {
            path,
            format,
            syntax: Syntax::new(format),
            skip: format.skiprows,
            header_pending: format.header || matches!(format.columns, Columns::Named(_)),
            plan,
            needed,
            rows_left: format.max_rows.unwrap_or(usize::MAX),
            counted: 0,
            first_line: true,
            spans: Vec::with_capacity(fields.max(8)),
            picked: Vec::with_capacity(fields),
        })
    }

    /// Maps the fields of `T` to the header's columns.
    #[cold]
    fn read_header<T: Row>(&mut self, line: &[u8], number: usize) -> Result<(), Error> {
        let names = self.syntax.header(line, self.format.comments);
        let wanted: Vec<&str> = match &self.format.columns {
            Columns::Named(wanted) => wanted.iter().map(String::as_str).collect(),
            // Given by index: the header is only skipped.
            Columns::Index(_) => return Ok(()),
            Columns::All => T::FIELDS.iter().map(|f| f.name).collect(),
        };
        if wanted.len() != T::FIELDS.len() {
            return Err(Error::Config(format!(
                "usecols names {} columns but {} has {} fields",
                wanted.len(),
                std::any::type_name::<T>(),
                T::FIELDS.len()
            )));
        }
        let mut plan = Vec::with_capacity(wanted.len());
        for name in wanted {
            match names.iter().position(|n| n == name) {
                Some(k) => plan.push(k),
                None => {
                    return Err(Error::Parse {
                        path: self.path.to_path_buf(),
                        line: number,
                        column: 1,
                        message: format!(
                            "the header has no column {name:?} (it names {})",
                            names.join(" ")
                        ),
                    });
                }
            }
        }
        let identity = plan.iter().enumerate().all(|(k, &c)| k == c);
        self.needed = plan.iter().max().map_or(0, |m| m + 1);
        if identity && names.len() == plan.len() {
            self.plan = None;
        } else {
            self.plan = Some(plan);
        }
        Ok(())
    }

    /// Skips a byte order mark, the lines to skip and the header at the start of the
    /// file; returns where the rows of `block` start and that line's number.
    fn prelude<T: Row>(&mut self, block: &[u8], mut line: usize) -> Result<(usize, usize), Error> {
        let n = block.len();
        let mut i = 0;
        if self.first_line {
            self.first_line = false;
            if block.starts_with(b"\xef\xbb\xbf") {
                i = 3;
            }
        }
        while i < n && (self.skip > 0 || self.header_pending) {
            let end = block[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(n, |nl| i + nl + 1);
            if self.skip > 0 {
                self.skip -= 1;
            } else {
                self.header_pending = false;
                self.read_header::<T>(&block[i..end], line)?;
            }
            i = end;
            line += 1;
        }
        Ok((i, line))
    }

    /// Counts the rows of `block` (lines with anything but blanks before a comment)
    /// without parsing them, adding them to [`counted`](Self::counted). Returns `false`
    /// once `max_rows` rows were counted.
    pub(super) fn count_block<T: Row>(&mut self, block: &[u8], line: usize) -> Result<bool, Error> {
        let (i, _) = self.prelude::<T>(block, line)?;
        let rows = self.syntax.count_rows(&block[i..]).min(self.rows_left);
        self.rows_left -= rows;
        self.counted += rows;
        Ok(self.rows_left > 0)
    }

    /// Rows counted by [`count_block`](Self::count_block).
    pub(super) fn counted(&self) -> usize {
        self.counted
    }

    /// Parses the rows of `block`, whose first line is number `line`, handing each to
    /// `emit`. Returns `false` once `max_rows` rows were read.
    pub(super) fn parse_block<T: Row>(
        &mut self,
        block: &[u8],
        mut line: usize,
        mut emit: impl FnMut(T),
    ) -> Result<bool, Error> {
        let n = block.len();
        let (mut i, first) = self.prelude::<T>(block, line)?;
        line = first;
        while i < n {
            if self.rows_left == 0 {
                return Ok(false);
            }
            let line_start = i;
            let content_end = self.syntax.tokenize(block, i, &mut self.spans);
            // Skip a comment, then the newline.
            i = match block[content_end..].iter().position(|&b| b == b'\n') {
                Some(nl) => content_end + nl + 1,
                None => n,
            };
            let found = self.spans.len();
            if found == 0 {
                line += 1;
                continue;
            }
            let spans: &[(usize, usize)] = match &self.plan {
                None if found == self.needed => &self.spans,
                Some(plan) if found >= self.needed => {
                    self.picked.clear();
                    self.picked.extend(plan.iter().map(|&c| self.spans[c]));
                    &self.picked
                }
                _ => return Err(self.wrong_count::<T>(block, line, line_start, content_end)),
            };
            match T::parse(&Tokens::new(block, spans)) {
                Ok(row) => emit(row),
                Err(bad) => {
                    return Err(self.bad_field::<T>(block, spans, bad.index, line, line_start));
                }
            }
            self.rows_left -= 1;
            line += 1;
        }
        Ok(self.rows_left > 0)
    }

    fn fail(&self, line: usize, column: usize, message: String) -> Error {
        Error::Parse {
            path: self.path.to_path_buf(),
            line,
            column,
            message,
        }
    }

    #[cold]
    fn wrong_count<T: Row>(
        &self,
        block: &[u8],
        line: usize,
        line_start: usize,
        content_end: usize,
    ) -> Error {
        let found = self.spans.len();
        let names: Vec<&str> = T::FIELDS.iter().map(|f| f.name).collect();
        let what = match &self.plan {
            Some(_) => format!("at least {} columns (for usecols)", self.needed),
            None => format!("{} columns ({})", self.needed, names.join(" ")),
        };
        if found > self.needed && self.plan.is_none() {
            let (start, end) = self.spans[self.needed];
            return self.fail(
                line,
                start - line_start + 1,
                format!(
                    "extra column {} {}: expected {what}, found {found}",
                    self.needed + 1,
                    quote(&block[start..end])
                ),
            );
        }
        let missing = match &self.plan {
            None => format!("missing field {}: ", names[found]),
            Some(_) => String::new(),
        };
        self.fail(
            line,
            content_end - line_start + 1,
            format!("{missing}expected {what}, found {found}"),
        )
    }

    #[cold]
    fn bad_field<T: Row>(
        &self,
        block: &[u8],
        spans: &[(usize, usize)],
        k: usize,
        line: usize,
        line_start: usize,
    ) -> Error {
        let field = &T::FIELDS[k];
        let (start, end) = spans[k];
        let token = &block[start..end];
        let column = self.plan.as_ref().map_or(k, |p| p[k]) + 1;
        let why = match field.kind {
            Kind::Ascii(n) => format!(" ({})", ascii_problem(token, n)),
            _ => String::new(),
        };
        self.fail(
            line,
            start - line_start + 1,
            format!(
                "field {} (column {column}): expected {}, found {}{why}",
                field.name,
                field.kind.expected(),
                quote(token)
            ),
        )
    }
}

/// A token for an error message: quoted, shortened when long.
pub(super) fn quote(token: &[u8]) -> String {
    const MAX: usize = 40;
    if token.is_empty() {
        return "an empty field".into();
    }
    if token.len() > MAX {
        format!(
            "\"{}...\"",
            String::from_utf8_lossy(&token[..MAX]).escape_debug()
        )
    } else {
        format!("\"{}\"", String::from_utf8_lossy(token).escape_debug())
    }
}
