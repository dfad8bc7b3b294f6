//! Prometheus metrics (`GET /metrics`): HTTP, upstream calls and breakers, the cache layers,
//! plain-id markers.

use std::collections::HashMap;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;

use crate::cache::metrics::LayerMetrics;
use crate::cache::Caches;
use crate::regions::Regions;
use crate::listing::positions::RememberedPositions;

pub struct Metrics {
    pub http: HttpMetrics,
    /// Keystone catalog reads by outcome (`same`, `changed`, `failed`), with
    /// `[regions_from_catalog]` only.
    pub catalog_reads: Family<OutcomeLabel, Counter>,
    registry: Registry,
    bytes: [Gauge; 2],
    /// 0 closed, 1 half-open, 2 open; by region.
    breaker: Family<RegionLabel, Gauge>,
    misconfigured: Family<RegionLabel, Gauge>,
}

impl Metrics {
    pub fn new(
        caches: &Caches,
        upstream: &crate::regions::Upstream,
        positions: &RememberedPositions,
        fleet: Option<&crate::fleet::Fleet>,
        catalog: bool,
        previous: Option<&Metrics>,
    ) -> Metrics {
        let mut registry = Registry::with_prefix("vbs");
        // A new set of regions (Keystone's catalog changed) starts new caches and new region
        // gauges, so regions gone are gone from the scrape; the request counters go on.
        let http = previous.map(|p| p.http.clone()).unwrap_or_default();
        let catalog_reads = previous
            .map(|p| p.catalog_reads.clone())
            .unwrap_or_default();
        if catalog {
            registry.register(
                "catalog_reads",
                "Keystone catalog reads for [regions_from_catalog], by outcome (same, changed, failed)",
                catalog_reads.clone(),
            );
        }
        // Fleet mode only: a replica without Redis has no fleet store to be down.
        if let Some(fleet) = fleet {
            registry.register(
                "fleet_up",
                "1 while the fleet store (Redis) answers, 0 while this replica runs on its own",
                fleet.metrics.up.clone(),
            );
            registry.register(
                "fleet_operations",
                "Fleet store operations by kind and outcome (ok, error, timeout, skipped)",
                fleet.metrics.ops.clone(),
            );
        }
        registry.register(
            "plain_markers_remembered",
            "Plain-id markers resumed from remembered positions",
            positions.remembered.clone(),
        );
        registry.register(
            "plain_markers_cold",
            "Plain-id markers that took the cold path (not remembered, or a region's row gone)",
            positions.cold.clone(),
        );
        registry.register(
            "http_requests",
            "Requests by route and status",
            http.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Request latency by route",
            http.latency.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests being handled",
            http.in_flight.clone(),
        );
        registry.register(
            "http_shed",
            "Requests shed at server.max_in_flight (answered 503 with Retry-After)",
            http.shed.clone(),
        );
        let u = &upstream.metrics;
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
        let misconfigured = Family::<RegionLabel, Gauge>::default();
        registry.register(
            "upstream_misconfigured",
            "1 when the region answers 404 to project listings (its url is probably wrong)",
            misconfigured.clone(),
        );
        let breaker = Family::<RegionLabel, Gauge>::default();
        registry.register(
            "upstream_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open",
            breaker.clone(),
        );
        let bytes = [Gauge::default(), Gauge::default()];
        registry.register_collector(Box::new(CacheCollector {
            layers: [
                ("responses", caches.responses.metrics_arc(), bytes[0].clone()),
                ("region_pages", caches.pages.metrics_arc(), bytes[1].clone()),
            ],
        }));
        Metrics {
            http,
            catalog_reads,
            registry,
            bytes,
            breaker,
            misconfigured,
        }
    }

    /// The text exposition, with the cache sizes read now.
    /// The exposition in OpenMetrics text when `openmetrics`, else in Prometheus text 0.0.4.
    pub fn render(&self, caches: &Caches, regions: &Regions, openmetrics: bool) -> String {
        use crate::regions::protection::BreakerState;
        let upstream = &regions.client;
        for (i, (region, guard)) in upstream.regions.iter().zip(&upstream.guards).enumerate() {
            let state = match guard.breaker() {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open { .. } => 2,
            };
            let label = RegionLabel {
                region: region.name.clone(),
            };
            self.breaker.get_or_create(&label).set(state);
            self.misconfigured
                .get_or_create(&label)
                .set(i64::from(regions.misconfigured(i)));
        }
        self.bytes[0].set(caches.responses.weighted_size() as i64);
        self.bytes[1].set(caches.pages.weighted_size() as i64);
        let mut out = String::new();
        let written = if openmetrics {
            encode(&mut out, &self.registry)
        } else {
            prometheus_text::encode(&mut out, &self.registry)
        };
        written.expect("writing to a String cannot fail");
        out
    }
}

/// The cache layers' metrics: one family per name, the layer a label (a family written once
/// per layer would repeat its HELP and TYPE lines, which the exposition format forbids).
#[derive(Debug)]
struct CacheCollector {
    layers: [(&'static str, std::sync::Arc<LayerMetrics>, Gauge); 2],
}

type CounterOf = fn(&LayerMetrics) -> &Counter;

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let counters: [(&str, &str, CounterOf); 5] = [
            ("cache_hits", "Fresh cache hits", |m| &m.hits),
            ("cache_misses", "Lookups that went upstream", |m| &m.misses),
            (
                "cache_stale_served",
                "Stale entries served (revalidating, or on error)",
                |m| &m.stale,
            ),
            (
                "cache_coalesced_waiters",
                "Requests that joined a fetch in flight",
                |m| &m.coalesced,
            ),
            (
                "cache_evictions",
                "Entries evicted by the byte bound or age",
                |m| &m.evictions,
            ),
        ];
        for (name, help, counter) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (layer, metrics, _) in &self.layers {
                counter(metrics).encode(family.encode_family(&[("layer", *layer)])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "cache_bytes",
            "Bytes held, as weighed",
            None,
            MetricType::Gauge,
        )?;
        for (layer, _, bytes) in &self.layers {
            bytes.encode(family.encode_family(&[("layer", *layer)])?)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RegionOutcome {
    pub region: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RegionLabel {
    pub region: String,
}

/// Upstream calls by region and outcome (`ok`, `status_4xx`, `status_5xx`, `timeout`,
/// `connect`, `tls`, `transport`, `body`, `circuit_open`, `backing_off`, `rate_limited`,
/// `overloaded`), retries, and latency.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    pub calls: Family<RegionOutcome, Counter>,
    pub retries: Family<RegionLabel, Counter>,
    pub latency: Family<RegionLabel, Histogram>,
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

    pub fn count_retry(&self, region: &str) {
        self.retries
            .get_or_create(&RegionLabel {
                region: region.to_string(),
            })
            .inc();
    }

    pub fn observe_latency(&self, region: &str, took: std::time::Duration) {
        self.latency
            .get_or_create(&RegionLabel {
                region: region.to_string(),
            })
            .observe(took.as_secs_f64());
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RouteStatus {
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Debug, Clone)]
pub struct HttpMetrics {
    pub requests: Family<RouteStatus, Counter>,
    pub latency: Family<RouteLabel, Histogram>,
    pub in_flight: Gauge,
    /// Requests shed past `server.max_in_flight` (503 with Retry-After, no work done).
    pub shed: Counter,
    /// The series of each route and status met so far: a request counts without building
    /// label strings (the families' lookups allocate them). Bounded: routes are the router's
    /// templates (or `unmatched`), statuses are three digits.
    handles: std::sync::Arc<std::sync::RwLock<HashMap<Box<str>, RouteHandles>>>,
}

#[derive(Debug)]
struct RouteHandles {
    latency: Histogram,
    by_status: Vec<(u16, Counter)>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
            }),
            in_flight: Gauge::default(),
            shed: Counter::default(),
            handles: Default::default(),
        }
    }
}

impl HttpMetrics {
    pub fn observe(&self, route: &str, status: u16, took: std::time::Duration) {
        let counted = {
            let handles = self.handles.read().expect("not poisoned");
            handles.get(route).is_some_and(|h| {
                let counter = h.by_status.iter().find(|(s, _)| *s == status);
                if let Some((_, counter)) = counter {
                    counter.inc();
                    h.latency.observe(took.as_secs_f64());
                }
                counter.is_some()
            })
        };
        if !counted {
            self.first_of(route, status, took);
        }
    }

    /// The first request of a route and status: its series made, and kept for the next.
    fn first_of(&self, route: &str, status: u16, took: std::time::Duration) {
        let counter = self.requests.get_or_create(&RouteStatus {
            route: route.to_string(),
            status: status.to_string(),
        });
        counter.inc();
        let latency = self.latency.get_or_create(&RouteLabel {
            route: route.to_string(),
        });
        latency.observe(took.as_secs_f64());
        let mut handles = self.handles.write().expect("not poisoned");
        let h = handles.entry(route.into()).or_insert_with(|| RouteHandles {
            latency: latency.clone(),
            by_status: Vec::new(),
        });
        if !h.by_status.iter().any(|(s, _)| *s == status) {
            h.by_status.push((status, counter.clone()));
        }
    }
}
