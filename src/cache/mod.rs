//! The cache (README, "Cache"): two byte-bounded layers — region pages (parsed upstream answers,
//! reused by every client page that needs the same upstream call) and responses (the
//! rendered bytes; a hit serves them with no parsing and no serialising) — keyed per caller
//! by an HMAC of the token, never the token itself.

pub mod coalescing;
pub mod key;
pub mod metrics;
pub mod shared;

use std::sync::Arc;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderValue, StatusCode};
use sha2::Sha256;

use crate::config::CacheConfig;
use crate::cinder::item::ListPage;
use crate::regions::RegionError;
use coalescing::{CoalescingCache, Policy};
use metrics::LayerMetrics;

/// A listing page (a 200) as produced once and served many times. The next link is the only
/// part that depends on the request (it repeats the client's own parameters), so the body is
/// kept as the bytes before its href, the cursor, and the bytes after.
#[derive(Debug)]
pub struct RenderedPage {
    pub head: Bytes,
    /// With a next link: its marker (the cursor) as it stands in the link, URL-encoded and
    /// JSON-escaped; `head` ends just before the href string, `tail` starts after it.
    pub next_marker: Option<Bytes>,
    pub tail: Bytes,
    pub etag: Option<HeaderValue>,
    pub missing_regions: Option<HeaderValue>,
    /// Built from a stale region page: never stored.
    pub degraded: bool,
    /// Upstream calls it took (for the request log).
    pub calls: u32,
}

impl RenderedPage {
    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len() + self.next_marker.as_ref().map_or(0, Bytes::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A weak validator over the content (the next link's parameter order may differ between
    /// equivalent requests, so the bytes are only semantically equal).
    ///
    /// XXH3-128, not a cryptographic digest: a validator only tells a client that its copy of
    /// its own answer is current, and SHA-256 over every byte of the answer was 4.6 % of a
    /// real miss's CPU (docs/performance.md, "A cheaper miss"). Deterministic, so replicas
    /// agree on it.
    pub fn etag_for(head: &[u8], next_marker: Option<&[u8]>, tail: &[u8]) -> HeaderValue {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(head);
        h.update(next_marker.unwrap_or_default());
        h.update(tail);
        let digest = h.digest128().to_be_bytes();
        HeaderValue::try_from(format!("W/\"{}\"", hex(&digest))).expect("ascii")
    }
}

pub use key::hex;
pub use key::{ItemKey, Owner};
use key::{Identity, PageKey, ResponseKey};

pub(crate) type PageResult = Arc<Result<ListPage, RegionError>>;

/// What the response layer holds for a listing request: the page, or why there is none (only
/// pages are stored; errors are shared by the requests that waited for them).
pub(crate) type Answer = Result<RenderedPage, crate::error::RequestError>;

/// Bytes the regions' zones may take (a region names its zones; each entry is one region's).
const ZONES_BYTES: u64 = 1 << 20;

pub struct Caches {
    /// `cache.ttl > 0`: store answers (coalescing happens either way).
    pub(crate) enabled: bool,
    pub(crate) honor_client_no_cache: bool,
    pub ttl: std::time::Duration,
    pub responses: CoalescingCache<ResponseKey, Arc<Answer>>,
    pub pages: CoalescingCache<PageKey, PageResult>,
    /// An item → the region that holds it, learnt from listings and look-ups (for show,
    /// plain-id markers and routing). Counted in bytes like the layers.
    pub(crate) holders: moka::sync::Cache<ItemKey, usize>,
    /// Region index → its available zones (`routing`, where a new volume goes), kept a
    /// minute: a region's zones change with its deployment, not with requests. Bounded by
    /// [`ZONES_BYTES`], outside `cache.max_bytes` (one entry per region).
    pub(crate) zones: moka::sync::Cache<usize, Arc<[String]>>,
    /// Fleet mode: the responses the replicas share (L2, behind `responses`).
    pub shared: Option<shared::SharedResponses>,
    /// HMAC-SHA-256 keyed with `cache.key_secret` (or a random key), its key already
    /// absorbed: each identity is cloned from it (two SHA-256 blocks fewer per request).
    identity_mac: Hmac<Sha256>,
    /// Bytes held per layer (responses, region pages), as the scrape shows them.
    bytes: [prometheus_client::metrics::gauge::Gauge; 2],
}

impl Caches {
    /// `cache.max_bytes` is shared out: 3/8 to each layer, 1/16 to the id → region map, 1/16
    /// to the requests' targets ([`Caches::targets_budget`]) and the last 1/8 to the
    /// listing's remembered positions ([`Caches::positions_budget`]), so
    /// everything they hold, keys included, stays within it. `max_flights` bounds each layer's
    /// coalescing table.
    /// Who asks is known by the same HMAC key as in `previous` (a state for a reload or new
    /// regions: `cache.key_secret` changes only at a restart), so entries carried over are
    /// found under the same identities.
    pub(crate) fn keep_identities_of(&mut self, previous: &Caches) {
        self.identity_mac = previous.identity_mac.clone();
    }

    /// Reads the id → region map's bytes (for the scrape).
    pub(crate) fn holders_bytes(&self) -> Box<dyn Fn() -> u64 + Send + Sync> {
        let holders = self.holders.clone();
        Box::new(move || {
            holders.run_pending_tasks();
            holders.weighted_size()
        })
    }

    /// Reads the zones' bytes (for the scrape).
    pub(crate) fn zones_bytes(&self) -> Box<dyn Fn() -> u64 + Send + Sync> {
        let zones = self.zones.clone();
        Box::new(move || {
            zones.run_pending_tasks();
            zones.weighted_size()
        })
    }

    /// Each layer's share of `cache.max_bytes` (3/8).
    pub fn layer_budget(config: &CacheConfig) -> u64 {
        config.max_bytes.as_u64() / 8 * 3
    }

    pub fn new(config: &CacheConfig, max_flights: usize) -> Caches {
        let policy = Policy {
            ttl: config.ttl,
            stale_while_revalidate: config.stale_while_revalidate,
            stale_if_error: config.stale_if_error,
            min_refresh_interval: config.min_refresh_interval,
        };
        let max = config.max_bytes.as_u64();
        let layer = Caches::layer_budget(config);
        let holders = moka::sync::Cache::builder()
            .max_capacity(max / 16)
            .weigher(holder_weight)
            .build();
        let identity_key = match &config.key_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        let identity_mac = Hmac::<Sha256>::new_from_slice(&identity_key).expect("any key length");
        Caches {
            enabled: !config.ttl.is_zero(),
            honor_client_no_cache: config.honor_client_no_cache,
            ttl: config.ttl,
            // A response's fetch is the whole walk over the regions: stopped when nobody
            // waits for it any more. A region page's fetch is one call, left to finish (it
            // fills the cache for the next request, and a straggler given up by
            // `partial_grace` is meant to).
            responses: CoalescingCache::new(
                layer,
                max_flights,
                policy,
                Arc::new(LayerMetrics::default()),
            )
            .stopping_unwanted_fetches(),
            pages: CoalescingCache::new(
                layer,
                max_flights,
                policy,
                Arc::new(LayerMetrics::default()),
            ),
            holders,
            zones: moka::sync::Cache::builder()
                .max_capacity(ZONES_BYTES)
                .weigher(|_: &usize, zones: &Arc<[String]>| {
                    let names: usize = zones.iter().map(|z| z.len() + 24).sum();
                    (96 + names).min(u32::MAX as usize) as u32
                })
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
            shared: None,
            identity_mac,
            bytes: Default::default(),
        }
    }

    /// The share of `cache.max_bytes` left to the listing's remembered positions.
    pub(crate) fn positions_budget(config: &CacheConfig) -> u64 {
        config.max_bytes.as_u64() / 8
    }

    /// The share of `cache.max_bytes` left to the requests' targets worked out
    /// (`listing::target`).
    pub(crate) fn targets_budget(config: &CacheConfig) -> u64 {
        config.max_bytes.as_u64() / 16
    }

    /// The caller's part of every key: HMAC-SHA-256 of the token. The token itself is never
    /// stored, logged or counted.
    pub fn identity(&self, token: &[u8]) -> Identity {
        let mut mac = self.identity_mac.clone();
        mac.update(token);
        Identity(mac.finalize().into_bytes().into())
    }

    /// The admin's purge: the entries of `scope` (`/v3/{project}`) and every project-less
    /// listing whose project only its caller's token knows (it may be this project's), or
    /// everything; how many were dropped.
    pub fn purge(&self, scope: Option<&str>) -> usize {
        match scope {
            None => self.responses.purge_all() + self.pages.purge_all(),
            Some(s) => {
                let project = Owner::Project(Arc::from(s));
                self.purge_owners(&[project])
                    + self.responses.purge_callers()
                    + self.pages.purge_callers()
            }
        }
    }

    /// The entries of these owners (after a write: the writer's project, and its own
    /// project-less listings when only its token knows its project); how many were dropped.
    /// Nobody else's entries are looked at.
    pub fn purge_owners(&self, owners: &[Owner]) -> usize {
        owners
            .iter()
            .map(|o| self.responses.purge(o) + self.pages.purge(o))
            .sum()
    }
}

#[allow(clippy::borrowed_box)] // moka's weigher signature: the key type is `Box<str>`
fn holder_weight(item: &ItemKey, _region: &usize) -> u32 {
    let fixed = std::mem::size_of::<ItemKey>() + coalescing::ENTRY_OVERHEAD;
    (item.heap_bytes() + fixed).min(u32::MAX as usize) as u32
}

/// Whether a region failure is one that stale data may stand in for (README, "Cache").
pub(crate) fn upstream_failed(e: &RegionError) -> bool {
    match e.status() {
        Some(s) => s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error(),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_keyed_and_never_the_token() {
        let config =
            crate::Config::from_toml("[[regions]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n")
                .unwrap();
        let (a, b) = (
            Caches::new(&config.cache, 16),
            Caches::new(&config.cache, 16),
        );
        let id = a.identity(b"secret-token");
        assert_eq!(id.0.len(), 32);
        assert!(!hex(&id.0).contains(&hex(b"secret")));
        assert_eq!(id, a.identity(b"secret-token"));
        assert_ne!(id, a.identity(b"other-token"));
        assert_ne!(
            id,
            b.identity(b"secret-token"),
            "random keys differ per process"
        );
    }
}
