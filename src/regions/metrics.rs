//! The regions' own metrics, registered here: calls by outcome, retries and latency (they
//! go on when Keystone's catalog changes the regions), and each region's breaker and
//! misconfiguration, read from its guard when the scrape is written.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use std::sync::Arc;

use super::guard::BreakerState;
use super::Regions;

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(crate) struct RegionOutcome {
    pub region: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(crate) struct RegionLabel {
    pub region: String,
}

/// Upstream calls by region and outcome (`ok`, `status_4xx`, `status_5xx`, `timeout`,
/// `connect`, `tls`, `transport`, `body`, `circuit_open`, `backing_off`, `rate_limited`,
/// `overloaded`), retries, and latency.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamMetrics {
    pub calls: Family<RegionOutcome, Counter>,
    pub retries: Family<RegionLabel, Counter>,
    pub(crate) latency: Family<RegionLabel, Histogram>,
    /// How long calls waited their turn at a region's limiter (only calls that waited).
    pub(crate) queue_wait: Family<RegionLabel, Histogram>,
    /// The projects refused lately, by name (never a metric label).
    pub(crate) throttled: Arc<super::throttled::Throttled>,
}

impl Default for UpstreamMetrics {
    fn default() -> Self {
        UpstreamMetrics {
            calls: Family::default(),
            retries: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new([
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
            queue_wait: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
            }),
            throttled: Arc::default(),
        }
    }
}

impl UpstreamMetrics {
    pub fn count(&self, region: &str, outcome: &str) {
        self.calls
            .get_or_create(&RegionOutcome {
                region: region.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub(crate) fn count_retry(&self, region: &str) {
        self.retries
            .get_or_create(&RegionLabel {
                region: region.to_string(),
            })
            .inc();
    }

    pub(crate) fn observe_queue_wait(&self, region: &str, waited: std::time::Duration) {
        self.queue_wait
            .get_or_create(&RegionLabel {
                region: region.to_string(),
            })
            .observe(waited.as_secs_f64());
    }

    pub(crate) fn observe_latency(&self, region: &str, took: std::time::Duration) {
        self.latency
            .get_or_create(&RegionLabel {
                region: region.to_string(),
            })
            .observe(took.as_secs_f64());
    }
}

/// What a region's guard and listings say now, set when the scrape is written.
#[derive(Debug, Default)]
pub(crate) struct StateGauges {
    /// 0 closed, 1 half-open, 2 open; by region.
    breaker: Family<RegionLabel, Gauge>,
    misconfigured: Family<RegionLabel, Gauge>,
    /// Projects with calls waiting at the region's limiter now (throttled by fair queuing).
    flows_waiting: Family<RegionLabel, Gauge>,
    /// Projects refused within the last minute (`throttled.rs`).
    throttled: Gauge,
}

impl Regions {
    /// Register the regions' families in `registry`.
    pub(crate) fn register_metrics(&self, registry: &mut Registry) {
        let u = &self.metrics;
        registry.register(
            "upstream_calls",
            "Upstream calls by region and outcome",
            u.calls.clone(),
        );
        registry.register(
            "upstream_retries",
            "Upstream retries by region",
            u.retries.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Upstream call latency by region",
            u.latency.clone(),
        );
        registry.register(
            "upstream_queue_wait_seconds",
            "How long calls waited their turn at the region's limiter (calls that waited)",
            u.queue_wait.clone(),
        );
        registry.register(
            "upstream_flows_waiting",
            "Projects with calls waiting at the region's limiter now",
            self.gauges.flows_waiting.clone(),
        );
        registry.register(
            "tenant_limited",
            "Requests refused 429 because their project passed a [tenants] limit, by reason \
             (rate, concurrency)",
            self.tenant_limits.refused.clone(),
        );
        registry.register(
            "tenants_throttled",
            "Projects refused (429, or a call past its turn at a region's limiter) in the last \
             minute",
            self.gauges.throttled.clone(),
        );
        registry.register(
            "upstream_misconfigured",
            "1 when the region answers 404 to project listings (its url is probably wrong)",
            self.gauges.misconfigured.clone(),
        );
        registry.register(
            "upstream_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open",
            self.gauges.breaker.clone(),
        );
    }

    /// Set the breaker and misconfiguration gauges from the regions' state now.
    pub(crate) fn update_gauges(&self) {
        let throttled = self.metrics.throttled.count();
        self.gauges.throttled.set(throttled.min(i64::MAX as u64) as i64);
        for region in self.iter() {
            let state = match region.guard.breaker() {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open { .. } => 2,
            };
            let label = RegionLabel {
                region: region.name.clone(),
            };
            self.gauges.breaker.get_or_create(&label).set(state);
            self.gauges
                .misconfigured
                .get_or_create(&label)
                .set(i64::from(region.misconfigured()));
            let waiting = region.guard.fair.flows_waiting();
            self.gauges
                .flows_waiting
                .get_or_create(&label)
                .set(waiting.min(i64::MAX as usize) as i64);
        }
    }
}
