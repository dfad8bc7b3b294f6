//! vbs-proxy's `[keystone_authtoken]` against a real Keystone 30.0.0 from PyPI (tests/keystone/):
//! set up from scratch (sqlite, fernet) on a free loopback port, in a venv of its own built on
//! first run.

#[path = "common/pyvenv.rs"]
mod pyvenv;

#[test]
fn proxy_checks_tokens_with_real_keystone() {
    pyvenv::pytest_in(&pyvenv::keystone_venv(), "tests/keystone");
}
