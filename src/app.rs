//! Application state, the middleware order, and serving with graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

use axum::extract::FromRef;

use crate::cache::Caches;
use crate::config::Config;
use crate::listing::cursor::CursorKey;
use crate::listing::positions::RememberedPositions;
use crate::listing::service::{Lister, Settings};
use crate::metrics::Metrics;
use crate::regions::Regions;

/// The application's state: a few sub-states, each a cheap clone. A handler takes the one it
/// needs (`State<Arc<Caches>>`, say) through `FromRef`, as axum's `state.rs` describes.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub regions: Arc<Regions>,
    pub caches: Arc<Caches>,
    pub metrics: Arc<Metrics>,
    pub cursor_key: Arc<CursorKey>,
    pub lister: Arc<Lister>,
    /// Inbound requests in flight (server.max_in_flight).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// With `[keystone_authtoken]`: client tokens are checked at the edge.
    pub keystone: Option<Arc<crate::identity::Keystone>>,
}

impl AppState {
    pub fn new(config: Config) -> AppState {
        // The configuration was checked when it was loaded (the CA file read); should the
        // store still not build, the replica runs on its own and says so.
        let fleet = crate::fleet::Fleet::new(&config.fleet)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "fleet mode is off: the store could not be set up");
                None
            })
            .map(Arc::new);
        let regions = Regions::new(&config, fleet.clone());
        let cursor_key = match &config.server.cursor_secret {
            Some(secret) => CursorKey::new(secret.as_bytes()),
            None => CursorKey::random(),
        };
        // A flight per request in flight and region, and as many more for the ones whose
        // clients went away or that refresh in the background.
        let max_flights = config.server.max_in_flight * (config.regions.len() + 1) * 2;
        let mut caches = Caches::new(&config.cache, max_flights);
        caches.shared = fleet.clone().map(|fleet| crate::cache::shared::SharedResponses {
            fleet,
            policy: caches.responses.policy(),
        });
        let (regions, caches, cursor_key) =
            (Arc::new(regions), Arc::new(caches), Arc::new(cursor_key));
        let lister = Lister {
            regions: regions.clone(),
            caches: caches.clone(),
            cursor_key: cursor_key.clone(),
            positions: RememberedPositions::new(
                Caches::positions_budget(&config.cache),
                fleet.clone(),
            ),
            settings: Settings {
                max_limit: config.server.max_limit,
                collation: config.merge.collation,
                partial_grace: config.upstream.partial_grace,
            },
        };
        let metrics = Metrics::new(
            &caches,
            &regions.client,
            &lister.positions,
            fleet.as_deref(),
        );
        let keystone = crate::identity::Keystone::new(&config.keystone_authtoken)
            .expect("the Keystone settings were checked when the configuration was loaded")
            .map(Arc::new);
        AppState {
            keystone,
            regions,
            caches,
            metrics: Arc::new(metrics),
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.server.max_in_flight)),
            cursor_key,
            lister: Arc::new(lister),
            config: Arc::new(config),
        }
    }
}

impl FromRef<AppState> for Arc<Regions> {
    fn from_ref(state: &AppState) -> Arc<Regions> {
        state.regions.clone()
    }
}

impl FromRef<AppState> for Arc<Caches> {
    fn from_ref(state: &AppState) -> Arc<Caches> {
        state.caches.clone()
    }
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Arc<Metrics> {
        state.metrics.clone()
    }
}

/// The whole application: routes plus middleware, in one place.
/// The whole application, and the middleware order, in one place: every request is observed
/// (request id, span, log event, metrics);
/// API requests then pass the inbound protection (header size, load shedding, request
/// timeout); the operational routes (`/healthz`, `/readyz`, `/metrics`) skip it so probes and
/// scrapes still answer under overload.
pub fn router(state: AppState) -> Router {
    // Layers run outside in: the inbound limits, then the token check (only with Keystone:
    // without it the cache-hit path has no layer more).
    let mut api = crate::http::routes(state.clone());
    if state.keystone.is_some() {
        api = api.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::http::auth::authenticate,
        ));
    }
    let api = api.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::http::protect::inbound,
    ));
    api.merge(crate::http::ops_routes(state.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state,
            crate::http::observe::observe,
        ))
}

/// `config` with its regions read from Keystone's catalog, when `[regions_from_catalog]` asks
/// for it (at start: the regions are fixed for the process's life).
pub async fn regions_from_catalog(config: Config) -> Result<Config, String> {
    let catalog = &config.regions_from_catalog;
    let Some(service_type) = catalog.service_type.clone() else {
        return Ok(config);
    };
    let keystone = crate::identity::Keystone::new(&config.keystone_authtoken)?
        .ok_or("[regions_from_catalog] needs [keystone_authtoken] auth_url")?;
    let endpoints = keystone
        .catalog(&service_type, &catalog.interface, &catalog.regions)
        .await
        .map_err(|e| e.to_string())?;
    if endpoints.is_empty() {
        return Err(format!(
            "Keystone's catalog has no {service_type} endpoint at interface {:?} in the regions asked for",
            catalog.interface
        ));
    }
    tracing::info!(regions = ?endpoints, "regions read from Keystone's catalog");
    config
        .with_catalog_regions(endpoints)
        .map_err(|e| e.to_string())
}

/// Learn the regions' versions, then serve on `listener` until `shutdown` resolves, within
/// the connection limits of `[server]` (see `http::listener`).
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::regions::versions::refresh(&state.regions).await;
    let refresher = crate::regions::versions::spawn_refresher(
        state.regions.clone(),
        state.config.upstream.version_refresh,
    );
    let server = &state.config.server;
    let limits = crate::http::listener::Limits {
        max_connections: server.max_connections,
        header_read_timeout: server.header_read_timeout,
        idle_timeout: server.idle_timeout,
        grace: server.shutdown_grace,
    };
    let tls = match (&server.tls_cert_file, &server.tls_key_file) {
        (Some(cert), Some(key)) => {
            let tls = crate::tls::ServerTls::load(cert, key).map_err(std::io::Error::other)?;
            Some(Arc::new(tls))
        }
        _ => None,
    };
    let reloader = tls
        .clone()
        .map(|tls| crate::tls::spawn_reloader(tls, server.tls_reload_check));
    crate::http::listener::run(listener, router(state.clone()), limits, tls, shutdown).await;
    refresher.abort();
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called (inside the
/// runtime, before the proxy says it is serving), not when the future is first polled: a
/// SIGTERM that comes early must still be a graceful shutdown, not the default kill.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut term, mut interrupt) = signals;
            let recv = |s: &mut Option<tokio::signal::unix::Signal>| {
                let s = s.take();
                async move {
                    match s {
                        Some(mut s) => {
                            s.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                }
            };
            tokio::select! {
                _ = recv(&mut term) => {},
                _ = recv(&mut interrupt) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
    }
}
