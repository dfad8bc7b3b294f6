//! The caches' keys, typed: fixed-size values with a stable encoding, not strings joined with
//! a separator. A key's parts are hashed once, length-prefixed (so no two different sets of
//! parts make the same bytes), into a SHA-256 [`Digest`]; who asks is an HMAC of the token
//! ([`Identity`]), never the token. A key costs no allocation to make or to look up, and its
//! size in a cache entry is fixed (`coalescing::KeySize`).

use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::coalescing::KeySize;

/// SHA-256 of a key's parts (see [`KeyHasher`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Digest(pub [u8; 32]);

/// Writes a key's parts, each prefixed with its length, into SHA-256.
#[derive(Clone, Default)]
pub(crate) struct KeyHasher(Sha256);

impl KeyHasher {
    pub fn new() -> KeyHasher {
        KeyHasher::default()
    }

    /// One part of the key.
    pub fn part(&mut self, bytes: &[u8]) -> &mut KeyHasher {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
        self
    }

    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

/// Who asks: HMAC-SHA-256 of the caller's token (or of who Keystone said the token is, with
/// `cache.scope = "project"`), keyed with `cache.key_secret`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Identity(pub [u8; 32]);

/// Whose data a cache entry holds, which is what a purge names: a project (`/v3/{project}`,
/// its id encoded as in a path), or, when only the token knows the project (a project-less
/// route, and no Keystone to say whose the token is), the caller it was fetched for.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Owner {
    Project(Arc<str>),
    Caller(Identity),
}

impl Owner {
    /// Whose data a listing in `scope` (`/v3/{project}`, or `/v3` on the project-less routes)
    /// is, for a caller whose token Keystone placed in `token_project` (if it was asked) and
    /// whose cache identity is `identity`.
    pub fn of(scope: &str, token_project: Option<&str>, identity: Identity) -> Owner {
        match token_project {
            _ if scope != "/v3" => Owner::Project(Arc::from(scope)),
            Some(project) => {
                let scope = format!("/v3/{}", crate::cinder::path::encode_segment(project));
                Owner::Project(Arc::from(scope))
            }
            None => Owner::Caller(identity),
        }
    }

    /// Heap bytes it holds besides its own size.
    pub fn heap_size(&self) -> usize {
        match self {
            Owner::Project(scope) => scope.len(),
            Owner::Caller(_) => 0,
        }
    }

    /// Its name among the fleet's purge times: a project's scope as it is, a caller as `/v3@`
    /// and its identity in hex (never a project's scope, which has a `/` after `/v3`).
    pub fn fleet_name(&self) -> String {
        match self {
            Owner::Project(scope) => scope.to_string(),
            Owner::Caller(identity) => format!("/v3@{}", hex(&identity.0)),
        }
    }
}

/// A listing answer in the response layer: who asks, and what (the request's target, the
/// same for every caller: `listing/target.rs`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ResponseKey {
    pub identity: Identity,
    pub target: Digest,
}

impl ResponseKey {
    /// Its stable text form (the fleet's Redis key): the identity's and the target's hex.
    pub fn encode(&self) -> String {
        let mut out = hex(&self.identity.0);
        out.push_str(&hex(&self.target.0));
        out
    }
}

/// A region's page in the region-page layer: who asks, which region, and what it is asked
/// (collection, version, scope, the fields decoded, the query: `listing/source.rs`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PageKey {
    pub identity: Identity,
    pub region: u32,
    pub request: Digest,
}

impl KeySize for ResponseKey {
    fn key_size(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

impl KeySize for PageKey {
    fn key_size(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

/// An item of a listed resource, as the id → region map knows it: its collection and its
/// id, a UUID held as its 16 bytes (Cinder's ids are; no allocation to make or look up),
/// any other id as written. A backup and a volume of the same id are two keys, and an id is
/// only ever the same key when written the same way (`ABC…` is not `abc…` to a region's
/// database).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ItemKey {
    collection: &'static str,
    id: ItemId,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum ItemId {
    Uuid(uuid::Uuid),
    Other(Box<str>),
}

impl ItemKey {
    pub fn of(collection: &'static str, id: &str) -> ItemKey {
        let id = match uuid::Uuid::try_parse(id) {
            // Only the canonical spelling: it must read back as the id it was written as.
            Ok(uuid) if uuid.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()) == id => {
                ItemId::Uuid(uuid)
            }
            _ => ItemId::Other(id.into()),
        };
        ItemKey { collection, id }
    }

    /// What the key costs in the map beyond its fixed size (`coalescing::ENTRY_OVERHEAD`).
    pub fn heap_bytes(&self) -> usize {
        match &self.id {
            ItemId::Uuid(_) => 0,
            ItemId::Other(id) => id.len(),
        }
    }

    /// The key's name in the fleet's store: `backups:{id}`.
    pub fn fleet_name(&self) -> String {
        match &self.id {
            ItemId::Uuid(uuid) => format!("{}:{}", self.collection, uuid.hyphenated()),
            ItemId::Other(id) => format!("{}:{id}", self.collection),
        }
    }
}

/// Lower-case hex, without a formatting call per byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_length_prefixed() {
        let of = |parts: &[&str]| {
            let mut h = KeyHasher::new();
            for p in parts {
                h.part(p.as_bytes());
            }
            h.finish()
        };
        assert_eq!(of(&["ab", "c"]), of(&["ab", "c"]));
        assert_ne!(of(&["ab", "c"]), of(&["a", "bc"]));
        assert_ne!(of(&["a\nb"]), of(&["a", "b"]));
    }

    #[test]
    fn a_response_key_encodes_both_parts() {
        let key = ResponseKey {
            identity: Identity([0xab; 32]),
            target: Digest([0x01; 32]),
        };
        let text = key.encode();
        assert_eq!(text.len(), 128);
        assert!(text.starts_with("abab") && text.ends_with("0101"));
    }

    #[test]
    fn an_item_key_is_its_collection_and_its_id_as_written() {
        let id = "5e3a1b2c-0d4f-4a6b-8c7d-9e0f1a2b3c4d";
        let key = ItemKey::of("backups", id);
        assert_eq!(key, ItemKey::of("backups", id));
        assert_eq!(key.heap_bytes(), 0, "a UUID is held in its 16 bytes");
        assert_eq!(key.fleet_name(), format!("backups:{id}"));
        assert_ne!(key, ItemKey::of("volumes", id));
        let upper = ItemKey::of("backups", &id.to_uppercase());
        assert_ne!(key, upper, "another spelling is another id to a region");
        assert_eq!(upper.fleet_name(), format!("backups:{}", id.to_uppercase()));
        let other = ItemKey::of("backups", "not-a-uuid");
        assert_eq!(other.heap_bytes(), 10);
        assert_eq!(other.fleet_name(), "backups:not-a-uuid");
    }
}
