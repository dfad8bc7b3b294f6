//! Counters of one cache layer.

use prometheus_client::metrics::counter::Counter;

#[derive(Debug, Default)]
pub struct LayerMetrics {
    pub hits: Counter,
    pub misses: Counter,
    /// Stale entries served (while revalidating, or because the refresh failed).
    pub stale: Counter,
    /// Requests that joined a fetch already in flight.
    pub coalesced: Counter,
    /// Entries pushed out by the byte bound or by age.
    pub evictions: Counter,
}
