//! Volumes, the third listed resource: the proxy over three simulated regions answers what
//! one simulated region holding the union answers, at the microversions that change the
//! volume view (`union.rs`'s comparison); `bootable` is shown as a string but merged as the
//! boolean the regions sort on. The real-Cinder version of this check is
//! `tests/conformance/test_volumes.py`.

use std::collections::BTreeMap;
use std::sync::Arc;

use cinder_sim::{SimRegion, Volume};

use crate::support::{Harness, PROJECT};
use crate::union::{union_get, Listed};

const VOLUMES: Listed = Listed {
    collection: "volumes",
    gates: &[
        ("group_id", "3.13", 13),
        ("service_uuid", "3.48", 48),
        ("volume_type_id", "3.63", 63),
        ("use_quota", "3.65", 65),
        ("shared_targets", "3.69", 69),
    ],
};

const STATUSES: [&str; 4] = ["available", "error", "in-use", "creating"];
const NAMES: [Option<&str>; 6] = [
    None,
    Some("Alpha"),
    Some("alpha"),
    Some(""),
    Some("beta"),
    None,
];

/// 60 volumes with ties in `created_at`, NULL and empty names, `bootable` true, false and
/// NULL, NULL `shared_targets`, two types, one of another project, one deleted.
fn volumes() -> Vec<Volume> {
    (0..60u32)
        .map(|i| {
            let n = i as usize;
            Volume {
                id: format!("{:08x}-{i:04}", i.wrapping_mul(2_654_435_761)),
                project_id: if i == 17 {
                    "other".into()
                } else {
                    PROJECT.into()
                },
                user_id: ["user-a", "user-b", "user-c"][n % 3].into(),
                status: STATUSES[n % 4].into(),
                size: [1, 5, 10, 2][n % 4],
                availability_zone: Some(["az-1", "az-2"][n % 2].into()),
                created_at: format!("2024-03-01T{:02}:00:00.000000", i / 3),
                updated_at: (i % 4 != 0).then(|| format!("2024-03-02T{:02}:00:00.000000", i % 5)),
                display_name: NAMES[n % 6].map(str::to_string),
                display_description: (i % 3 == 0).then(|| format!("volume {i}")),
                volume_type_id: ["type-a", "type-b"][n % 2].into(),
                volume_type_name: ["fast", "slow"][n % 2].into(),
                snapshot_id: (i % 5 == 0).then(|| format!("snap-{}", i % 3)),
                source_volid: (i % 7 == 0).then(|| format!("vol-{}", i % 2)),
                bootable: [Some(true), Some(false), None][n % 3],
                multiattach: i % 4 == 1,
                replication_status: (i % 2 == 0).then(|| "disabled".to_string()),
                group_id: (i % 5 == 1).then(|| "group-1".to_string()),
                service_uuid: (i % 3 != 2).then(|| format!("svc-{}", i % 2)),
                shared_targets: [Some(true), Some(false), None][(n / 2) % 3],
                use_quota: i % 7 != 0,
                migration_status: None,
                metadata: BTreeMap::from([("tier".to_string(), (i % 2).to_string())]),
                deleted: i == 23,
            }
        })
        .collect()
}

async fn world() -> (Harness, Arc<SimRegion>) {
    crate::union::world(volumes()).await
}

#[tokio::test]
async fn volume_listings_match_one_region_over_the_union() {
    let (h, union) = world().await;
    let union_base = union.spawn().await.unwrap();
    let queries = [
        "",
        "limit=5",
        "limit=5&offset=3",
        "sort=size:asc",
        "sort=name:asc&limit=4",
        "sort=display_name:desc&limit=6",
        "sort=bootable:asc&limit=7",
        "sort=bootable:desc,size:asc&limit=5",
        "sort=multiattach:asc,id:desc&limit=6",
        "sort=status:asc,created_at:asc",
        "sort=updated_at:asc&limit=5",
        "sort=availability_zone:asc,user_id:desc&limit=9",
        "sort=source_volid:asc&limit=6",
        "sort_key=size&sort_dir=asc&limit=9",
        "sort=group_id:asc&limit=6",
        "sort=service_uuid:desc&limit=6",
        "sort=volume_type_id:asc&limit=6",
        "sort=use_quota:asc&limit=6",
        "sort=shared_targets:asc&limit=6",
        "status=error",
        "availability_zone=az-2&limit=3",
        "name=alpha",
        "with_count=true&limit=4",
        "with_count=true&status=available&limit=2",
        "all_tenants=1&limit=8",
        "sort=bogus",
        "limit=-1",
    ];
    let versions = [
        None,
        Some("3.13"),
        Some("3.48"),
        Some("3.63"),
        Some("3.65"),
        Some("3.69"),
    ];
    let compared = VOLUMES.compare(&h, &union_base, &queries, &versions).await;
    assert!(compared > 200, "only {compared} comparisons ran");
}

#[tokio::test]
async fn volume_markers_and_show_find_the_region_that_holds_them() {
    let (h, union) = world().await;
    let union_base = union.spawn().await.unwrap();
    let all = volumes();
    let v = &all[10];
    for query in [
        format!("marker={}&limit=5", v.id),
        // A bootable one: Cinder's marker filter takes a NULL or false marker value for its
        // column default and repeats rows, where the proxy's walk is exact
        // (docs/cinder-behaviour.md, "Walks over nullable sort keys").
        format!("marker={}&sort=bootable:asc", all[12].id),
        format!("marker={}&sort=name:asc&limit=7", v.id),
    ] {
        let path = format!("/v3/{PROJECT}/volumes/detail?{query}");
        let got = h.get(&path, Some("3.69")).await;
        let (status, want) = union_get(&union_base, &path, Some("3.69")).await;
        assert_eq!((got.status, status), (200, 200), "{query}");
        let got: serde_json::Value =
            serde_json::from_str(&got.text.replace(&h.base, &union_base)).unwrap();
        assert_eq!(VOLUMES.items(&got), VOLUMES.items(&want), "{query}");
    }
    let shown = h
        .get(&format!("/v3/{PROJECT}/volumes/{}", v.id), Some("3.63"))
        .await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    let path = format!("/v3/{PROJECT}/volumes/{}", v.id);
    let (_, want) = union_get(&union_base, &path, Some("3.63")).await;
    let rewritten = want.to_string().replace(&union_base, &h.base);
    assert_eq!(shown.json().to_string(), rewritten);
    let reply = h
        .get(&format!("/v3/{PROJECT}/volumes/no-such-volume"), None)
        .await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json()["itemNotFound"]["message"],
        "Volume no-such-volume could not be found."
    );
}

/// `volumes/summary` counts every region's volumes as one Cinder would; the availability
/// zones are every region's, each once; a region that cannot answer fails the sum, naming it.
#[tokio::test]
async fn the_volume_summary_and_the_zones_speak_for_every_region() {
    let (h, union) = world().await;
    let union_base = union.spawn().await.unwrap();
    for version in [Some("3.12"), Some("3.36")] {
        let path = format!("/v3/{PROJECT}/volumes/summary");
        let got = h.get(&path, version).await;
        let (status, want) = union_get(&union_base, &path, version).await;
        assert_eq!((got.status, status), (200, 200), "{}", got.text);
        assert_eq!(got.json(), want, "{version:?}");
        assert!(want["volume-summary"]["total_count"].as_u64() > Some(40));
    }
    for (i, zones) in [["nova", "az-1"], ["nova", "az-2"], ["az-2", "az-3"]]
        .iter()
        .enumerate()
    {
        *h.regions[i].zones.write().unwrap() = zones.iter().map(|z| z.to_string()).collect();
    }
    let got = h
        .get(&format!("/v3/{PROJECT}/os-availability-zone"), None)
        .await;
    assert_eq!(got.status, 200, "{}", got.text);
    let zones = got.json();
    let names: Vec<&str> = zones["availabilityZoneInfo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["zoneName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nova", "az-1", "az-2", "az-3"]);
    // A region down: no sum that leaves it out.
    *h.regions[2].fault.write().unwrap() = cinder_sim::Fault::new(500, "{}");
    let got = h.get(&format!("/v3/{PROJECT}/volumes/summary"), None).await;
    assert!(got.status >= 500, "{}: {}", got.status, got.text);
    assert!(got.text.contains("r2"), "{}", got.text);
}

/// Horizon's backups panel: pages of backups (`limit=N+1`, the N-th row's id as the next
/// marker) beside the volume and snapshot lists, which name each backup's volume. Through the
/// proxy every backup of every region is paged through once and every one's volume resolves,
/// wherever that volume lives.
#[tokio::test]
async fn a_dashboard_resolves_every_backups_volume() {
    let (h, _union) = world().await;
    let volumes: Vec<String> = volumes()
        .into_iter()
        .filter(|v| v.project_id == PROJECT && !v.deleted)
        .map(|v| v.id)
        .collect();
    // Each region's backups name volumes of any region.
    let mut expected = Vec::new();
    for (r, region) in h.regions.iter().enumerate() {
        for (i, backup) in region.backups.write().unwrap().iter_mut().enumerate() {
            backup.volume_id = volumes[(r * 7 + i * 5) % volumes.len()].clone();
            expected.push(backup.id.clone());
        }
    }
    const N: usize = 2;
    let mut paged = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..20 {
        let query = match &marker {
            Some(m) => format!("limit={}&marker={m}", N + 1),
            None => format!("limit={}", N + 1),
        };
        let page = h
            .get(&format!("/v3/{PROJECT}/backups/detail?{query}"), None)
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        let rows = page.json()["backups"].as_array().unwrap().clone();
        let shown = &rows[..rows.len().min(N)];
        paged.extend(shown.iter().map(|b| {
            (
                b["id"].as_str().unwrap().to_string(),
                b["volume_id"].as_str().unwrap().to_string(),
            )
        }));
        if rows.len() <= N {
            break;
        }
        marker = Some(shown[N - 1]["id"].as_str().unwrap().to_string());
    }
    let listed = h.get(&format!("/v3/{PROJECT}/volumes/detail"), None).await;
    let snapshots = h
        .get(&format!("/v3/{PROJECT}/snapshots/detail"), None)
        .await;
    assert_eq!((listed.status, snapshots.status), (200, 200));
    let listed: Vec<String> = VOLUMES.ids(&listed.json());
    let mut ids: Vec<String> = paged.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected, "every backup paged through once");
    for (backup, volume) in &paged {
        assert!(
            listed.contains(volume),
            "{backup}'s volume {volume} is not listed"
        );
    }
}
