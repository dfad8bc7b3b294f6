//! Resilience (README, "Resilience") with fault injection: regions that hang, reset, answer 5xx or 429,
//! send malformed, truncated or huge bodies; the breaker, the retry budget, the concurrency
//! limit, inbound protection and graceful shutdown. (Timing-driven transitions — cool-downs,
//! `Retry-After` expiry, rate spacing — are tested with paused time in src/upstream/guard.rs.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cinder_sim::{Fault, SimConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{rows, Harness, TOKEN};

const DETAIL: &str = "/v3/abc123/backups/detail";

/// A raw TCP "region" that reads each request and answers with `reply` (or resets).
async fn raw_region(reply: &'static [u8], reset: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                if reset {
                    // A zero linger does not block on drop (the deprecation's concern): it resets.
                    #[allow(deprecated)]
                    let _ = socket.set_linger(Some(std::time::Duration::ZERO));
                    return; // dropped with SO_LINGER 0: a reset
                }
                let _ = socket.write_all(reply).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

/// A healthy simulated region r0 plus a bad region r1 at `bad_url`.
async fn with_bad_region(bad_url: &str, extra: &str) -> Harness {
    let h = Harness::start(vec![(SimConfig::default(), rows("a", 5))], "").await;
    let toml = format!(
        "[[regions]]\nname = \"r0\"\nurl = \"{}\"\n[[regions]]\nname = \"r1\"\nurl = \"{bad_url}\"\nmax_body_bytes = \"4KiB\"\ntimeout = \"300ms\"\n[cache]\nttl = \"0s\"\n{extra}",
        h.region_urls[0]
    );
    h.restart_proxy(&toml).await
}

fn assert_partial(r: &crate::support::Reply) {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-aggregate-missing-regions"), Some("r1"));
    assert_eq!(r.ids(), ["a-004", "a-003", "a-002", "a-001", "a-000"]);
}

async fn outcome_count(h: &Harness, region: &str, outcome: &str) -> u64 {
    let series = format!("vbs_upstream_calls_total{{region=\"{region}\",outcome=\"{outcome}\"}}");
    h.metric(&series).await.map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn every_kind_of_broken_region_gives_a_partial_answer() {
    let cases: Vec<(&str, String)> = vec![
        ("transport", raw_region(b"", true).await),
        (
            "transport",
            raw_region(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"backups\": [", false).await,
        ),
        ("body", raw_region(b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n{\"backups\": [", false).await),
        (
            "body",
            raw_region(
                Box::leak(
                    format!(
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1400\r\n{}\r\n0\r\n\r\n",
                        "x".repeat(0x1400)
                    )
                    .into_boxed_str(),
                )
                .as_bytes(),
                false,
            )
            .await,
        ),
        ("body", raw_region(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{not json", false).await),
        ("body", raw_region(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"volumes\": []}", false).await),
        ("connect", "http://127.0.0.1:9".to_string()),
    ];
    for (outcome, url) in cases {
        let h = with_bad_region(&url, "").await;
        let r = h.get(DETAIL, None).await;
        assert_partial(&r);
        assert!(
            outcome_count(&h, "r1", outcome).await >= 1,
            "{url}: no {outcome} outcome counted"
        );
    }
}

#[tokio::test]
async fn server_errors_and_hangs_give_partial_answers_or_fail() {
    for status in [500u16, 502, 503] {
        let h = Harness::start(
            vec![
                (SimConfig::default(), rows("a", 5)),
                (SimConfig::default(), rows("b", 5)),
            ],
            "",
        )
        .await;
        *h.regions[1].fault.write().unwrap() = Fault::new(status, "{}");
        assert_partial(&h.get(DETAIL, None).await);
        assert!(outcome_count(&h, "r1", "status_5xx").await >= 1);
    }
    // A region that never answers: its timeout, then a partial answer; with "fail", a 502.
    for (policy, status) in [("partial", 200u16), ("fail", 502)] {
        let h = Harness::start(
            vec![
                (SimConfig::default(), rows("a", 5)),
                (SimConfig::default(), rows("b", 5)),
            ],
            &format!(
                "[upstream]\ntimeout = \"300ms\"\nretries = 0\non_region_failure = \"{policy}\"\n"
            ),
        )
        .await;
        *h.regions[1].gate.write().unwrap() = Some(Arc::new(tokio::sync::Semaphore::new(0)));
        let r = h.get(DETAIL, None).await;
        assert_eq!(r.status, status, "{policy}: {}", r.text);
        if status == 200 {
            assert_partial(&r);
        }
        assert!(outcome_count(&h, "r1", "timeout").await >= 1);
    }
}

#[tokio::test]
async fn retry_after_keeps_requests_away_from_the_region() {
    let h = Harness::start(
        vec![
            (SimConfig::default(), rows("a", 5)),
            (SimConfig::default(), rows("b", 5)),
        ],
        "",
    )
    .await;
    let mut fault = Fault::new(
        429,
        r#"{"overLimit": {"code": 429, "message": "slow down"}}"#,
    )
    .unwrap();
    fault.headers.push(("Retry-After", "30".into()));
    *h.regions[1].fault.write().unwrap() = Some(fault);
    assert_partial(&h.get(DETAIL, None).await);
    let asked = h.regions[1].calls();
    assert_eq!(asked, 1, "a 429 is not retried");
    // The region recovers, but said 30 s: nothing goes to it meanwhile; clients still get data.
    *h.regions[1].fault.write().unwrap() = None;
    for _ in 0..5 {
        assert_partial(&h.get(DETAIL, None).await);
    }
    assert_eq!(h.regions[1].calls(), asked);
    assert_eq!(outcome_count(&h, "r1", "backing_off").await, 5);

    // With a cached answer, clients get it whole, stale, instead.
    let h = Harness::start(
        vec![
            (SimConfig::default(), rows("a", 5)),
            (SimConfig::default(), rows("b", 5)),
        ],
        "[cache]\nttl = \"1ns\"\nstale_while_revalidate = \"0s\"\n",
    )
    .await;
    let whole = h.get(DETAIL, None).await;
    let mut fault = Fault::new(429, "{}").unwrap();
    fault.headers.push(("Retry-After", "30".into()));
    *h.regions[1].fault.write().unwrap() = Some(fault);
    for _ in 0..3 {
        let r = h.get(DETAIL, None).await;
        assert_eq!(r.ids(), whole.ids());
        assert!(
            r.header("cache-status").unwrap().contains("stale"),
            "{:?}",
            r.header("cache-status")
        );
    }
}

#[tokio::test]
async fn the_breaker_opens_and_fails_fast() {
    let h = Harness::start(
        vec![
            (SimConfig::default(), rows("a", 5)),
            (SimConfig::default(), rows("b", 5)),
        ],
        "[upstream]\nretries = 0\nbreaker_failures = 3\nbreaker_cooldown = \"60s\"\n",
    )
    .await;
    *h.regions[1].fault.write().unwrap() = Fault::new(500, "{}");
    for _ in 0..3 {
        assert_partial(&h.get(DETAIL, None).await);
    }
    let asked = h.regions[1].calls();
    for _ in 0..10 {
        assert_partial(&h.get(DETAIL, None).await);
    }
    assert_eq!(h.regions[1].calls(), asked, "an open breaker sends nothing");
    assert_eq!(outcome_count(&h, "r1", "circuit_open").await, 10);
    let text = h.get_with("/metrics", &[]).await.text;
    assert!(
        text.contains("vbs_upstream_breaker_state{region=\"r1\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn the_retry_budget_caps_retries_against_a_failing_region() {
    // A breaker that re-probes at once, so only the budget limits the calls.
    let h = Harness::start(
        vec![(SimConfig::default(), rows("a", 5)), (SimConfig::default(), rows("b", 5))],
        "[upstream]\nretries = 3\nretry_backoff = \"1ms\"\nretry_budget = 0.2\nbreaker_cooldown = \"1ns\"\nbreaker_failures = 1000\nbreaker_failure_ratio = 1.0\n",
    )
    .await;
    *h.regions[1].fault.write().unwrap() = Fault::new(503, "{}");
    let before = h.regions[1].calls();
    let requests = 100;
    for i in 0..requests {
        h.get(&format!("{DETAIL}?offset={i}"), None).await;
    }
    let calls = h.regions[1].calls() - before;
    // Without a budget: 4 calls a request. With it: one each, plus 10 + 20% retries.
    assert!(calls > requests, "some retries happen: {calls}");
    assert!(
        calls <= requests + 10 + requests / 5 + 2,
        "{calls} calls for {requests} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_never_exceeds_the_regions_concurrency_limit() {
    let h = Arc::new(
        Harness::start(
            vec![(SimConfig::default(), rows("a", 5))],
            "[upstream]\nmax_concurrency = 4\nqueue_timeout = \"60s\"\n[server]\nrequest_timeout = \"120s\"\n",
        )
        .await,
    );
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    *h.regions[0].watch.write().unwrap() = Some((in_flight.clone(), peak.clone()));
    let clients: Vec<_> = (0..1000)
        .map(|i| {
            let h = h.clone();
            // Distinct queries: nothing coalesces, every request needs the region.
            tokio::spawn(async move {
                h.get(&format!("{DETAIL}?offset={i}&limit=1"), None)
                    .await
                    .status
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.await.unwrap(), 200);
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        4,
        "the peak of requests in flight at the region"
    );
    assert!(h.regions[0].calls() >= 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_limits_shed_time_out_and_refuse_in_cinders_format() {
    let h = Arc::new(
        Harness::start(
            vec![(SimConfig::default(), rows("a", 5))],
            "[server]\nmax_in_flight = 2\nrequest_timeout = \"500ms\"\nmax_request_body = \"1KiB\"\nmax_header_bytes = \"4KiB\"\n",
        )
        .await,
    );
    // Two requests held at the region fill the proxy; the third is shed at once.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *h.regions[0].gate.write().unwrap() = Some(gate.clone());
    let held: Vec<_> = (0..2)
        .map(|i| {
            let h = h.clone();
            // Different upstream queries (limits), so they do not share one upstream call.
            tokio::spawn(async move { h.get(&format!("{DETAIL}?limit={}", i + 1), None).await })
        })
        .collect();
    crate::support::until("two requests at the region", || h.regions[0].calls() >= 2).await;
    let shed = h.get(DETAIL, None).await;
    assert_eq!(shed.status, 503);
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_eq!(shed.json()["serviceUnavailable"]["code"], 503);
    // Probes still answer, and the scrape counts the one shed.
    assert_eq!(h.get_with("/healthz", &[]).await.status, 200);
    let metrics = h.get_with("/metrics", &[]).await.text;
    assert!(metrics.contains("\nvbs_http_shed_total 1\n"), "{metrics}");
    // The held ones run into the request timeout: 504.
    for r in held {
        let r = r.await.unwrap();
        assert_eq!(r.status, 504);
        assert_eq!(r.json()["computeFault"]["code"], 504);
    }
    gate.add_permits(100);

    let big = "x".repeat(5000);
    let r = h
        .get_with(
            DETAIL,
            &[("X-Auth-Token", TOKEN), ("X-Padding", big.as_str())],
        )
        .await;
    assert_eq!(r.status, 431);
    let body = h
        .client
        .post(format!("{}/v3/abc123/backups", h.base))
        .header("X-Auth-Token", TOKEN)
        .body(vec![b'{'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), 413);
    let json: serde_json::Value = serde_json::from_slice(&body.bytes().await.unwrap()).unwrap();
    assert_eq!(json["overLimit"]["code"], 413);
}

#[tokio::test]
async fn readyz_follows_the_regions() {
    let h = Harness::start(vec![(SimConfig::default(), rows("a", 1))], "").await;
    assert_eq!(h.get_with("/readyz", &[]).await.status, 200);
    let down = Harness::start(vec![(SimConfig::default(), rows("a", 1))], "").await;
    let down = down
        .restart_proxy("[[regions]]\nname = \"gone\"\nurl = \"http://127.0.0.1:9\"\n")
        .await;
    assert_eq!(down.get_with("/readyz", &[]).await.status, 503);
}

/// A region refused by its open breaker is reported with the failure that opened it and when
/// it will be tried again, from the very first request (the start-up version probe opened it).
#[tokio::test]
async fn an_open_breaker_says_why_and_when() {
    let h = Harness::start(vec![(SimConfig::default(), rows("a", 2))], "").await;
    let toml = format!(
        "[upstream]\nbreaker_failures = 1\nbreaker_cooldown = \"60s\"\non_region_failure = \"fail\"\n\
         [[regions]]\nname = \"up\"\nurl = \"{}\"\n[[regions]]\nname = \"down\"\nurl = \"http://127.0.0.1:1\"\n",
        h.region_urls[0]
    );
    let proxy = h.restart_proxy(&toml).await;
    let r = proxy.get("/v3/abc123/backups/detail", None).await;
    assert!(r.status >= 500, "{}", r.text);
    let message = r.text;
    assert!(
        message.contains("down (not asked: circuit breaker open after"),
        "{message}"
    );
    assert!(message.contains("connection failed"), "{message}");
    assert!(message.contains("next try in"), "{message}");
}
