//! The differential check shared by the listed resources: the proxy over three simulated
//! regions must answer what one simulated region holding the union answers (items, count,
//! next link, and whole walks), query by query and microversion by microversion. The
//! real-Cinder version is `tests/conformance/differential.py`.

use std::sync::Arc;

use cinder_sim::{Row, SimConfig, SimRegion};
use serde_json::Value;

use crate::support::{rows, Harness, PROJECT, TOKEN};

/// Three regions holding a split of `all` (region 1 caps pages at 4), beside three backups
/// each, and a union region holding all of `all`.
pub async fn world<R: Row>(all: Vec<R>) -> (Harness, Arc<SimRegion>) {
    let capped = SimConfig {
        osapi_max_limit: 4,
        ..SimConfig::default()
    };
    let h = Harness::start(
        vec![
            (SimConfig::default(), rows("b0", 3)),
            (capped, rows("b1", 3)),
            (SimConfig::default(), rows("b2", 3)),
        ],
        "",
    )
    .await;
    for (i, row) in all.iter().enumerate() {
        let region = &h.regions[(i * 5 + i / 7) % 3];
        R::table(region).write().unwrap().push(row.clone());
    }
    let union = SimRegion::new(SimConfig::default(), Vec::new());
    *R::table(&union).write().unwrap() = all;
    (h, union)
}

/// A listed collection and the sorts it can merge only from a microversion on:
/// (column, "3.x", x).
pub struct Listed {
    pub collection: &'static str,
    pub gates: &'static [(&'static str, &'static str, u32)],
}

impl Listed {
    pub fn items<'a>(&self, body: &'a Value) -> &'a Value {
        &body[self.collection]
    }

    pub fn next(&self, body: &Value) -> Option<String> {
        body[format!("{}_links", self.collection)][0]["href"]
            .as_str()
            .map(str::to_string)
    }

    pub fn ids(&self, body: &Value) -> Vec<String> {
        self.items(body)
            .as_array()
            .unwrap_or_else(|| panic!("a list: {body}"))
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Every query at every version, on the detail and summary listings: the proxy's answer
    /// is the union's, and so is its walk. Returns how many comparisons ran.
    pub async fn compare(
        &self,
        h: &Harness,
        union_base: &str,
        queries: &[&str],
        versions: &[Option<&str>],
    ) -> usize {
        let mut compared = 0;
        for &version in versions {
            for &query in queries {
                for listing in [
                    format!("{}/detail", self.collection),
                    self.collection.to_string(),
                ] {
                    let path = format!("/v3/{PROJECT}/{listing}?{query}");
                    let what = format!("{path} at {version:?}");
                    let got = h.get(&path, version).await;
                    let (status, want) = union_get(union_base, &path, version).await;
                    if let Some(since) = self.gated_sort(query, version) {
                        // The region would sort on a column the view does not show at this
                        // version: the proxy cannot merge on it and says so.
                        assert_eq!(got.status, 400, "{what}");
                        let message = got.json()["badRequest"]["message"].clone();
                        assert!(
                            message.as_str().unwrap().contains(&format!(
                                "not supported by vbs-proxy below microversion {since}"
                            )),
                            "{what}: {message}"
                        );
                        continue;
                    }
                    assert_eq!(got.status, status, "{what}: {}", got.text);
                    let proxied = got.json();
                    // Links name the proxy where the union's name the union.
                    let got: Value = serde_json::from_str(&got.text.replace(&h.base, union_base))
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    if status != 200 {
                        assert_eq!(got, want, "{what}");
                        continue;
                    }
                    assert_eq!(self.items(&got), self.items(&want), "{what}");
                    assert_eq!(got.get("count"), want.get("count"), "{what}");
                    assert_eq!(
                        self.next(&got).is_some(),
                        self.next(&want).is_some(),
                        "{what}"
                    );
                    let (walked, union_walk) = (
                        self.walk(h, &proxied, version).await,
                        self.walk_union(union_base, &want, version).await,
                    );
                    if walked != union_walk {
                        // Only where Cinder's own walk is broken by NULL sort values (its
                        // marker filter coalesces NULL to a default): then the proxy's walk
                        // must be the exact one over the union's order.
                        let exact = self.exact_walk(union_base, &listing, query, version).await;
                        assert_ne!(
                            union_walk, exact,
                            "{what}: walks differ, the union's is not broken"
                        );
                        assert_eq!(walked, exact, "{what}: the proxy's walk is not exact");
                    }
                    compared += 1;
                }
            }
        }
        compared
    }

    /// Cinder's walk computed over the union's whole order with exact marker semantics.
    async fn exact_walk(
        &self,
        union_base: &str,
        listing: &str,
        query: &str,
        version: Option<&str>,
    ) -> Vec<String> {
        let pairs: Vec<(&str, &str)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        let get = |k: &str| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let mut rest: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| !["limit", "offset", "marker"].contains(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        rest.push("limit=1000".into());
        let path = format!("/v3/{PROJECT}/{listing}?{}", rest.join("&"));
        let full = self.ids(&union_get(union_base, &path, version).await.1);
        let limit: usize = get("limit").map_or(1000, |l| l.parse().unwrap());
        let offset: usize = get("offset").map_or(0, |o| o.parse().unwrap());
        let (mut seq, mut pos) = (Vec::new(), 0);
        loop {
            let page: Vec<String> = full
                .iter()
                .skip(pos + offset)
                .take(limit)
                .cloned()
                .collect();
            seq.extend(page.iter().cloned());
            match page.last() {
                Some(last) if page.len() == limit => {
                    pos = full.iter().position(|id| id == last).unwrap() + 1
                }
                _ => return seq,
            }
        }
    }

    /// The microversion a sort in `query` needs to be mergeable, when `version` is below it.
    fn gated_sort(&self, query: &str, version: Option<&str>) -> Option<&'static str> {
        let minor: u32 = version.map_or(0, |v| v[2..].parse().unwrap());
        self.gates
            .iter()
            .find(|(column, _, since)| query.contains(&format!("sort={column}")) && minor < *since)
            .map(|(_, since, _)| *since)
    }

    /// Ids from `first` on, following the proxy's next links.
    async fn walk(&self, h: &Harness, first: &Value, version: Option<&str>) -> Vec<String> {
        let (mut seen, mut page) = (self.ids(first), first.clone());
        for _ in 0..100 {
            let Some(href) = self.next(&page) else {
                return seen;
            };
            let reply = h.get(&href, version).await;
            assert_eq!(reply.status, 200, "{href}: {}", reply.text);
            page = reply.json();
            seen.extend(self.ids(&page));
        }
        panic!("the walk did not end");
    }

    async fn walk_union(
        &self,
        union_base: &str,
        first: &Value,
        version: Option<&str>,
    ) -> Vec<String> {
        let (mut seen, mut page) = (self.ids(first), first.clone());
        for _ in 0..100 {
            let Some(href) = self.next(&page) else {
                return seen;
            };
            let path = href
                .strip_prefix(union_base)
                .expect("a link to the union region");
            let (status, body) = union_get(union_base, path, version).await;
            assert_eq!(status, 200, "{href}");
            page = body;
            seen.extend(self.ids(&page));
        }
        panic!("the walk did not end");
    }
}

/// GET on the union region, like the proxy's GET.
pub async fn union_get(union_base: &str, path: &str, version: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .get(format!("{union_base}{path}"))
        .header("X-Auth-Token", TOKEN);
    if let Some(v) = version {
        req = req.header("OpenStack-API-Version", format!("volume {v}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
