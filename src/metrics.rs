//! Prometheus metrics (`GET /metrics`): the cache layers' counters and sizes for now.

use std::borrow::Cow;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cache::Caches;

pub struct Metrics {
    registry: Registry,
    bytes: [Gauge; 2],
}

impl Metrics {
    pub fn new(caches: &Caches) -> Metrics {
        let mut registry = Registry::with_prefix("vbs");
        let bytes = [Gauge::default(), Gauge::default()];
        let layers = [
            ("responses", caches.responses.metrics_arc()),
            ("region_pages", caches.pages.metrics_arc()),
        ];
        for ((name, m), gauge) in layers.into_iter().zip(bytes.iter()) {
            let sub =
                registry.sub_registry_with_label((Cow::Borrowed("layer"), Cow::Borrowed(name)));
            sub.register("cache_hits", "Fresh cache hits", m.hits.clone());
            sub.register(
                "cache_misses",
                "Lookups that went upstream",
                m.misses.clone(),
            );
            sub.register(
                "cache_stale_served",
                "Stale entries served (revalidating, or on error)",
                m.stale.clone(),
            );
            sub.register(
                "cache_coalesced_waiters",
                "Requests that joined a fetch in flight",
                m.coalesced.clone(),
            );
            sub.register(
                "cache_evictions",
                "Entries evicted by the byte bound or age",
                m.evictions.clone(),
            );
            sub.register("cache_bytes", "Bytes held, as weighed", gauge.clone());
        }
        Metrics { registry, bytes }
    }

    /// The text exposition, with the cache sizes read now.
    pub fn render(&self, caches: &Caches) -> String {
        self.bytes[0].set(caches.responses.weighted_size() as i64);
        self.bytes[1].set(caches.pages.weighted_size() as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
