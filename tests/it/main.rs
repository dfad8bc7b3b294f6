//! One integration-test binary: the real router on loopback ports in front of simulated
//! Cinder regions that count their calls.

mod api;
mod cache;
mod cli;
mod docs;
mod fairness;
mod faults;
mod fleet;
mod hardening;
mod keystone;
mod layers;
mod merge_props;
mod paging;
mod reference;
mod routing;
mod snapshots;
mod status;
mod support;
mod telemetry;
mod tls;
mod union;
mod volumes;
