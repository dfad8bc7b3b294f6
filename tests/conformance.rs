//! Conformance against the real Cinder API and real OpenStack clients (tests/conformance/):
//! real `cinder-api` instances on loopback and this crate's `vbs-proxy` binary in front of
//! three of them. The venv (with `cinder==29.0.0`) is built on first run.

#[path = "common/pyvenv.rs"]
mod pyvenv;

#[test]
fn proxy_conforms_to_real_cinder_and_clients() {
    pyvenv::pytest("tests/conformance");
}
