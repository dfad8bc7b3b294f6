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
/// Behind one `Arc`: each middleware layer and handler clones the state per request, and one
/// reference count is cheaper than eight (measured on the cache-hit path).
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

impl std::ops::Deref for AppState {
    type Target = StateInner;

    fn deref(&self) -> &StateInner {
        &self.0
    }
}

/// The sub-states, behind [`AppState`]'s one `Arc`.
pub struct StateInner {
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
        let cursor_key = match &config.server.cursor_secret {
            Some(secret) => CursorKey::new(secret.as_bytes()),
            None => CursorKey::random(),
        };
        let keystone = crate::identity::Keystone::new(&config.keystone_authtoken)
            .expect("the Keystone settings were checked when the configuration was loaded")
            .map(Arc::new);
        let lasting = Lasting {
            fleet,
            keystone,
            cursor_key: Arc::new(cursor_key),
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.server.max_in_flight)),
        };
        AppState::assemble(config, lasting, None)
    }

    /// The state for `config`'s regions (Keystone's catalog changed): new caches, region
    /// pages and remembered positions (they are per region index); the same Keystone
    /// verdicts, fleet store, cursor key and inbound limit; the regions that stayed keep
    /// their guards and connections, and the request counters go on.
    pub fn with_regions(&self, config: Config) -> AppState {
        let lasting = Lasting {
            fleet: self.lister.positions.shared.clone(),
            keystone: self.keystone.clone(),
            cursor_key: self.cursor_key.clone(),
            in_flight: self.in_flight.clone(),
        };
        AppState::assemble(config, lasting, Some(self))
    }

    fn assemble(config: Config, lasting: Lasting, previous: Option<&AppState>) -> AppState {
        let Lasting {
            fleet,
            keystone,
            cursor_key,
            in_flight,
        } = lasting;
        let regions = Regions::new(&config, fleet.clone(), previous.map(|p| &*p.regions));
        // A flight per request in flight and region, and as many more for the ones whose
        // clients went away or that refresh in the background.
        let max_flights = config.server.max_in_flight * (config.regions.len() + 1) * 2;
        let mut caches = Caches::new(&config.cache, max_flights);
        caches.shared = fleet.clone().map(|fleet| crate::cache::shared::SharedResponses {
            fleet,
            policy: caches.responses.policy(),
        });
        let (regions, caches) = (Arc::new(regions), Arc::new(caches));
        let lister = Lister {
            regions: regions.clone(),
            caches: caches.clone(),
            cursor_key: cursor_key.clone(),
            positions: RememberedPositions::new(
                Caches::positions_budget(&config.cache),
                fleet.clone(),
            ),
            targets: crate::listing::target::Targets::new(Caches::targets_budget(&config.cache)),
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
            config.regions_from_catalog.service_type.is_some(),
            previous.map(|p| &*p.metrics),
        );
        AppState(Arc::new(StateInner {
            keystone,
            regions,
            caches,
            metrics: Arc::new(metrics),
            in_flight,
            cursor_key,
            lister: Arc::new(lister),
            config: Arc::new(config),
        }))
    }
}

/// What outlives a change of regions.
struct Lasting {
    fleet: Option<Arc<crate::fleet::Fleet>>,
    keystone: Option<Arc<crate::identity::Keystone>>,
    cursor_key: Arc<CursorKey>,
    in_flight: Arc<tokio::sync::Semaphore>,
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
/// for it (at start; then again on every `upstream.version_refresh`, see [`keep_fresh`]).
pub async fn regions_from_catalog(config: Config) -> Result<Config, String> {
    if config.regions_from_catalog.service_type.is_none() {
        return Ok(config);
    }
    let keystone = crate::identity::Keystone::new(&config.keystone_authtoken)?
        .ok_or("[regions_from_catalog] needs [keystone_authtoken] auth_url")?;
    let config = config_from_catalog(&keystone, config).await?;
    tracing::info!(regions = ?region_endpoints(&config), "regions read from Keystone's catalog");
    Ok(config)
}

/// `config` with the regions Keystone's catalog lists now (never none).
async fn config_from_catalog(
    keystone: &crate::identity::Keystone,
    config: Config,
) -> Result<Config, String> {
    let catalog = &config.regions_from_catalog;
    let service_type = catalog.service_type.as_deref().unwrap_or_default();
    let endpoints = keystone
        .catalog(service_type, &catalog.interface, &catalog.regions)
        .await
        .map_err(|e| e.to_string())?;
    if endpoints.is_empty() {
        return Err(format!(
            "Keystone's catalog has no {service_type} endpoint at interface {:?} in the regions asked for",
            catalog.interface
        ));
    }
    config
        .with_catalog_regions(endpoints)
        .map_err(|e| e.to_string())
}

fn region_endpoints(config: &Config) -> Vec<(&str, &str)> {
    let regions = config.regions.iter();
    regions.map(|r| (r.name.as_str(), r.url.as_str())).collect()
}

/// Every `upstream.version_refresh`, for as long as the proxy serves: with
/// `[regions_from_catalog]`, Keystone's catalog is read again and, when its endpoints
/// changed, a state for the new regions is built, their versions read, and its router
/// swapped in under the listener (requests in flight finish on the one they started on);
/// then the regions' version documents are read again. A catalog that cannot be read, or
/// lists none of the regions asked for, leaves the regions as they are (WARN, counted).
async fn keep_fresh(mut state: AppState, routers: tokio::sync::watch::Sender<Router>) {
    let mut tick = tokio::time::interval(state.config.upstream.version_refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first refresh ran before serving
    loop {
        tick.tick().await;
        if let Some(next) = catalog_changed(&state).await {
            crate::regions::versions::refresh(&next.regions).await;
            // The old router is dropped here; its state goes with its last request.
            drop(routers.send_replace(router(next.clone())));
            // Counted once the new regions serve: whoever sees the count sees them.
            count_catalog_read(&next, "changed");
            state = next;
        } else {
            crate::regions::versions::refresh(&state.regions).await;
        }
    }
}

/// A state for the catalog's regions, when they are not `state`'s.
async fn catalog_changed(state: &AppState) -> Option<AppState> {
    let keystone = state.keystone.as_ref()?;
    state.config.regions_from_catalog.service_type.as_ref()?;
    let count = |outcome| count_catalog_read(state, outcome);
    let config = match config_from_catalog(keystone, (*state.config).clone()).await {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(error = %e, "Keystone's catalog was not read again: the regions stay as they are");
            count("failed");
            return None;
        }
    };
    if region_endpoints(&config) == region_endpoints(&state.config) {
        count("same");
        return None;
    }
    tracing::info!(
        before = ?region_endpoints(&state.config),
        after = ?region_endpoints(&config),
        "the regions changed in Keystone's catalog"
    );
    Some(state.with_regions(config))
}

fn count_catalog_read(state: &AppState, outcome: &'static str) {
    let label = crate::metrics::OutcomeLabel { outcome };
    state.metrics.catalog_reads.get_or_create(&label).inc();
}

/// Learn the regions' versions, then serve on `listener` until `shutdown` resolves, within
/// the connection limits of `[server]` (see `http::listener`).
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::regions::versions::refresh(&state.regions).await;
    let (routers, app) = tokio::sync::watch::channel(router(state.clone()));
    let refresher = tokio::spawn(keep_fresh(state.clone(), routers));
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
    crate::http::listener::run(listener, app, limits, tls, shutdown).await;
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
