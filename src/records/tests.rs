use super::*;

/// A scratch directory for one test, removed on drop (also used by the HDF5 tests).
pub(crate) struct Scratch(pub(crate) std::path::PathBuf);

impl Scratch {
    pub(crate) fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "forkmap-records-{test}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, contents: &[u8]) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn rec(chr: &str, pos: i32, pct: f32, c: i32, t: i32) -> Record {
    Record::new(chr, pos, pct, c, t).unwrap()
}

/// Records equal bit for bit (so NaN equals itself and -0.0 differs from 0.0).
pub(crate) fn same(a: &[Record], b: &[Record]) -> bool {
    bytemuck::cast_slice::<Record, u8>(a) == bytemuck::cast_slice::<Record, u8>(b)
}

/// Loads `text` both ways and checks that they agree.
fn load_text(scratch: &Scratch, text: &[u8]) -> Result<Vec<Record>, Error> {
    let path = scratch.file("t.txt", text);
    let owned = load(&path);
    let shared = load_shared(&path);
    match (owned, shared) {
        (Ok(a), Ok(b)) => {
            let a = a.to_vec();
            assert!(same(&a, b.read().as_slice().unwrap()));
            Ok(a)
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
            Err(a)
        }
        (a, b) => panic!("load and load_shared disagree: {a:?} / {b:?}"),
    }
}

#[test]
fn layout_is_fixed() {
    assert_eq!(std::mem::size_of::<Record>(), 28);
    let r = rec("chr1", 0x0102_0304, 1.0, 5, 6);
    let bytes = bytemuck::bytes_of(&r);
    assert_eq!(&bytes[..6], b"chr1\0\0");
    assert_eq!(&bytes[10..12], &[0, 0]);
    assert_eq!(&bytes[12..16], &0x0102_0304_i32.to_ne_bytes());
}

#[test]
fn new_checks_chr() {
    assert!(Record::new("chr1234567", 1, 0.0, 0, 0).is_some());
    assert!(Record::new("chr12345678", 1, 0.0, 0, 0).is_none());
    assert!(Record::new("", 1, 0.0, 0, 0).is_none());
    assert!(Record::new("chr 1", 1, 0.0, 0, 0).is_none());
    assert!(Record::new("chré", 1, 0.0, 0, 0).is_none());
    let r = rec("chr1234567", 1, 0.0, 0, 0);
    assert_eq!(r.chr_str(), "chr1234567");
    assert_eq!(r.chr_bytes().len(), 10);
}

#[test]
fn display_and_debug() {
    let r = rec("chrX", -5, 0.1, 2, 3);
    assert_eq!(r.to_string(), "chrX\t-5\t0.1\t2\t3");
    assert_eq!(
        format!("{r:?}"),
        "Record { chr: \"chrX\", pos: -5, pct: 0.1, c: 2, t: 3 }"
    );
}

#[test]
fn round_trip_sample() {
    let scratch = Scratch::new("sample");
    let path = scratch.0.join("s.txt");
    // Enough rows to cross several read blocks.
    write_sample(&path, 120_000, 9).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 2 * crate::text::BLOCK_BYTES as u64);
    let expected: Vec<Record> = sample(120_000, 9).collect();
    assert_eq!(expected.len(), 120_000);
    let loaded = load(&path).unwrap();
    assert!(same(&expected, loaded.as_slice().unwrap()));
    let shared = load_shared(&path).unwrap();
    assert_eq!(shared.shape(), &[120_000]);
    assert!(same(&expected, shared.read().as_slice().unwrap()));
    // Deterministic per seed, different across seeds.
    assert!(same(&expected, &sample(120_000, 9).collect::<Vec<_>>()));
    assert!(!same(&expected, &sample(120_000, 10).collect::<Vec<_>>()));
    assert_eq!(expected[0].chr_str(), "chr1");
    assert_eq!(expected[119_999].chr_str(), "chrM");
    assert!(
        expected
            .iter()
            .all(|r| r.c + r.t > 0 && (0.0..=100.0).contains(&r.pct))
    );
}

#[test]
fn round_trip_extremes() {
    let scratch = Scratch::new("extremes");
    let rows = vec![
        rec("chr1234567", i32::MIN, f32::MIN_POSITIVE, i32::MAX, 0),
        rec("a", i32::MAX, f32::MAX, -1, i32::MIN),
        rec("~!$%", 0, -0.0, 0, 0),
        rec("b", 1, f32::from_bits(1), 1, 1),
        rec("c", 2, f32::NAN, 1, 1),
        rec("d", 3, f32::NEG_INFINITY, 1, 1),
        rec("e", 4, 0.1, 1, 1),
        rec("f", 5, 1.0e-7, 1, 1),
        rec("g", 6, 123_456_790.0, 1, 1),
        rec("h", 7, 16_777_217.0, 1, 1),
    ];
    let path = scratch.0.join("x.txt");
    write(&path, &rows).unwrap();
    assert!(same(&rows, load(&path).unwrap().as_slice().unwrap()));
    write(&path, rows.iter().copied()).unwrap();
    assert!(same(
        &rows,
        load_shared(&path).unwrap().read().as_slice().unwrap()
    ));
}

#[test]
fn whitespace_comments_and_line_ends() {
    let scratch = Scratch::new("ws");
    let text = b"# header\n\n   \n\tchr1 10\t\t1.5 1 2   # trailing comment\r\n\
                 chr2 20 +2.5e1 -3 +4\r\n  # indented comment\nchr3 30 .5 0 0#glued\n\
                 chr4 40 5. 7 8";
    let rows = load_text(&scratch, text).unwrap();
    let expected = [
        rec("chr1", 10, 1.5, 1, 2),
        rec("chr2", 20, 25.0, -3, 4),
        rec("chr3", 30, 0.5, 0, 0),
        rec("chr4", 40, 5.0, 7, 8),
    ];
    assert!(same(&rows, &expected), "{rows:?}");
}

#[test]
fn empty_and_comment_only_files() {
    let scratch = Scratch::new("empty");
    assert!(load_text(&scratch, b"").unwrap().is_empty());
    assert!(
        load_text(&scratch, b"\n\n# nothing\n   \n")
            .unwrap()
            .is_empty()
    );
    let path = scratch.file("e.txt", b"");
    let shared = load_shared(&path).unwrap();
    assert!(shared.is_empty());
    assert_eq!(shared.shape(), &[0]);
}

#[test]
fn a_line_longer_than_a_block() {
    let scratch = Scratch::new("long");
    let mut text = b"chr1 1 1 1 1\n#".to_vec();
    text.extend(std::iter::repeat_n(b'x', 3 * crate::text::BLOCK_BYTES));
    text.extend_from_slice(b"\nchr2 2 2 2 2\n");
    let rows = load_text(&scratch, &text).unwrap();
    assert!(same(
        &rows,
        &[rec("chr1", 1, 1.0, 1, 1), rec("chr2", 2, 2.0, 2, 2)]
    ));
    // An error after the long line still has the right line number.
    text.extend_from_slice(b"chr3 3 x 3 3\n");
    let err = load_text(&scratch, &text).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Parse {
                line: 4,
                column: 8,
                ..
            }
        ),
        "{err}"
    );
}

/// (file contents, line, column, words the message must contain)
const MALFORMED: &[(&str, usize, usize, &str)] = &[
    (
        "chr1 1 1 1\n",
        1,
        11,
        "missing field t: expected 5 columns (chr pos pct c t), found 4",
    ),
    ("chr1 1 1 1 1\nchr2\n", 2, 5, "missing field pos"),
    ("chr1 1 1 1 1 1\n", 1, 14, "extra column 6 \"1\""),
    (
        "\n\n  chr1 x 1 1 1\n",
        3,
        8,
        "field pos (column 2): expected an integer that fits in i32, found \"x\"",
    ),
    (
        "chr1 1 1 1 1\nchr1 1 1.5.1 1 1\n",
        2,
        8,
        "field pct (column 3): expected a number (f32), found \"1.5.1\"",
    ),
    (
        "chr1 1 1 1.0 1\n",
        1,
        10,
        "field c (column 4): expected an integer",
    ),
    (
        "chr1 1 1 1 2147483648\n",
        1,
        12,
        "field t (column 5): expected an integer that fits in i32, found \"2147483648\"",
    ),
    ("chr1 -2147483649 1 1 1\n", 1, 6, "field pos"),
    (
        "chr1 1 nan% 1 1\n",
        1,
        8,
        "field pct (column 3): expected a number (f32), found \"nan%\"",
    ),
    (
        "chr1 1 1 1 -\n",
        1,
        12,
        "field t (column 5): expected an integer that fits in i32, found \"-\"",
    ),
    (
        "# x\r\nchr12345678 1 1 1 1\r\n",
        2,
        1,
        "field chr (column 1): expected printable ASCII of at most 10 bytes, found \"chr12345678\" (11 bytes, longer than 10)",
    ),
    ("chr\u{e9} 1 1 1 1\n", 1, 1, "not printable ASCII (0xc3)"),
    (
        "chr1 1 1 1 1 # fine\n chr2 2 2 2\t# not fine\n",
        2,
        13,
        "missing field t",
    ),
];

#[test]
fn malformed_rows_name_line_and_column() {
    let scratch = Scratch::new("malformed");
    for &(text, line, column, words) in MALFORMED {
        let err = load_text(&scratch, text.as_bytes()).unwrap_err();
        let message = err.to_string();
        match &err {
            Error::Parse {
                path,
                line: l,
                column: c,
                ..
            } => {
                assert_eq!((*l, *c), (line, column), "{text:?}: {message}");
                assert!(path.ends_with("t.txt"));
            }
            other => panic!("{text:?}: not a parse error: {other:?}"),
        }
        assert!(message.contains(words), "{text:?}: {message}");
        assert!(
            message.contains(&format!("t.txt:{line}:{column}: ")),
            "{message}"
        );
    }
}

#[test]
fn missing_file_is_an_io_error() {
    let scratch = Scratch::new("missing");
    let path = scratch.0.join("nope.txt");
    for err in [load(&path).unwrap_err(), load_shared(&path).unwrap_err()] {
        match &err {
            Error::Io { path: p, source } => {
                assert_eq!(p, &path);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("nope.txt"));
    }
}

#[test]
fn sample_has_the_requested_rows() {
    assert_eq!(sample(0, 1).count(), 0);
    assert_eq!(sample(1, 1).count(), 1);
    assert_eq!(sample(37, 1).len(), 37);
    let rows: Vec<Record> = sample(25, 1).collect();
    let names: Vec<_> = rows.iter().map(|r| r.chr_str().into_owned()).collect();
    assert_eq!(names, CHROMOSOMES);
}
