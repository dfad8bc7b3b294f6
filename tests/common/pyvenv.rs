//! The Python venvs the test suites run in, built on first use (PyPI wheels only) and reused
//! while their requirements are unchanged: the conformance and chart suites' from
//! tests/python-requirements.txt (`VBS_TEST_VENV` points at another one), the Keystone
//! suite's from tests/keystone/requirements.txt.

// Each test binary includes this file and uses some of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

const REQUIREMENTS: &str = include_str!("../python-requirements.txt");
const KEYSTONE_REQUIREMENTS: &str = include_str!("../keystone/requirements.txt");

/// The venv of the conformance and chart suites.
pub fn venv() -> PathBuf {
    let venv = std::env::var_os("VBS_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-venv"));
    venv_with(venv, REQUIREMENTS, "tests/python-requirements.txt")
}

/// The venv of the Keystone suite: Keystone pins other oslo versions than cinder.
pub fn keystone_venv() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("keystone-venv");
    venv_with(
        venv,
        KEYSTONE_REQUIREMENTS,
        "tests/keystone/requirements.txt",
    )
}

/// `venv` with `requirements` (the text of `file`) installed, reused while they are unchanged.
fn venv_with(venv: PathBuf, requirements: &str, file: &str) -> PathBuf {
    let stamp = venv.join(format!(
        ".requirements-{:016x}",
        fnv1a(requirements.as_bytes())
    ));
    if stamp.exists() {
        return venv;
    }
    let run = |cmd: &mut Command| {
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        assert!(status.success(), "{cmd:?} failed: {status}");
    };
    tell(&format!(
        "creating the test venv {} (pip install from PyPI: about a minute)",
        venv.display()
    ));
    run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(path));
    std::fs::write(&stamp, requirements).expect("write the venv stamp");
    venv
}

/// A line on the terminal even when the test passes: libtest captures what `print!` and
/// `eprintln!` write, not what is written to the stderr handle itself. `cargo test` then shows
/// what the Python suites ran ("713 passed"), not only that one Rust test passed.
fn tell(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Run pytest on `dir` (relative to the crate) with the proxy binary at hand; panics with
/// its output when it fails.
pub fn pytest(dir: &str) {
    pytest_in(&venv(), dir);
}

/// Run pytest on `dir` with the Python of `venv`.
pub fn pytest_in(venv: &Path, dir: &str) {
    let output = Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::DeprecationWarning",
            "-x",
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .env("VBS_PROXY_BIN", env!("CARGO_BIN_EXE_vbs-proxy"))
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed") || l.contains(" failed"))
        .unwrap_or("");
    tell(&format!("{dir} (pytest): {summary}"));
    assert!(
        output.status.success(),
        "{dir} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
