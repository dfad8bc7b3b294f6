//! What a listing request asks for, decided from its URL alone (with the microversion and the
//! base URL it is answered at): the same for every caller, so it is worked out once and kept.
//! A cache hit then costs one lookup of the raw request instead of decoding the path, parsing
//! and canonicalising the query, and building the response key and next link (README,
//! "Performance").

use std::sync::Arc;

use bytes::Bytes;

use super::render::View;
use super::request::ListQuery;
use crate::cinder::resource::Resource;
use crate::cinder::microversion::Version;

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
    /// The response key without the caller (who is put in front of it); it holds the path
    /// and version the target was worked out for, as the next link's head holds the path.
    pub key: String,
    /// The next link as JSON, up to its marker's value: `"https://proxy/v3/p/backups/detail?limit=50&marker=`.
    pub next_href_head: Bytes,
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
        let key = format!(
            "{}\n{version}\n{view:?}\n{public_base}{path}\n{}",
            resource.collection,
            query.canonical()
        );
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
            key,
            next_href_head: Bytes::from(head),
        }
    }

    /// The response key of `identity`'s request for this target.
    pub fn response_key(&self, identity: &str) -> String {
        let mut key = String::with_capacity(identity.len() + 1 + self.key.len());
        key.push_str(identity);
        key.push('\n');
        key.push_str(&self.key);
        key
    }

    /// Bytes held, as weighed: the strings, the parameters, and a fixed allowance for the
    /// structures around them.
    fn weight(&self, raw: &str) -> u32 {
        let params: usize = self.query.params.iter().map(|(k, v)| k.len() + v.len()).sum();
        let strings = raw.len()
            + self.scope.len()
            + self.public_base.len()
            + self.key.len()
            + self.next_href_head.len()
            + 2 * params;
        (strings + 512).min(u32::MAX as usize) as u32
    }
}

/// `marker` as it stands in a next link: URL-encoded like the link's other parameters, then
/// JSON-escaped (a cursor is neither changed by one nor the other; a marker might be).
pub fn marker_in_link(marker: &str) -> Bytes {
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

    /// The raw request's key: what the target depends on besides the URL.
    pub fn raw_key(
        resource: &Resource,
        view: View,
        version: Version,
        public_base: &str,
        path_and_query: &str,
    ) -> String {
        use std::fmt::Write;
        let mut key = String::with_capacity(
            resource.collection.len() + public_base.len() + path_and_query.len() + 24,
        );
        let _ = write!(
            key,
            "{}\n{view:?}\n{version}\n{public_base}\n{path_and_query}",
            resource.collection
        );
        key
    }

    /// The target of `raw`, worked out by `work_out` the first time (its errors are not kept:
    /// bad input costs its sender, never the budget).
    pub fn get_or_work_out<E>(
        &self,
        raw: String,
        work_out: impl FnOnce() -> Result<Target, E>,
    ) -> Result<Arc<Target>, E> {
        if let Some(target) = self.known.get(raw.as_str()) {
            return Ok(target);
        }
        let target = Arc::new(work_out()?);
        self.known.insert(raw.into_boxed_str(), target.clone());
        Ok(target)
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
        assert_ne!(a.response_key("id1"), a.response_key("id2"));
    }

    #[test]
    fn errors_are_not_kept() {
        let targets = Targets::new(1 << 20);
        let failed: Result<_, &str> = targets.get_or_work_out("k".into(), || Err("bad"));
        assert!(failed.is_err());
        let worked = targets.get_or_work_out::<&str>("k".into(), || Ok(target("limit=1")));
        assert_eq!(worked.unwrap().query.limit, 1);
        let kept = targets.get_or_work_out::<&str>("k".into(), || Err("not asked again"));
        assert!(kept.is_ok());
    }
}
