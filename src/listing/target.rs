//! What a listing request asks for, decided from its URL alone (with the microversion and the
//! base URL it is answered at): the same for every caller, so it is worked out once and kept.
//! A cache hit then costs one lookup of the raw request instead of decoding the path, parsing
//! and canonicalising the query, and building the response key and next link (README,
//! "Performance").

use std::sync::Arc;

use bytes::Bytes;

use super::render::View;
use super::request::ListQuery;
use crate::cache::key::{Digest, Identity, KeyHasher, ResponseKey};
use crate::cinder::microversion::Version;
use crate::cinder::resource::Resource;

/// A request's target: everything about it but the caller.
#[derive(Debug)]
pub struct Target {
    pub resource: &'static Resource,
    /// `/v3/{project}` or `/v3`, as the client addressed the proxy.
    pub scope: String,
    pub query: ListQuery,
    pub view: View,
    /// The proxy's base URL as this client sees it.
    pub public_base: String,
    /// The response key without the caller (who is put beside it): the resource, version,
    /// view, base URL, path and canonical query the target was worked out for.
    pub key: Digest,
    /// The next link as JSON, up to its marker's value: `"https://proxy/v3/p/backups/detail?limit=50&marker=`.
    pub(crate) next_href_head: Bytes,
}

impl Target {
    pub fn new(
        resource: &'static Resource,
        scope: String,
        path: &str,
        query: ListQuery,
        view: View,
        version: Version,
        public_base: String,
    ) -> Target {
        let mut key = KeyHasher::new();
        key.part(resource.collection.as_bytes())
            .part(version.to_string().as_bytes())
            .part(format!("{view:?}").as_bytes())
            .part(public_base.as_bytes())
            .part(path.as_bytes())
            .part(query.canonical().as_bytes());
        // The query string of the next link ends with `marker=`; the marker follows.
        let href = format!("{public_base}{path}?{}", query.next_query(""));
        let mut head = serde_json::to_vec(&href).expect("a string serialises");
        head.pop(); // the closing quote: it comes after the marker
        Target {
            resource,
            scope,
            query,
            view,
            public_base,
            key: key.finish(),
            next_href_head: Bytes::from(head),
        }
    }

    /// The response key of `identity`'s request for this target.
    pub fn response_key(&self, identity: Identity) -> ResponseKey {
        ResponseKey {
            identity,
            target: self.key,
        }
    }

    /// Bytes held, as weighed: the strings, the parameters, and a fixed allowance for the
    /// structures around them.
    fn weight(&self, raw: &str) -> u32 {
        let params: usize = self.query.params.iter().map(|(k, v)| k.len() + v.len()).sum();
        let strings = raw.len()
            + self.scope.len()
            + self.public_base.len()
            + std::mem::size_of::<Digest>()
            + self.next_href_head.len()
            + 2 * params;
        (strings + 512).min(u32::MAX as usize) as u32
    }
}

/// `marker` as it stands in a next link: URL-encoded like the link's other parameters, then
/// JSON-escaped (a cursor is neither changed by one nor the other; a marker might be).
pub(crate) fn marker_in_link(marker: &str) -> Bytes {
    let mut encoded = String::with_capacity(marker.len());
    crate::cinder::query::quote_plus(&mut encoded, marker);
    let json = serde_json::to_vec(&encoded).expect("a string serialises");
    Bytes::copy_from_slice(&json[1..json.len() - 1])
}

#[allow(clippy::borrowed_box)] // moka's weigher signature: the key type is `Box<str>`
fn weigh(raw: &Box<str>, target: &Arc<Target>) -> u32 {
    target.weight(raw)
}

/// Targets already worked out, by raw request, within a byte budget (keys counted).
pub struct Targets {
    known: moka::sync::Cache<Box<str>, Arc<Target>>,
}

impl Targets {
    pub fn new(max_bytes: u64) -> Targets {
        Targets {
            known: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(weigh)
                .build(),
        }
    }

    /// Targets held, after pending maintenance.
    pub fn entry_count(&self) -> u64 {
        self.known.run_pending_tasks();
        self.known.entry_count()
    }

    /// Reads the bytes held (for the scrape).
    pub(crate) fn bytes(&self) -> Box<dyn Fn() -> u64 + Send + Sync> {
        let known = self.known.clone();
        Box::new(move || {
            known.run_pending_tasks();
            known.weighted_size()
        })
    }

    /// Bytes held (by the weigher, keys included), after pending maintenance.
    pub fn weighted_size(&self) -> u64 {
        self.known.run_pending_tasks();
        self.known.weighted_size()
    }

    /// The raw request's key: what the target depends on besides the URL.
    pub fn raw_key(
        resource: &Resource,
        view: View,
        version: Version,
        public_base: &str,
        path_and_query: &str,
    ) -> String {
        let mut key = String::new();
        let raw = RawRequest {
            resource,
            view,
            version,
            public_base: [public_base, "", ""],
            path_and_query,
        };
        raw.write_key(&mut key);
        key
    }

    /// The target of `raw`, worked out by `work_out` the first time. Its key is written into
    /// a buffer of the thread's, so that finding a target known already allocates nothing.
    pub(crate) fn target_of<E>(
        &self,
        raw: &RawRequest<'_>,
        work_out: impl FnOnce() -> Result<Target, E>,
    ) -> Result<Arc<Target>, E> {
        thread_local! {
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        KEY.with_borrow_mut(|key| {
            key.clear();
            raw.write_key(key);
            let found = self.known.get(key.as_str());
            // A key as long as a client makes it is not kept in the buffer.
            if key.capacity() > 4096 {
                *key = String::new();
            }
            found
        })
        .map_or_else(
            || {
                let mut key = String::new();
                raw.write_key(&mut key);
                self.get_or_work_out(&key, work_out)
            },
            Ok,
        )
    }

    /// The target of `raw`, worked out by `work_out` the first time (its errors are not kept:
    /// bad input costs its sender, never the budget).
    pub fn get_or_work_out<E>(
        &self,
        raw: &str,
        work_out: impl FnOnce() -> Result<Target, E>,
    ) -> Result<Arc<Target>, E> {
        if let Some(target) = self.known.get(raw) {
            return Ok(target);
        }
        let target = Arc::new(work_out()?);
        self.known.insert(raw.into(), target.clone());
        Ok(target)
    }
}

/// What a listing request's target depends on: the URL, and what the request is answered at
/// (its resource and view, its microversion, and the base URL, in parts).
pub(crate) struct RawRequest<'a> {
    pub resource: &'a Resource,
    pub view: View,
    pub version: Version,
    pub public_base: [&'a str; 3],
    pub path_and_query: &'a str,
}

impl RawRequest<'_> {
    fn write_key(&self, key: &mut String) {
        use std::fmt::Write;
        let base = &self.public_base;
        key.reserve(self.resource.collection.len() + self.path_and_query.len() + 64);
        let _ = write!(
            key,
            "{}\n{:?}\n{}\n{}{}{}\n{}",
            self.resource.collection,
            self.view,
            self.version,
            base[0],
            base[1],
            base[2],
            self.path_and_query
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cinder::resource::BACKUPS;

    fn target(raw_query: &str) -> Target {
        let version = Version::new(3, 60);
        let query = ListQuery::parse(Some(raw_query), version, 1000, &BACKUPS).unwrap();
        Target::new(
            &BACKUPS,
            "/v3/p".into(),
            "/v3/p/backups/detail",
            query,
            View::Detail,
            version,
            "http://proxy\"x".into(),
        )
    }

    #[test]
    fn the_next_link_head_is_json_up_to_the_marker_value() {
        let t = target("limit=2&marker=old&name=a+b");
        let head = std::str::from_utf8(&t.next_href_head).unwrap();
        assert_eq!(
            head,
            r#""http://proxy\"x/v3/p/backups/detail?limit=2&name=a+b&marker="#
        );
    }

    #[test]
    fn parameter_order_changes_the_link_not_the_key() {
        let (a, b) = (target("limit=2&name=x"), target("name=x&limit=2"));
        assert_eq!(a.key, b.key);
        assert_ne!(a.next_href_head, b.next_href_head);
        let (id1, id2) = (Identity([1; 32]), Identity([2; 32]));
        assert_ne!(a.response_key(id1), a.response_key(id2));
    }

    #[test]
    fn errors_are_not_kept() {
        let targets = Targets::new(1 << 20);
        let failed: Result<_, &str> = targets.get_or_work_out("k", || Err("bad"));
        assert!(failed.is_err());
        let worked = targets.get_or_work_out::<&str>("k", || Ok(target("limit=1")));
        assert_eq!(worked.unwrap().query.limit, 1);
        let kept = targets.get_or_work_out::<&str>("k", || Err("not asked again"));
        assert!(kept.is_ok());
    }
}
