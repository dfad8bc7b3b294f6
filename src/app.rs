//! Serving: the regions' versions learnt, the listener run with graceful shutdown, and the
//! state kept fresh (version documents, Keystone's catalog) while it serves.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{edge, Edge};
use crate::state::AppState;

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

/// Installs a new state under the listeners: the API listener's router and the state the
/// status page's sampler and `admin.listen` read.
struct Installer {
    routers: tokio::sync::watch::Sender<Edge>,
    states: tokio::sync::watch::Sender<AppState>,
}

impl Installer {
    fn install(&self, next: &AppState) {
        // The old router is dropped here; its state goes with its last request.
        drop(self.routers.send_replace(edge(next.clone())));
        drop(self.states.send_replace(next.clone()));
    }
}

/// For as long as the proxy serves, the one owner of the state being served: every
/// `upstream.version_refresh`, with `[regions_from_catalog]`, Keystone's catalog is read
/// again and, when its endpoints changed, a state for the new regions is built, their
/// versions read, and its router swapped in under the listener (requests in flight finish on
/// the one they started on); then the regions' version documents are read again. A catalog
/// that cannot be read, or lists none of the regions asked for, leaves the regions as they
/// are (WARN, counted). On SIGHUP the configuration is read again (see [`reload`]).
async fn keep_fresh(mut state: AppState, installer: Installer, mut hangups: Option<Hangups>) {
    let mut tick = tokio::time::interval(state.config.upstream.version_refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first refresh ran before serving
    loop {
        let hangup = async {
            match hangups.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {
                if let Some(next) = catalog_changed(&state).await {
                    crate::regions::versions::refresh(&next.regions).await;
                    installer.install(&next);
                    // Counted once the new regions serve: whoever sees the count sees them.
                    count_catalog_read(&next, "changed");
                    state = next;
                } else {
                    crate::regions::versions::refresh(&state.regions).await;
                }
            }
            Some(()) = hangup => {
                if let Some(next) = reload(&state).await {
                    crate::regions::versions::refresh(&next.regions).await;
                    installer.install(&next);
                    next.metrics.count_reload("applied");
                    state = next;
                }
            }
        }
    }
}

type Hangups = tokio::signal::unix::Signal;

/// SIGHUP, the operator's "read the configuration again". The handler is installed when
/// [`reload_signal`] is called (inside the runtime, before the proxy says it is serving), as
/// [`shutdown_signal`]'s: a SIGHUP that comes while the regions' versions are first read
/// (as long as the slowest region's deadline) is a reload once serving starts, not the default
/// action, which ends the process.
pub struct ReloadSignal(Option<Hangups>);

pub fn reload_signal() -> ReloadSignal {
    let hangup = tokio::signal::unix::SignalKind::hangup();
    ReloadSignal(tokio::signal::unix::signal(hangup).ok())
}

/// The configuration read again, as at start (the same file, then the environment), and
/// checked. Invalid: logged with the key at fault, counted, and nothing changes. Valid: a
/// state for it ([`AppState::reloaded`]: regions that stayed keep their guards, connections
/// and cached pages; limits, TTLs, timeouts and the rest apply to new requests), with the
/// log level set. What only a restart can change (the listeners, the inbound limit, the
/// fleet's store, Keystone, traces, the secrets keys are made from) keeps its value, with a
/// WARN naming it.
async fn reload(state: &AppState) -> Option<AppState> {
    let recent = &state.recent;
    let refused = |why: String| {
        tracing::warn!(error = %why, "configuration not reloaded: nothing changed");
        state.metrics.count_reload("invalid");
        recent.reloaded("invalid", why);
    };
    let source = state.config.source.clone()?;
    let config = match Config::load(source.file.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            refused(e.to_string());
            return None;
        }
    };
    let mut config = match (&state.keystone, config.regions_from_catalog.service_type.is_some()) {
        (Some(keystone), true) => match config_from_catalog(keystone, config).await {
            Ok(config) => config,
            Err(e) => {
                refused(format!("regions from the catalog: {e}"));
                return None;
            }
        },
        _ => config,
    };
    let kept = restart_only(&state.config, &mut config);
    if !kept.is_empty() {
        tracing::warn!(keys = ?kept, "configuration reloaded without these changes: they take effect at a restart");
    }
    let restart_note = match kept.is_empty() {
        true => String::new(),
        false => format!("; at the next restart: {}", kept.join(", ")),
    };
    let changed = changed_sections(&state.config, &config);
    if changed.is_empty() {
        tracing::info!("configuration read again: unchanged");
        state.metrics.count_reload("unchanged");
        recent.reloaded("unchanged", format!("nothing changed{restart_note}"));
        return None;
    }
    if config.log.level != state.config.log.level {
        if let Err(e) = crate::telemetry::set_log_level(&config.log.level) {
            tracing::warn!(error = %e, "log.level not applied");
        }
    }
    tracing::info!(changed = ?changed, regions = ?region_endpoints(&config), "configuration reloaded");
    recent.reloaded("applied", format!("changed: {}{restart_note}", changed.join(", ")));
    Some(state.reloaded(config))
}

/// Put back into `next` what only a restart can change, naming each.
fn restart_only(now: &Config, next: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($field:ident).+) => {
            if format!("{:?}", now.$($field).+) != format!("{:?}", next.$($field).+) {
                next.$($field).+ = now.$($field).+.clone();
                kept.push(concat!($(stringify!($field), "."),+));
            }
        };
    }
    // The listeners and their limits, read when they were opened.
    keep!(server.listen);
    keep!(server.tls_cert_file);
    keep!(server.tls_key_file);
    keep!(server.max_connections);
    keep!(server.header_read_timeout);
    keep!(server.idle_timeout);
    keep!(server.write_timeout);
    keep!(server.shutdown_grace);
    keep!(server.max_in_flight);
    keep!(admin.listen);
    // The refresher's own period, set when it started.
    keep!(upstream.version_refresh);
    // What the state made once: cursors and cache identities signed with these keys, the
    // fleet's connection, Keystone's client and verdicts, the trace exporter, the log format.
    keep!(server.cursor_secret);
    keep!(cache.key_secret);
    keep!(fleet);
    keep!(keystone_authtoken);
    keep!(regions_from_catalog);
    keep!(telemetry);
    keep!(log.format);
    kept.into_iter().map(|k| k.trim_end_matches('.')).collect()
}

/// The sections (and the regions) that differ between two configurations.
fn changed_sections(a: &Config, b: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! compare {
        ($($field:ident),+) => {
            $(if format!("{:?}", a.$field) != format!("{:?}", b.$field) {
                changed.push(stringify!($field));
            })+
        };
    }
    compare!(server, admin, tenants, merge, cache, upstream, log, telemetry, fleet);
    compare!(keystone_authtoken, regions_from_catalog, regions);
    changed
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
    let label = crate::state::metrics::OutcomeLabel { outcome };
    state.metrics.catalog_reads.get_or_create(&label).inc();
}

/// Learn the regions' versions, then serve on `listener` until `shutdown` resolves, within
/// the connection limits of `[server]` (see `http::listener`); with `reload`, each SIGHUP
/// reads the configuration's file and environment again.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload: Option<ReloadSignal>,
) -> std::io::Result<()> {
    crate::regions::versions::refresh(&state.regions).await;
    let (routers, app) = tokio::sync::watch::channel(edge(state.clone()));
    let (states, current) = tokio::sync::watch::channel(state.clone());
    // SIGHUP reloads a configuration read from a file and the environment (not a test's).
    let hangups = reload
        .and_then(|r| r.0)
        .filter(|_| state.config.source.is_some());
    let private = match state.config.admin.listen {
        Some(address) => {
            let listener = TcpListener::bind(address).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on admin.listen {address}: {e}"))
            })?;
            tracing::info!(listen = %address, "status page and metrics (admin.listen)");
            let routes = crate::http::private_routes(current.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, routes).await {
                    tracing::error!(error = %e, "admin.listen stopped");
                }
            }))
        }
        None => None,
    };
    let sampler = tokio::spawn(crate::state::status::sample(current));
    let installer = Installer { routers, states };
    let refresher = tokio::spawn(keep_fresh(state.clone(), installer, hangups));
    let server = &state.config.server;
    let limits = crate::http::listener::Limits {
        max_connections: server.max_connections,
        header_read_timeout: server.header_read_timeout,
        idle_timeout: server.idle_timeout,
        write_timeout: server.write_timeout,
        max_head_bytes: crate::http::listener::Limits::head_room(server.max_header_bytes.as_u64()),
        grace: server.shutdown_grace,
    };
    let closed = {
        let family = state.metrics.http.connections_closed.clone();
        Arc::new(move |why: crate::http::listener::Closed| {
            let label = crate::state::metrics::ReasonLabel { reason: why.label() };
            family.get_or_create(&label).inc();
        })
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
    crate::http::listener::run(listener, app, limits, closed, tls, shutdown).await;
    refresher.abort();
    sampler.abort();
    if let Some(private) = private {
        private.abort();
    }
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
