//! The Helm chart (tests/chart/): linted and rendered by the real Helm engine, validated
//! against the Kubernetes schemas, its configuration accepted by the binary.

#[path = "common/pyvenv.rs"]
mod pyvenv;

#[test]
fn chart_renders_valid_manifests() {
    pyvenv::pytest("tests/chart");
}
