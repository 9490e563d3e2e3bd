use super::*;
use crate::records::tests::Scratch;
use crate::row::Bool;

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable, crate::Row)]
#[repr(C)]
struct Price {
    ticker: [u8; 8],
    day: u32,
    _pad: [u8; 4],
    close: f64,
}

fn price(ticker: &str, day: u32, close: f64) -> Price {
    let mut t = [0u8; 8];
    t[..ticker.len()].copy_from_slice(ticker.as_bytes());
    Price {
        ticker: t,
        day,
        _pad: [0; 4],
        close,
    }
}

/// Loads `text` both ways and checks that they agree.
fn both<T: Row + PartialEq + std::fmt::Debug>(
    scratch: &Scratch,
    text: &[u8],
    format: &Format,
) -> Result<Vec<T>, Error> {
    let path = scratch.0.join("t.txt");
    std::fs::write(&path, text).unwrap();
    match (load::<T>(&path, format), load_shared::<T>(&path, format)) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.as_slice().unwrap(), b.read().as_slice().unwrap());
            Ok(a.to_vec())
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
            Err(a)
        }
        (a, b) => panic!("load and load_shared disagree: {a:?} / {b:?}"),
    }
}

fn parse_error(err: Error) -> (usize, usize, String) {
    let text = err.to_string();
    match err {
        Error::Parse {
            line,
            column,
            message,
            ..
        } => (line, column, message),
        other => panic!("not a parse error: {other:?} ({text})"),
    }
}

#[test]
fn csv_with_a_header_comments_crlf_and_a_bom() {
    let s = Scratch::new("csv");
    let csv = Format::delimited(b',').comments(b'#').header();
    let text = b"\xef\xbb\xbfticker , day,close\r\n# a comment\r\n\r\nACME, 1 ,10.5\r\n  BOLT,2,-1e3 # late\r\nX,3,inf";
    let rows: Vec<Price> = both(&s, text, &csv).unwrap();
    assert_eq!(
        rows,
        [
            price("ACME", 1, 10.5),
            price("BOLT", 2, -1000.0),
            price("X", 3, f64::INFINITY)
        ]
    );
    // The header matches fields by name, in any order.
    let text = b"close\tticker\tday\n1.5\tA\t7\n";
    let rows: Vec<Price> = both(&s, text, &Format::delimited(b'\t').header()).unwrap();
    assert_eq!(rows, [price("A", 7, 1.5)]);
    // Whitespace with a commented header, as the tutorial's files have.
    let text = b"# day close ticker\n3 2.5 Z\n";
    let rows: Vec<Price> = both(&s, text, &Format::whitespace().header()).unwrap();
    assert_eq!(rows, [price("Z", 3, 2.5)]);
    // An empty string field is allowed in CSV, an empty number is not.
    let rows: Vec<Price> = both(&s, b",1,2\n", &Format::delimited(b',')).unwrap();
    assert_eq!(rows, [price("", 1, 2.0)]);
    let (line, column, message) =
        parse_error(both::<Price>(&s, b"A,1,2\nB,,2\n", &Format::delimited(b',')).unwrap_err());
    assert_eq!((line, column), (2, 3));
    assert!(
        message.contains(
            "field day (column 2): expected an integer that fits in u32, found an empty field"
        ),
        "{message}"
    );
}

#[test]
fn usecols_skiprows_and_max_rows() {
    let s = Scratch::new("usecols");
    let text = b"junk line\nname day x close\nA 1 x 1.5\nB 2 y 2.5\n\n# c\nC 3 z 3.5\n";
    let by_index = Format::whitespace().skiprows(2).usecols([0, 1, 3]);
    let rows: Vec<Price> = both(&s, text, &by_index).unwrap();
    assert_eq!(
        rows,
        [price("A", 1, 1.5), price("B", 2, 2.5), price("C", 3, 3.5)]
    );
    let by_name = Format::whitespace()
        .skiprows(1)
        .usecols_named(["name", "day", "close"]);
    assert_eq!(both::<Price>(&s, text, &by_name).unwrap(), rows);
    let two = by_name.clone().max_rows(2);
    assert_eq!(both::<Price>(&s, text, &two).unwrap(), rows[..2]);
    // max_rows stops before a bad line.
    let text_bad = b"A 1 1\nB 2 2\nbad\n";
    assert_eq!(
        both::<Price>(&s, text_bad, &Format::whitespace().max_rows(2))
            .unwrap()
            .len(),
        2
    );
    // A missing header column is named.
    let missing = Format::whitespace()
        .skiprows(1)
        .usecols_named(["name", "when", "close"]);
    let (line, _, message) = parse_error(both::<Price>(&s, text, &missing).unwrap_err());
    assert_eq!(line, 2);
    assert!(message.contains("no column \"when\""), "{message}");
    // Too few columns for usecols.
    let (line, _, message) = parse_error(
        both::<Price>(
            &s,
            b"A 1 x 2\nB 2 x\n",
            &Format::whitespace().usecols([0, 1, 3]),
        )
        .unwrap_err(),
    );
    assert_eq!(line, 2);
    assert!(message.contains("at least 4 columns"), "{message}");
    // usecols of the wrong length is a configuration error.
    let err = both::<Price>(&s, text, &Format::whitespace().usecols([0, 1])).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[test]
fn a_line_past_the_limit_is_a_named_error() {
    let s = Scratch::new("limit");
    let mut text = b"A 1 1\n".to_vec();
    text.extend(std::iter::repeat_n(b'x', 5000));
    text.extend_from_slice(b"\nB 2 2\n");
    let small = Format::whitespace().max_line_bytes(1000);
    match both::<Price>(&s, &text, &small).unwrap_err() {
        Error::LineTooLong { line, limit, path } => {
            assert_eq!((line, limit), (2, 1000));
            assert!(path.ends_with("t.txt"));
        }
        other => panic!("{other:?}"),
    }
    // A line of exactly the limit is fine, with or without its newline.
    let exact = Format::whitespace().max_line_bytes(5000);
    let rows = both::<Price>(&s, &text, &exact.clone().comments(b'x'));
    assert_eq!(rows.unwrap().len(), 2);
    text.truncate(text.len() - 7);
    assert!(both::<Price>(&s, &text, &exact.comments(b'x')).is_ok());
}

#[test]
fn dev_zero_fails_fast_with_bounded_memory() {
    // An endless file without newlines: the buffer stops at the limit (16 MiB by default).
    let err = crate::records::load_shared("/dev/zero").unwrap_err();
    assert!(
        matches!(
            err,
            Error::LineTooLong {
                line: 1,
                limit: MAX_LINE_BYTES,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("/dev/zero:1: line longer than 16777216 bytes"),
        "{err}"
    );
    let err =
        load::<Price>("/dev/zero", &Format::delimited(b',').max_line_bytes(4096)).unwrap_err();
    assert!(
        matches!(err, Error::LineTooLong { limit: 4096, .. }),
        "{err}"
    );
}

#[test]
fn bad_formats_are_refused() {
    let s = Scratch::new("formats");
    for format in [
        Format::delimited(b',').comments(b','),
        Format::delimited(b'\n'),
        Format::whitespace().comments(b' '),
        Format::whitespace().max_line_bytes(0),
    ] {
        let err = both::<Price>(&s, b"A 1 1\n", &format).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{format:?}: {err}");
    }
}

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable, crate::Row)]
#[repr(C)]
struct Every {
    a: i8,
    b: u8,
    flag: Bool,
    name: [u8; 5],
    c: i16,
    d: u16,
    e: i32,
    f: u32,
    g: f32,
    h: i64,
    i: u64,
    j: f64,
}

fn every(rng: &mut fastrand::Rng) -> Every {
    let mut name = [0u8; 5];
    for b in name.iter_mut().take(rng.usize(1..6)) {
        *b = rng.u8(b'!'..=b'~');
        if *b == b'#' || *b == b',' {
            *b = b'a';
        }
    }
    Every {
        a: rng.i8(..),
        b: rng.u8(..),
        flag: Bool(u8::from(rng.bool())),
        name,
        c: rng.i16(..),
        d: rng.u16(..),
        e: rng.i32(..),
        f: rng.u32(..),
        // NaN payloads and signs do not survive text (numpy writes them as "nan" too).
        g: Some(f32::from_bits(rng.u32(..)))
            .filter(|g| !g.is_nan())
            .unwrap_or(f32::NAN),
        h: rng.i64(..),
        i: rng.u64(..),
        j: Some(f64::from_bits(rng.u64(..)))
            .filter(|j| !j.is_nan())
            .unwrap_or(f64::NAN),
    }
}

#[test]
fn the_writer_round_trips_every_kind() {
    let s = Scratch::new("writer");
    let mut rng = fastrand::Rng::with_seed(11);
    let rows: Vec<Every> = (0..5000).map(|_| every(&mut rng)).collect();
    let bits = |r: &[Every]| -> Vec<Vec<u8>> {
        r.iter().map(|e| bytemuck::bytes_of(e).to_vec()).collect()
    };
    for format in [
        Format::whitespace(),
        Format::delimited(b',').header(),
        Format::delimited(b'\t').comments(b'#'),
    ] {
        let path = s.0.join("w.txt");
        write(&path, &rows, &format).unwrap();
        let back = load::<Every>(&path, &format).unwrap();
        // Bit for bit: -0.0, subnormals and infinities included.
        let (got, want) = (bits(back.as_slice().unwrap()), bits(&rows));
        assert_eq!(got.len(), want.len());
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(a, b, "{format:?}: row {k}: {:?} vs {:?}", back[k], rows[k]);
        }
    }
    // A string that would not read back is refused, naming row and field.
    let mut bad = rows[..3].to_vec();
    bad[2].name = *b"a,b\0\0";
    let err = write(s.0.join("bad.csv"), &bad, &Format::delimited(b',')).unwrap_err();
    assert!(err.to_string().contains("bad.csv"), "{err}");
    let Error::Io { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(source.to_string().contains("row 2, field name"), "{source}");
    bad[2].name = [0; 5];
    assert!(write(s.0.join("bad.txt"), &bad, &Format::whitespace()).is_err());
    assert!(write(s.0.join("ok.csv"), &bad, &Format::delimited(b',')).is_ok());
}

#[test]
fn garbage_is_an_error_never_a_panic() {
    let s = Scratch::new("garbage");
    let mut rng = fastrand::Rng::with_seed(23);
    let alphabet = b"0123456789 .,-+eE#\t\r\nabc\xff\x00";
    for round in 0..300 {
        let len = rng.usize(0..200);
        let text: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.usize(..alphabet.len())])
            .collect();
        let format = if round % 2 == 0 {
            Format::whitespace()
        } else {
            Format::delimited(b',')
        };
        match both::<Every>(&s, &text, &format) {
            Ok(_) | Err(Error::Parse { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_word_at_a_time_token_scan_agrees_with_the_class_table() {
    let mut rng = fastrand::Rng::with_seed(31);
    let alphabet = b"abcdefgh0123456789.-\x00\x01\x1f\x7f\x80\xff !#\t\r\n\x0b\x0c";
    for format in [
        Format::whitespace(),
        Format::whitespace().no_comments(),
        Format::whitespace().comments(b'a'),
    ] {
        let syntax = read::Syntax::new(&format);
        let ends = |b: u8| {
            matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c) || Some(b) == format.comments
        };
        for _ in 0..20_000 {
            let len = rng.usize(1..40);
            // Mostly token bytes, so that runs longer than a word occur.
            let block: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.u8(..) < 200 {
                        alphabet[rng.usize(..10)]
                    } else {
                        alphabet[rng.usize(..alphabet.len())]
                    }
                })
                .collect();
            let start = rng.usize(..len);
            let want = (start..len).find(|&k| ends(block[k])).unwrap_or(len);
            let want = want.max(start);
            let got = syntax.token_end(&block, start);
            // token_end is called past a token byte: where `start` itself ends a token,
            // compare from the next byte.
            if start < len && ends(block[start]) {
                continue;
            }
            assert_eq!(got, want, "{block:?} from {start}");
        }
    }
}
