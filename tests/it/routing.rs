//! Issue 24: the proxy as one Cinder endpoint. A call on an item reaches the region that
//! holds it; a pinned call, the region it names.

use cinder_sim::{SimConfig, Volume};

use crate::support::{rows, Harness, Reply, TOKEN};

async fn three_regions() -> Harness {
    Harness::start(
        vec![
            (SimConfig::default(), rows("a", 3)),
            (SimConfig::default(), rows("b", 3)),
            (SimConfig::default(), rows("c", 3)),
        ],
        "",
    )
    .await
}

async fn send(h: &Harness, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = h
        .client
        .request(method, format!("{}{path}", h.base))
        .header("X-Auth-Token", TOKEN);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    if path.ends_with("/restore") {
        request = request.body(r#"{"restore": {"name": "restored"}}"#);
    }
    let r = request.send().await.expect("proxy answers");
    Reply {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        text: r.text().await.expect("body"),
    }
}

/// POST `body` to `path` through the proxy: the status and the answer's text.
async fn post(h: &Harness, path: String, body: String) -> (u16, String) {
    let r = h
        .client
        .post(format!("{}{path}", h.base))
        .header("X-Auth-Token", TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn deleted(h: &Harness, region: usize, id: &str) -> bool {
    let rows = h.regions[region].backups.read().unwrap();
    rows.iter().any(|b| b.id == id && b.deleted)
}

#[tokio::test]
async fn a_call_on_an_item_reaches_the_region_that_holds_it() {
    let h = three_regions().await;
    // Never listed: found by asking every region once, then sent to its owner alone.
    let r = send(&h, "DELETE", "/v3/abc123/backups/b-001", &[]).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert!(deleted(&h, 1, "b-001"));
    assert_eq!(h.calls(), [1, 2, 1], "a lookup each, and the delete at r1");
    let r = send(&h, "POST", "/v3/abc123/backups/c-002/restore", &[]).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["restore"]["backup_id"], "c-002");
    assert_eq!(h.calls(), [2, 3, 3]);
    // Placed by a listing: no lookup at all.
    let listed = h.get("/v3/abc123/backups/detail", None).await;
    assert_eq!(listed.ids().len(), 8);
    let before = h.calls();
    let r = send(&h, "DELETE", "/v3/abc123/backups/a-002", &[]).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert!(deleted(&h, 0, "a-002"));
    assert_eq!(h.calls(), [before[0] + 1, before[1], before[2]]);
    // The owner's own answer comes back as it gave it (here, the state does not allow it).
    h.regions[2].backups.write().unwrap()[0].status = "creating".into();
    let r = send(&h, "DELETE", "/v3/abc123/backups/c-000", &[]).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.text.contains("status must be available or error"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn an_item_nobody_holds_is_cinders_404_and_an_unreachable_region_a_503() {
    let h = three_regions().await;
    let r = send(&h, "DELETE", "/v3/abc123/backups/zzz", &[]).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(
        r.json()["itemNotFound"]["message"],
        "Backup zzz could not be found."
    );
    // Not found where asked, and one region could not be asked: never a guess.
    *h.regions[1].fault.write().unwrap() = cinder_sim::Fault::new(500, "{}");
    let before = h.calls();
    let r = send(&h, "POST", "/v3/abc123/backups/zzz/restore", &[]).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.text.contains("r1"), "{}", r.text);
    assert_eq!(
        h.calls()[0],
        before[0] + 1,
        "r0 was only asked whether it holds it"
    );
    // Still found where it is.
    let r = send(&h, "DELETE", "/v3/abc123/backups/c-001", &[]).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert!(deleted(&h, 2, "c-001"));
}

#[tokio::test]
async fn a_pinned_call_goes_to_the_region_it_names() {
    let h = three_regions().await;
    let pin = [("X-VBS-Region", "r2")];
    let r = send(&h, "GET", "/v3/abc123/backups/c-000/export_record", &pin).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(h.calls(), [0, 0, 1], "no lookup: the region was named");
    let r = send(&h, "DELETE", "/v3/abc123/backups/a-000", &pin).await;
    assert_eq!(r.status, 404, "r2 does not hold it: {}", r.text);
    let r = send(
        &h,
        "GET",
        "/v3/abc123/types",
        &[("X-VBS-Region", "nowhere")],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let message = r.json()["badRequest"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("r0, r1, r2"), "{message}");
}

#[tokio::test]
async fn a_creation_goes_where_its_sources_are() {
    let h = three_regions().await;
    for (i, volume) in ["vol-0", "vol-1", "vol-2"].iter().enumerate() {
        h.regions[i]
            .volumes
            .write()
            .unwrap()
            .push(Volume::held(volume, "abc123"));
    }
    let create = |body: &'static str| post(&h, "/v3/abc123/backups".into(), body.into());
    // A backup of a volume only r2 holds: asked where it is, then created there alone.
    let (status, text) = create(r#"{"backup": {"volume_id": "vol-2"}}"#).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(h.calls(), [1, 1, 2], "a lookup each, and the create at r2");
    // A volume no region holds: Cinder's 404, nothing created.
    let (status, text) = create(r#"{"backup": {"volume_id": "vol-9"}}"#).await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("Volume vol-9 could not be found."), "{text}");
    assert_eq!(h.calls(), [2, 2, 3]);
    // Sources in two regions (a volume of r1, a snapshot of r0): refused naming both, nobody
    // asked to act.
    h.regions[0]
        .snapshots
        .write()
        .unwrap()
        .push(cinder_sim::Snapshot {
            id: "snap-0".into(),
            project_id: crate::support::PROJECT.into(),
            status: "available".into(),
            ..Default::default()
        });
    let before = h.calls();
    let (status, text) =
        create(r#"{"backup": {"volume_id": "vol-1", "snapshot_id": "snap-0"}}"#).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("r1") && text.contains("r0"), "{text}");
    let asked = |c: &[usize]| c.iter().zip(&before).map(|(a, b)| a - b).sum::<usize>();
    assert_eq!(
        asked(&h.calls()),
        6,
        "lookups only: every region for vol-1, and for snap-0"
    );
    // No sources named: the primary.
    let (status, _) = create(r#"{"backup": {"name": "x"}}"#).await;
    assert_eq!(status, 202);
}

/// A restore into an existing volume: the volume must be in the backup's region; across
/// regions it is refused naming both, and no region is asked to act.
#[tokio::test]
async fn a_restore_into_a_volume_of_another_region_is_refused() {
    let h = three_regions().await;
    for (i, volume) in ["vol-0", "vol-1"].iter().enumerate() {
        let held = Volume::held(volume, "abc123");
        h.regions[i].volumes.write().unwrap().push(held);
    }
    let restore = |backup: &str, volume: &str| {
        let path = format!("/v3/abc123/backups/{backup}/restore");
        post(
            &h,
            path,
            format!(r#"{{"restore": {{"volume_id": "{volume}"}}}}"#),
        )
    };
    let restores = |h: &Harness| -> usize {
        let requests = h
            .regions
            .iter()
            .flat_map(|r| r.requests.lock().unwrap().clone());
        requests.filter(|line| line.contains("/restore")).count()
    };
    // b-000 is r1's, vol-0 r0's.
    let (status, text) = restore("b-000", "vol-0").await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("backup b-000 in r1, volume_id vol-0 in r0"),
        "{text}"
    );
    assert_eq!(restores(&h), 0, "no region was asked to restore");
    // Into a volume of its own region: restored there.
    let (status, text) = restore("b-000", "vol-1").await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(restores(&h), 1);
    let requests = h.regions[1].requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|l| l.contains("b-000/restore")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn a_new_volume_goes_to_the_region_of_its_availability_zone() {
    let h = three_regions().await;
    for (i, zone) in ["az-a", "az-b", "az-c"].iter().enumerate() {
        h.regions[i].zones.write().unwrap().push(zone.to_string());
    }
    // Every region's zones are read once, then the POST goes to one region.
    let create =
        |body: &'static str| async { post(&h, "/v3/abc123/volumes".into(), body.into()).await.0 };
    let held = |i: usize| -> Vec<String> {
        let volumes = h.regions[i].volumes.read().unwrap();
        volumes.iter().map(|v| v.id.clone()).collect()
    };
    let status = create(r#"{"volume": {"size": 1, "availability_zone": "az-b"}}"#).await;
    assert_eq!(status, 202);
    assert_eq!(
        h.calls(),
        [1, 2, 1],
        "each region's zones, and the create at r1"
    );
    assert_eq!(held(1), ["new-volume-0"]);
    // Kept: the next one reads no zones, and goes to az-c's region.
    let status = create(r#"{"volume": {"size": 1, "availability_zone": "az-c"}}"#).await;
    assert_eq!(status, 202);
    assert_eq!(h.calls(), [1, 2, 2]);
    assert_eq!(held(2), ["new-volume-0"]);
    // A zone no region has: the primary, which gives Cinder's own answer.
    create(r#"{"volume": {"size": 1, "availability_zone": "nowhere"}}"#).await;
    assert_eq!(h.calls(), [2, 2, 2]);
}
