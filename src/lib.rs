//! vbs-proxy: a caching aggregation proxy for the Cinder/VBS backups API.
//!
//! The request path, folder by folder (see ARCHITECTURE.md): `http` (listener, the edge's
//! layers, thin handlers, the one error mapping) → `state` (the sub-states handlers take) →
//! `listing` (the request, the merge over the regions as a source, cursors, links) → `cache`
//! (coalescing, byte-bounded layers, typed keys) → `regions` (a client per region behind its
//! guard), with Cinder's wire (`cinder`) and the shared pieces (`identity`, `fleet`, `config`,
//! `telemetry`, `tls`, `error`) below them all; imports run down that line only
//! (`tests/it/layers.rs`). The simulated Cinder region of the demo and the tests is the crate
//! `crates/cinder-sim`.

/// Modules that are not the library's API: crate-private, and public only with the
/// `internals` feature, which the integration tests, benches and fuzz targets turn on (they
/// drive the parsers, the merge and the caches directly).
macro_rules! internal {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        pub(crate) mod $name;
    )*};
}

internal!(app, cache, cinder, error, fleet, identity, http, listing, regions, routing, state);

pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod telemetry;
pub mod tls;

pub use crate::http::router;
pub use app::{regions_from_catalog, reload_signal, serve, shutdown_signal, ReloadSignal};
pub use config::Config;
pub use state::AppState;
