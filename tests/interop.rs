//! numpy and h5py read what forkmap writes, and forkmap reads what they write, for a row
//! declared with `#[derive(forkmap::Row)]` as a user would, and for plain numbers.
//!
//! The Python side runs in the virtualenv `.ci/setup` makes (`.venv`, with numpy and
//! h5py), or the interpreter in `FORKMAP_PYTHON`; without one that imports numpy, only
//! the checks that need no Python run (the `.npy` header's bytes, forkmap's own reader,
//! `h5dump`), and the test says so on stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

use forkmap::ndarray::{Array1, Array2, Ix1, Ix2};
use forkmap::text::{self, Format};

mod common;

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable, forkmap::Row)]
#[repr(C)]
struct Methylation {
    chr: [u8; 10],
    _pad: [u8; 2],
    pos: i32,
    pct: f32,
    c: i32,
    t: i32,
}

/// Every kind of column, with padding in the middle and at the end.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable, forkmap::Row)]
#[repr(C)]
struct Mixed {
    id: u64,
    flag: forkmap::row::Bool,
    small: i8,
    #[row(skip)]
    hole: [u8; 2],
    w: u16,
    x: i16,
    energy: f64,
    name: [u8; 3],
    _tail: [u8; 5],
}

const METHYLATION_DESCR: &str =
    "[('chr', '|S10'), ('', '|V2'), ('pos', '<i4'), ('pct', '<f4'), ('c', '<i4'), ('t', '<i4')]";

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "forkmap-interop-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chr(s: &str) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[..s.len()].copy_from_slice(s.as_bytes());
    c
}

fn rows() -> Vec<Methylation> {
    (0..1000)
        .map(|i| Methylation {
            chr: chr(&format!("chr{}", i % 23 + 1)),
            _pad: [0; 2],
            pos: i * 37 - 5000,
            pct: i as f32 / 7.0,
            c: i,
            t: -i,
        })
        .collect()
}

/// A Python with numpy (and whether it has h5py), if there is one.
fn python() -> Option<(PathBuf, bool)> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let candidates = [
        std::env::var_os("FORKMAP_PYTHON").map(PathBuf::from),
        Some(venv),
        Some(PathBuf::from("python3")),
    ];
    for exe in candidates.into_iter().flatten() {
        let has = |module: &str| {
            Command::new(&exe)
                .args(["-c", &format!("import {module}")])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if has("numpy") {
            let h5py = has("h5py");
            return Some((exe, h5py));
        }
    }
    eprintln!(
        "no Python with numpy (run .ci/setup, or set FORKMAP_PYTHON): numpy/h5py checks skipped"
    );
    None
}

/// Runs `code` with `args` and returns its stdout; panics with stderr when it fails.
fn run_python(exe: &Path, code: &str, args: &[&Path]) -> String {
    let out = Command::new(exe)
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The numpy dtype the Rust struct is, as numpy spells it.
const METHYLATION_NUMPY: &str = "np.dtype({'names': ['chr', 'pos', 'pct', 'c', 't'], \
    'formats': ['S10', '<i4', '<f4', '<i4', '<i4'], 'offsets': [0, 12, 16, 20, 24], 'itemsize': 28})";

#[test]
fn npy_files_numpy_reads_and_writes() {
    let _deadline = common::deadline(120);
    let s = Scratch::new("npy");
    let rows = Array1::from(rows());
    let path = s.0.join("rows.npy");
    forkmap::npy::write(&path, rows.view()).unwrap();
    // The header, without numpy: numpy's list form with the padding as a nameless void.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let header = String::from_utf8_lossy(&bytes[10..10 + len]);
    assert!(
        header.contains(&format!("'descr': {METHYLATION_DESCR}")),
        "{header}"
    );
    assert!(header.contains("'shape': (1000,)"), "{header}");
    let back = forkmap::npy::read_shared::<Methylation, Ix1>(&path).unwrap();
    assert_eq!(back.read().as_slice().unwrap(), rows.as_slice().unwrap());
    let mixed_path = s.0.join("mixed.npy");
    let mixed = Array1::from_shape_fn(50, |i| Mixed {
        id: u64::MAX - i as u64,
        flag: forkmap::row::Bool::from(i % 3 == 0),
        small: -(i as i8),
        hole: [0; 2],
        w: i as u16 * 1000,
        x: -(i as i16) * 300,
        energy: i as f64 * 0.25,
        name: *b"ab\0",
        _tail: [0; 5],
    });
    forkmap::npy::write(&mixed_path, mixed.view()).unwrap();
    let grid = Array2::from_shape_fn((3, 5), |(i, j)| (i * 5 + j) as f64 / 3.0);
    let grid_path = s.0.join("grid.npy");
    forkmap::npy::write(&grid_path, grid.view()).unwrap();
    // A wrong row type is refused with both dtypes named.
    let err = forkmap::npy::read_shared::<Mixed, Ix1>(&path).unwrap_err();
    assert!(err.to_string().contains("rows.npy"), "{err}");
    assert!(err.to_string().contains("'pos', '<i4'"), "{err}");

    let Some((py, _)) = python() else { return };
    let code = format!(
        "import sys, numpy as np\n\
         a = np.load(sys.argv[1])\n\
         assert a.dtype == {METHYLATION_NUMPY}, a.dtype\n\
         print(len(a), a[7]['chr'].decode(), a[7]['pos'], repr(float(a[7]['pct'])), a[999]['t'])\n\
         m = np.load(sys.argv[2])\n\
         print(m.dtype.names, m.dtype.itemsize, m.dtype.fields['energy'][1], m['flag'].dtype, int(m[1]['id']), bool(m[3]['flag']), m[49]['x'], m[2]['name'])\n\
         g = np.load(sys.argv[3])\n\
         print(g.dtype, g.shape, repr(float(g[2, 4])))\n\
         out = np.zeros(3, dtype={METHYLATION_NUMPY})\n\
         out['chr'] = [b'chrX', b'chr1234567', b'']\n\
         out['pos'] = [1, -2, 2**31 - 1]\n\
         out['pct'] = [0.5, np.inf, -0.0]\n\
         out['c'] = [7, 8, 9]\n\
         np.save(sys.argv[4], out)\n\
         np.save(sys.argv[5], np.arange(12, dtype='<i8').reshape(3, 4))\n"
    );
    let from_numpy = s.0.join("numpy.npy");
    let ints = s.0.join("ints.npy");
    let out = run_python(
        &py,
        &code,
        &[&path, &mixed_path, &grid_path, &from_numpy, &ints],
    );
    let r = rows[7];
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("1000 chr8 {} {:?} -999", r.pos, f64::from(r.pct))
    );
    assert_eq!(
        lines[1],
        format!(
            "('id', 'flag', 'small', 'w', 'x', 'energy', 'name') 32 {} bool {} True -14700 b'ab'",
            std::mem::offset_of!(Mixed, energy),
            u64::MAX - 1
        )
    );
    assert_eq!(lines[2], format!("float64 (3, 5) {:?}", 14.0f64 / 3.0));
    let back = forkmap::npy::read_shared::<Methylation, Ix1>(&from_numpy).unwrap();
    let back = back.read();
    assert_eq!(back[0].chr, chr("chrX"));
    assert_eq!(back[1].chr, *b"chr1234567");
    assert_eq!(
        (back[2].pos, back[1].pct, back[2].pct.to_bits(), back[2].c),
        (i32::MAX, f32::INFINITY, (-0.0f32).to_bits(), 9)
    );
    let ints = forkmap::npy::read_shared::<i64, Ix2>(&ints).unwrap();
    assert_eq!(ints.read()[[2, 3]], 11);
}

#[test]
fn text_files_numpy_loadtxt_reads_back() {
    let _deadline = common::deadline(120);
    let s = Scratch::new("text");
    let rows = rows();
    let tsv = s.0.join("rows.txt");
    let csv = s.0.join("rows.csv");
    text::write(&tsv, &rows, &Format::whitespace()).unwrap();
    text::write(&csv, &rows, &Format::delimited(b',').header()).unwrap();
    let csv_format = Format::delimited(b',').header();
    assert_eq!(
        text::load::<Methylation>(&csv, &csv_format)
            .unwrap()
            .to_vec(),
        rows
    );
    let Some((py, _)) = python() else { return };
    let code = format!(
        "import sys, numpy as np\n\
         dt = {METHYLATION_NUMPY}\n\
         a = np.loadtxt(sys.argv[1], dtype=dt)\n\
         b = np.loadtxt(sys.argv[2], dtype=dt, delimiter=',', skiprows=1)\n\
         assert (a == b).all()\n\
         print(len(a), a[7]['chr'].decode(), repr(float(a[7]['pct'])))\n\
         with open(sys.argv[3], 'w') as f:\n\
         \x20   f.write('# chr pos pct c t\\n')\n\
         \x20   for r in a[:5]:\n\
         \x20       f.write('%s\\t%d\\t%r\\t%d\\t%d\\r\\n' % (r['chr'].decode(), r['pos'], float(r['pct']), r['c'], r['t']))\n"
    );
    let from_numpy = s.0.join("numpy.txt");
    let out = run_python(&py, &code, &[&tsv, &csv, &from_numpy]);
    assert_eq!(
        out.trim(),
        format!("1000 chr8 {:?}", f64::from(rows[7].pct))
    );
    let back = text::load::<Methylation>(&from_numpy, &Format::whitespace().header()).unwrap();
    assert_eq!(back.to_vec(), rows[..5]);
}

#[cfg(feature = "hdf5")]
#[test]
fn hdf5_files_h5py_reads_and_writes() {
    let _deadline = common::deadline(120);
    let s = Scratch::new("h5");
    let rows = Array1::from(rows());
    let path = s.0.join("out.h5");
    let w = forkmap::h5::Writer::create(&path).unwrap();
    w.write("data1", rows.view()).unwrap();
    w.close().unwrap();
    // h5dump (no Python) sees the five fields, not the padding.
    // Reading only: HDF5's advisory file lock is not needed (a lock still held in this
    // process's library would make h5dump refuse the file).
    let out = Command::new("h5dump")
        .args(["-H", "-d", "/data1"])
        .arg(&path)
        .env("HDF5_USE_FILE_LOCKING", "FALSE")
        .output()
        .expect("h5dump (hdf5-tools, see .ci/setup)");
    assert!(
        out.status.success(),
        "h5dump failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8_lossy(&out.stdout);
    for field in ["\"chr\"", "\"pos\"", "\"pct\"", "\"c\"", "\"t\""] {
        assert!(dump.contains(field), "{dump}");
    }
    assert!(!dump.contains("_pad"), "{dump}");
    let Some((py, true)) = python() else {
        eprintln!("no h5py: h5py checks skipped");
        return;
    };
    let code = format!(
        "import sys, numpy as np, h5py\n\
         f = h5py.File(sys.argv[1], 'r')\n\
         a = f['data1'][:]\n\
         assert a.dtype == {METHYLATION_NUMPY}, a.dtype\n\
         print(len(a), a[7]['chr'].decode(), a[999]['pos'])\n\
         packed = np.zeros(4, dtype=[('t', '<i4'), ('chr', 'S10'), ('pos', '<i4'), ('pct', '<f4'), ('c', '<i4'), ('extra', '<f8')])\n\
         packed['chr'] = b'chrY'\n\
         packed['pos'] = [5, 6, 7, 8]\n\
         with h5py.File(sys.argv[2], 'w') as g:\n\
         \x20   g['rows'] = packed\n\
         \x20   g['floats'] = np.linspace(0, 1, 5)\n"
    );
    let from_h5py = s.0.join("h5py.h5");
    let out = run_python(&py, &code, &[&path, &from_h5py]);
    assert_eq!(out.trim(), format!("1000 chr8 {}", rows[999].pos));
    let back = forkmap::h5::read_shared::<Methylation>(&from_h5py, "rows").unwrap();
    assert_eq!(back.read()[3].pos, 8);
    assert_eq!(back.read()[0].chr, chr("chrY"));
    let floats = forkmap::h5::read_shared::<f64>(&from_h5py, "floats").unwrap();
    assert_eq!(floats.read().to_vec(), [0.0, 0.25, 0.5, 0.75, 1.0]);
}
