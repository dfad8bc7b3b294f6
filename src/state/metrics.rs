//! The proxy's metrics (`GET /metrics`) in one registry: the edge's own (requests by route and
//! status, latency, in flight, shed; Keystone catalog reads) defined here, and the families
//! each lower module registers itself (`regions/metrics.rs`, `cache/metrics.rs`, the
//! remembered positions, the fleet store).

use std::collections::HashMap;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::cache::Caches;
use crate::listing::service::Lister;
use crate::regions::Regions;

pub struct Metrics {
    pub http: std::sync::Arc<HttpMetrics>,
    /// Keystone catalog reads by outcome (`same`, `changed`, `failed`), with
    /// `[regions_from_catalog]` only.
    pub(crate) catalog_reads: Family<OutcomeLabel, Counter>,
    /// Configuration reloads by outcome (`applied`, `unchanged`, `invalid`).
    config_reloads: Family<OutcomeLabel, Counter>,
    registry: Registry,
}

impl Metrics {
    pub fn new(
        caches: &Caches,
        regions: &Regions,
        lister: &Lister,
        keystone: Option<&std::sync::Arc<crate::identity::Keystone>>,
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
        let config_reloads = previous
            .map(|p| p.config_reloads.clone())
            .unwrap_or_else(|| {
                let family = Family::<OutcomeLabel, Counter>::default();
                for outcome in RELOAD_OUTCOMES {
                    let _ = family.get_or_create(&OutcomeLabel { outcome });
                }
                family
            });
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP) by outcome (applied, unchanged, \
             invalid: the file was refused and nothing changed)",
            config_reloads.clone(),
        );
        if catalog {
            registry.register(
                "catalog_reads",
                "Keystone catalog reads for [regions_from_catalog], by outcome (same, changed, failed)",
                catalog_reads.clone(),
            );
        }
        if let Some(fleet) = fleet {
            fleet.register_metrics(&mut registry);
        }
        let positions = &lister.positions;
        positions.register_metrics(&mut registry);
        registry.register_collector(Box::new(Weighed {
            name: "memo_bytes",
            help: "Bytes held by the proxy's memos, as weighed within cache.max_bytes: the id -> \
                   region map (holders), remembered plain-id positions (positions), parsed \
                   request targets (targets)",
            label: "memo",
            entries: vec![
                ("holders", caches.holders_bytes()),
                ("positions", positions.bytes()),
                ("targets", lister.targets.bytes()),
            ],
        }));
        let mut maps = regions.map_bytes();
        maps.push(("zones", caches.zones_bytes()));
        if let Some(keystone) = keystone {
            maps.push(("keystone_verdicts", keystone.verdicts_bytes()));
        }
        registry.register_collector(Box::new(Weighed {
            name: "map_bytes",
            help: "Bytes held by the proxy's maps kept outside cache.max_bytes (a flood of \
                   distinct listings must not evict them), each within a bound of its own: \
                   the projects' [tenants] states (tenant_limits, 16 MiB), the projects \
                   refused lately (throttled, 4 MiB), the projects the regions' 429s hold \
                   back (tenant_holds, 1 MiB per region), the regions' zones (zones, 1 MiB), \
                   Keystone's token verdicts (keystone_verdicts, 32 MiB)",
            label: "map",
            entries: maps,
        }));
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
        registry.register(
            "http_connections_closed",
            "Connections closed by the listener on a limit, by reason (idle, slow_head: \
             server.header_read_timeout, slow_reader: server.write_timeout)",
            http.connections_closed.clone(),
        );
        regions.register_metrics(&mut registry);
        caches.register_metrics(&mut registry);
        Metrics {
            http,
            catalog_reads,
            config_reloads,
            registry,
        }
    }

    /// A reload's outcome, counted.
    pub(crate) fn count_reload(&self, outcome: &'static str) {
        self.config_reloads.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Reloads of this outcome so far.
    pub(crate) fn reloads(&self, outcome: &'static str) -> u64 {
        self.config_reloads.get_or_create(&OutcomeLabel { outcome }).get()
    }

    /// The text exposition, with the cache sizes read now.
    /// The exposition in OpenMetrics text when `openmetrics`, else in Prometheus text 0.0.4.
    pub fn render(&self, caches: &Caches, regions: &Regions, openmetrics: bool) -> String {
        regions.update_gauges();
        caches.update_gauges();
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

/// Byte gauges read when the scrape is written, one series per entry: the memos inside
/// `cache.max_bytes` (`vbs_memo_bytes{memo}`) and the maps bounded on their own
/// (`vbs_map_bytes{map}`).
struct Weighed {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    entries: Vec<(&'static str, crate::regions::BytesOf)>,
}

impl std::fmt::Debug for Weighed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(name, _)| *name).collect();
        f.debug_struct("Weighed")
            .field("name", &self.name)
            .field("entries", &names)
            .finish()
    }
}

impl prometheus_client::collector::Collector for Weighed {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        let mut family = encoder.encode_descriptor(
            self.name,
            self.help,
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (entry, bytes) in &self.entries {
            let gauge = Gauge::<i64>::default();
            gauge.set(bytes().min(i64::MAX as u64) as i64);
            gauge.encode(family.encode_family(&[(self.label, *entry)])?)?;
        }
        Ok(())
    }
}

/// What a reload of the configuration can come to.
const RELOAD_OUTCOMES: [&str; 3] = ["applied", "unchanged", "invalid"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RouteStatus {
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(crate) struct RouteLabel {
    pub route: String,
}

#[derive(Debug, Clone)]
pub struct HttpMetrics {
    pub requests: Family<RouteStatus, Counter>,
    pub(crate) latency: Family<RouteLabel, Histogram>,
    pub in_flight: Gauge,
    /// Requests shed past `server.max_in_flight` (503 with Retry-After, no work done).
    pub shed: Counter,
    /// Connections the listener closed on a limit, by reason (`idle`, `slow_head`,
    /// `slow_reader`).
    pub connections_closed: Family<ReasonLabel, Counter>,
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
            connections_closed: Family::default(),
            handles: Default::default(),
        }
    }
}

impl HttpMetrics {
    /// Requests answered so far (read by the status page, off the request path).
    pub(crate) fn answered(&self) -> u64 {
        let handles = self.handles.read().expect("not poisoned");
        let counters = handles.values().flat_map(|h| h.by_status.iter());
        counters.map(|(_, c)| c.get()).sum()
    }

    pub(crate) fn observe(&self, route: &str, status: u16, took: std::time::Duration) {
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
