//! The writer: rows as text lines that [`load`](super::load) and `np.loadtxt` read back
//! exactly.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::{Format, io_error, read::BLOCK};
use crate::error::Error;
use crate::row::{Kind, Row};

/// Writes `rows` as a text file in `format`: one line per row, the fields in declaration
/// order separated by the delimiter (a tab for [`Format::whitespace`]), after a line of
/// field names when the format has a [`header`](Format::header). Floats get the fewest
/// digits that read back as the same value, strings lose their NUL padding. An existing
/// file is replaced.
///
/// # Errors
/// [`Error::Io`] when the file cannot be created or written, or when a string field
/// could not be read back (it holds a blank, the delimiter, the comment mark or a byte
/// that is not printable ASCII, or is empty in a whitespace format): the message names
/// the row and the field, and the file is left incomplete.
///
/// # Examples
/// ```no_run
/// # #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, forkmap::Row)]
/// # #[repr(C)]
/// # struct Methylation { chr: [u8; 10], _pad: [u8; 2], pos: i32, pct: f32, c: i32, t: i32 }
/// use forkmap::text::{self, Format};
/// let rows = text::load::<Methylation>("data1.txt", &Format::whitespace())?;
/// text::write("data1.csv", rows.view(), &Format::delimited(b',').header())?;
/// # Ok::<(), forkmap::Error>(())
/// ```
pub fn write<'a, T: Row>(
    path: impl AsRef<Path>,
    rows: impl IntoIterator<Item = &'a T>,
    format: &Format,
) -> Result<(), Error> {
    let path = path.as_ref();
    format.check()?;
    let sep = format.separator();
    let run = || -> io::Result<()> {
        let mut out = BufWriter::with_capacity(BLOCK, File::create(path)?);
        if format.header {
            let names: Vec<&str> = T::FIELDS.iter().map(|f| f.name).collect();
            out.write_all(names.join(&(sep as char).to_string()).as_bytes())?;
            out.write_all(b"\n")?;
        }
        let mut line = Vec::with_capacity(256);
        for (k, row) in rows.into_iter().enumerate() {
            line.clear();
            format_row(row, format, sep, &mut line).map_err(|(field, why)| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("row {k}, field {field}: {why}"),
                )
            })?;
            out.write_all(&line)?;
        }
        out.flush()
    };
    run().map_err(|e| io_error(path, e))
}

/// Appends `row` as a text line, newline included; on a string that would not read back,
/// the field's name and why.
fn format_row<T: Row>(
    row: &T,
    format: &Format,
    sep: u8,
    line: &mut Vec<u8>,
) -> Result<(), (&'static str, String)> {
    let bytes = bytemuck::bytes_of(row);
    for (k, field) in T::FIELDS.iter().enumerate() {
        if k > 0 {
            line.push(sep);
        }
        let at = &bytes[field.offset..field.offset + field.kind.size()];
        macro_rules! ne {
            ($t:ty) => {
                <$t>::from_ne_bytes(at.try_into().expect("the field's size"))
            };
        }
        // Writing into a Vec cannot fail.
        let _ = match field.kind {
            Kind::I8 => write!(line, "{}", ne!(i8)),
            Kind::I16 => write!(line, "{}", ne!(i16)),
            Kind::I32 => write!(line, "{}", ne!(i32)),
            Kind::I64 => write!(line, "{}", ne!(i64)),
            Kind::U8 => write!(line, "{}", ne!(u8)),
            Kind::U16 => write!(line, "{}", ne!(u16)),
            Kind::U32 => write!(line, "{}", ne!(u32)),
            Kind::U64 => write!(line, "{}", ne!(u64)),
            Kind::F32 => write!(line, "{}", ne!(f32)),
            Kind::F64 => write!(line, "{}", ne!(f64)),
            Kind::Bool => write!(line, "{}", u8::from(at[0] != 0)),
            Kind::Ascii(_) => {
                let len = at.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
                let text = &at[..len];
                check_string(text, format).map_err(|why| (field.name, why))?;
                line.extend_from_slice(text);
                Ok(())
            }
        };
    }
    line.push(b'\n');
    Ok(())
}

/// Whether a string field reads back as itself in `format`.
fn check_string(text: &[u8], format: &Format) -> Result<(), String> {
    if text.is_empty() && format.delimiter.is_none() {
        return Err("an empty string cannot be written in a whitespace format".into());
    }
    if let Some(&b) = text.iter().find(|&&b| {
        !b.is_ascii_graphic() || Some(b) == format.delimiter || Some(b) == format.comments
    }) {
        return Err(format!(
            "{:?} holds byte 0x{b:02x}, which would not read back",
            String::from_utf8_lossy(text)
        ));
    }
    Ok(())
}
