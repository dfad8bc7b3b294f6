//! The regions: one [`RegionClient`] per regional Cinder (`client.rs`), every call through
//! the region's guard (`guard/`: `Retry-After`, breaker and probe, rate, fleet, concurrency,
//! retry budget), the Cinder endpoints it calls (`endpoints.rs`), what a call can come to
//! (`error.rs`), what the version documents said (`versions.rs`) and the regions' metrics
//! (`metrics.rs`). Nothing here knows the listing, the caches or the HTTP front: the listing
//! reads the regions through `listing/source.rs`.

pub mod client;
mod endpoints;
pub mod error;
pub mod guard;
pub mod metrics;
pub mod tenant_limit;
pub mod throttled;
pub mod versions;

use std::sync::Arc;

use crate::config::{Config, FailurePolicy};

pub(crate) use client::{CallContext, RegionClient};
pub use endpoints::tenant;
pub use error::RegionError;

/// The regions as the rest of the proxy sees them: their clients (behind their guards),
/// what their version documents said, their endpoint roots (for href rewriting), and what to
/// do when some fail.
pub struct Regions {
    clients: Vec<RegionClient>,
    pub versions: versions::VersionBook,
    /// Endpoint roots, for href rewriting.
    pub bases: Vec<String>,
    pub(crate) on_failure: FailurePolicy,
    /// Calls, retries and latency by region; they go on when the regions change.
    pub(crate) metrics: metrics::UpstreamMetrics,
    /// Breaker and misconfiguration, as the scrape shows them (`metrics.rs`).
    gauges: metrics::StateGauges,
    /// What one project may ask of the regions (`[tenants]`); kept when the regions change.
    pub(crate) tenant_limits: Arc<tenant_limit::TenantLimits>,
    /// Fleet mode: the `[tenants]` rate is the fleet's.
    fleet: Option<Arc<crate::fleet::Fleet>>,
}

/// Reads a map's bytes when the scrape is written.
pub(crate) type BytesOf = Box<dyn Fn() -> u64 + Send + Sync>;

impl Regions {
    /// The regions' maps kept outside `cache.max_bytes`, each within a bound of its own,
    /// as the scrape reads them: the projects' `[tenants]` states, the projects refused
    /// lately, and the projects the regions' 429s hold back (all regions together).
    pub(crate) fn map_bytes(&self) -> Vec<(&'static str, BytesOf)> {
        let limits = self.tenant_limits.clone();
        let throttled = self.metrics.throttled.clone();
        let holds: Vec<_> = self.clients.iter().map(|c| c.guard.tenant_holds()).collect();
        vec![
            ("tenant_limits", Box::new(move || limits.bytes())),
            ("throttled", Box::new(move || throttled.bytes())),
            (
                "tenant_holds",
                Box::new(move || holds.iter().map(|h| h.bytes()).sum()),
            ),
        ]
    }

    /// A request of `tenant` (`tenant(scope, token)`) that needs a region call: within its
    /// project's `[tenants]` limits (counted as under way while the value lives), or refused
    /// before any region is asked.
    ///
    /// In fleet mode the rate is the fleet's (Redis), this replica's own limits staying as a
    /// floor; while Redis is away, this replica keeps its share of them (the limits over the
    /// replicas it last saw alive).
    pub(crate) async fn tenant_admits(
        &self,
        tenant: &str,
    ) -> Result<tenant_limit::UnderWay, crate::error::RequestError> {
        let fleet = self.fleet.as_ref();
        let share = fleet
            .filter(|f| !f.is_up())
            .map_or(1, |f| f.replicas_alive());
        let under_way = self
            .tenant_limits
            .admit(tenant, tokio::time::Instant::now(), share)
            .map_err(|refused| self.tenant_refused(tenant, refused))?;
        if let (Some(fleet), Some((interval, tolerance))) = (fleet, self.tenant_limits.fleet_gcra())
        {
            if let Some(Err(wait)) = fleet.admit_tenant(tenant, interval, tolerance).await {
                let refused = self.tenant_limits.refuse(throttled::Reason::Rate, wait);
                return Err(self.tenant_refused(tenant, refused));
            }
        }
        Ok(under_way)
    }

    /// A `[tenants]` refusal: recorded for the operator's view, and the caller's 429.
    fn tenant_refused(
        &self,
        tenant: &str,
        refused: tenant_limit::Refused,
    ) -> crate::error::RequestError {
        use throttled::Reason;
        self.metrics.throttled.record(tenant, refused.reason);
        let wait = refused.retry_after;
        let message = match refused.reason {
            Reason::Concurrency => format!(
                "This project has {} requests to the regions under way, its limit \
                 (tenants.max_concurrency); retry when one is answered.",
                self.tenant_limits.max_concurrency()
            ),
            _ => format!(
                "This project's requests to the regions are over its limit (tenants.rate); \
                 retry after {:.1} s.",
                wait.as_secs_f64()
            ),
        };
        crate::error::RequestError::TooManyRequests {
            message,
            retry_after: wait,
        }
    }

    /// The regions of `config`; with a `fleet`, their limits, `Retry-After` and open breakers
    /// are the fleet's. With `previous`, a region of the same name and URL keeps its client
    /// and its guard (see [`RegionClient::new`]), and the call metrics go on.
    pub fn new(
        config: &Config,
        fleet: Option<Arc<crate::fleet::Fleet>>,
        previous: Option<&Regions>,
    ) -> Regions {
        let metrics: metrics::UpstreamMetrics =
            previous.map(|p| p.metrics.clone()).unwrap_or_default();
        let clients: Vec<RegionClient> = config
            .regions
            .iter()
            .map(|r| {
                let base = r.url.trim_end_matches('/');
                // Its guard holds the region's settings: a region whose settings changed (a
                // reload) starts a new one.
                let kept = previous.and_then(|p| {
                    p.clients.iter().find(|old| {
                        old.name == r.name && old.base == base && old.guard.settings == *r.settings()
                    })
                });
                RegionClient::new(r, metrics.clone(), fleet.clone(), kept)
            })
            .collect();
        Regions {
            versions: versions::VersionBook::new(clients.len()),
            bases: clients.iter().map(|r| r.base.clone()).collect(),
            on_failure: config.upstream.on_region_failure,
            fleet: fleet.clone(),
            tenant_limits: match previous {
                Some(p) if p.tenant_limits.made_of == config.tenants => p.tenant_limits.clone(),
                _ => Arc::new(tenant_limit::TenantLimits::new(&config.tenants)),
            },
            gauges: metrics::StateGauges::default(),
            metrics,
            clients,
        }
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Region `i`'s client.
    pub fn region(&self, i: usize) -> &RegionClient {
        &self.clients[i]
    }

    /// Every region's client, in the configured order (a region's index is its place here).
    pub fn iter(&self) -> std::slice::Iter<'_, RegionClient> {
        self.clients.iter()
    }

    pub fn name(&self, region: usize) -> &str {
        &self.clients[region].name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_that_stay_in_the_catalog_keep_their_guards() {
        let config = |regions: &[(&str, &str)]| {
            let toml: String = regions
                .iter()
                .map(|(name, url)| format!("[[regions]]\nname = \"{name}\"\nurl = \"{url}\"\n"))
                .collect();
            Config::from_toml(&toml).unwrap()
        };
        let before = Regions::new(
            &config(&[("a", "http://127.0.0.1:1"), ("b", "http://127.0.0.1:2")]),
            None,
            None,
        );
        // b moved, c is new, a stayed (now second).
        let after = Regions::new(
            &config(&[
                ("c", "http://127.0.0.1:3"),
                ("a", "http://127.0.0.1:1"),
                ("b", "http://127.0.0.1:9"),
            ]),
            None,
            Some(&before),
        );
        let kept = |i: usize, j: usize| {
            Arc::ptr_eq(&after.region(i).guard, &before.region(j).guard)
        };
        assert!(kept(1, 0), "a keeps its breaker and budget");
        assert!(!kept(2, 1), "b at another URL is another region");
        assert_eq!(after.len(), 3);
        assert_eq!(after.region(2).base, "http://127.0.0.1:9");
    }
}
