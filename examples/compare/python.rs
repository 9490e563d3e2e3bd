//! The Python peers: a virtualenv the harness makes itself (numpy and tqdm from PyPI, and
//! h5py when workload (f) runs) and `bench/python/peers.py`, which prints its timings as
//! JSON and compares HDF5 files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A Python interpreter with numpy and tqdm.
pub(crate) struct Python {
    /// The virtualenv's interpreter.
    pub(crate) exe: PathBuf,
    /// `Python 3.x.y, numpy a.b, tqdm c.d` (and `, h5py e.f (HDF5 g.h)`).
    pub(crate) version: String,
    /// h5py's version, or why it is not there (only asked for when (f) runs).
    pub(crate) h5py: Result<String, String>,
}

/// The peers script.
pub(crate) fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/python/peers.py")
}

/// Finds or makes the virtualenv at `venv`, with h5py in it when `h5py` is set (installed
/// into an existing virtualenv that lacks it). `Err` says why Python peers are skipped;
/// a missing h5py only skips the peers that need it.
pub(crate) fn setup(venv: &Path, h5py: bool) -> Result<Python, String> {
    let mut py = base(venv)?;
    if h5py {
        py.h5py = probe_h5py(&py.exe).ok_or(()).or_else(|()| {
            eprintln!("compare: installing h5py into {}", venv.display());
            pip_install(&py.exe, &["h5py"])?;
            probe_h5py(&py.exe).ok_or_else(|| "h5py does not import after installing it".into())
        });
        if let Ok(v) = &py.h5py {
            py.version = format!("{}, {v}", py.version);
        }
    }
    Ok(py)
}

fn base(venv: &Path) -> Result<Python, String> {
    let exe = venv.join("bin/python");
    let not_asked = || Err("not needed by the workloads of this run".to_string());
    if let Some(version) = probe(&exe) {
        return Ok(Python {
            exe,
            version,
            h5py: not_asked(),
        });
    }
    let base = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let found = Command::new(&base)
        .arg("--version")
        .output()
        .map_err(|e| format!("{base} is not available ({e})"))?;
    if !found.status.success() {
        return Err(format!("{base} --version failed"));
    }
    eprintln!("compare: creating {} with numpy and tqdm", venv.display());
    quiet(Command::new(&base).arg("-m").arg("venv").arg(venv))
        .map_err(|e| format!("`{base} -m venv` failed (is python3-venv installed?): {e}"))?;
    pip_install(&exe, &["numpy", "tqdm"])?;
    probe(&exe)
        .map(|version| Python {
            exe,
            version,
            h5py: not_asked(),
        })
        .ok_or_else(|| "numpy or tqdm does not import in the new virtualenv".into())
}

fn pip_install(exe: &Path, packages: &[&str]) -> Result<(), String> {
    quiet(
        Command::new(exe)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--timeout",
                "30",
            ])
            .args(packages),
    )
    .map_err(|e| format!("pip could not install {}: {e}", packages.join(" and ")))
}

/// `h5py a.b (HDF5 c.d)`, if this interpreter imports h5py.
fn probe_h5py(exe: &Path) -> Option<String> {
    run_line(
        exe,
        "import h5py; print(f'h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version})')",
    )
}

/// The versions, if this interpreter imports numpy and tqdm.
fn probe(exe: &Path) -> Option<String> {
    run_line(
        exe,
        "import sys, numpy, tqdm; print(f'Python {sys.version.split()[0]}, numpy {numpy.__version__}, tqdm {tqdm.__version__}')",
    )
}

/// What `exe -c code` prints, if it succeeds.
fn run_line(exe: &Path, code: &str) -> Option<String> {
    let out = Command::new(exe)
        .args(["-c", code])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn quiet(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.lines().last().unwrap_or("no message").to_string())
    }
}

/// The command that runs Python peer `peer` on workload `letter`.
pub(crate) fn command(
    py: &Python,
    peer: &str,
    letter: &str,
    workers: usize,
    params: &str,
) -> Command {
    let mut cmd = Command::new(&py.exe);
    cmd.arg(script())
        .args(["--peer", peer, "--workload", letter])
        .args(["--workers", &workers.to_string(), "--params", params]);
    cmd
}

/// Compares the HDF5 files `others` with `reference` (same datasets, shapes, field names,
/// and every value of every field equal, floats bit for bit) through `peers.py --check`.
/// `Ok` is a sentence saying what was compared; `Err` what differs, or why no check ran.
#[cfg(feature = "hdf5")]
pub(crate) fn check_h5(py: &Python, reference: &Path, others: &[&Path]) -> Result<String, String> {
    let out = Command::new(&py.exe)
        .arg(script())
        .arg("--check")
        .arg(reference)
        .args(others)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run the check: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("").trim().to_string();
    if out.status.success() {
        Ok(line)
    } else if line.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "the check failed: {}",
            err.lines().last().unwrap_or("no message")
        ))
    } else {
        Err(line)
    }
}
