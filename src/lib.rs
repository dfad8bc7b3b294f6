//! vbs-proxy: a caching aggregation proxy for the Cinder/VBS backups API.
//!
//! The request path, module by module: `http` (front, routes, errors) → `query` and
//! `microversion` (the request, parsed once) → `fanout` and `upstream` (the regions) →
//! `merge` (k-way merge and re-pagination, with `sort` and `cursor`) → `links` and the
//! handler's render. The simulated Cinder region of the demo and the tests is the crate
//! `crates/cinder-sim`.

pub mod app;
pub mod cache;
pub mod config;
pub mod cursor;
#[cfg(feature = "demo")]
pub mod demo;
pub mod fanout;
pub mod http;
pub mod item;
pub mod links;
pub mod merge;
pub mod metrics;
pub mod microversion;
pub mod query;
pub mod sort;
pub mod telemetry;
pub mod upstream;

pub use app::{router, serve, AppState};
pub use config::Config;
