//! vbs-proxy: a caching aggregation proxy for the Cinder/VBS backups API.
//!
//! The request path, folder by folder (see ARCHITECTURE.md): `http` (listener, routes, thin
//! handlers, the one error mapping) → `listing` (the request, the merge over a source, cursors,
//! links) → `cache` (coalescing, byte-bounded layers) → `regions` (a client per region behind
//! its protection, and the regions as the merge's source). The simulated Cinder region of the
//! demo and the tests is the crate `crates/cinder-sim`.

pub mod app;
pub mod cache;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod error;
pub mod http;
pub mod listing;
pub mod metrics;
pub mod microversion;
pub mod regions;
pub mod telemetry;

pub use app::{router, serve, AppState};
pub use config::Config;
