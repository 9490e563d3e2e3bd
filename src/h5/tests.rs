use std::process::Command;

use super::*;
use crate::records;

use crate::records::tests::{Scratch, rec, same};

fn extremes() -> Vec<Record> {
    vec![
        rec("chr1234567", i32::MIN, 0.1, i32::MAX, 0),
        rec("x", 5, f32::NAN, 1, 2),
        rec("y\"z'", -1, -0.0, 1, 2),
        rec("q", 5, f32::from_bits(1), 1, 2),
        rec("~{}[]", 0, f32::MAX, -7, 8),
        rec("inf", 0, f32::NEG_INFINITY, 0, 0),
        rec("t", 0, 16_777_217.0, 0, 0),
    ]
}

#[test]
fn round_trip_through_the_library() {
    let _fork = crate::fork_test_lock();
    let scratch = Scratch::new("lib");
    let path = scratch.0.join("out.h5");
    // More rows than one conversion chunk, and not a multiple of it.
    let sample: Array1<Record> = records::sample(3 * CHUNK_ROWS + 17, 4).collect();
    let writer = Writer::create(&path).unwrap();
    assert_eq!(writer.path(), path);
    writer.write_records("sample", sample.view()).unwrap();
    writer
        .write_records("extremes", Array1::from(extremes()).view())
        .unwrap();
    writer
        .write_records("empty", Array1::<Record>::from(vec![]).view())
        .unwrap();
    writer.close().unwrap();
    let back = read_records(&path, "sample").unwrap();
    assert!(same(back.as_slice().unwrap(), sample.as_slice().unwrap()));
    let back = read_records(&path, "extremes").unwrap();
    assert!(same(back.as_slice().unwrap(), &extremes()));
    assert!(read_records(&path, "empty").unwrap().is_empty());
}

#[test]
fn shared_arrays_write_directly() {
    let _fork = crate::fork_test_lock();
    let scratch = Scratch::new("shared");
    let text = scratch.0.join("data1.txt");
    records::write_sample(&text, 1000, 2).unwrap();
    let shared = records::load_shared(&text).unwrap();
    let path = scratch.0.join("out.h5");
    let writer = Writer::create(&path).unwrap();
    writer.write_records("data1", shared.read().view()).unwrap();
    drop(writer);
    let back = read_records(&path, "data1").unwrap();
    assert!(same(
        back.as_slice().unwrap(),
        shared.read().as_slice().unwrap()
    ));
}

#[test]
fn errors_name_the_file() {
    let _fork = crate::fork_test_lock();
    let scratch = Scratch::new("errors");
    let path = scratch.0.join("out.h5");
    let writer = Writer::create(&path).unwrap();
    let rows = Array1::from(extremes());
    writer.write_records("a", rows.view()).unwrap();
    // The same dataset twice.
    let err = writer.write_records("a", rows.view()).unwrap_err();
    assert!(
        matches!(&err, Error::Hdf5 { path: p, action: "create the dataset", .. } if *p == path),
        "{err}"
    );
    // A chr that is not ASCII (possible through Pod, not through Record::new).
    let mut bad = rows.clone();
    bad[3].chr[0] = 0xff;
    let err = writer.write_records("b", bad.view()).unwrap_err();
    assert!(err.to_string().contains("record 3 of b"), "{err}");
    writer.close().unwrap();
    let err = read_records(&path, "missing").unwrap_err();
    assert!(
        matches!(
            err,
            Error::Hdf5 {
                action: "open the dataset",
                ..
            }
        ),
        "{err}"
    );
    let err = Writer::create(scratch.0.join("no/such/dir.h5")).unwrap_err();
    assert!(
        err.to_string().contains("dir.h5: could not create it"),
        "{err}"
    );
    let err = read_records(scratch.0.join("nope.h5"), "a").unwrap_err();
    assert!(
        matches!(
            err,
            Error::Hdf5 {
                action: "open it",
                ..
            }
        ),
        "{err}"
    );
}

/// Reads a dataset of records back with Debian's `h5dump` (package hdf5-tools), which
/// shares no code with hdf5-metno's type conversions: the text it prints is parsed here.
fn h5dump_records(path: &Path, name: &str) -> (String, Vec<Record>) {
    let out = Command::new("h5dump")
        .args(["-m", "%.9g", "-d", name])
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("h5dump could not run ({e}); install hdf5-tools (see .ci/setup)")
        });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let data = &text[text.find("DATA {").expect("a DATA block") + 6..];
    let values: Vec<&str> = data
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.ends_with('{') && !l.starts_with('}'))
        .map(|l| l.strip_suffix(',').unwrap_or(l))
        .collect();
    assert_eq!(values.len() % 5, 0, "{text}");
    let rows = values
        .chunks(5)
        .map(|v| {
            let quoted = &v[0][v[0].find('"').unwrap() + 1..v[0].rfind('"').unwrap()];
            let mut chr = quoted;
            while let Some(rest) = chr.strip_suffix("\\000") {
                chr = rest;
            }
            let float = |s: &str| match s {
                "nan" | "-nan" => f32::NAN,
                s => s.parse::<f32>().unwrap(),
            };
            rec(
                chr,
                v[1].parse().unwrap(),
                float(v[2]),
                v[3].parse().unwrap(),
                v[4].parse().unwrap(),
            )
        })
        .collect();
    (text, rows)
}

#[test]
fn an_independent_reader_reads_it_back_exactly() {
    let _fork = crate::fork_test_lock();
    let scratch = Scratch::new("h5dump");
    let path = scratch.0.join("out.h5");
    let sample: Array1<Record> = records::sample(2000, 11).collect();
    let writer = Writer::create(&path).unwrap();
    writer.write_records("data1", sample.view()).unwrap();
    writer
        .write_records("extremes", Array1::from(extremes()).view())
        .unwrap();
    writer.close().unwrap();

    let (text, rows) = h5dump_records(&path, "/data1");
    // The file's type: a packed compound of a 10-byte NUL-padded ASCII string and
    // little-endian 32-bit numbers, named as in the tutorial's numpy dtype.
    for line in [
        "STRSIZE 10;",
        "STRPAD H5T_STR_NULLPAD;",
        "CSET H5T_CSET_ASCII;",
        "} \"chr\";",
        "H5T_STD_I32LE \"pos\";",
        "H5T_IEEE_F32LE \"pct\";",
        "H5T_STD_I32LE \"c\";",
        "H5T_STD_I32LE \"t\";",
        "DATASPACE  SIMPLE { ( 2000 ) / ( 2000 ) }",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert!(same(&rows, sample.as_slice().unwrap()));

    let (_, rows) = h5dump_records(&path, "/extremes");
    let expected = extremes();
    assert_eq!(rows.len(), expected.len());
    for (got, want) in rows.iter().zip(&expected) {
        // NaN's payload is not printed; every other value must match bit for bit.
        if want.pct.is_nan() {
            assert!(got.pct.is_nan());
            assert_eq!(
                (got.chr, got.pos, got.c, got.t),
                (want.chr, want.pos, want.c, want.t)
            );
        } else {
            assert!(same(&[*got], &[*want]), "{got:?} vs {want:?}");
        }
    }
}
