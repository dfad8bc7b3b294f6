//! The regions: one client per regional Cinder behind its protection (`protection.rs`: breaker,
//! retry budget, rate and concurrency limits, `Retry-After`), what their version documents
//! said (`versions.rs`) and their metrics (`metrics.rs`). Nothing here knows the listing, the
//! caches or HTTP's front: the listing reads the regions through `listing/source.rs`.

pub mod client;
pub mod metrics;
pub mod protection;
pub mod versions;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::config::{Config, FailurePolicy};

pub use client::{CallContext, RegionError, Upstream};

/// The regions as the rest of the proxy sees them: their clients (behind their protection),
/// what their version documents said, their endpoint roots (for href rewriting), and what to
/// do when some fail.
pub struct Regions {
    pub client: Upstream,
    pub versions: versions::VersionBook,
    /// Endpoint roots, for href rewriting.
    pub bases: Vec<String>,
    pub on_failure: FailurePolicy,
    /// Per region: project listings it answered 404 in a row (see [`Regions::listed`]).
    listing_404s: Vec<AtomicU32>,
    /// Breaker and misconfiguration, as the scrape shows them (`metrics.rs`).
    gauges: metrics::StateGauges,
}

/// Project listings answered 404 in a row before a region is called misconfigured.
const MISCONFIGURED_AFTER: u32 = 3;

impl Regions {
    /// The regions of `config`; with a `fleet`, their limits, `Retry-After` and open breakers
    /// are the fleet's. With `previous`, the regions that stayed keep their clients and
    /// guards (see [`Upstream::new`]).
    pub fn new(
        config: &Config,
        fleet: Option<Arc<crate::fleet::Fleet>>,
        previous: Option<&Regions>,
    ) -> Regions {
        let client = Upstream::new(config, fleet, previous.map(|p| &p.client));
        Regions {
            versions: versions::VersionBook::new(client.regions.len()),
            bases: client.regions.iter().map(|r| r.base.clone()).collect(),
            on_failure: config.upstream.on_region_failure,
            listing_404s: client.regions.iter().map(|_| AtomicU32::new(0)).collect(),
            gauges: metrics::StateGauges::default(),
            client,
        }
    }

    pub fn len(&self) -> usize {
        self.client.regions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.client.regions.is_empty()
    }

    pub fn name(&self, region: usize) -> &str {
        &self.client.regions[region].name
    }

    /// What a region answered to a listing in a project's scope without a marker. Cinder
    /// answers such a listing 200, or 4xx for the request (400, 401, 403) — never 404, unless
    /// the configured URL is not its endpoint (a path prefix too many, or too few). After a
    /// few in a row the region is misconfigured: logged once (WARN), shown in
    /// `vbs_upstream_misconfigured` and in `/readyz`, until it answers a listing again.
    pub fn listed(&self, region: usize, status: http::StatusCode) {
        let count = &self.listing_404s[region];
        if status != http::StatusCode::NOT_FOUND {
            count.store(0, Ordering::Relaxed);
            return;
        }
        if count.fetch_add(1, Ordering::Relaxed) + 1 == MISCONFIGURED_AFTER {
            tracing::warn!(
                region = %self.name(region),
                url = %self.bases[region],
                "the region answers 404 to project listings: its url is probably not the Cinder \
                 endpoint (give the root, e.g. https://cinder.example:8776, or the catalog's \
                 .../v3/%(project_id)s)"
            );
        }
    }

    /// Does the region look misconfigured (see [`Regions::listed`])?
    pub fn misconfigured(&self, region: usize) -> bool {
        self.listing_404s[region].load(Ordering::Relaxed) >= MISCONFIGURED_AFTER
    }
}
