use std::process::Command;

use ndarray::{Array1, Array2};

use super::*;
use crate::records::{self, Record};

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

fn read_records(path: &Path, name: &str) -> Result<Vec<Record>, Error> {
    Ok(read_shared::<Record>(path, name)?.read().to_vec())
}

#[test]
fn round_trip_through_the_library() {
    let _fork = crate::fork_test_lock();
    let scratch = Scratch::new("lib");
    let path = scratch.0.join("out.h5");
    let sample: Array1<Record> = records::sample(200_017, 4).collect();
    let writer = Writer::create(&path).unwrap();
    assert_eq!(writer.path(), path);
    writer.write("sample", sample.view()).unwrap();
    writer
        .write("extremes", Array1::from(extremes()).view())
        .unwrap();
    writer
        .write("empty", Array1::<Record>::from(vec![]).view())
        .unwrap();
    // Numbers of any dimension, and a view that is not contiguous.
    let grid = Array2::from_shape_fn((3, 4), |(i, j)| (i * 10 + j) as f64);
    writer.write("grid", grid.view()).unwrap();
    writer.write("column", grid.column(1)).unwrap();
    writer.close().unwrap();
    let back = read_records(&path, "sample").unwrap();
    assert!(same(&back, sample.as_slice().unwrap()));
    let back = read_records(&path, "extremes").unwrap();
    assert!(same(&back, &extremes()));
    assert!(read_records(&path, "empty").unwrap().is_empty());
    let column = read_shared::<f64>(&path, "column").unwrap();
    assert_eq!(column.read().to_vec(), [1.0, 11.0, 21.0]);
    let file = hdf5::File::open(&path).unwrap();
    let grid_back: ndarray::Array2<f64> = file.dataset("grid").unwrap().read_2d().unwrap();
    assert_eq!(grid_back, grid);
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
    writer.write("data1", shared.read().view()).unwrap();
    drop(writer);
    let back = read_records(&path, "data1").unwrap();
    assert!(same(&back, shared.read().as_slice().unwrap()));
}

/// The tutorial's row as h5py writes numpy's packed dtype: 26 bytes, no holes.
#[allow(clippy::repr_packed_without_abi)]
#[derive(hdf5_metno::H5Type, Clone, Copy)]
#[repr(packed)]
struct Packed {
    chr: hdf5_metno::types::FixedAscii<10>,
    pos: i32,
    pct: f32,
    c: i32,
    t: i32,
}

/// Fields in another order, one more field, and no padding.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable, crate::Row)]
#[repr(C)]
struct Reordered {
    t: i32,
    pos: i32,
    chr: [u8; 10],
    _pad: [u8; 2],
}

/// `pos` as a float: a type mismatch.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable, crate::Row)]
#[repr(C)]
struct WrongType {
    pos: f32,
}

/// A field the file lacks.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable, crate::Row)]
#[repr(C)]
struct Missing {
    pos: i32,
    depth: u32,
}

#[test]
fn reads_other_layouts_by_name_and_checks_types() {
    let _fork = crate::fork_test_lock();
    let scratch = Scratch::new("layouts");
    let path = scratch.0.join("packed.h5");
    let rows: Vec<Record> = records::sample(1000, 3).collect();
    {
        let file = hdf5::File::create(&path).unwrap();
        let packed: Vec<Packed> = rows
            .iter()
            .map(|r| Packed {
                chr: hdf5_metno::types::FixedAscii::from_ascii(r.chr_bytes()).unwrap(),
                pos: r.pos,
                pct: r.pct,
                c: r.c,
                t: r.t,
            })
            .collect();
        file.new_dataset_builder()
            .with_data(&packed)
            .create("packed")
            .unwrap();
        file.new_dataset_builder()
            .with_data(&[1.5f64, 2.5])
            .create("floats")
            .unwrap();
        file.new_dataset_builder()
            .with_data(&ndarray::Array2::<i32>::zeros((2, 2)))
            .create("grid")
            .unwrap();
    }
    // Packed in the file, with holes in memory: the library converts by name.
    assert!(same(&read_records(&path, "packed").unwrap(), &rows));
    let reordered = read_shared::<Reordered>(&path, "packed").unwrap();
    let r = reordered.read()[10];
    assert_eq!(
        (r.t, r.pos, &r.chr[..]),
        (rows[10].t, rows[10].pos, &rows[10].chr[..])
    );
    let fail = |err: Error, words: &str| {
        let text = err.to_string();
        assert!(matches!(err, Error::Hdf5 { .. }), "{text}");
        assert!(text.contains(words), "{words:?} not in {text:?}");
    };
    fail(
        read_shared::<WrongType>(&path, "packed").unwrap_err(),
        "packed: field \"pos\" is int32 in the file",
    );
    fail(
        read_shared::<Missing>(&path, "packed").unwrap_err(),
        "packed: the dataset has no field \"depth\"",
    );
    fail(
        read_shared::<i32>(&path, "floats").unwrap_err(),
        "floats: the dataset's type is float64",
    );
    fail(
        read_shared::<Record>(&path, "floats").unwrap_err(),
        "floats: the dataset's type is float64",
    );
    fail(
        read_shared::<i32>(&path, "grid").unwrap_err(),
        "grid has 2 dimensions, not 1",
    );
    assert_eq!(
        read_shared::<f64>(&path, "floats").unwrap().read().to_vec(),
        [1.5, 2.5]
    );
}

#[test]
fn errors_name_the_file() {
    let _fork = crate::fork_test_lock();
    let scratch = Scratch::new("errors");
    let path = scratch.0.join("out.h5");
    let writer = Writer::create(&path).unwrap();
    let rows = Array1::from(extremes());
    writer.write("a", rows.view()).unwrap();
    // The same dataset twice.
    let err = writer.write("a", rows.view()).unwrap_err();
    assert!(
        matches!(&err, Error::Hdf5 { path: p, action: "write the dataset", .. } if *p == path),
        "{err}"
    );
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
    let err = read_records(&scratch.0.join("nope.h5"), "a").unwrap_err();
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
    writer.write("data1", sample.view()).unwrap();
    writer
        .write("extremes", Array1::from(extremes()).view())
        .unwrap();
    writer.close().unwrap();

    let (text, rows) = h5dump_records(&path, "/data1");
    // The file's type: the row's own layout, a compound of a 10-byte NUL-padded ASCII
    // string and little-endian 32-bit numbers, named as in the tutorial's numpy dtype.
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
