//! Rows: your own `#[repr(C)]` plain-old-data structs as the element type of text files,
//! shared arrays, HDF5 compound datasets and numpy structured arrays, all at once.
//!
//! `#[derive(forkmap::Row)]` on a `#[repr(C)]` [`bytemuck::Pod`] struct lists its fields
//! (name, offset from `offset_of!`, [`Kind`]) in [`Row::FIELDS`] and writes a parser for
//! one line of them. Columns are the fields in declaration order; fields whose names
//! start with `_`, or marked `#[row(skip)]`, are padding: not columns of the text, holes
//! for numpy and HDF5, zero after parsing. `bytemuck::Pod` allows no implicit padding, so
//! a row spells its padding out.
//!
//! | Rust field | text | numpy dtype | HDF5 type |
//! |---|---|---|---|
//! | `i8` `i16` `i32` `i64` | decimal integer, optional sign | `<i1` `<i2` `<i4` `<i8` | signed integer, 1-8 bytes, little-endian |
//! | `u8` `u16` `u32` `u64` | decimal integer | `<u1` `<u2` `<u4` `<u8` | unsigned integer |
//! | `f32` `f64` | as `str::parse` (`1.5`, `-2e-3`, `inf`, `nan`) | `<f4` `<f8` | IEEE float |
//! | [`Bool`] | `0` `1` `true` `false` `True` `False` | `\|b1` | boolean (HDF5 enum of `u8`) |
//! | `[u8; N]` | printable ASCII, at most `N` bytes | `S{N}` | fixed ASCII string of `N` bytes, NUL padded |
//!
//! (`bool` itself cannot be a field: a byte other than 0 or 1 would be undefined
//! behaviour, so `bool` is not `Pod`; [`Bool`] is a byte that reads as one.) Byte orders
//! are the machine's (`<` on the little-endian machines forkmap runs on).
//!
//! # Examples
//! ```
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, forkmap::Row)]
//! #[repr(C)]
//! struct Methylation {
//!     chr: [u8; 10],
//!     _pad: [u8; 2],
//!     pos: i32,
//!     pct: f32,
//!     c: i32,
//!     t: i32,
//! }
//!
//! use forkmap::row::{Kind, Row};
//! let names: Vec<_> = Methylation::FIELDS.iter().map(|f| f.name).collect();
//! assert_eq!(names, ["chr", "pos", "pct", "c", "t"]);
//! assert_eq!(Methylation::FIELDS[1].offset, 12);
//! assert_eq!(Methylation::FIELDS[0].kind, Kind::Ascii(10));
//! ```
//!
//! Layout mistakes do not compile. Without `#[repr(C)]`:
//! ```compile_fail
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, forkmap::Row)]
//! struct NoRepr { a: i32, b: f32 }
//! ```
//! With another representation:
//! ```compile_fail
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, forkmap::Row)]
//! #[repr(C, packed)]
//! struct Packed { a: u8, b: i32 }
//! ```
//! With implicit padding (bytemuck's `Pod` refuses it: spell out `_pad: [u8; 3]`):
//! ```compile_fail
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, forkmap::Row)]
//! #[repr(C)]
//! struct Holes { a: u8, b: i32 }
//! ```
//! With a field type that is no column (here `[u16; 2]`: `Pod`, but no column kind):
//! ```compile_fail
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, forkmap::Row)]
//! #[repr(C)]
//! struct Pairs { a: u32, b: [u16; 2] }
//! ```
//! With tuple fields, or padding only:
//! ```compile_fail
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, forkmap::Row)]
//! #[repr(C)]
//! struct Tuple(i32, f32);
//! ```
//! ```compile_fail
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, forkmap::Row)]
//! #[repr(C)]
//! struct Nothing { _a: u32, #[row(skip)] b: u32 }
//! ```
//! With an unknown `row` attribute:
//! ```compile_fail
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, forkmap::Row)]
//! #[repr(C)]
//! struct Renamed { #[row(rename = "x")] a: u32 }
//! ```

mod parse;

pub(crate) use parse::ascii_problem;

use bytemuck::{Pod, Zeroable};

/// What a column holds: the element types a [`Row`] field can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64`.
    U64,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// [`Bool`].
    Bool,
    /// `[u8; N]`: ASCII, NUL padded (numpy `S{N}`).
    Ascii(usize),
}

impl Kind {
    /// Bytes a field of this kind takes.
    pub const fn size(self) -> usize {
        match self {
            Kind::I8 | Kind::U8 | Kind::Bool => 1,
            Kind::I16 | Kind::U16 => 2,
            Kind::I32 | Kind::U32 | Kind::F32 => 4,
            Kind::I64 | Kind::U64 | Kind::F64 => 8,
            Kind::Ascii(n) => n,
        }
    }

    /// numpy's type string for it (`"<i4"`, `"S10"`, `"|b1"`, ...).
    pub fn numpy(self) -> String {
        let order = if cfg!(target_endian = "little") {
            '<'
        } else {
            '>'
        };
        match self {
            Kind::I8 => "|i1".into(),
            Kind::U8 => "|u1".into(),
            Kind::Bool => "|b1".into(),
            Kind::I16 => format!("{order}i2"),
            Kind::I32 => format!("{order}i4"),
            Kind::I64 => format!("{order}i8"),
            Kind::U16 => format!("{order}u2"),
            Kind::U32 => format!("{order}u4"),
            Kind::U64 => format!("{order}u8"),
            Kind::F32 => format!("{order}f4"),
            Kind::F64 => format!("{order}f8"),
            Kind::Ascii(n) => format!("|S{n}"),
        }
    }

    /// What a token of this kind must be, for error messages.
    pub fn expected(self) -> String {
        match self {
            Kind::I8 => "an integer that fits in i8".into(),
            Kind::I16 => "an integer that fits in i16".into(),
            Kind::I32 => "an integer that fits in i32".into(),
            Kind::I64 => "an integer that fits in i64".into(),
            Kind::U8 => "an integer that fits in u8".into(),
            Kind::U16 => "an integer that fits in u16".into(),
            Kind::U32 => "an integer that fits in u32".into(),
            Kind::U64 => "an integer that fits in u64".into(),
            Kind::F32 => "a number (f32)".into(),
            Kind::F64 => "a number (f64)".into(),
            Kind::Bool => "a boolean (0, 1, true or false)".into(),
            Kind::Ascii(n) => format!("printable ASCII of at most {n} bytes"),
        }
    }
}

/// One column of a [`Row`]: its name, its byte offset in the row, its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// The field's name (a column name in text headers, numpy and HDF5).
    pub name: &'static str,
    /// Its byte offset in the struct.
    pub offset: usize,
    /// What it holds.
    pub kind: Kind,
}

/// A plain-old-data row type: implement it with `#[derive(forkmap::Row)]` (see the
/// [module docs](self)).
///
/// # Safety
/// [`FIELDS`](Self::FIELDS) must describe the type's real layout: each field's offset and
/// kind exactly, none overlapping, every one inside the struct. The HDF5 and `.npy`
/// writers hand the array's memory to libraries with this description. The derive
/// guarantees it (offsets from `offset_of!`, kinds from the field types).
pub unsafe trait Row: Pod {
    /// The columns, in declaration order (padding fields left out).
    const FIELDS: &'static [FieldSpec];

    /// Builds a row from one line's tokens, one per column of [`FIELDS`](Self::FIELDS);
    /// padding is zero.
    ///
    /// # Errors
    /// [`BadField`] with the column whose token does not parse.
    fn parse(tokens: &Tokens<'_>) -> Result<Self, BadField>;
}

/// The column (an index into [`Row::FIELDS`]) whose token did not parse; the loader
/// turns it into [`Error::Parse`](crate::Error::Parse) with the file, line, column and
/// what was expected and found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadField {
    /// The column, counting from 0 in [`Row::FIELDS`].
    pub index: usize,
}

/// One line's tokens, handed to [`Row::parse`]: a block of the file and the byte range of
/// each column's token in it.
#[derive(Debug, Clone, Copy)]
pub struct Tokens<'a> {
    block: &'a [u8],
    spans: &'a [(usize, usize)],
}

impl<'a> Tokens<'a> {
    /// The tokens `block[start..end]` for each `(start, end)` of `spans`.
    ///
    /// # Panics
    /// When [`get`](Self::get) is called with a span outside the block.
    pub fn new(block: &'a [u8], spans: &'a [(usize, usize)]) -> Tokens<'a> {
        Tokens { block, spans }
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The bytes of token `k`.
    pub fn bytes(&self, k: usize) -> &'a [u8] {
        let (start, end) = self.spans[k];
        &self.block[start..end]
    }

    /// Token `k` parsed as a `F`.
    ///
    /// # Errors
    /// [`BadField`] with index `k` when it does not parse.
    #[inline(always)]
    pub fn get<F: Field>(&self, k: usize) -> Result<F, BadField> {
        let (start, end) = self.spans[k];
        F::parse(self.block, start, end).ok_or(BadField { index: k })
    }
}

/// A type a [`Row`] column can have (see the table in the [module docs](self)).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a column of a forkmap row",
    label = "not a column type",
    note = "columns are i8..i64, u8..u64, f32, f64, forkmap::row::Bool or [u8; N] (numpy S{{N}}); \
            mark padding with a leading `_` or #[row(skip)]"
)]
pub trait Field: Pod {
    /// The column kind.
    const KIND: Kind;

    /// Parses the token `block[start..end]` (the whole block is there for parsers that
    /// read a fixed window past the token); `None` when it is not a valid `Self`.
    fn parse(block: &[u8], start: usize, end: usize) -> Option<Self>;
}

macro_rules! field {
    ($t:ty, $kind:ident, $parse:expr) => {
        impl Field for $t {
            const KIND: Kind = Kind::$kind;
            #[inline(always)]
            fn parse(block: &[u8], start: usize, end: usize) -> Option<Self> {
                $parse(&block[start..end])
            }
        }
    };
}

field!(i8, I8, parse::parse_signed::<i8>);
field!(i16, I16, parse::parse_signed::<i16>);
field!(i32, I32, parse::parse_signed::<i32>);
field!(i64, I64, parse::parse_signed::<i64>);
field!(u8, U8, parse::parse_unsigned::<u8>);
field!(u16, U16, parse::parse_unsigned::<u16>);
field!(u32, U32, parse::parse_unsigned::<u32>);
field!(u64, U64, parse::parse_unsigned::<u64>);
field!(f32, F32, parse::parse_f32);
field!(f64, F64, parse::parse_f64);
field!(Bool, Bool, |t| parse::parse_bool(t).map(Bool::from));

impl<const N: usize> Field for [u8; N]
where
    [u8; N]: Pod,
{
    const KIND: Kind = Kind::Ascii(N);
    #[inline(always)]
    fn parse(block: &[u8], start: usize, end: usize) -> Option<Self> {
        parse::parse_ascii::<N>(block, start, end)
    }
}

/// A boolean column: one byte, 0 or 1 (numpy `?`/`|b1`, an HDF5 boolean). `bool` itself
/// is not [`Pod`], because any other byte would be undefined behaviour; a `Bool` holding
/// another byte (from a file) reads as `true`.
#[repr(transparent)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Bool(pub u8);

impl Bool {
    /// Whether it is true (any byte but 0).
    pub fn get(self) -> bool {
        self.0 != 0
    }
}

impl From<bool> for Bool {
    fn from(b: bool) -> Bool {
        Bool(u8::from(b))
    }
}

impl From<Bool> for bool {
    fn from(b: Bool) -> bool {
        b.get()
    }
}

impl std::fmt::Debug for Bool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.get(), f)
    }
}

/// Checks that `T::FIELDS` fits `T` (inside the struct, not overlapping), so that a
/// wrong hand-written impl is caught before a library reads memory with it.
///
/// # Panics
/// When it does not.
pub(crate) fn check_layout<T: Row>() {
    let size = std::mem::size_of::<T>();
    let mut spans: Vec<(usize, usize)> = T::FIELDS
        .iter()
        .map(|f| (f.offset, f.offset + f.kind.size()))
        .collect();
    spans.sort_unstable();
    let inside = spans.iter().all(|&(_, end)| end <= size);
    let apart = spans.windows(2).all(|w| w[0].1 <= w[1].0);
    assert!(
        inside && apart,
        "Row::FIELDS of {} does not describe its layout",
        std::any::type_name::<T>()
    );
}

#[cfg(test)]
mod tests;
