//! Snapshots, the second listed resource: the proxy over three simulated regions must answer
//! what one simulated region holding the union answers (items, count, next link, and whole
//! walks), at the microversions that change the snapshot view, and keep snapshots apart from
//! backups (routes, cache entries, cursors). The real-Cinder version of this check is
//! `tests/conformance/test_differential.py`.

use std::collections::BTreeMap;
use std::sync::Arc;

use cinder_sim::{SimConfig, SimRegion, Snapshot};
use serde_json::Value;

use crate::support::{rows, Harness, PROJECT, TOKEN};

const STATUSES: [&str; 4] = ["available", "error", "creating", "deleting"];
const NAMES: [Option<&str>; 6] = [
    None,
    Some("Alpha"),
    Some("alpha"),
    Some(""),
    Some("beta"),
    None,
];

/// 60 snapshots with ties in `created_at`, NULL and empty names, NULL `updated_at`, a
/// group snapshot on some, quota flags both ways, one of another project, one deleted.
fn snapshots() -> Vec<Snapshot> {
    (0..60u32)
        .map(|i| {
            let created = format!("2024-03-01T{:02}:00:00.000000", i / 3); // ties of three
            Snapshot {
                // Ids whose order is unrelated to creation order.
                id: format!("{:08x}-{i:04}", i.wrapping_mul(2_654_435_761)),
                project_id: if i == 17 {
                    "other".into()
                } else {
                    PROJECT.into()
                },
                user_id: ["user-a", "user-b", "user-c"][i as usize % 3].into(),
                volume_id: format!("vol-{}", i % 4),
                status: STATUSES[i as usize % 4].into(),
                progress: Some("100%".into()),
                volume_size: [1, 5, 10, 2][i as usize % 4],
                display_name: NAMES[i as usize % 6].map(str::to_string),
                display_description: (i % 3 == 0).then(|| format!("snapshot {i}")),
                updated_at: (i % 4 != 0).then(|| format!("2024-03-02T{:02}:00:00.000000", i % 5)),
                created_at: created,
                group_snapshot_id: (i % 5 == 0).then(|| "group-1".to_string()),
                use_quota: i % 7 != 0,
                metadata: BTreeMap::from([("tier".to_string(), (i % 2).to_string())]),
                deleted: i == 23,
            }
        })
        .collect()
}

/// Three regions holding a split of `snapshots()` (region 1 caps pages at 4) and a union
/// region holding all of it.
async fn world() -> (Harness, Arc<SimRegion>) {
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
    let all = snapshots();
    for (i, s) in all.iter().enumerate() {
        h.regions[(i * 5 + i / 7) % 3]
            .snapshots
            .write()
            .unwrap()
            .push(s.clone());
    }
    let union = SimRegion::new(SimConfig::default(), Vec::new());
    *union.snapshots.write().unwrap() = all;
    (h, union)
}

/// GET on the union region, like the proxy's GET.
async fn union_get(union_base: &str, path: &str, version: Option<&str>) -> (u16, Value) {
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

fn items(body: &Value) -> &Value {
    &body["snapshots"]
}

fn next(body: &Value) -> Option<String> {
    body["snapshots_links"][0]["href"]
        .as_str()
        .map(str::to_string)
}

fn ids(body: &Value) -> Vec<String> {
    items(body)
        .as_array()
        .unwrap_or_else(|| panic!("a list: {body}"))
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn snapshot_listings_match_one_region_over_the_union() {
    let (h, union) = world().await;
    let union_base = union.spawn().await.unwrap();
    let queries = [
        "",
        "limit=5",
        "limit=5&offset=3",
        "sort=size:asc",
        "sort=volume_size:asc,id:desc&limit=7",
        "sort=name:asc&limit=4",
        "sort=display_name:desc&limit=6",
        "sort=status:asc,created_at:asc",
        "sort=updated_at:asc&limit=5",
        "sort_key=volume_size&sort_dir=asc&limit=9",
        "status=error",
        "volume_id=vol-2&limit=3",
        "name=alpha",
        "with_count=true&limit=4",
        "with_count=true&status=available&limit=2",
        "all_tenants=1&limit=8",
        "all_tenants=abc&limit=8",
        "sort=group_snapshot_id:asc&limit=6",
        "sort=user_id:desc&limit=6",
        "sort=use_quota:asc&limit=6",
        "sort=bogus",
        "limit=-1",
    ];
    let versions = [None, Some("3.13"), Some("3.30"), Some("3.41"), Some("3.65")];
    let mut compared = 0;
    for version in versions {
        for query in queries {
            for collection in ["snapshots/detail", "snapshots"] {
                let path = format!("/v3/{PROJECT}/{collection}?{query}");
                let what = format!("{path} at {version:?}");
                let got = h.get(&path, version).await;
                let (status, want) = union_get(&union_base, &path, version).await;
                let gated = gated_sort(query, version);
                if let Some(since) = gated {
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
                let got = got.json();
                if status != 200 {
                    assert_eq!(got, want, "{what}");
                    continue;
                }
                assert_eq!(items(&got), items(&want), "{what}");
                assert_eq!(got.get("count"), want.get("count"), "{what}");
                assert_eq!(next(&got).is_some(), next(&want).is_some(), "{what}");
                let (walked, union_walk) = (
                    walk(&h, &got, version).await,
                    walk_union(&union_base, &want, version).await,
                );
                if walked != union_walk {
                    // Only where Cinder's own walk is broken by NULL sort values (its marker
                    // filter coalesces NULL to a default): then the proxy's walk must be the
                    // exact one over the union's order.
                    let exact = exact_walk(&union_base, collection, query, version).await;
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
    assert!(compared > 150, "only {compared} comparisons ran");
}

/// Cinder's walk computed over the union's whole order with exact marker semantics.
async fn exact_walk(
    union_base: &str,
    collection: &str,
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
    let path = format!("/v3/{PROJECT}/{collection}?{}", rest.join("&"));
    let full = ids(&union_get(union_base, &path, version).await.1);
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
fn gated_sort(query: &str, version: Option<&str>) -> Option<&'static str> {
    let minor: u32 = version.map_or(0, |v| v[2..].parse().unwrap());
    [
        ("group_snapshot_id", "3.14", 14),
        ("user_id", "3.41", 41),
        ("use_quota", "3.65", 65),
    ]
    .into_iter()
    .find(|(column, _, since)| query.contains(&format!("sort={column}")) && minor < *since)
    .map(|(_, since, _)| since)
}

/// Ids from `first` on, following the proxy's next links.
async fn walk(h: &Harness, first: &Value, version: Option<&str>) -> Vec<String> {
    let (mut seen, mut page) = (ids(first), first.clone());
    for _ in 0..100 {
        let Some(href) = next(&page) else { return seen };
        let reply = h.get(&href, version).await;
        assert_eq!(reply.status, 200, "{href}: {}", reply.text);
        page = reply.json();
        seen.extend(ids(&page));
    }
    panic!("the walk did not end");
}

async fn walk_union(union_base: &str, first: &Value, version: Option<&str>) -> Vec<String> {
    let (mut seen, mut page) = (ids(first), first.clone());
    for _ in 0..100 {
        let Some(href) = next(&page) else { return seen };
        let path = href
            .strip_prefix(union_base)
            .expect("a link to the union region");
        let (status, body) = union_get(union_base, path, version).await;
        assert_eq!(status, 200, "{href}");
        page = body;
        seen.extend(ids(&page));
    }
    panic!("the walk did not end");
}

#[tokio::test]
async fn snapshot_markers_and_show_find_the_region_that_holds_them() {
    let (h, union) = world().await;
    let union_base = union.spawn().await.unwrap();
    let all = snapshots();
    let s = &all[10];
    for query in [
        format!("marker={}&limit=5", s.id),
        format!("marker={}&sort=volume_size:asc", s.id),
    ] {
        let path = format!("/v3/{PROJECT}/snapshots/detail?{query}");
        let got = h.get(&path, Some("3.65")).await;
        let (status, want) = union_get(&union_base, &path, Some("3.65")).await;
        assert_eq!((got.status, status), (200, 200), "{query}");
        assert_eq!(items(&got.json()), items(&want), "{query}");
    }
    let shown = h
        .get(&format!("/v3/{PROJECT}/snapshots/{}", s.id), Some("3.65"))
        .await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert_eq!(shown.json()["snapshot"]["id"], s.id.as_str());
    assert_eq!(shown.json()["snapshot"]["consumes_quota"], s.use_quota);
    // An unknown id: Cinder's not-found, naming a snapshot.
    let expected = "Snapshot no-such-snapshot could not be found.";
    for path in [
        "snapshots/no-such-snapshot",
        "snapshots/detail?marker=no-such-snapshot",
    ] {
        let reply = h.get(&format!("/v3/{PROJECT}/{path}"), None).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.json()["itemNotFound"]["message"], expected, "{path}");
    }
}

#[tokio::test]
async fn snapshots_and_backups_do_not_share_entries_or_cursors() {
    let (h, _union) = world().await;
    // With caching on: the same query on both collections must give each its own items.
    let cached = h
        .restart_proxy(&format!(
            "{}\n[cache]\nttl = \"60s\"\n",
            h.region_urls
                .iter()
                .enumerate()
                .map(|(i, u)| format!("[[regions]]\nname = \"r{i}\"\nurl = \"{u}\"\n"))
                .collect::<String>()
        ))
        .await;
    let backups = cached
        .get(&format!("/v3/{PROJECT}/backups/detail?limit=2"), None)
        .await;
    let snaps = cached
        .get(&format!("/v3/{PROJECT}/snapshots/detail?limit=2"), None)
        .await;
    assert_eq!((backups.status, snaps.status), (200, 200));
    assert!(backups.ids().iter().all(|id| id.starts_with('b')));
    assert_eq!(ids(&snaps.json()).len(), 2);
    assert!(snaps.json().get("backups").is_none());
    // A backups cursor is not a snapshots cursor.
    let href = backups.next().expect("a next link");
    let cursor = href.split("marker=").nth(1).unwrap();
    let crossed = cached
        .get(
            &format!("/v3/{PROJECT}/snapshots/detail?limit=2&marker={cursor}"),
            None,
        )
        .await;
    assert_eq!(crossed.status, 400, "{}", crossed.text);
    assert!(crossed.json()["badRequest"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Invalid marker"));
}
