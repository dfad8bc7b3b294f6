//! Issue #10 regressions, one per class: no client can hurt other tenants, the regions, or
//! the proxy's memory.

use vbs_proxy::sim::SimConfig;

use crate::support::{rows, Harness};

const DETAIL: &str = "/v3/abc123/backups/detail";

async fn two_regions(extra: &str) -> Harness {
    Harness::start(
        vec![
            (SimConfig::default(), rows("a", 5)),
            (SimConfig::default(), rows("b", 5)),
        ],
        extra,
    )
    .await
}

async fn breaker_state(h: &Harness, region: &str) -> String {
    let text = h.get_with("/metrics", &[]).await.text;
    let prefix = format!("vbs_upstream_breaker_state{{region=\"{region}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or("?")
        .to_string()
}

/// Class 1: ids that route elsewhere, or cannot be a path segment, are ids that do not exist;
/// however often a client sends them, the regions stay healthy for everybody.
#[tokio::test]
async fn client_chosen_ids_never_change_region_health() {
    let h = two_regions("[upstream]\nbreaker_failures = 2\n").await;
    for round in 0..5 {
        for id in ["detail", "%64etail", "..", ".", "a/b", "a%2Fb"] {
            let encoded = id.replace('%', "%25").replace('/', "%2F");
            let r = h
                .get(&format!("{DETAIL}?marker={encoded}&limit=2"), None)
                .await;
            assert_eq!(r.status, 404, "round {round}, marker {id}: {}", r.text);
            assert_eq!(
                r.json()["itemNotFound"]["message"],
                format!("Backup {id} could not be found.")
            );
        }
        let r = h.get("/v3/abc123/backups/%64etail", None).await;
        assert_eq!(r.status, 404, "{}", r.text);
    }
    for region in ["r0", "r1"] {
        assert_eq!(breaker_state(&h, region).await, "0", "{region}'s breaker");
    }
    // Another tenant's listing is whole.
    let r = h.get(DETAIL, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-aggregate-missing-regions"), None);
    assert_eq!(r.ids().len(), 10);
    // Dot ids never reached a region: every region request stayed under the project.
    for region in &h.regions {
        for line in region.requests.lock().unwrap().iter() {
            assert!(line.starts_with("/v3/abc123/backups"), "{line}");
        }
    }
}

/// Class 7: a region's absurd `Retry-After` is clamped; the request path survives it, and the
/// key answers again afterwards.
#[tokio::test]
async fn an_absurd_retry_after_cannot_crash_a_request_path() {
    let h = two_regions("").await;
    let mut fault = vbs_proxy::sim::Fault::new(429, "{}").unwrap();
    fault
        .headers
        .push(("Retry-After", "18446744073709551615".into()));
    *h.regions[1].fault.write().unwrap() = Some(fault);
    for _ in 0..3 {
        let r = h.get(DETAIL, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("x-aggregate-missing-regions"), Some("r1"));
    }
}
