//! The cache through the HTTP stack: coalescing, isolation between callers, staleness,
//! canonical keys, validators, purges. (TTL boundaries with paused time: src/cache/layer.rs.)

use std::sync::Arc;

use axum::http::StatusCode;
use cinder_sim::{Fault, SimConfig};
use serde_json::json;

use crate::support::{rows, Harness, TOKEN};

const DETAIL: &str = "/v3/abc123/backups/detail";
const CACHED: &str = "[cache]\nttl = \"30s\"\n";

async fn one_region(extra: &str) -> Harness {
    Harness::start(vec![(SimConfig::default(), rows("a", 12))], extra).await
}

fn status(r: &crate::support::Reply) -> &str {
    r.header("cache-status").unwrap_or("")
}

/// Hold a region's answers until `open` is called.
fn close_gate(h: &Harness, region: usize) -> Arc<tokio::sync::Semaphore> {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *h.regions[region].gate.write().unwrap() = Some(gate.clone());
    gate
}

/// Wait (yielding, never sleeping) until the response layer counts `n` requests joined to a
/// fetch in flight; bounded at 30 s.
async fn until_coalesced(h: &Harness, n: u64) {
    let joined = || h.state.caches.responses.metrics().coalesced.get();
    let wait = async {
        while joined() < n {
            tokio::task::yield_now().await;
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .is_err()
    {
        panic!("only {} waiters joined", joined());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_identical_requests_makes_one_call_per_region() {
    let h = Harness::start(
        vec![
            (SimConfig::default(), rows("a", 5)),
            (SimConfig::default(), rows("b", 5)),
            (SimConfig::default(), rows("c", 5)),
        ],
        CACHED,
    )
    .await;
    let gates: Vec<_> = (0..3).map(|r| close_gate(&h, r)).collect();
    let h = Arc::new(h);
    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let (h, barrier) = (h.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                h.get(&format!("{DETAIL}?limit=4"), None).await
            })
        })
        .collect();
    until_coalesced(&h, 199).await;
    for g in &gates {
        g.add_permits(1000);
    }
    let mut bodies = Vec::new();
    for c in clients {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200);
        bodies.push(r.text);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        h.calls(),
        [1, 1, 1],
        "each region is asked once for the burst"
    );
}

/// A client that goes away while another waits for the same page does not stop its fetch:
/// the other gets the answer of the same call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_does_not_cancel_the_fetch_for_others() {
    let h = Arc::new(one_region(CACHED).await);
    let gate = close_gate(&h, 0);
    let request = || {
        let h = h.clone();
        tokio::spawn(async move { h.get(DETAIL, None).await })
    };
    let first = request();
    h.regions[0].arrived.notified().await;
    let second = request();
    until_coalesced(&h, 1).await;
    first.abort(); // the connection drops mid-fetch
    gate.add_permits(10);
    let r = second.await.unwrap();
    assert_eq!(r.status, 200);
    assert!(status(&r).contains("collapsed"), "{}", status(&r));
    assert_eq!(h.calls(), [1]);
    assert_eq!(h.state.caches.responses.metrics().stopped.get(), 0);
}

/// When the only client of a page goes away, the page's walk stops (issue 23, class 4), but
/// the region call under way is not wasted: the next request for the page gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_alone_wastes_no_region_call() {
    let h = Arc::new(one_region(CACHED).await);
    let gate = close_gate(&h, 0);
    let first = tokio::spawn({
        let h = h.clone();
        async move { h.get(DETAIL, None).await }
    });
    h.regions[0].arrived.notified().await;
    first.abort(); // the connection drops mid-fetch
    let stopped = || h.state.caches.responses.metrics().stopped.get();
    crate::support::until("the page's walk to stop", || stopped() == 1).await;
    let second = tokio::spawn({
        let h = h.clone();
        async move { h.get(DETAIL, None).await }
    });
    let joined = || h.state.caches.pages.metrics().coalesced.get();
    crate::support::until("the region call to be joined", || joined() == 1).await;
    gate.add_permits(10);
    let r = second.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.ids().len(), 12);
    assert_eq!(h.calls(), [1]);
}

/// A request whose client went away leaves the in-flight count (it stayed counted for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_leaves_the_in_flight_count() {
    let h = Arc::new(one_region(CACHED).await);
    let gate = close_gate(&h, 0);
    let in_flight = || h.state.metrics.http.in_flight.get();
    let first = tokio::spawn({
        let h = h.clone();
        async move { h.get(DETAIL, None).await }
    });
    h.regions[0].arrived.notified().await;
    assert_eq!(in_flight(), 1);
    first.abort(); // the connection drops mid-fetch
    crate::support::until("the request to leave the count", || in_flight() == 0).await;
    gate.add_permits(10);
}

#[tokio::test]
async fn callers_never_share_entries() {
    let h = one_region(CACHED).await;
    let a = h.get(DETAIL, None).await;
    assert_eq!(status(&a), "vbs-proxy; fwd=miss; stored");
    assert!(status(&h.get(DETAIL, None).await).starts_with("vbs-proxy; hit"));
    assert_eq!(h.calls(), [1]);
    // Same project, another token: upstream again, and the region's refusal is the answer.
    let other = "someone-else:abc123";
    let forbidden = json!({"forbidden": {"code": 403, "message": "Policy doesn't allow backup:get_all to be performed."}});
    h.regions[0].refuse.write().unwrap().insert(
        other.to_string(),
        Fault {
            status: StatusCode::FORBIDDEN,
            body: forbidden.to_string(),
            ..Fault::default()
        },
    );
    let b = h.get_with(DETAIL, &[("X-Auth-Token", other)]).await;
    assert_eq!(b.status, 403);
    assert_eq!(b.json(), forbidden);
    assert_eq!(h.calls(), [2]);
    // And a refusal is not cached: B asks again.
    h.get_with(DETAIL, &[("X-Auth-Token", other)]).await;
    assert_eq!(h.calls(), [3]);
    // No key, metric or log holds the token: the key is an HMAC of it.
    let metrics = h.get_with("/metrics", &[]).await.text;
    assert!(!metrics.contains(TOKEN) && !metrics.contains(other));
}

#[tokio::test]
async fn equivalent_queries_share_an_entry_and_versions_do_not() {
    let h = one_region(CACHED).await;
    let first = h
        .get(&format!("{DETAIL}?limit=3&sort=created_at:desc"), None)
        .await;
    assert!(status(&first).contains("fwd=miss"));
    // Same canonical query, other spelling and order: a hit, with its own next link.
    let second = h
        .get(&format!("{DETAIL}?sort=created_at&limit=03"), None)
        .await;
    assert!(
        status(&second).starts_with("vbs-proxy; hit"),
        "{}",
        status(&second)
    );
    assert_eq!(first.json()["backups"], second.json()["backups"]);
    assert!(
        second
            .next()
            .unwrap()
            .contains("?sort=created_at&limit=03&marker="),
        "{}",
        second.next().unwrap()
    );
    assert_eq!(h.calls(), [1]);
    // `limit=1000` is the default (max_limit): the same entry as no limit.
    h.get(DETAIL, None).await;
    assert!(status(&h.get(&format!("{DETAIL}?limit=1000"), None).await).contains("hit"));
    // Another microversion is another entry.
    assert!(status(&h.get(DETAIL, Some("3.45")).await).contains("fwd=miss"));
}

#[tokio::test]
async fn etag_age_and_not_modified() {
    let h = one_region(CACHED).await;
    let first = h.get(DETAIL, None).await;
    let etag = first.header("etag").unwrap().to_string();
    assert!(etag.starts_with("W/\""));
    let hit = h.get(DETAIL, None).await;
    assert_eq!(hit.header("etag"), Some(etag.as_str()));
    assert!(hit.header("age").is_some());
    let headers = [("X-Auth-Token", TOKEN), ("If-None-Match", etag.as_str())];
    let r = h.get_with(DETAIL, &headers).await;
    assert_eq!(r.status, 304);
    assert!(r.text.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = h
        .get_with(
            DETAIL,
            &[("X-Auth-Token", TOKEN), ("If-None-Match", "W/\"other\"")],
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn no_cache_refreshes_unless_told_to_ignore_it() {
    let h = one_region(CACHED).await;
    h.get(DETAIL, None).await;
    let r = h
        .get_with(
            DETAIL,
            &[("X-Auth-Token", TOKEN), ("Cache-Control", "no-cache")],
        )
        .await;
    assert!(status(&r).contains("fwd=request"), "{}", status(&r));
    assert_eq!(h.calls(), [2]);

    let h = one_region("[cache]\nhonor_client_no_cache = false\n").await;
    h.get(DETAIL, None).await;
    let r = h
        .get_with(
            DETAIL,
            &[("X-Auth-Token", TOKEN), ("Cache-Control", "no-cache")],
        )
        .await;
    assert!(status(&r).contains("hit"));
    assert_eq!(h.calls(), [1]);
}

#[tokio::test]
async fn stale_while_revalidate_serves_old_data_and_refreshes_once() {
    // A TTL of 1 ns: every later request finds the entry stale, within the SWR window.
    let h = one_region("[cache]\nttl = \"1ns\"\nstale_while_revalidate = \"60s\"\n").await;
    let first = h.get(DETAIL, None).await;
    h.regions[0].backups.write().unwrap().truncate(3);
    let stale = h.get(DETAIL, None).await;
    assert_eq!(status(&stale), "vbs-proxy; hit; fwd=stale");
    assert_eq!(stale.ids(), first.ids());
    // The background refresh reaches the region.
    h.regions[0].arrived.notified().await;
    assert!(h.calls()[0] >= 2);
}

#[tokio::test]
async fn stale_if_error_covers_a_failing_region_and_partial_answers_are_not_stored() {
    let h = Harness::start(
        vec![
            (SimConfig::default(), rows("a", 4)),
            (SimConfig::default(), rows("b", 4)),
        ],
        // (A breaker that never opens: region r1 comes back within the test.)
        "[cache]\nttl = \"1ns\"\nstale_while_revalidate = \"0s\"\nstale_if_error = \"300s\"\n[upstream]\nbreaker_failures = 100\n",
    )
    .await;
    let first = h.get(DETAIL, None).await;
    *h.regions[1].fault.write().unwrap() = Fault::new(503, "{}");
    let r = h.get(DETAIL, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        status(&r),
        "vbs-proxy; hit; fwd=stale; detail=stale-if-error"
    );
    assert_eq!(r.ids(), first.ids());
    assert_eq!(r.header("x-aggregate-missing-regions"), None);

    // Without a stored entry, the partial answer is served, and not stored.
    let q = format!("{DETAIL}?limit=2");
    let partial = h.get(&q, None).await;
    assert_eq!(partial.header("x-aggregate-missing-regions"), Some("r1"));
    assert!(!status(&partial).contains("stored"));
    *h.regions[1].fault.write().unwrap() = None;
    let whole = h.get(&q, None).await;
    assert!(status(&whole).contains("fwd=miss"), "{}", status(&whole));
    assert_eq!(whole.header("x-aggregate-missing-regions"), None);
}

#[tokio::test]
async fn purges_need_the_admin_token_and_writes_drop_the_project() {
    let h =
        one_region("[cache]\nttl = \"30s\"\n[admin]\ntoken = \"0123456789abcdef-admin\"\n").await;
    h.get(DETAIL, None).await;
    assert!(status(&h.get(DETAIL, None).await).contains("hit"));

    let purge = |token: Option<&'static str>, body: &'static str| {
        let mut req = h
            .client
            .post(format!("{}/admin/cache/purge", h.base))
            .body(body);
        if let Some(t) = token {
            req = req.header("X-Admin-Token", t);
        }
        req.send()
    };
    assert_eq!(purge(None, "{}").await.unwrap().status(), 401);
    assert_eq!(
        purge(Some("wrong-token-wrong-token"), "{}")
            .await
            .unwrap()
            .status(),
        403
    );
    let r = purge(
        Some("0123456789abcdef-admin"),
        r#"{"project_id": "abc123"}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(body["purged"].as_u64().unwrap() >= 1, "{body}");
    assert!(status(&h.get(DETAIL, None).await).contains("fwd=miss"));

    // A successful write through the pass-through route drops the project's listings.
    assert!(status(&h.get(DETAIL, None).await).contains("hit"));
    let created = h
        .client
        .post(format!("{}/v3/abc123/backups", h.base))
        .header("X-Auth-Token", TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    assert!(status(&h.get(DETAIL, None).await).contains("fwd=miss"));

    // Without admin.token the admin route does not exist.
    let h = one_region(CACHED).await;
    let r = h
        .client
        .post(format!("{}/admin/cache/purge", h.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn metrics_count_per_layer() {
    let h = one_region(CACHED).await;
    h.get(DETAIL, None).await;
    h.get(DETAIL, None).await;
    let text = h.get_with("/metrics", &[]).await.text;
    assert!(
        text.contains("vbs_cache_hits_total{layer=\"responses\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("vbs_cache_misses_total{layer=\"region_pages\"} 1"),
        "{text}"
    );
    let bytes_line = text
        .lines()
        .find(|l| l.starts_with("vbs_cache_bytes{layer=\"responses\"}"))
        .unwrap();
    let bytes: u64 = bytes_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(bytes > 1000, "{bytes_line}");
}

/// Issue 27, point 3: every memo inside `cache.max_bytes` shows what it holds in /metrics: the
/// id -> region map, the remembered plain-id positions and the parsed request targets.
#[tokio::test]
async fn memos_show_their_bytes() {
    let h = Harness::start(
        vec![
            (SimConfig::default(), rows("a", 5)),
            (SimConfig::default(), rows("b", 5)),
        ],
        CACHED,
    )
    .await;
    assert_eq!(bytes_of(&h, "vbs_memo_bytes", "memo", "holders").await, 0);
    let r = h.get(&format!("{DETAIL}?limit=4"), None).await;
    assert_eq!(r.ids().len(), 4);
    for name in ["holders", "positions", "targets"] {
        assert!(
            bytes_of(&h, "vbs_memo_bytes", "memo", name).await > 0,
            "{name} holds something after a listing"
        );
    }
}

/// The maps kept outside `cache.max_bytes`, each within a bound of its own, show their bytes
/// too (`vbs_map_bytes{map}`): none before anything happened, each something once a project
/// was limited, refused, held back by a region's 429, and a new volume's zone was looked up.
#[tokio::test]
async fn maps_outside_max_bytes_show_their_bytes() {
    let h = Harness::start(
        vec![
            (SimConfig::default(), rows("a", 5)),
            (SimConfig::default(), rows("b", 5)),
        ],
        "[tenants]\nrate = 0.01\nburst = 1\n",
    )
    .await;
    const MAPS: [&str; 4] = ["tenant_limits", "throttled", "tenant_holds", "zones"];
    for name in MAPS {
        let bytes = bytes_of(&h, "vbs_map_bytes", "map", name).await;
        assert_eq!(bytes, 0, "{name} holds nothing yet");
    }
    let verdicts = h.metric("vbs_map_bytes{map=\"keystone_verdicts\"}").await;
    assert_eq!(verdicts, None, "no Keystone, no verdicts");
    // r0 throttles the project: its 429 holds the project back there.
    h.regions[0].refuse.write().unwrap().insert(
        TOKEN.to_string(),
        Fault {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: r#"{"overLimit": {"code": 429, "message": "Rate limit exceeded"}}"#.into(),
            headers: vec![("Retry-After", "600".into())],
        },
    );
    let r = h.get(DETAIL, None).await;
    assert_eq!(r.header("x-aggregate-missing-regions"), Some("r0"));
    // Past its burst: refused by the proxy's own [tenants] limit.
    let r = h.get(&format!("{DETAIL}?limit=2"), None).await;
    assert_eq!(r.status, 429, "{}", r.text);
    // Another project (this one is past its limit) makes a volume in az-b.
    h.regions[1].zones.write().unwrap().push("az-b".into());
    let created = h
        .client
        .post(format!("{}/v3/xyz789/volumes", h.base))
        .header("X-Auth-Token", "user:xyz789")
        .body(r#"{"volume": {"size": 1, "availability_zone": "az-b"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    for name in MAPS {
        let bytes = bytes_of(&h, "vbs_map_bytes", "map", name).await;
        assert!(bytes > 0, "{name} holds something");
    }
}

/// A byte gauge's value (`vbs_memo_bytes`, `vbs_map_bytes`), which must be in `/metrics`.
async fn bytes_of(h: &Harness, family: &str, label: &str, name: &str) -> u64 {
    let series = format!("{family}{{{label}=\"{name}\"}}");
    let value = h.metric(&series).await;
    value
        .unwrap_or_else(|| panic!("{series} in /metrics"))
        .parse()
        .unwrap()
}
