//! The Python peers: a virtualenv the harness makes itself (numpy and tqdm from PyPI) and
//! `bench/python/peers.py`, which prints its timings as JSON.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A Python interpreter with numpy and tqdm.
pub(crate) struct Python {
    /// The virtualenv's interpreter.
    pub(crate) exe: PathBuf,
    /// `Python 3.x.y, numpy a.b, tqdm c.d`.
    pub(crate) version: String,
}

/// The peers script.
pub(crate) fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/python/peers.py")
}

/// Finds or makes the virtualenv at `venv`. `Err` says why Python peers are skipped.
pub(crate) fn setup(venv: &Path) -> Result<Python, String> {
    let exe = venv.join("bin/python");
    if let Some(version) = probe(&exe) {
        return Ok(Python { exe, version });
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
    quiet(Command::new(&exe).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--timeout",
        "30",
        "numpy",
        "tqdm",
    ]))
    .map_err(|e| format!("pip could not install numpy and tqdm: {e}"))?;
    probe(&exe)
        .map(|version| Python { exe, version })
        .ok_or_else(|| "numpy or tqdm does not import in the new virtualenv".into())
}

/// The versions, if this interpreter imports numpy and tqdm.
fn probe(exe: &Path) -> Option<String> {
    let out = Command::new(exe)
        .args([
            "-c",
            "import sys, numpy, tqdm; print(f'Python {sys.version.split()[0]}, numpy {numpy.__version__}, tqdm {tqdm.__version__}')",
        ])
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
