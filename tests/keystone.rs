//! vbs-proxy's `[keystone_authtoken]` against a real Keystone 30.0.0 from PyPI (tests/keystone/):
//! set up from scratch (sqlite, fernet) on a free loopback port, in a venv of its own built on
//! first run; real cinder-api instances behind authtoken and the real `openstack` CLI through
//! the proxy, from the conformance suite's venv.

#[path = "common/pyvenv.rs"]
mod pyvenv;

#[test]
fn proxy_checks_tokens_with_real_keystone() {
    // cinder-api behind authtoken and the openstack CLI run from the conformance venv.
    std::env::set_var("VBS_CINDER_VENV", pyvenv::venv());
    pyvenv::pytest_in(&pyvenv::keystone_venv(), "tests/keystone");
}
