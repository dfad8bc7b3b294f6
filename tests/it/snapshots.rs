//! Snapshots, the second listed resource: the proxy over three simulated regions must answer
//! what one simulated region holding the union answers (items, count, next link, and whole
//! walks), at the microversions that change the snapshot view, and keep snapshots apart from
//! backups (routes, cache entries, cursors). The comparison is `union.rs`'s; the real-Cinder
//! version of this check is `tests/conformance/test_snapshots.py`.

use std::collections::BTreeMap;
use std::sync::Arc;

use cinder_sim::{SimRegion, Snapshot};
use serde_json::Value;

use crate::support::{Harness, PROJECT};
use crate::union::{union_get, Listed};

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

async fn world() -> (Harness, Arc<SimRegion>) {
    crate::union::world(snapshots()).await
}

const SNAPSHOTS: Listed = Listed {
    collection: "snapshots",
    gates: &[
        ("group_snapshot_id", "3.14", 14),
        ("user_id", "3.41", 41),
        ("use_quota", "3.65", 65),
    ],
};

fn items(body: &Value) -> &Value {
    SNAPSHOTS.items(body)
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
    let compared = SNAPSHOTS
        .compare(&h, &union_base, &queries, &versions)
        .await;
    assert!(compared > 150, "only {compared} comparisons ran");
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
    assert_eq!(SNAPSHOTS.ids(&snaps.json()).len(), 2);
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
