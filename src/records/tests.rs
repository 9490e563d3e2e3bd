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
    assert!(std::fs::metadata(&path).unwrap().len() > 2 * BLOCK as u64);
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
    text.extend(std::iter::repeat_n(b'x', 3 * BLOCK));
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
    ("chr1 1 1 1\n", 1, 11, "missing field t (found 4 of 5"),
    ("chr1 1 1 1 1\nchr2\n", 2, 5, "missing field pos"),
    ("chr1 1 1 1 1 1\n", 1, 14, "unexpected sixth field \"1\""),
    ("\n\n  chr1 x 1 1 1\n", 3, 8, "field pos is \"x\""),
    (
        "chr1 1 1 1 1\nchr1 1 1.5.1 1 1\n",
        2,
        8,
        "field pct is \"1.5.1\"",
    ),
    ("chr1 1 1 1.0 1\n", 1, 10, "field c is \"1.0\""),
    (
        "chr1 1 1 1 2147483648\n",
        1,
        12,
        "field t is \"2147483648\"",
    ),
    ("chr1 -2147483649 1 1 1\n", 1, 6, "field pos"),
    ("chr1 1 nan% 1 1\n", 1, 8, "field pct is \"nan%\""),
    ("chr1 1 1 1 -\n", 1, 12, "field t is \"-\""),
    (
        "# x\r\nchr12345678 1 1 1 1\r\n",
        2,
        1,
        "chr \"chr12345678\" is 11 bytes, longer than 10",
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
fn integers() {
    for (text, value) in [
        ("0", Some(0)),
        ("-0", Some(0)),
        ("+17", Some(17)),
        ("000000000000042", Some(42)),
        ("2147483647", Some(i32::MAX)),
        ("-2147483648", Some(i32::MIN)),
        ("2147483648", None),
        ("-2147483649", None),
        ("99999999999999999999", None),
        ("", None),
        ("+", None),
        ("1e3", None),
        ("--1", None),
        ("1_000", None),
    ] {
        assert_eq!(parse_i32(text.as_bytes()), value, "{text:?}");
    }
}

#[test]
fn floats_match_the_standard_parser() {
    let fixed = [
        "0",
        "-0",
        "0.0",
        "1",
        "1.",
        ".5",
        "-.5",
        "+.5",
        "0.1",
        "0.3",
        "3.1415927",
        "100",
        "99.99999",
        "1234567",
        "12345678",
        "0.0000001",
        "1e10",
        "1E-5",
        "-2.5e+3",
        "inf",
        "-inf",
        "Infinity",
        "nan",
        "NaN",
        "3.4028235e38",
        "3.4028236e38",
        "1e39",
        "1e-46",
        "16777217",
        "0.00000000001",
        "9999999.",
        "0.9999999",
    ];
    let check = |text: &str| {
        let expected: Option<f32> = text.parse().ok();
        let got = parse_f32(text.as_bytes());
        assert_eq!(
            got.map(f32::to_bits),
            expected.map(f32::to_bits),
            "{text:?}: {got:?} vs {expected:?}"
        );
    };
    for text in fixed {
        check(text);
    }
    for bad in [
        "", "-", ".", "1.2.3", "1..", "e5", "1e", "0x10", "1,5", "--1",
    ] {
        assert_eq!(parse_f32(bad.as_bytes()), None, "{bad:?}");
    }
    let mut rng = fastrand::Rng::with_seed(5);
    let stress: usize = std::env::var("FORKMAP_STRESS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for _ in 0..200_000 * stress {
        let int_digits = rng.usize(0..11);
        let frac_digits = rng.usize(0..12);
        let mut text = String::new();
        if rng.bool() {
            text.push('-');
        }
        for _ in 0..int_digits {
            text.push(char::from(b'0' + rng.u8(0..10)));
        }
        if frac_digits > 0 || rng.bool() {
            text.push('.');
        }
        for _ in 0..frac_digits {
            text.push(char::from(b'0' + rng.u8(0..10)));
        }
        check(&text);
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

#[test]
fn floats_next_to_midpoints() {
    // Midpoints between neighbouring f32 in [2^16, 2^24) have at most 8 decimals, so the
    // fast path sees them exactly, and their neighbours 1e-8 away.
    let mut rng = fastrand::Rng::with_seed(17);
    for _ in 0..100_000 {
        let x = f32::from_bits(rng.u32((1 << 16) as f32 as u32..(1 << 24) as f32 as u32));
        let up = f32::from_bits(x.to_bits() + 1);
        let mid = (f64::from(x) + f64::from(up)) / 2.0;
        for text in [
            format!("{mid:.8}"),
            format!("{:.8}", mid - 1e-8),
            format!("{:.8}", mid + 1e-8),
            format!("{mid:.7}"),
        ] {
            let expected: f32 = text.parse().unwrap();
            assert_eq!(
                parse_f32(text.as_bytes()).map(f32::to_bits),
                Some(expected.to_bits()),
                "{text}"
            );
        }
    }
}

#[test]
fn counting_agrees_with_parsing() {
    let texts: [&[u8]; 9] = [
        b"a 1 1 1 1\nb 2 2 2 2\n",
        b"a 1 1 1 1\nb 2 2 2 2",
        b"\n\na 1 1 1 1\n\n",
        b"# c\na 1 1 1 1\n  # c\n\t\n",
        b"   a 1 1 1 1\r\n\r\nb 2 2 2 2\r\n",
        b"a 1 1 1 1 # c\n#\n#\n",
        b"\n",
        b"#",
        b"",
    ];
    for text in texts {
        let parsed = parse_block(text, 1, Path::new("x"), |_| true).unwrap();
        assert_eq!(
            count_rows(text),
            parsed,
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }
    // A line starting with a control byte is a (malformed) row for both.
    assert_eq!(count_rows(b"\x01 1 1 1 1\n"), 1);
    assert_eq!(count_newlines(&b"\n".repeat(1000)), 1000);
    assert_eq!(
        count_pairs(b"\nx\ny\n\n", |a, b| a == b'\n' && b != b'\n'),
        2
    );
}
