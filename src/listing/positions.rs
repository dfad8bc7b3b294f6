//! Remembered positions (docs/api.md: plain ids as markers). For the last rows of a page the
//! proxy served, where each region stood just after that row: the positions a cursor ending
//! at that row would carry. Dashboards page with the id of the last row they showed as
//! `marker` rather than following next links; with the positions remembered, such a marker
//! resumes every region where it stood, so a page costs about `regions × (offset + limit)`
//! upstream rows at any depth instead of a scan of the regions that do not hold the marker.
//!
//! Keyed by the caller's identity, the query's cursor binding (resource, scope, version,
//! filters, sort, regions) and the row's id, hashed: the key is 32 bytes whatever the query,
//! and no caller's positions serve another caller. Bounded in bytes like the caches.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use crate::cache::key::Identity;
use sha2::{Digest, Sha256};

use super::cursor::Position;
use crate::cache::coalescing::ENTRY_OVERHEAD;

type Key = [u8; 32];

/// The rows of a page whose positions are kept: the last (python-cinderclient, the CLI and
/// most scripts take the last id of a page as the next marker) and the one before it
/// (Horizon asks for one row more than it shows and takes the last row shown). A marker from
/// elsewhere in a page takes the cold path, which gives the same answer at a higher cost;
/// keeping every row cost a cached 50-item page about 20 KB more of RSS (61.7 against 42.0 KB
/// measured; docs/performance.md, "Against the targets").
pub(crate) const REMEMBERED_ROWS: usize = 2;

/// How long positions are kept: long enough for a person paging through a dashboard, short
/// enough that a region whose rows are restored or moved does not keep old positions for long.
const REMEMBER_FOR: std::time::Duration = std::time::Duration::from_secs(15 * 60);

pub struct RememberedPositions {
    map: moka::sync::Cache<Key, Arc<[Position]>>,
    /// Fleet mode: positions any replica remembered (a dashboard's next page may land on
    /// another replica).
    pub shared: Option<Arc<crate::fleet::Fleet>>,
    /// Plain-id markers resumed from remembered positions.
    pub remembered: Counter,
    /// Plain-id markers that took the cold path (never seen, evicted, or a region's
    /// remembered row gone).
    pub cold: Counter,
}

impl RememberedPositions {
    pub fn new(max_bytes: u64, shared: Option<Arc<crate::fleet::Fleet>>) -> RememberedPositions {
        RememberedPositions {
            map: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(weight)
                .time_to_live(REMEMBER_FOR)
                .build(),
            shared,
            remembered: Counter::default(),
            cold: Counter::default(),
        }
    }

    /// Carry on from `old` (a reload): its counts, and with `entries` (the regions stayed the
    /// same, so the cursor bindings and the keys did) what it remembered, each entry for a
    /// new `REMEMBER_FOR`.
    pub(crate) fn adopt(&self, old: &RememberedPositions, entries: bool) {
        self.remembered.inc_by(old.remembered.get());
        self.cold.inc_by(old.cold.get());
        if entries {
            for (key, positions) in old.map.iter() {
                self.map.insert(*key, positions);
            }
        }
    }

    /// Register the plain-id marker counters in `registry`.
    pub(crate) fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "plain_markers_remembered",
            "Plain-id markers resumed from remembered positions",
            self.remembered.clone(),
        );
        registry.register(
            "plain_markers_cold",
            "Plain-id markers that took the cold path (not remembered, or a region's row gone)",
            self.cold.clone(),
        );
    }

    pub fn key(identity: Identity, binding: &[u8], id: &str) -> Key {
        let mut h = Sha256::new();
        for part in [&identity.0[..], binding, id.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    pub fn get(&self, key: &Key) -> Option<Arc<[Position]>> {
        self.map.get(key)
    }

    pub fn insert(&self, key: Key, positions: Arc<[Position]>) {
        self.map.insert(key, positions);
    }

    /// This replica's positions for `key`, else the fleet's (bounded by `fleet.op_timeout`).
    pub async fn find(&self, key: &Key) -> Option<Arc<[Position]>> {
        if let Some(found) = self.get(key) {
            return Some(found);
        }
        let fleet = self.shared.as_ref()?;
        let value = fleet.get(&fleet.key("positions", &crate::cache::hex(key))).await?;
        let positions = decode(&value)?;
        self.map.insert(*key, positions.clone());
        Some(positions)
    }

    /// Remember a page's positions here, and for the fleet in the background (one round
    /// trip; the answer does not wait for it).
    pub(crate) fn remember(&self, entries: Vec<(Key, Arc<[Position]>)>) {
        if let Some(fleet) = &self.shared {
            let shared: Vec<(String, Vec<u8>)> = entries
                .iter()
                .map(|(key, positions)| (fleet.key("positions", &crate::cache::hex(key)), encode(positions)))
                .collect();
            let fleet = fleet.clone();
            tokio::spawn(async move { fleet.put_many(&shared, REMEMBER_FOR).await });
        }
        for (key, positions) in entries {
            self.map.insert(key, positions);
        }
    }

    /// Forget everything (tests, and the cold path's measurement).
    pub fn clear(&self) {
        self.map.invalidate_all();
    }

    /// Reads the bytes held (for the scrape).
    pub(crate) fn bytes(&self) -> Box<dyn Fn() -> u64 + Send + Sync> {
        let map = self.map.clone();
        Box::new(move || {
            map.run_pending_tasks();
            map.weighted_size()
        })
    }

    /// Bytes held, as weighed (after pending maintenance).
    pub fn weighted_size(&self) -> u64 {
        self.map.run_pending_tasks();
        self.map.weighted_size()
    }
}

/// The layout's version: a value without it is not read.
const MAGIC: &[u8] = b"vbp1\n";

fn encode(positions: &[Position]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    serde_json::to_writer(&mut out, positions).expect("positions serialise");
    out
}

fn decode(value: &[u8]) -> Option<Arc<[Position]>> {
    let positions: Vec<Position> = serde_json::from_slice(value.strip_prefix(MAGIC)?).ok()?;
    Some(positions.into())
}

fn weight(_: &Key, positions: &Arc<[Position]>) -> u32 {
    let held: usize = positions
        .iter()
        .map(|p| std::mem::size_of::<Position>() + p.marker.as_ref().map_or(0, String::len))
        .sum();
    (size_of::<Key>() + held + ENTRY_OVERHEAD).min(u32::MAX as usize) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_callers_queries_and_rows() {
        let (me, you) = (Identity([1; 32]), Identity([2; 32]));
        let k = RememberedPositions::key(me, b"q", "row");
        assert_eq!(k, RememberedPositions::key(me, b"q", "row"));
        assert_ne!(k, RememberedPositions::key(you, b"q", "row"));
        assert_ne!(k, RememberedPositions::key(me, b"q2", "row"));
        assert_ne!(k, RememberedPositions::key(me, b"q", "row2"));
        // Lengths are part of the key: no two splits of the same bytes collide.
        assert_ne!(
            RememberedPositions::key(me, b"ab", "c"),
            RememberedPositions::key(me, b"a", "bc")
        );
    }

    #[test]
    fn positions_survive_the_round_trip_and_other_layouts_are_misses() {
        let positions: Arc<[Position]> = vec![
            Position {
                marker: Some("a-row".into()),
                skip: 3,
            },
            Position {
                marker: None,
                skip: 0,
            },
            Position {
                marker: Some(String::new()),
                skip: u64::MAX,
            },
        ]
        .into();
        let value = encode(&positions);
        assert_eq!(decode(&value).as_deref(), Some(&positions[..]));
        for cut in MAGIC.len() + 1..value.len() {
            assert!(decode(&value[..cut]).is_none(), "truncated at {cut}");
        }
        assert!(decode(b"vbp2\n").is_none());
    }

    #[test]
    fn memory_is_bounded_by_what_is_weighed() {
        let map = RememberedPositions::new(64 * 1024, None);
        let positions: Arc<[Position]> = (0..3)
            .map(|i| Position {
                marker: Some(format!("{i:036}")),
                skip: 0,
            })
            .collect();
        for row in 0..10_000 {
            map.insert(
                RememberedPositions::key(Identity([1; 32]), b"q", &row.to_string()),
                positions.clone(),
            );
        }
        let held = map.weighted_size();
        assert!(held > 0 && held <= 64 * 1024, "{held}");
        let one = weight(&[0; 32], &positions) as u64;
        assert!(map.map.entry_count() * one <= 64 * 1024);
    }
}
