//! Conformance against the real Cinder API and real OpenStack clients (tests/conformance/).
//!
//! Creates a Python venv with `cinder==29.0.0`, python-cinderclient, openstacksdk and pytest
//! the first time (about a minute, all wheels from PyPI), then runs the pytest suite, which
//! starts real `cinder-api` instances on loopback and this crate's `vbs-proxy` binary in
//! front of three of them. Set `VBS_CONFORMANCE_VENV` to reuse a venv elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

const REQUIREMENTS: &str = include_str!("conformance/requirements.txt");

fn venv() -> PathBuf {
    let venv = std::env::var_os("VBS_CONFORMANCE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-venv"));
    // A stamp of the requirements it was built from: a changed list rebuilds it.
    let stamp = venv.join(format!(
        ".requirements-{:016x}",
        fnv1a(REQUIREMENTS.as_bytes())
    ));
    if stamp.exists() {
        return venv;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let run = |cmd: &mut Command| {
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        assert!(status.success(), "{cmd:?} failed: {status}");
    };
    eprintln!(
        "conformance: creating {} (pip install from PyPI)",
        venv.display()
    );
    run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv));
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(dir.join("requirements.txt")));
    std::fs::write(&stamp, REQUIREMENTS).expect("write the venv stamp");
    venv
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn proxy_conforms_to_real_cinder_and_clients() {
    let venv = venv();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
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
        .current_dir(&dir)
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
    eprintln!("conformance (pytest): {summary}");
    assert!(
        output.status.success(),
        "conformance suite failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
