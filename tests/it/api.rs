//! The HTTP contract: links, versions, errors, failure policies, page-following, routes.

use axum::http::StatusCode;
use cinder_sim::Version;
use cinder_sim::{Fault, SimConfig};
use serde_json::{json, Value};

use crate::support::{backup, rows, Harness, PROJECT, TOKEN};

const DETAIL: &str = "/v3/abc123/backups/detail";

fn sim() -> SimConfig {
    SimConfig::default()
}

async fn three_regions(extra: &str) -> Harness {
    Harness::start(
        vec![
            (sim(), rows("a", 10)),
            (sim(), rows("b", 10)),
            (sim(), rows("c", 10)),
        ],
        extra,
    )
    .await
}

fn fault(status: u16, body: Value) -> Option<Fault> {
    Some(Fault {
        status: StatusCode::from_u16(status).unwrap(),
        body: body.to_string(),
        ..Fault::default()
    })
}

#[tokio::test]
async fn missing_token_is_401_without_upstream_calls() {
    let h = three_regions("").await;
    let before = h.total_calls();
    let r = h.get_with(DETAIL, &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["unauthorized"]["code"], 401);
    assert_eq!(h.total_calls(), before);
}

#[tokio::test]
async fn merged_page_is_ordered_and_links_point_at_the_proxy() {
    let h = three_regions("").await;
    let r = h.get(&format!("{DETAIL}?limit=4"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Same created_at across regions: id desc breaks the tie (c-009, b-009, a-009, c-008).
    assert_eq!(r.ids(), ["c-009", "b-009", "a-009", "c-008"]);
    let body = r.json();
    for item in body["backups"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        assert_eq!(
            item["links"][0]["href"],
            format!("{}/v3/{PROJECT}/backups/{id}", h.base)
        );
        assert_eq!(
            item["links"][1]["href"],
            format!("{}/{PROJECT}/backups/{id}", h.base)
        );
    }
    let next = r.next().expect("a full page links on");
    assert!(
        next.starts_with(&format!("{}{DETAIL}?limit=4&marker=vbs1.", h.base)),
        "{next}"
    );
    assert!(
        !r.text.contains("127.0.0.1:")
            || !h.region_urls.iter().any(|u| r.text.contains(u.as_str()))
    );
    assert_eq!(r.header("openstack-api-version"), Some("volume 3.0"));
    assert_eq!(
        r.header("vary"),
        Some("X-Auth-Token, OpenStack-API-Version")
    );
    assert_eq!(r.header("cache-control"), Some("private"));
    assert!(r
        .header("x-openstack-request-id")
        .unwrap()
        .starts_with("req-"));
}

#[tokio::test]
async fn public_url_and_forwarded_headers() {
    let h = three_regions("[server]\npublic_url = \"https://volume.example.com/api/\"\n").await;
    let r = h.get(&format!("{DETAIL}?limit=1"), None).await;
    assert_eq!(
        r.json()["backups"][0]["links"][0]["href"],
        "https://volume.example.com/api/v3/abc123/backups/c-009"
    );
    assert!(r
        .next()
        .unwrap()
        .starts_with("https://volume.example.com/api/v3/abc123/backups/detail?limit=1&marker="));

    // X-Forwarded-Host from a peer that is not trusted: ignored, and never sent upstream
    // (the simulated region, like Cinder, would build its links from it).
    let h = three_regions("").await;
    let headers = [
        ("X-Auth-Token", TOKEN),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Proto", "https"),
    ];
    let r = h.get_with(&format!("{DETAIL}?limit=2"), &headers).await;
    assert!(!r.text.contains("evil.example"), "{}", r.text);
    assert!(r.next().unwrap().starts_with(&h.base));

    let h = three_regions("[server]\ntrusted_proxies = [\"127.0.0.1\"]\n").await;
    let headers = [
        ("X-Auth-Token", TOKEN),
        ("X-Forwarded-Host", "a.example, lb.example"),
        ("X-Forwarded-Proto", "https"),
    ];
    let r = h.get_with(&format!("{DETAIL}?limit=2"), &headers).await;
    assert!(
        r.next().unwrap().starts_with("https://lb.example/v3/"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn versions_are_the_lowest_maximum_over_regions() {
    let old = SimConfig {
        max_version: Version::new(3, 60),
        ..sim()
    };
    let h = Harness::start(vec![(sim(), rows("a", 3)), (old, rows("b", 3))], "").await;
    let r = h.get_with("/", &[]).await;
    assert_eq!(r.status, 300);
    let doc = r.json();
    assert_eq!(doc["versions"][0]["version"], "3.60");
    assert_eq!(doc["versions"][0]["min_version"], "3.0");
    assert_eq!(
        doc["versions"][0]["links"][1]["href"],
        format!("{}/v3/", h.base)
    );
    assert_eq!(h.get("/v3/", None).await.status, 200);
    assert_eq!(h.get_with("/v3/", &[]).await.status, 401);

    let r = h.get(DETAIL, Some("latest")).await;
    assert_eq!(r.header("openstack-api-version"), Some("volume 3.60"));
    let r = h.get(DETAIL, Some("3.45")).await;
    assert_eq!(r.header("openstack-api-version"), Some("volume 3.45"));

    let before = h.total_calls();
    let r = h.get(DETAIL, Some("3.61")).await;
    assert_eq!(r.status, 406);
    assert_eq!(
        r.json(),
        json!({"computeFault": {"code": 406, "message": "Version 3.61 is not supported by the API. Minimum is 3.0 and maximum is 3.60."}})
    );
    let r = h.get(DETAIL, Some("abc")).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"badRequest": {"code": 400, "message": "API Version String abc is of invalid format. Must be of format MajorNum.MinorNum."}})
    );
    assert_eq!(r.header("openstack-api-version"), None);
    assert_eq!(
        h.total_calls(),
        before,
        "version errors make no upstream call"
    );
}

#[tokio::test]
async fn bad_input_gets_cinders_errors_without_upstream_calls() {
    let h = three_regions("").await;
    let cases: &[(&str, Option<&str>, u16, &str)] = &[
        ("limit=-1", None, 400, "limit param must be positive"),
        ("limit=abc", None, 400, "limit param must be an integer"),
        ("limit=", None, 400, "limit param must be an integer"),
        ("offset=abc", None, 400, "offset must be an integer"),
        ("offset=-1", None, 400, "offset must be >= 0"),
        ("sort=bogus:asc", None, 400, "Invalid input received: Invalid sort key"),
        ("sort_key=bogus", None, 400, "Invalid input received: Invalid sort key"),
        ("sort=name:asc", Some("3.36"), 400, "Invalid input received: Invalid sort key"),
        ("sort=size:up", None, 400, "Invalid input received: Unknown sort direction, must be 'desc' or 'asc'."),
        ("sort_dir=up", None, 400, "Invalid input received: Unknown sort direction, must be 'desc' or 'asc'."),
        (
            "sort=size&sort_key=size",
            None,
            400,
            "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter.",
        ),
        ("with_count=abc", Some("3.45"), 400, "Value 'abc' for 'with_count' is not a boolean."),
        ("marker=vbs1.e30.AAAA", None, 400, "Invalid marker: the marker is not a cursor this proxy issued for this query."),
    ];
    for (query, version, status, message) in cases {
        let before = h.total_calls();
        let r = h.get(&format!("{DETAIL}?{query}"), *version).await;
        assert_eq!(r.status, *status, "{query}: {}", r.text);
        assert_eq!(
            r.json(),
            json!({"badRequest": {"code": status, "message": message}}),
            "{query}"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(
            r.header("openstack-api-version").is_some(),
            "{query}: faults carry the version"
        );
        assert_eq!(h.total_calls(), before, "{query}: no upstream call");
    }
}

#[tokio::test]
async fn markers_unknown_tampered_or_from_another_query() {
    let h = three_regions("").await;
    let r = h
        .get(&format!("{DETAIL}?marker=does-not-exist"), None)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"itemNotFound": {"code": 404, "message": "Backup does-not-exist could not be found."}})
    );

    let next = h
        .get(&format!("{DETAIL}?limit=2"), None)
        .await
        .next()
        .unwrap();
    let cursor = next.split("marker=").nth(1).unwrap().to_string();
    // The same cursor on another query (a status filter) is refused.
    let r = h
        .get(
            &format!("{DETAIL}?limit=2&status=error&marker={cursor}"),
            None,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // One character changed in the payload.
    let mut tampered = cursor.clone().into_bytes();
    tampered[8] = if tampered[8] == b'A' { b'B' } else { b'A' };
    let r = h
        .get(
            &format!(
                "{DETAIL}?limit=2&marker={}",
                String::from_utf8(tampered).unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    // A cursor from another proxy (another secret).
    let other = three_regions("").await;
    let r = other
        .get(&format!("{DETAIL}?limit=2&marker={cursor}"), None)
        .await;
    assert_eq!(r.status, 400);
    // The right one works and continues the walk.
    let r = h.get(&next, None).await;
    assert_eq!(r.ids(), ["a-009", "c-008"]);
}

#[tokio::test]
async fn plain_backup_id_marker_continues_across_regions() {
    let h = three_regions("").await;
    let r = h.get(&format!("{DETAIL}?marker=b-009&limit=3"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.ids(), ["a-009", "c-008", "b-008"]);
    assert!(r.next().unwrap().contains("limit=3&marker=vbs1."));
}

#[tokio::test]
async fn partial_answers_name_the_missing_region() {
    let h = three_regions("").await;
    *h.regions[1].fault.write().unwrap() = fault(
        500,
        json!({"computeFault": {"code": 500, "message": "boom"}}),
    );
    let r = h.get(&format!("{DETAIL}?limit=3"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-aggregate-missing-regions"), Some("r1"));
    assert_eq!(r.ids(), ["c-009", "a-009", "c-008"]);

    // Every region down: 503.
    for region in &h.regions {
        *region.fault.write().unwrap() = fault(503, json!({}));
    }
    let r = h.get(DETAIL, None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["serviceUnavailable"]["code"], 503);
    assert!(r.json()["serviceUnavailable"]["message"]
        .as_str()
        .unwrap()
        .contains("r0"));
}

#[tokio::test]
async fn fail_policy_answers_502_naming_the_region() {
    let h = three_regions("[upstream]\non_region_failure = \"fail\"\n").await;
    *h.regions[2].fault.write().unwrap() = fault(502, json!({}));
    let r = h.get(DETAIL, None).await;
    assert_eq!(r.status, 502);
    let message = r.json()["computeFault"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("r2") && message.contains("502"),
        "{message}"
    );
}

#[tokio::test]
async fn region_refusals_are_returned() {
    let h = three_regions("").await;
    // One region forbids the caller: that wins over the others' data.
    let forbidden = json!({"forbidden": {"code": 403, "message": "Policy doesn't allow backup:get_all to be performed."}});
    *h.regions[0].fault.write().unwrap() = fault(403, forbidden.clone());
    let r = h.get(DETAIL, None).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json(), forbidden);

    // Every region rejects a filter the same way: that 400 is the answer.
    *h.regions[0].fault.write().unwrap() = None;
    let user = SimConfig {
        admin: false,
        ..sim()
    };
    for region in &h.regions {
        *region.config.write().unwrap() = user.clone();
    }
    let r = h.get(&format!("{DETAIL}?foo=bar"), Some("3.31")).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"badRequest": {"code": 400, "message": "Invalid filters foo are found in query options."}})
    );
}

#[tokio::test]
async fn region_page_caps_are_followed_not_truncated() {
    let capped = SimConfig {
        osapi_max_limit: 5,
        ..sim()
    };
    let h = Harness::start(vec![(capped, rows("a", 23)), (sim(), rows("b", 2))], "").await;
    let r = h.get(&format!("{DETAIL}?limit=20"), None).await;
    assert_eq!(r.ids().len(), 20);
    // a-022 .. a-003: the newest 20 rows are all region a's.
    assert_eq!(r.ids().iter().filter(|id| id.starts_with("a-")).count(), 20);
    // Region a caps pages at 5: four calls, each continuing where the last stopped.
    assert_eq!(h.regions[0].calls(), 4);
    assert_eq!(h.regions[1].calls(), 1);
    // Without a limit, all 25 rows come back in one page (max_limit 1000).
    let r = h.get(DETAIL, None).await;
    assert_eq!(r.ids().len(), 25);
    assert!(r.next().is_none());
}

#[tokio::test]
async fn deep_pages_cost_about_regions_times_limit() {
    let h = Harness::start(
        vec![
            (sim(), rows("a", 300)),
            (sim(), rows("b", 300)),
            (sim(), rows("c", 300)),
        ],
        "",
    )
    .await;
    let mut url = format!("{DETAIL}?limit=10");
    for _ in 0..40 {
        url = h.get(&url, None).await.next().unwrap();
    }
    // Every upstream call asked for at most `limit` rows, from a position.
    for region in &h.regions {
        let requests = region.requests.lock().unwrap();
        for req in requests.iter() {
            let limit: usize = req
                .split("limit=")
                .nth(1)
                .unwrap()
                .split('&')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(limit <= 10, "{req}");
        }
        assert!(requests.len() <= 41 * 2, "{} calls", requests.len());
    }
    let r = h.get(&url, None).await;
    // Row 400 of 900 (three rows a minute, c > b > a within a minute): minute 166, b.
    assert_eq!(r.ids()[0], "b-166", "page 41 starts at row 400 of 900");
}

#[tokio::test]
async fn native_alias_and_summary_list() {
    let h = three_regions("").await;
    let native = h
        .get(
            &format!("/v3/{PROJECT}/native/backups/detail?limit=2"),
            None,
        )
        .await;
    let detail = h.get(&format!("{DETAIL}?limit=2"), None).await;
    assert_eq!(native.status, 200);
    assert_eq!(native.json()["backups"], detail.json()["backups"]);
    assert!(native.next().unwrap().starts_with(&format!(
        "{}/v3/{PROJECT}/native/backups/detail?limit=2&marker=",
        h.base
    )));

    let summary = h
        .get(&format!("/v3/{PROJECT}/backups?limit=2"), Some("3.45"))
        .await;
    let items = summary.json()["backups"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    for item in &items {
        let keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["id", "name", "links"]);
    }
    assert!(summary
        .next()
        .unwrap()
        .starts_with(&format!("{}/v3/{PROJECT}/backups?limit=2&marker=", h.base)));
}

#[tokio::test]
async fn with_count_is_summed_and_duplicates_returned_once() {
    let mut b_rows = rows("b", 3);
    b_rows.push(backup("a-000", "2024-01-01T00:00:00.000000")); // also in region a
    let h = Harness::start(vec![(sim(), rows("a", 3)), (sim(), b_rows)], "").await;
    let r = h
        .get(&format!("{DETAIL}?with_count=true"), Some("3.45"))
        .await;
    assert_eq!(r.json()["count"], 7);
    let ids = r.ids();
    assert_eq!(ids.iter().filter(|id| *id == "a-000").count(), 1, "{ids:?}");
    assert_eq!(ids.len(), 6);
    // Below 3.45 with_count is a filter for the regions (admin: no such column, no rows).
    let r = h
        .get(&format!("{DETAIL}?with_count=true"), Some("3.44"))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.ids().is_empty());
    assert!(r.json().get("count").is_none());
}

/// Cinder ≥ 3.67 also routes without the project (python-cinderclient's noauth mode does
/// this): the regions are asked the same way, and links carry no project.
#[tokio::test]
async fn project_less_routes() {
    let h = three_regions("").await;
    let r = h.get("/v3/backups/detail?limit=2", Some("3.67")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.ids(), ["c-009", "b-009"]);
    assert_eq!(
        r.json()["backups"][0]["links"][0]["href"],
        format!("{}/v3/backups/c-009", h.base)
    );
    assert_eq!(
        r.json()["backups"][0]["links"][1]["href"],
        format!("{}/backups/c-009", h.base)
    );
    let next = r.next().unwrap();
    assert!(
        next.starts_with(&format!("{}/v3/backups/detail?limit=2&marker=", h.base)),
        "{next}"
    );
    assert_eq!(h.get(&next, Some("3.67")).await.ids(), ["a-009", "c-008"]);
    assert!(h.regions[0]
        .requests
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.starts_with("/v3/backups/detail?")));
    let r = h.get("/v3/backups?limit=1", Some("3.67")).await;
    assert_eq!(r.ids(), ["c-009"]);
    let r = h.get("/v3/backups/b-003", Some("3.67")).await;
    assert_eq!(
        r.json()["backup"]["links"][0]["href"],
        format!("{}/v3/backups/b-003", h.base)
    );
    assert_eq!(
        h.get("/v3/native/backups/detail?limit=1", None).await.ids(),
        ["c-009"]
    );
}

#[tokio::test]
async fn show_route_finds_the_region() {
    let h = three_regions("").await;
    let r = h.get(&format!("/v3/{PROJECT}/backups/c-004"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["backup"]["id"], "c-004");
    assert_eq!(
        body["backup"]["links"][0]["href"],
        format!("{}/v3/{PROJECT}/backups/c-004", h.base)
    );
    let r = h.get(&format!("/v3/{PROJECT}/backups/nope"), None).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"itemNotFound": {"code": 404, "message": "Backup nope could not be found."}})
    );
    // Learnt from a listing: the next lookup asks only the holder.
    h.get(&format!("{DETAIL}?limit=1"), None).await; // lists c-009
    let before = h.calls();
    assert_eq!(
        h.get(&format!("/v3/{PROJECT}/backups/c-009"), None)
            .await
            .status,
        200
    );
    let after = h.calls();
    assert_eq!(
        (
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ),
        (0, 0, 1)
    );
}

#[tokio::test]
async fn other_paths_go_to_the_primary_region_or_404() {
    let h = three_regions("[server]\nprimary_region = \"r1\"\n").await;
    // A route the simulated regions do not serve (volume types).
    let r = h.get(&format!("/v3/{PROJECT}/types"), None).await;
    // The simulated region's router 404, passed through unchanged.
    assert_eq!(r.status, 404);
    assert!(r.text.starts_with("404 Not Found"), "{}", r.text);
    let h = three_regions("[server]\npassthrough = false\n").await;
    let r = h.get(&format!("/v3/{PROJECT}/types"), None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["itemNotFound"]["code"], 404);
}

/// Regions configured as `openstack endpoint list` shows them (`.../v3/%(project_id)s`, or
/// `.../v3`) are the same endpoints as their bases: both answer, links point at the proxy.
#[tokio::test]
async fn catalog_style_region_urls_name_the_same_endpoints() {
    let h = Harness::start(
        vec![
            (SimConfig::default(), rows("a", 2)),
            (SimConfig::default(), rows("b", 2)),
        ],
        "",
    )
    .await;
    let toml = format!(
        "[cache]\nttl = \"0s\"\n[[regions]]\nname = \"a\"\nurl = \"{}/v3/%(project_id)s\"\n\
         [[regions]]\nname = \"b\"\nurl = \"{}/v3/\"\n",
        h.region_urls[0], h.region_urls[1]
    );
    let proxy = h.restart_proxy(&toml).await;
    let r = proxy.get(DETAIL, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut ids = r.ids();
    ids.sort();
    assert_eq!(ids, ["a-000", "a-001", "b-000", "b-001"]);
    for href in r.json()["backups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["links"].as_array().unwrap())
        .map(|l| l["href"].as_str().unwrap())
    {
        assert!(href.starts_with(&proxy.base), "{href}");
    }
}

/// While no region's version document has been read, the proxy does not advertise a
/// microversion it cannot know: `GET /` and `GET /v3/` answer 503.
#[tokio::test]
async fn version_documents_are_unknown_until_a_region_answers() {
    let h = Harness::start(vec![(SimConfig::default(), rows("a", 1))], "").await;
    let down = h
        .restart_proxy("[[regions]]\nname = \"down\"\nurl = \"http://127.0.0.1:1\"\n")
        .await;
    for path in ["/", "/v3/"] {
        let r = down.get(path, None).await;
        assert_eq!(r.status, 503, "{path}: {}", r.text);
        let message = r.json()["serviceUnavailable"]["message"].clone();
        assert!(
            message.as_str().unwrap().contains("not known yet"),
            "{message}"
        );
    }
    // With a region that answered, the document says what it said.
    let r = h.get("/", None).await;
    assert_eq!(r.status, 300);
    assert_eq!(r.json()["versions"][0]["version"], "3.71");
}

/// A region whose URL is not its Cinder endpoint answers 404 to every listing: after a few
/// project listings it is called misconfigured in `/readyz` and `vbs_upstream_misconfigured`,
/// while the answers go on without it. 404s that depend on the request do not count.
#[tokio::test]
async fn a_region_answering_404_to_listings_is_called_misconfigured() {
    let h = Harness::start(vec![(SimConfig::default(), rows("a", 2))], "").await;
    let toml = format!(
        "[cache]\nttl = \"0s\"\n[[regions]]\nname = \"good\"\nurl = \"{0}\"\n\
         [[regions]]\nname = \"wrong\"\nurl = \"{0}/cinder\"\n",
        h.region_urls[0]
    );
    let proxy = h.restart_proxy(&toml).await;
    let gauge = |text: &str, region: &str| {
        let series = format!("vbs_upstream_misconfigured{{region=\"{region}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .to_string()
    };
    // Markers that do not exist and project-less listings are 404s of the request's making.
    for _ in 0..5 {
        assert_eq!(
            proxy
                .get(&format!("{DETAIL}?marker=nope"), None)
                .await
                .status,
            404
        );
    }
    let metrics = proxy.get_with("/metrics", &[]).await.text;
    assert_eq!(gauge(&metrics, "wrong"), "0");
    for _ in 0..3 {
        let r = proxy.get(DETAIL, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("x-aggregate-missing-regions"), Some("wrong"));
    }
    let ready = proxy.get_with("/readyz", &[]).await;
    assert_eq!(ready.status, 200);
    assert!(
        ready
            .text
            .contains("region wrong: answers 404 to project listings"),
        "{}",
        ready.text
    );
    assert!(!ready.text.contains("good:") && !ready.text.contains("/cinder"));
    let metrics = proxy.get_with("/metrics", &[]).await.text;
    assert_eq!(gauge(&metrics, "wrong"), "1");
    assert_eq!(gauge(&metrics, "good"), "0");
}
