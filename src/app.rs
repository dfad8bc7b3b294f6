//! Application state, the middleware order, and serving with graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

use crate::cache::Caches;
use crate::config::Config;
use crate::http::versions::VersionBook;
use crate::listing::cursor::CursorKey;
use crate::regions::Upstream;

pub struct AppState {
    pub config: Config,
    pub upstream: Arc<Upstream>,
    pub cursor_key: CursorKey,
    pub versions: VersionBook,
    /// Region endpoint roots, for href rewriting.
    pub region_bases: Vec<String>,
    pub caches: Caches,
    pub metrics: crate::metrics::Metrics,
    /// Inbound requests in flight (server.max_in_flight).
    pub in_flight: tokio::sync::Semaphore,
}

impl AppState {
    pub fn new(config: Config) -> Arc<AppState> {
        let upstream = Arc::new(Upstream::new(&config));
        let cursor_key = match &config.server.cursor_secret {
            Some(secret) => CursorKey::new(secret.as_bytes()),
            None => CursorKey::random(),
        };
        let region_bases = upstream.regions.iter().map(|r| r.base.clone()).collect();
        // A flight per request in flight and region, and as many more for the ones whose
        // clients went away or that refresh in the background.
        let max_flights = config.server.max_in_flight * (config.regions.len() + 1) * 2;
        let caches = Caches::new(&config.cache, max_flights);
        let metrics = crate::metrics::Metrics::new(&caches, &upstream);
        Arc::new(AppState {
            versions: VersionBook::new(config.regions.len()),
            region_bases,
            caches,
            metrics,
            in_flight: tokio::sync::Semaphore::new(config.server.max_in_flight),
            cursor_key,
            upstream,
            config,
        })
    }
}

/// The whole application: routes plus middleware, in one place.
/// The whole application, and the middleware order, in one place: every request is observed
/// (request id, span, log event, metrics);
/// API requests then pass the inbound protection (header size, load shedding, request
/// timeout); the operational routes (`/healthz`, `/readyz`, `/metrics`) skip it so probes and
/// scrapes still answer under overload.
pub fn router(state: Arc<AppState>) -> Router {
    let api = crate::http::routes(state.clone()).layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::http::protect::inbound,
    ));
    api.merge(crate::http::ops_routes(state.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state,
            crate::http::observe::observe,
        ))
}

/// Learn the regions' versions, then serve on `listener` until `shutdown` resolves, within
/// the connection limits of `[server]` (see `http::listener`).
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::http::versions::refresh(&state).await;
    let refresher = crate::http::versions::spawn_refresher(state.clone());
    let server = &state.config.server;
    let limits = crate::http::listener::Limits {
        max_connections: server.max_connections,
        header_read_timeout: server.header_read_timeout,
        idle_timeout: server.idle_timeout,
        grace: server.shutdown_grace,
    };
    crate::http::listener::run(listener, router(state.clone()), limits, shutdown).await;
    refresher.abort();
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
