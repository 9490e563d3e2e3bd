use super::parse::{parse_bool, parse_f32, parse_f64, parse_signed, parse_unsigned};
use super::*;

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
        assert_eq!(parse_signed::<i32>(text.as_bytes()), value, "{text:?}");
    }
}

#[test]
fn integers_of_every_width_match_the_standard_parser() {
    fn check<T: std::str::FromStr + PartialEq + std::fmt::Debug + Field>(text: &str) {
        let expected: Option<T> = text.parse().ok();
        let got = T::parse(text.as_bytes(), 0, text.len());
        // std refuses "-0" for unsigned types; numpy and forkmap read it as 0.
        if text.trim_start_matches('-').bytes().all(|b| b == b'0') && !text.is_empty() {
            assert!(got.is_some(), "{text:?}");
            return;
        }
        assert_eq!(got, expected, "{text:?} as {}", std::any::type_name::<T>());
    }
    let mut texts: Vec<String> = [
        i8::MIN as i128,
        i8::MAX as i128,
        u8::MAX as i128,
        i16::MIN as i128,
        u16::MAX as i128,
        i32::MIN as i128,
        u32::MAX as i128,
        i64::MIN as i128,
        i64::MAX as i128,
        u64::MAX as i128,
    ]
    .iter()
    .flat_map(|&v| [v - 1, v, v + 1])
    .map(|v| v.to_string())
    .collect();
    texts.extend(
        [
            "-0",
            "+0",
            "00000000000000000000000001",
            "18446744073709551616",
        ]
        .map(String::from),
    );
    let mut rng = fastrand::Rng::with_seed(3);
    for _ in 0..20_000 {
        let digits = rng.usize(1..22);
        let mut t: String = if rng.bool() {
            "-".into()
        } else {
            String::new()
        };
        t.extend((0..digits).map(|_| char::from(b'0' + rng.u8(0..10))));
        texts.push(t);
    }
    for t in &texts {
        check::<i8>(t);
        check::<i16>(t);
        check::<i32>(t);
        check::<i64>(t);
        check::<u8>(t);
        check::<u16>(t);
        check::<u32>(t);
        check::<u64>(t);
    }
    assert_eq!(parse_unsigned::<u8>(b"-1"), None);
    assert_eq!(parse_signed::<i64>(b"-9223372036854775808"), Some(i64::MIN));
}

fn random_decimal(rng: &mut fastrand::Rng) -> String {
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
    text
}

const FIXED_FLOATS: [&str; 32] = [
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

const BAD_FLOATS: [&str; 10] = [
    "", "-", ".", "1.2.3", "1..", "e5", "1e", "0x10", "1,5", "--1",
];

#[test]
fn floats_match_the_standard_parser() {
    let check = |text: &str| {
        let expected: Option<f32> = text.parse().ok();
        let got = parse_f32(text.as_bytes());
        assert_eq!(
            got.map(f32::to_bits),
            expected.map(f32::to_bits),
            "{text:?}: {got:?} vs {expected:?}"
        );
        let expected: Option<f64> = text.parse().ok();
        let got = parse_f64(text.as_bytes());
        assert_eq!(
            got.map(f64::to_bits),
            expected.map(f64::to_bits),
            "{text:?}: {got:?} vs {expected:?}"
        );
    };
    for text in FIXED_FLOATS {
        check(text);
    }
    for bad in BAD_FLOATS {
        assert_eq!(parse_f32(bad.as_bytes()), None, "{bad:?}");
        assert_eq!(parse_f64(bad.as_bytes()), None, "{bad:?}");
    }
    let mut rng = fastrand::Rng::with_seed(5);
    let stress: usize = std::env::var("FORKMAP_STRESS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for _ in 0..200_000 * stress {
        check(&random_decimal(&mut rng));
    }
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
fn booleans_and_strings() {
    for (t, v) in [
        ("1", Some(true)),
        ("True", Some(true)),
        ("false", Some(false)),
        ("0", Some(false)),
        ("2", None),
        ("", None),
        ("yes", None),
    ] {
        assert_eq!(parse_bool(t.as_bytes()), v, "{t:?}");
    }
    // Tokens inside a block: with and without 16 bytes after the start.
    let block = b"ab abcdefghij abcdefghijk \x01x";
    assert_eq!(<[u8; 4]>::parse(block, 0, 2), Some(*b"ab\0\0"));
    assert_eq!(<[u8; 10]>::parse(block, 3, 13), Some(*b"abcdefghij"));
    assert_eq!(<[u8; 10]>::parse(block, 14, 25), None);
    assert_eq!(
        <[u8; 16]>::parse(block, 14, 25),
        Some(*b"abcdefghijk\0\0\0\0\0")
    );
    assert_eq!(<[u8; 2]>::parse(block, 26, 28), None);
    assert_eq!(<[u8; 2]>::parse(block, 27, 28), Some(*b"x\0"));
    assert_eq!(
        <[u8; 40]>::parse(block, 3, 13).unwrap()[..11],
        *b"abcdefghij\0"
    );
    assert_eq!(<[u8; 3]>::parse(block, 2, 2), Some([0; 3]));
}

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable, crate::Row)]
#[repr(C)]
struct Every {
    a: i8,
    b: u8,
    flag: Bool,
    #[row(skip)]
    hole: u8,
    c: i16,
    d: u16,
    e: i32,
    f: u32,
    g: f32,
    _gap: [u8; 4],
    h: i64,
    i: u64,
    j: f64,
    name: [u8; 5],
    _tail: [u8; 3],
}

#[test]
fn the_derive_describes_the_layout() {
    let names: Vec<&str> = Every::FIELDS.iter().map(|f| f.name).collect();
    assert_eq!(
        names,
        [
            "a", "b", "flag", "c", "d", "e", "f", "g", "h", "i", "j", "name"
        ]
    );
    assert_eq!(
        Every::FIELDS[3],
        FieldSpec {
            name: "c",
            offset: std::mem::offset_of!(Every, c),
            kind: Kind::I16
        }
    );
    let kinds: Vec<Kind> = Every::FIELDS.iter().map(|f| f.kind).collect();
    use Kind::{Ascii, Bool as B, F32, F64, I8, I16, I32, I64, U8, U16, U32, U64};
    assert_eq!(
        kinds,
        [I8, U8, B, I16, U16, I32, U32, F32, I64, U64, F64, Ascii(5)]
    );
    check_layout::<Every>();
    let block = b"-1 2 true 3 4 -5 6 7.5 -8 9 10.25 abc";
    let mut spans = Vec::new();
    let mut start = 0;
    for (k, &b) in block.iter().enumerate() {
        if b == b' ' {
            spans.push((start, k));
            start = k + 1;
        }
    }
    spans.push((start, block.len()));
    let row = Every::parse(&Tokens::new(block, &spans)).unwrap();
    assert_eq!(
        row,
        Every {
            a: -1,
            b: 2,
            flag: Bool(1),
            hole: 0,
            c: 3,
            d: 4,
            e: -5,
            f: 6,
            g: 7.5,
            _gap: [0; 4],
            h: -8,
            i: 9,
            j: 10.25,
            name: *b"abc\0\0",
            _tail: [0; 3]
        }
    );
    spans[4] = (0, 2); // d = "-1"
    assert_eq!(
        Every::parse(&Tokens::new(block, &spans)),
        Err(BadField { index: 4 })
    );
}

#[test]
fn numpy_type_strings() {
    assert_eq!(Kind::I32.numpy(), "<i4");
    assert_eq!(Kind::U8.numpy(), "|u1");
    assert_eq!(Kind::Bool.numpy(), "|b1");
    assert_eq!(Kind::F64.numpy(), "<f8");
    assert_eq!(Kind::Ascii(10).numpy(), "|S10");
    assert_eq!(Kind::Ascii(10).size(), 10);
}
