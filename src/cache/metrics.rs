//! The cache layers' metrics, registered here: one family per name, the layer a label.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::Caches;

#[derive(Debug, Default)]
pub struct LayerMetrics {
    pub hits: Counter,
    pub misses: Counter,
    /// Stale entries served (while revalidating, or because the refresh failed).
    pub stale: Counter,
    /// Requests that joined a fetch already in flight.
    pub coalesced: Counter,
    /// Entries pushed out by the byte bound or by age.
    pub(crate) evictions: Counter,
    /// Fetches stopped because every request waiting for them had gone.
    pub stopped: Counter,
}

impl Caches {
    /// Register the layers' families in `registry`; their sizes are read by
    /// [`Caches::update_gauges`] when the scrape is written.
    pub(crate) fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(CacheCollector {
            layers: [
                ("responses", self.responses.metrics_arc(), self.bytes[0].clone()),
                ("region_pages", self.pages.metrics_arc(), self.bytes[1].clone()),
            ],
        }));
    }

    /// The layers' sizes now, for the scrape.
    pub(crate) fn update_gauges(&self) {
        self.bytes[0].set(self.responses.weighted_size() as i64);
        self.bytes[1].set(self.pages.weighted_size() as i64);
    }
}

/// The cache layers' metrics: one family per name, the layer a label (a family written once
/// per layer would repeat its HELP and TYPE lines, which the exposition format forbids).
#[derive(Debug)]
struct CacheCollector {
    layers: [(&'static str, Arc<LayerMetrics>, Gauge); 2],
}

type CounterOf = fn(&LayerMetrics) -> &Counter;

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let counters: [(&str, &str, CounterOf); 6] = [
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
            (
                "cache_fetches_stopped",
                "Fetches stopped because every request waiting for them had gone",
                |m| &m.stopped,
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
