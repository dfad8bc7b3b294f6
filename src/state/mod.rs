//! The application's state, below the HTTP front that serves it: small sub-states (the
//! regions, the caches, the listing service, the metrics), each a cheap clone, which the
//! handlers take one at a time through `FromRef`.

pub mod metrics;
pub mod status;

use std::sync::Arc;

use axum::extract::FromRef;

use crate::cache::Caches;
use crate::config::Config;
use crate::listing::cursor::CursorKey;
use crate::listing::positions::RememberedPositions;
use crate::listing::service::{Lister, Settings};
use metrics::Metrics;
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
    pub(crate) cursor_key: Arc<CursorKey>,
    pub lister: Arc<Lister>,
    /// Inbound requests in flight (server.max_in_flight).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// With `[keystone_authtoken]`: client tokens are checked at the edge.
    pub keystone: Option<Arc<crate::identity::Keystone>>,
    /// The status page's last minute of readings and the last reload.
    pub recent: Arc<status::Recent>,
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
        if let Some(fleet) = &fleet {
            crate::fleet::Fleet::keep_alive(fleet);
        }
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
            recent: Arc::default(),
        };
        AppState::assemble(config, lasting, None)
    }

    /// The state for `config`'s regions (Keystone's catalog changed): new caches, region
    /// pages and remembered positions (they are per region index); the same Keystone
    /// verdicts, fleet store, cursor key and inbound limit; the regions that stayed keep
    /// their guards and connections, and the request counters go on.
    pub(crate) fn with_regions(&self, config: Config) -> AppState {
        let lasting = Lasting {
            fleet: self.lister.positions.shared.clone(),
            keystone: self.keystone.clone(),
            cursor_key: self.cursor_key.clone(),
            in_flight: self.in_flight.clone(),
            recent: self.recent.clone(),
        };
        AppState::assemble(config, lasting, Some(self))
    }

    /// The state for a reloaded configuration (SIGHUP): built as for a change of regions
    /// ([`AppState::with_regions`]: regions of the same name, URL and settings keep their
    /// guards and connections), then the caches' entries carried over: every cached answer
    /// when the regions are the same, in the same order; else each region page of a region
    /// that stayed (under its new index) and where each item lives. Entries keep their age:
    /// a new TTL judges them at once. The remembered plain-id positions are carried over too
    /// when the regions are the same, and their counts always.
    pub(crate) fn reloaded(&self, config: Config) -> AppState {
        let next = self.with_regions(config);
        let names = |regions: &Regions| -> Vec<(String, String)> {
            regions.iter().map(|r| (r.name.clone(), r.base.clone())).collect()
        };
        let (before, after) = (names(&self.regions), names(&next.regions));
        let moved: Vec<Option<u32>> = before
            .iter()
            .map(|old| after.iter().position(|new| new == old).map(|i| i as u32))
            .collect();
        let (caches, old) = (&next.caches, &self.caches);
        if before == after {
            caches.responses.adopt(&old.responses, |key| Some(*key));
        }
        caches.pages.adopt(&old.pages, |key| {
            let region = (*moved.get(key.region as usize)?)?;
            Some(crate::cache::key::PageKey { region, ..*key })
        });
        for (item, region) in old.holders.iter() {
            if let Some(Some(region)) = moved.get(region) {
                caches.holders.insert((*item).clone(), *region as usize);
            }
        }
        // Plain-id markers stay warm across a reload that kept the regions.
        next.lister.positions.adopt(&self.lister.positions, before == after);
        next
    }

    fn assemble(config: Config, lasting: Lasting, previous: Option<&AppState>) -> AppState {
        let Lasting {
            fleet,
            keystone,
            cursor_key,
            in_flight,
            recent,
        } = lasting;
        let regions = Regions::new(&config, fleet.clone(), previous.map(|p| &*p.regions));
        // A flight per request in flight and region, and as many more for the ones whose
        // clients went away or that refresh in the background.
        let max_flights = config.server.max_in_flight * (config.regions.len() + 1) * 2;
        let mut caches = Caches::new(&config.cache, max_flights);
        if let Some(previous) = previous {
            caches.keep_identities_of(&previous.caches);
        }
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
                suspect_grace: config.upstream.suspect_grace,
                max_upstream_rows: config.server.max_upstream_rows,
            },
        };
        let metrics = Metrics::new(
            &caches,
            &regions,
            &lister,
            keystone.as_ref(),
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
            recent,
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
    recent: Arc<status::Recent>,
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

impl FromRef<AppState> for Arc<Config> {
    fn from_ref(state: &AppState) -> Arc<Config> {
        state.config.clone()
    }
}

impl FromRef<AppState> for Arc<Lister> {
    fn from_ref(state: &AppState) -> Arc<Lister> {
        state.lister.clone()
    }
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Arc<Metrics> {
        state.metrics.clone()
    }
}
