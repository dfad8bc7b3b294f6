//! The fleet's response layer (L2): behind each replica's own response cache (L1), a page
//! another replica produced is served from Redis instead of from the regions, and of the
//! replicas missing the same page at once only the one holding its lock asks the regions; the
//! others wait for its page (polling Redis, up to `fleet.flight_wait`, then they fetch it
//! themselves: a holder that dies never blocks them).
//!
//! Keyed exactly like L1 (the key holds the caller's identity HMAC, never a token), in its
//! fixed-length text form (`key.rs`). A value is `vbs2\n` then the page: a format version first, so a rolling
//! upgrade never reads a layout it does not know (a value of another layout is a miss). A
//! value's age is what its Redis expiry says, and purges are Redis timestamps: no two replicas'
//! clocks are ever compared.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;

use super::coalescing::{FetchOutcome, Policy};
use super::key::{Owner, ResponseKey};
use super::{hex, Answer, RenderedPage};
use crate::fleet::{Fleet, Flight};

/// How often a replica waiting for another's page looks for it.
const POLL_EVERY: Duration = Duration::from_millis(20);

pub struct SharedResponses {
    pub fleet: Arc<Fleet>,
    pub policy: Policy,
}

type Outcome = FetchOutcome<Arc<Answer>>;

impl SharedResponses {
    /// The page for `key`: fresh from another replica, or produced here (by the lock holder,
    /// or after waiting for it in vain) and shared. `refresh` (a client's `no-cache`) skips
    /// the lookup, not the sharing.
    pub async fn fetch<F, Fut>(
        &self,
        key: &ResponseKey,
        owner: &Owner,
        refresh: bool,
        produce: F,
    ) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Outcome>,
    {
        let digest = key.encode();
        let value_key = self.fleet.key("response", &digest);
        let lock_key = self.fleet.key("flight", &digest);
        let token = hex(&rand::random::<[u8; 16]>());
        let mut holder = false;
        let purged_as = purge_names(owner);
        if !refresh {
            let give_up = tokio::time::Instant::now() + self.fleet.flight_wait;
            loop {
                let windows = (self.policy.ttl, self.keep());
                match self
                    .fleet
                    .get_or_lock(&value_key, &purged_as, &lock_key, &token, windows)
                    .await
                {
                    Some(Flight::Fresh(value, age)) => match decode(&value) {
                        Some(page) => return shared(page, age, owner),
                        // A layout of another version: fetch it (and overwrite it).
                        None => break,
                    },
                    Some(Flight::Holder) => {
                        holder = true;
                        break;
                    }
                    Some(Flight::Wait) if tokio::time::Instant::now() < give_up => {
                        tokio::time::sleep(POLL_EVERY).await;
                    }
                    // Waited long enough, or Redis is not there: this replica fetches.
                    Some(Flight::Wait) | None => break,
                }
            }
        }
        let outcome = produce().await;
        if let (Some(_), Ok(page)) = (&outcome.store, outcome.value.as_ref()) {
            self.fleet.put(&value_key, &encode(page), self.keep()).await;
        }
        if holder {
            self.fleet.unlock(&lock_key, &token).await;
        }
        outcome
    }
}

impl SharedResponses {
    /// How long Redis keeps a value: the longest L1 keeps one (TTL and the longer stale
    /// window). Only fresh values are served from it (stale ones only from L1).
    fn keep(&self) -> Duration {
        self.policy.ttl
            + self
                .policy
                .stale_while_revalidate
                .max(self.policy.stale_if_error)
    }

    /// The admin's purge for every replica (as `Caches::purge` for this one): the pages of
    /// `scope` (`/v3/{project}`) and of every caller-owned scope (their group), or all.
    pub async fn purge(&self, scope: Option<&str>) -> bool {
        let scopes = match scope {
            None => vec!["*"],
            Some(s) => vec![s, CALLERS],
        };
        self.fleet.purge(&scopes, self.keep()).await
    }

    /// The pages of these owners, for every replica (after a write).
    pub async fn purge_owners(&self, owners: &[Owner]) -> bool {
        let names: Vec<String> = owners.iter().map(Owner::fleet_name).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.fleet.purge(&names, self.keep()).await
    }
}

/// The group of every caller-owned scope's purge times (the admin's project purge drops them
/// all, as it does in L1).
const CALLERS: &str = "/v3";

/// The purge times that apply to a page of `owner`: its own, and its group's (a project's
/// own again; a caller's, [`CALLERS`]).
fn purge_names(owner: &Owner) -> [String; 2] {
    let own = owner.fleet_name();
    let group = match owner {
        Owner::Project(_) => own.clone(),
        Owner::Caller(_) => CALLERS.to_string(),
    };
    [own, group]
}

/// A page from L2 as a fetch outcome: stored in L1 with its age, as whole as when it was made.
fn shared(page: RenderedPage, age: Duration, owner: &Owner) -> Outcome {
    let size = page.len() + std::mem::size_of::<RenderedPage>();
    FetchOutcome {
        value: Arc::new(Ok(page)),
        store: Some((size.min(u32::MAX as usize) as u32, owner.clone())),
        failed: false,
        age,
    }
}

/// The layout's version: a value without it is not read.
const MAGIC: &[u8] = b"vbs2\n";

fn encode(page: &RenderedPage) -> Vec<u8> {
    let etag = page.etag.as_ref().map_or(&b""[..], HeaderValue::as_bytes);
    let marker = page.next_marker.as_deref().unwrap_or_default();
    let mut out = Vec::with_capacity(page.len() + etag.len() + 48);
    out.extend_from_slice(MAGIC);
    for part in [etag, &page.head[..], marker, &page.tail[..]] {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out.push(page.next_marker.is_some() as u8);
    out
}

/// The page, or `None` for anything not written by [`encode`] of this version.
fn decode(value: &[u8]) -> Option<RenderedPage> {
    let mut rest = value.strip_prefix(MAGIC)?;
    let mut parts: [&[u8]; 4] = [&[]; 4];
    for part in &mut parts {
        let len = usize::try_from(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?)).ok()?;
        *part = rest.get(8..8usize.checked_add(len)?)?;
        rest = &rest[8 + len..];
    }
    let [etag, head, marker, tail] = parts;
    let next_marker = match rest {
        [1] => Some(Bytes::copy_from_slice(marker)),
        [0] => None,
        _ => return None,
    };
    Some(RenderedPage {
        head: Bytes::copy_from_slice(head),
        next_marker,
        tail: Bytes::copy_from_slice(tail),
        etag: (!etag.is_empty())
            .then(|| HeaderValue::from_bytes(etag).ok())
            .flatten(),
        missing_regions: None,
        degraded: false,
        calls: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(cursor: Option<&str>) -> RenderedPage {
        RenderedPage {
            head: Bytes::from_static(b"{\"backups\": [], \"backups_links\": [{\"href\": \""),
            next_marker: cursor.map(|c| Bytes::copy_from_slice(c.as_bytes())),
            tail: Bytes::from_static(b"\"}]}"),
            etag: Some(HeaderValue::from_static("W/\"abc\"")),
            missing_regions: None,
            degraded: false,
            calls: 3,
        }
    }

    #[test]
    fn a_page_survives_the_round_trip() {
        for cursor in [None, Some("vbs1.payload.mac"), Some("")] {
            let stored = page(cursor);
            let back = decode(&encode(&stored)).expect("decodes");
            assert_eq!(back.head, stored.head);
            assert_eq!(back.tail, stored.tail);
            assert_eq!(back.next_marker, stored.next_marker);
            assert_eq!(back.etag, stored.etag);
        }
    }

    #[test]
    fn other_layouts_and_truncated_values_are_misses() {
        let good = encode(&page(Some("c")));
        assert!(decode(&good).is_some());
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_none(), "truncated at {cut}");
        }
        let mut other = good.clone();
        other[3] = b'1';
        assert!(decode(&other).is_none(), "vbs1 (a raw cursor) is not this layout");
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode(&longer).is_none());
    }
}
