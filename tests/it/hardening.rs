//! Issue #10 regressions, one per class: no client can hurt other tenants, the regions, or
//! the proxy's memory.

use cinder_sim::SimConfig;

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

async fn ok_calls(h: &Harness, region: &str) -> u64 {
    let series = format!("vbs_upstream_calls_total{{region=\"{region}\",outcome=\"ok\"}}");
    h.metric(&series).await.map_or(0, |n| n.parse().unwrap())
}

async fn breaker_state(h: &Harness, region: &str) -> String {
    let series = format!("vbs_upstream_breaker_state{{region=\"{region}\"}}");
    h.metric(&series).await.unwrap_or_default()
}

/// Wait (reading `/metrics`, never sleeping) until the region's breaker is in `state`;
/// bounded at 30 s.
async fn until_breaker(h: &Harness, region: &str, state: &str) {
    let wait = async {
        while breaker_state(h, region).await != state {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("{region}'s breaker never became {state}"));
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
    let mut fault = cinder_sim::Fault::new(429, "{}").unwrap();
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

/// One raw HTTP/1.1 GET, the path sent byte for byte (reqwest would resolve dot segments
/// itself): the status and the body.
pub async fn raw_get(base: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    socket.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// Class 2: dot segments, empty segments and encoded separators are refused as Cinder
/// refuses an unknown route, and never reach a region (pass-through included).
#[tokio::test]
async fn paths_are_what_they_look_like() {
    let h = two_regions("").await;
    let token = [("X-Auth-Token", crate::support::TOKEN)];
    for path in [
        "/v3/../",
        "/v3/%2e%2e/backups/detail",
        "/v3/%2E%2e/healthcheck",
        "/v3//abc123/backups/detail",
        "/v3/abc123%2Fbackups/detail",
        "/v3/abc123/backups/a%2Fb",
        "/v3/abc123/volumes/../../healthcheck",
        "/v3/abc123",
    ] {
        let (status, body) = raw_get(&h.base, path, &token).await;
        assert_eq!(status, 404, "{path}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect(path);
        assert_eq!(json["itemNotFound"]["code"], 404, "{path}");
    }
    assert_eq!(h.total_calls(), 0, "no region was asked");
    for region in &h.regions {
        assert!(region.requests.lock().unwrap().is_empty());
    }
    // Every spelling of a project is that project, sent upstream in one spelling.
    let (status, body) = raw_get(&h.base, "/v3/%61bc123/backups/detail", &token).await;
    assert_eq!(status, 200, "{body}");
    for region in &h.regions {
        let requests = region.requests.lock().unwrap();
        assert!(requests
            .iter()
            .all(|l| l.starts_with("/v3/abc123/backups/detail")));
    }
}

/// Class 5: a Host that is not an authority is refused (and nothing is cached); every href of
/// an answer is valid JSON built through the encoder.
#[tokio::test]
async fn hosts_cannot_inject_json() {
    let h = Harness::start(
        vec![(SimConfig::default(), rows("a", 3))],
        "[cache]\nttl = \"30s\"\n",
    )
    .await;
    let token = ("X-Auth-Token", crate::support::TOKEN);
    for host in [r#"evil.example/x", "injected": "yes"#, r#"a"b\"#] {
        for path in [
            &format!("{DETAIL}?limit=1"),
            "/v3/abc123/backups/a-001",
            "/",
        ] {
            let (status, body) = raw_get(&h.base, path, &[token, ("Host", host)]).await;
            assert_eq!(status, 400, "{host} {path}: {body}");
            let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(json["badRequest"]["code"], 400);
        }
    }
    assert_eq!(h.state.caches.purge(None), 0, "nothing was cached");
    // A legal but unusual authority comes back escaped and parseable.
    let (status, body) = raw_get(
        &h.base,
        &format!("{DETAIL}?limit=1"),
        &[token, ("Host", "x'y.example:81")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(json["backups_links"][0]["href"]
        .as_str()
        .unwrap()
        .starts_with("http://x'y.example:81/v3/abc123/backups/detail?"));
}

/// Class 10: purges match every spelling of a project and refuse `null`; errors name a
/// region, never its URL; every 503 says when to retry; answers are private to the caller.
#[tokio::test]
async fn smaller_ones() {
    let h = Harness::start(
        vec![(SimConfig::default(), rows("a", 3))],
        "[admin]\ntoken = \"0123456789abcdef\"\n[cache]\nttl = \"30s\"\n",
    )
    .await;
    let r = h.get(DETAIL, None).await;
    assert_eq!(r.header("cache-control"), Some("private"));
    assert_eq!(
        r.header("vary"),
        Some("X-Auth-Token, OpenStack-API-Version")
    );
    let purge = |body: &'static str| {
        h.client
            .post(format!("{}/admin/cache/purge", h.base))
            .header("X-Admin-Token", "0123456789abcdef")
            .body(body)
            .send()
    };
    let r = purge(r#"{"project_id": null}"#).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = purge(r#"{"project_id": "%61bc123"}"#).await.unwrap();
    assert_eq!(r.status(), 200);
    let purged: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(purged["purged"].as_u64().unwrap() >= 1, "{purged}");

    // A region that refuses connections: a 503 that names it, with Retry-After, no URL.
    let down = h
        .restart_proxy(
            "[[regions]]\nname = \"r-down\"\nurl = \"http://127.0.0.1:9\"\n[cache]\nttl = \"0s\"\n",
        )
        .await;
    let r = down.get(DETAIL, None).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.text.contains("r-down"), "{}", r.text);
    assert!(!r.text.contains("127.0.0.1"), "{}", r.text);
    assert_eq!(r.header("retry-after"), Some("1"));
    let r = down.get("/v3/abc123/backups/x-1", None).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(!r.text.contains("127.0.0.1"), "{}", r.text);
    assert_eq!(r.header("retry-after"), Some("1"));
}

/// Class 3: pass-through shares the region's guard: its concurrency limit, its breaker and
/// its metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pass_through_goes_through_the_regions_guard() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let h = Arc::new(
        Harness::start(
            vec![(SimConfig::default(), rows("a", 1))],
            "[upstream]\nmax_concurrency = 4\nqueue_timeout = \"60s\"\nbreaker_failures = 3\nbreaker_cooldown = \"60s\"\nretries = 0\n[server]\nrequest_timeout = \"120s\"\n",
        )
        .await,
    );
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    *h.regions[0].watch.write().unwrap() = Some((now.clone(), peak.clone()));
    let clients: Vec<_> = (0..150)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move { h.get(&format!("/v3/abc123/limits?i={i}"), None).await })
        })
        .collect();
    for c in clients {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.text, r#"{"limits": {"rate": [], "absolute": {}}}"#);
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        4,
        "peak in flight at the region"
    );
    // 150 pass-through calls, and the version discovery at start-up.
    assert_eq!(ok_calls(&h, "r0").await, 151);
    // Its 5xx count against the region: the breaker opens, and then nothing is sent.
    *h.regions[0].fault.write().unwrap() = cinder_sim::Fault::new(500, "{}");
    for _ in 0..3 {
        assert_eq!(h.get("/v3/abc123/limits", None).await.status, 500);
    }
    let asked = h.regions[0].calls();
    let r = h.get("/v3/abc123/limits", None).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(h.regions[0].calls(), asked, "an open breaker sends nothing");
}

/// Class 4: what the caches hold, keys included, stays within `cache.max_bytes`, however
/// large the keys clients make.
#[tokio::test]
async fn memory_is_bounded_by_what_is_counted() {
    const KEY: usize = 8000;
    let h = Harness::start(
        vec![(SimConfig::default(), rows("a", 3))],
        "[cache]\nttl = \"300s\"\nmax_bytes = \"1MiB\"\n",
    )
    .await;
    for i in 0..400 {
        // Distinct, large, and matching nothing: tiny answers under large keys.
        let name = format!("{i:04}{}", "x".repeat(KEY));
        let r = h.get(&format!("{DETAIL}?name={name}"), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.ids().is_empty());
    }
    // The caches' keys are fixed-size digests; what holds a client's long URL is the target
    // memo (its raw key, and the target's query and next link).
    let caches = &h.state.caches;
    let targets = &h.state.lister.targets;
    let entries = caches.responses.entry_count() + caches.pages.entry_count();
    let long_keys = targets.entry_count();
    let held = long_keys as usize * KEY + entries as usize * 128;
    assert!(entries > 0 && long_keys > 0);
    assert!(
        held <= 1024 * 1024,
        "{long_keys} targets and {entries} entries hold at least {held} bytes of keys"
    );
    let weighed =
        caches.responses.weighted_size() + caches.pages.weighted_size() + targets.weighted_size();
    assert!(weighed <= 1024 * 1024, "{weighed}");
}

/// Class 9: `no-cache` is honoured, but coalesced: one forced refresh per key per
/// `cache.min_refresh_interval` (set long here, so the machine's speed cannot matter).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_cache_cannot_bypass_the_shield() {
    use std::sync::Arc;
    let h = Arc::new(
        Harness::start(
            vec![
                (SimConfig::default(), rows("a", 5)),
                (SimConfig::default(), rows("b", 5)),
            ],
            "[cache]\nttl = \"30s\"\nmin_refresh_interval = \"60s\"\n",
        )
        .await,
    );
    let no_cache = [
        ("X-Auth-Token", crate::support::TOKEN),
        ("Cache-Control", "no-cache"),
    ];
    let burst: Vec<_> = (0..200)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.get_with(DETAIL, &no_cache).await })
        })
        .collect();
    for r in burst {
        let r = r.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.ids().len(), 10);
    }
    for _ in 0..200 {
        let r = h.get_with(DETAIL, &no_cache).await;
        assert_eq!(r.ids().len(), 10);
        let status = r.header("cache-status").unwrap();
        assert!(status.contains("refreshed-recently"), "{status}");
    }
    for (i, calls) in h.calls().into_iter().enumerate() {
        assert!(calls <= 2, "region {i} was called {calls} times");
    }
}

/// A region that accepts connections and reads requests but never answers; the request lines
/// it received.
pub(crate) async fn hanging_region() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut held = Vec::new();
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    held.extend_from_slice(&buf[..n]);
                    if let Some(end) = held.windows(2).position(|w| w == b"\r\n") {
                        let line = String::from_utf8_lossy(&held[..end]).into_owned();
                        record.lock().unwrap().push(line);
                        held.clear();
                    }
                }
            });
        }
    });
    (url, seen)
}

/// Class 8: a hung region costs the first clients one `upstream.timeout` (retries live inside
/// it), then nobody: while the breaker is open or its probe (the proxy's own, never a
/// client's) hangs, clients are answered without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_region_costs_one_deadline_at_most_once() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let healthy = Harness::start(vec![(SimConfig::default(), rows("a", 5))], "").await;
    let (hung_url, seen) = hanging_region().await;
    // Defaults but a short timeout (retries = 2 as shipped) and a short cool-down.
    let toml = format!(
        "[[regions]]\nname = \"r0\"\nurl = \"{}\"\n[[regions]]\nname = \"hung\"\nurl = \"{hung_url}\"\n[upstream]\ntimeout = \"2s\"\nbreaker_cooldown = \"100ms\"\n[cache]\nttl = \"0s\"\n",
        healthy.region_urls[0]
    );
    let h = Arc::new(healthy.restart_proxy(&toml).await);
    let listings = || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("GET /v3/"))
            .count()
    };
    // The first clients (enough to open the breaker; distinct filters, so nothing coalesces)
    // each wait one deadline, not three.
    let first: Vec<_> = (0..5)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let r = h.get(&format!("{DETAIL}?name=n{i}"), None).await;
                (r, started.elapsed())
            })
        })
        .collect();
    for c in first {
        let (r, took) = c.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("x-aggregate-missing-regions"), Some("hung"));
        // One deadline (2 s) and a margin, where three attempts took 6 s. (Less: the
        // version discovery at start-up missed its deadline, so the region is suspect and
        // waited for only a grace; its calls go on.)
        assert!(took < Duration::from_millis(3500), "took {took:?}");
    }
    // The five calls' deadlines pass (in the region-page cache's tasks); the version
    // document, asked then, does not answer either: five failures.
    until_breaker(&h, "hung", "2").await;
    let asked = listings();
    // The proxy's own `GET /` so far (the version discovery at start-up, the liveness
    // checks that judged the timeouts); the probe is the next.
    let gets = || {
        let seen = seen.lock().unwrap();
        seen.iter().filter(|l| l.starts_with("GET / ")).count()
    };
    let before_probe = gets();
    let probed = || gets() > before_probe;
    // Well under the region's 2 s timeout: nobody waited on it.
    let fast = |started: Instant| started.elapsed() < Duration::from_secs(1);
    // Open, then past the cool-down: clients are answered without the region, and one of
    // them starts the proxy's probe without waiting for it. Bounded: the cool-down is 100 ms.
    let mut requests = 0;
    while !probed() {
        requests += 1;
        assert!(requests < 10_000, "no probe was sent");
        let started = Instant::now();
        let r = h.get(DETAIL, None).await;
        assert_eq!(r.header("x-aggregate-missing-regions"), Some("hung"));
        assert!(fast(started));
    }
    // While the probe hangs, still nobody waits.
    for _ in 0..5 {
        let started = Instant::now();
        let r = h.get(DETAIL, None).await;
        assert_eq!(r.header("x-aggregate-missing-regions"), Some("hung"));
        assert!(fast(started));
    }
    assert_eq!(
        breaker_state(&h, "hung").await,
        "1",
        "half-open: the probe is out"
    );
    assert_eq!(
        listings(),
        asked,
        "no client request reached the hung region"
    );
}

/// Class 8: with `upstream.partial_grace`, the others' answer waits that long for a
/// straggler, not its whole timeout; the straggler's call goes on and fills the page cache.
#[tokio::test]
async fn partial_grace_bounds_the_wait_for_a_straggler() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let h = two_regions(
        "[upstream]\ntimeout = \"30s\"\npartial_grace = \"50ms\"\n[cache]\nttl = \"30s\"\n",
    )
    .await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *h.regions[1].gate.write().unwrap() = Some(gate.clone());
    let started = Instant::now();
    let r = h.get(DETAIL, None).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-aggregate-missing-regions"), Some("r1"));
    assert_eq!(r.ids().len(), 5);
    // The straggler answers later; its page is then in the cache, and the answer is whole.
    gate.add_permits(100);
    crate::support::until("the straggler's page", || {
        h.state.caches.pages.entry_count() >= 2
    })
    .await;
    let r = h.get(DETAIL, None).await;
    assert_eq!(r.header("x-aggregate-missing-regions"), None);
    assert_eq!(r.ids().len(), 10);
}

/// The whole server (`vbs_proxy::serve`, the listener the binary uses) for `extra` TOML
/// over `h`'s first region, on 127.0.0.1:0: its base URL.
async fn real_server(h: &Harness, extra: &str) -> String {
    real_server_and_state(h, extra).await.0
}

/// [`real_server`], and its state (for its metrics).
async fn real_server_and_state(h: &Harness, extra: &str) -> (String, vbs_proxy::AppState) {
    let toml = format!(
        "[[regions]]\nname = \"r0\"\nurl = \"{}\"\n{extra}",
        h.region_urls[0]
    );
    let config = vbs_proxy::Config::from_toml(&toml).expect("valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = vbs_proxy::AppState::new(config);
    tokio::spawn(vbs_proxy::serve(
        state.clone(),
        listener,
        std::future::pending(),
        None,
    ));
    (base, state)
}

/// Connections the server of `state` closed for `reason`.
fn closed_for(state: &vbs_proxy::AppState, reason: &'static str) -> u64 {
    let label = vbs_proxy::state::metrics::ReasonLabel { reason };
    state
        .metrics
        .http
        .connections_closed
        .get_or_create(&label)
        .get()
}

/// The listing through the server at `base` is whole: `n` backups.
async fn assert_listed(h: &Harness, base: &str, n: usize) {
    let token = [("X-Auth-Token", crate::support::TOKEN)];
    let r = h.get_with(&format!("{base}{DETAIL}"), &token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.ids().len(), n);
}

/// Wait until the proxy closes `socket` (EOF or reset); bounded by `until`'s 30 s.
async fn closed_by_peer(mut socket: tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let wait = async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .expect("the proxy closes the connection");
}

/// Class 6: a slowloris of a few thousand connections (silent, or half a request) does not
/// stop others being served, and its connections are closed by the header-read and idle
/// timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_idle_clients_cannot_hold_the_proxy() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::start(vec![(SimConfig::default(), rows("a", 3))], "").await;
    let base = real_server(
        &h,
        "[server]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"600ms\"\n",
    )
    .await;
    let addr = base.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for i in 0..2000 {
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 0 {
            socket
                .write_all(b"GET /v3/abc123/backups/detail HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        slow.push(socket);
    }
    // Others are served meanwhile.
    assert_listed(&h, &base, 3).await;
    // And every slow connection is closed by the proxy.
    futures::future::join_all(slow.into_iter().map(closed_by_peer)).await;
}

/// Class 6: past `server.max_connections`, a new connection waits until one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped() {
    let h = Harness::start(vec![(SimConfig::default(), rows("a", 3))], "").await;
    let base = real_server(&h, "[server]\nmax_connections = 8\nidle_timeout = \"2s\"\n").await;
    let addr = base.trim_start_matches("http://").to_string();
    // The proxy's idle timers start when it accepts these, after `opened`.
    let opened = std::time::Instant::now();
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let waiting = tokio::spawn({
        let url = format!("{base}{DETAIL}");
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .header("X-Auth-Token", crate::support::TOKEN)
                .send()
                .await
                .map(|r| r.status().as_u16());
            (r, std::time::Instant::now())
        }
    });
    // Only when the idle ones are closed (idle_timeout after they were accepted) is the
    // waiting one accepted and served.
    futures::future::join_all(idle.into_iter().map(closed_by_peer)).await;
    let (status, served_at) = waiting.await.unwrap();
    assert_eq!(status.unwrap(), 200);
    assert!(
        served_at.duration_since(opened) >= std::time::Duration::from_secs(2),
        "served past the cap"
    );
}

/// Round two (issue 23), class 6: a request whose client disconnects leaves the in-flight
/// count and is counted and logged as abandoned (nginx's 499).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_requests_are_accounted() {
    let h = std::sync::Arc::new(two_regions("").await);
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    *h.regions[0].gate.write().unwrap() = Some(gate.clone());
    let in_flight = || h.state.metrics.http.in_flight.get();
    for i in 1..=3 {
        // A query of its own each time: a new fetch, which the region sees arrive.
        let client = tokio::spawn({
            let h = h.clone();
            async move { h.get(&format!("{DETAIL}?limit={i}"), None).await }
        });
        h.regions[0].arrived.notified().await;
        client.abort(); // the connection drops while the regions are asked
        crate::support::until("the request to leave the count", || in_flight() == 0).await;
    }
    gate.add_permits(100);
    let series =
        "vbs_http_requests_total{route=\"/v3/{project_id}/backups/detail\",status=\"499\"}";
    assert_eq!(h.metric(series).await.as_deref(), Some("3"));
}

/// Round two, class 7: the smaller ones.
#[tokio::test]
async fn smaller_ones_round_two() {
    let h = Harness::start(
        vec![(SimConfig::default(), rows("a", 3))],
        "[admin]\ntoken = \"0123456789abcdef\"\n[cache]\nttl = \"30s\"\n",
    )
    .await;
    // A request id is `req-<uuid>` or replaced: nothing else reaches the headers or the log.
    let forged = "req-x level=error msg={forged}";
    let token = ("X-Auth-Token", crate::support::TOKEN);
    let r = h
        .get_with(DETAIL, &[token, ("X-Openstack-Request-Id", forged)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.header("x-openstack-request-id").unwrap();
    assert!(
        id != forged && id.len() == 40 && id.starts_with("req-"),
        "{id}"
    );
    let sane = "req-0b1f5c4e-6d2a-4f7b-9a3c-1e2d3f4a5b6c";
    let r = h
        .get_with(DETAIL, &[token, ("X-Openstack-Request-Id", sane)])
        .await;
    assert_eq!(r.header("x-openstack-request-id"), Some(sane));

    // The purge takes an object only: `[]` purged everything.
    let purge = |body: &'static str| {
        h.client
            .post(format!("{}/admin/cache/purge", h.base))
            .header("X-Admin-Token", "0123456789abcdef")
            .body(body)
            .send()
    };
    for body in ["[]", "[\"abc123\"]", "\"abc123\"", "1"] {
        let r = purge(body).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    assert!(h
        .get(DETAIL, None)
        .await
        .header("cache-status")
        .unwrap()
        .contains("hit"));

    // TRACE would echo the token back; CONNECT would open a tunnel.
    let trace = reqwest::Method::from_bytes(b"TRACE").unwrap();
    let r = h
        .client
        .request(trace, format!("{}{DETAIL}", h.base))
        .header("X-Auth-Token", crate::support::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("badMethod") && !body.contains(crate::support::TOKEN),
        "{body}"
    );
    let connect = "CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n";
    let connect = raw_request(&h, connect).await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");

    // A port past 65535 is not a Host.
    let r = h
        .get_with(DETAIL, &[token, ("Host", "proxy.example:65536")])
        .await;
    assert_eq!(r.status, 400, "{}", r.text);

    // Two Host lines, or none in HTTP/1.1, are a 400 (RFC 9112); an absolute-form target's
    // authority wins over Host.
    let token = crate::support::TOKEN;
    let two = format!("GET {DETAIL} HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nX-Auth-Token: {token}\r\nConnection: close\r\n\r\n");
    assert!(raw_request(&h, &two).await.starts_with("HTTP/1.1 400"));
    let none =
        format!("GET {DETAIL} HTTP/1.1\r\nX-Auth-Token: {token}\r\nConnection: close\r\n\r\n");
    assert!(raw_request(&h, &none).await.starts_with("HTTP/1.1 400"));
    let absolute = format!("GET http://proxy.example:8776{DETAIL}?limit=1 HTTP/1.1\r\nHost: other.example\r\nX-Auth-Token: {token}\r\nConnection: close\r\n\r\n");
    let answer = raw_request(&h, &absolute).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("http://proxy.example:8776/v3/abc123/backups/detail?limit=1&marker="),
        "{answer}"
    );
    assert!(!answer.contains("other.example"), "{answer}");

    // A region's `Server` header is not passed on.
    let mut fault = cinder_sim::Fault::new(200, r#"{"limits": {}}"#);
    if let Some(f) = fault.as_mut() {
        f.headers
            .push(("server", "Apache/2.4.52 (Ubuntu) mod_wsgi/4.9.0".into()));
    }
    *h.regions[0].fault.write().unwrap() = fault;
    let r = h.get("/v3/abc123/limits", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("server"), None);
}

/// One request written by hand on a new connection; the answer's text, read until the
/// proxy closes the connection (the requests say `Connection: close`, or are refused).
async fn raw_request(h: &Harness, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = h.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = socket.read_to_end(&mut answer);
    tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Round two, class 3 (in part): region health reflects the region, not one tenant's requests.
/// A request's retried attempts are one verdict, and a malformed version header on
/// pass-through (which Cinder answers 500) never reaches the region.
#[tokio::test]
async fn a_requests_attempts_are_one_verdict_on_the_region() {
    // Defaults: 2 retries, the breaker opens after 5 failures in a row.
    let h = two_regions("[cache]\nttl = \"0s\"\n").await;
    *h.regions[0].fault.write().unwrap() = cinder_sim::Fault::new(500, "{}");
    for i in 1..=2 {
        let r = h.get(&format!("{DETAIL}?limit={i}"), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("x-aggregate-missing-regions"), Some("r0"));
    }
    let failed = "vbs_upstream_calls_total{region=\"r0\",outcome=\"status_5xx\"}";
    assert_eq!(
        h.metric(failed).await.as_deref(),
        Some("6"),
        "3 attempts each"
    );
    assert_eq!(
        breaker_state(&h, "r0").await,
        "0",
        "two failed requests, not six"
    );
    // Three more failed requests make five in a row: now the region is judged down.
    for i in 3..=5 {
        h.get(&format!("{DETAIL}?limit={i}"), None).await;
    }
    assert_eq!(breaker_state(&h, "r0").await, "2");

    // Pass-through with a malformed version: 400 here, nothing sent.
    let h = two_regions("").await;
    let before = h.regions[0].calls();
    for version in ["volume 3.0 extra", "volume", "volume 3.x"] {
        let r = h
            .client
            .post(format!("{}/v3/abc123/backups", h.base))
            .header("X-Auth-Token", crate::support::TOKEN)
            .header("OpenStack-API-Version", version)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{version}");
    }
    assert_eq!(h.regions[0].calls(), before);
    let r = h
        .client
        .post(format!("{}/v3/abc123/backups", h.base))
        .header("X-Auth-Token", crate::support::TOKEN)
        .header("OpenStack-API-Version", "volume 3.60")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "a well-formed version passes");
    assert_eq!(h.regions[0].calls(), before + 1, "and reaches the region");
}

/// Round two, class 1: a request head is buffered only up to `server.max_header_bytes` (and
/// a request line's 8 KiB), not hyper's 400 KB: past it the answer is 431 at once, not a
/// connection holding its buffer until `header_read_timeout`.
#[tokio::test]
async fn a_request_head_is_buffered_only_to_its_bound() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(vec![(SimConfig::default(), rows("a", 3))], "").await;
    let base = real_server(&h, "[server]\nheader_read_timeout = \"120s\"\n").await;
    let socket = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut reader, mut writer) = socket.into_split();
    // 64 KiB of one header and no end of the head: well under hyper's own bound.
    tokio::spawn(async move {
        let head = format!(
            "GET {DETAIL} HTTP/1.1\r\nHost: x\r\nX-Pad: {}",
            "a".repeat(64 * 1024)
        );
        let _ = writer.write_all(head.as_bytes()).await;
        std::future::pending::<()>().await; // keep the write half open
    });
    let mut answer = Vec::new();
    let read = reader.read_to_end(&mut answer);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .expect("the proxy answers before the head is complete");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

/// Round two, class 1: a head begun on a connection that has been idle a while must still be
/// complete within `server.header_read_timeout` (the watchdog slept towards the idle deadline
/// and did not notice the nearer one).
#[tokio::test]
async fn a_head_begun_after_idling_meets_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::start(vec![(SimConfig::default(), rows("a", 3))], "").await;
    let (base, state) = real_server_and_state(
        &h,
        "[server]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"120s\"\n",
    )
    .await;
    let mut socket = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    // The client's behaviour under test: it idles (longer than the header timeout, much
    // shorter than the idle one), then starts a request it never finishes.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    socket
        .write_all(format!("GET {DETAIL} HTTP/1.1\r\nHost: x\r\n").as_bytes())
        .await
        .unwrap();
    // Closed within the 30 s bound of `closed_by_peer`, where the idle timeout is 120 s.
    closed_by_peer(socket).await;
    assert_eq!(closed_for(&state, "slow_head"), 1);
    assert_eq!(closed_for(&state, "idle"), 0);
}

/// Round two, class 2: a client that stops reading a pass-through answer holds neither the
/// region's concurrency slot (the answer is read whole first, bounded by
/// `upstream.max_body_bytes`) nor, past `server.write_timeout`, its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_nothing_shared() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut big = crate::support::backup("big", "2024-01-01T00:00:00.000000");
    // An answer well past what the socket buffers between the two can hold.
    big.display_description = Some("x".repeat(12 * 1024 * 1024));
    let mut table = rows("a", 3);
    table.push(big);
    let h = Harness::start(vec![(SimConfig::default(), table)], "").await;
    // A stalled reader of the export: a small receive window, and it never reads.
    let stall = |base: String| async move {
        let address: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stalled = socket.connect(address).await.unwrap();
        let request = format!(
            "GET /v3/abc123/backups/big/export_record HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {}\r\n\r\n",
            crate::support::TOKEN
        );
        stalled.write_all(request.as_bytes()).await.unwrap();
        stalled
    };
    let limits = "[upstream]\nmax_concurrency = 1\nqueue_timeout = \"5s\"\n[cache]\nttl = \"0s\"\n";

    // The region's only slot is free for another tenant's listing while the stalled client
    // has its answer (which it would wait for up to queue_timeout, then be refused).
    let patient = format!("[server]\nwrite_timeout = \"120s\"\n{limits}");
    let base = real_server(&h, &patient).await;
    let _stalled = stall(base.clone()).await;
    crate::support::until("the export to reach the region", || {
        h.regions[0].calls() >= 1
    })
    .await;
    assert_listed(&h, &base, 4).await;

    // And a stalled client is cut off after write_timeout: what it can still read is what
    // the sockets held, then the end.
    let (base, state) =
        real_server_and_state(&h, &format!("[server]\nwrite_timeout = \"1s\"\n{limits}")).await;
    let mut stalled = stall(base).await;
    crate::support::until("the slow reader to be cut off", || {
        closed_for(&state, "slow_reader") == 1
    })
    .await;
    let mut received = Vec::new();
    let read = stalled.read_to_end(&mut received);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .expect("the connection ends");
    assert!(
        received.len() < 12 * 1024 * 1024,
        "{} bytes: the whole answer went out",
        received.len()
    );
    assert!(String::from_utf8_lossy(&received[..12]).starts_with("HTTP/1.1 200"));
}

/// Round two, class 5: a successful write drops the writer's project's listings and its own
/// project-less ones (whose project only its token knows), and nobody else's: another
/// tenant's listings, project-less ones included, are still hits.
#[tokio::test]
async fn a_write_drops_the_writers_listings_only() {
    let h = Harness::start(
        vec![(SimConfig::default(), rows("a", 3))],
        "[cache]\nttl = \"60s\"\n",
    )
    .await;
    let (writer, other) = (crate::support::TOKEN, "user:xyz789");
    let listings = [
        ("the writer's project", writer, DETAIL),
        ("the writer's project-less", writer, "/v3/backups/detail"),
        ("another's project", other, "/v3/xyz789/backups/detail"),
        ("another's project-less", other, "/v3/backups/detail"),
    ];
    let cache_status = |token: &'static str, path: &'static str| {
        let h = &h;
        async move {
            let headers = [
                ("X-Auth-Token", token),
                ("OpenStack-API-Version", "volume 3.67"),
            ];
            let r = h.get_with(path, &headers).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text);
            r.header("cache-status").unwrap_or_default().to_string()
        }
    };
    for (what, token, path) in listings {
        cache_status(token, path).await;
        assert!(cache_status(token, path).await.contains("hit"), "{what}");
    }
    let written = h
        .client
        .post(format!("{}/v3/abc123/backups", h.base))
        .header("X-Auth-Token", writer)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 202);
    for (what, token, path) in listings {
        let status = cache_status(token, path).await;
        let dropped = token == writer;
        assert_eq!(status.contains("fwd=miss"), dropped, "{what}: {status}");
    }
}

/// Round two, class 4: one request's cost to the regions is bounded by
/// `server.max_upstream_rows`, whatever its offset or marker: past it, Cinder's 400 with
/// advice, and the regions were not read past the bound.
#[tokio::test]
async fn one_requests_cost_to_the_regions_is_bounded() {
    let h = Harness::start(
        vec![
            (SimConfig::default(), rows("a", 30)),
            (SimConfig::default(), rows("b", 30)),
            (SimConfig::default(), rows("c", 30)),
        ],
        "[server]\nmax_limit = 10\nmax_upstream_rows = 50\n",
    )
    .await;
    let rows_sent = || -> usize {
        h.regions
            .iter()
            .map(|r| r.rows_sent.load(std::sync::atomic::Ordering::SeqCst))
            .sum()
    };
    let refused = |r: &crate::support::Reply| {
        assert_eq!(r.status, 400, "{}", r.text);
        let message = r.json()["badRequest"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains("server.max_upstream_rows"), "{message}");
    };
    // Within the bound: served.
    let r = h.get(&format!("{DETAIL}?limit=5&offset=10"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.ids().len(), 5);
    // An offset past it: refused before any region is asked.
    let (calls, sent) = (h.total_calls(), rows_sent());
    refused(&h.get(&format!("{DETAIL}?limit=1&offset=60"), None).await);
    assert_eq!(h.total_calls(), calls);
    // An offset under it that needs more rows over three regions: stopped at the bound.
    let sent_before = rows_sent();
    assert_eq!(sent_before, sent);
    refused(&h.get(&format!("{DETAIL}?limit=5&offset=40"), None).await);
    assert!(
        rows_sent() - sent_before <= 50,
        "{}",
        rows_sent() - sent_before
    );
    // A cold plain-id marker deep in one region: the scan of the others is bounded too.
    let sent_before = rows_sent();
    refused(&h.get(&format!("{DETAIL}?limit=5&marker=a-003"), None).await);
    assert!(
        rows_sent() - sent_before <= 50 + 3,
        "{}",
        rows_sent() - sent_before
    );
}

/// Round two, class 4: a page's fetch ends with its last waiter (the client got its 504 at
/// `server.request_timeout`): no more region calls for nobody. While another request waits
/// for it, it goes on (tests in cache/coalescing.rs).
#[tokio::test]
async fn a_fetch_ends_with_its_last_waiter() {
    let h = two_regions(
        "[server]\nrequest_timeout = \"300ms\"\nmax_limit = 2\n[cache]\nttl = \"30s\"\n",
    )
    .await;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    *h.regions[0].gate.write().unwrap() = Some(gate.clone());
    // Five rows per region, two per call: a walk of several calls to r0.
    let r = h.get(&format!("{DETAIL}?limit=1&offset=8"), None).await;
    assert_eq!(r.status, 504, "{}", r.text);
    let stopped = "vbs_cache_fetches_stopped_total{layer=\"responses\"}";
    let h = std::sync::Arc::new(h);
    let mut seen = None;
    for _ in 0..100 {
        seen = h.metric(stopped).await;
        if seen.as_deref() == Some("1") {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(seen.as_deref(), Some("1"));
    // The region call under way finishes (and fills the page cache); none follows it.
    gate.add_permits(100);
    crate::support::until("r0's page", || h.state.caches.pages.entry_count() >= 2).await;
    assert_eq!(h.regions[0].calls(), 1);
}

/// Round two, class 8: once a call's deadline has passed on a hung region, later requests
/// wait for it only a short grace after the other regions answered, not a whole deadline
/// each until the breaker opens (it needs five failures).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_one_deadline_a_hung_region_costs_a_grace() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    // Defaults (retries, the breaker after five failures) but a 3 s deadline, to keep it
    // short. r1 answered its version document at start-up; its listings now hang.
    let h = Arc::new(two_regions("[upstream]\ntimeout = \"3s\"\n").await);
    *h.regions[1].gate.write().unwrap() = Some(Arc::new(tokio::sync::Semaphore::new(0)));
    let ask = |i: usize| {
        let h = h.clone();
        async move {
            let started = Instant::now();
            // A filter of its own: nothing coalesces.
            let r = h.get(&format!("{DETAIL}?name=n{i}"), None).await;
            assert_eq!(r.status, 200, "{}", r.text);
            assert_eq!(r.header("x-aggregate-missing-regions"), Some("r1"));
            started.elapsed()
        }
    };
    // The first three, at once: each waits the deadline that finds the region out.
    let first = futures::future::join_all((0..3).map(ask)).await;
    for took in first {
        assert!(took >= Duration::from_secs(3), "{took:?}");
    }
    assert_eq!(
        breaker_state(&h, "r1").await,
        "0",
        "three failures: still closed"
    );
    // The next ones, one after the other, wait a grace.
    for i in 3..6 {
        let took = ask(i).await;
        assert!(
            took < Duration::from_millis(1500),
            "request {i} took {took:?}"
        );
    }
}

/// Round two, class 8: a region that is slow but answers is waited for, even after one of its
/// calls missed its deadline: its grace is derived from how long it takes to answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_region_that_answers_is_always_waited_for() {
    use std::time::Duration;
    let h = two_regions("[upstream]\ntimeout = \"2s\"\nretries = 0\n").await;
    let slow = Duration::from_millis(800);
    *h.regions[1].delay.write().unwrap() = Some(slow);
    let whole = |r: &crate::support::Reply| {
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("x-aggregate-missing-regions"), None);
        assert_eq!(r.ids().len(), 10);
    };
    whole(&h.get(&format!("{DETAIL}?limit=10"), None).await);
    // Once, it hangs past its deadline: this page goes on without it.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    *h.regions[1].gate.write().unwrap() = Some(gate.clone());
    let r = h.get(&format!("{DETAIL}?limit=11"), None).await;
    assert_eq!(r.header("x-aggregate-missing-regions"), Some("r1"));
    *h.regions[1].gate.write().unwrap() = None;
    gate.add_permits(100);
    // Suspect now, but it has shown it answers in 0.8 s: waited for, every time.
    for limit in 12..16 {
        whole(&h.get(&format!("{DETAIL}?limit={limit}"), None).await);
    }
}

/// Round two, class 3: timeouts of queries whose own cost is extraordinary do not open the
/// breaker for everybody. Five slow listings that run past the deadline on a region that
/// answers other listings meanwhile leave its breaker closed; a region that answers nobody
/// opens it (`a_hung_region_costs_one_deadline_at_most_once`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_queries_do_not_open_the_breaker_of_a_region_that_answers() {
    use std::sync::Arc;
    let h = Arc::new(two_regions("[upstream]\ntimeout = \"1s\"\nretries = 0\n").await);
    // Queries on one name are slow on r1 (a filter without an index, say); others are not.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *h.regions[1].gate_only.write().unwrap() = Some("name=slow".into());
    *h.regions[1].gate.write().unwrap() = Some(gate.clone());
    let slow: Vec<_> = (0..5)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move { h.get(&format!("{DETAIL}?name=slow{i}"), None).await })
        })
        .collect();
    crate::support::until("the slow queries to reach r1", || h.regions[1].calls() >= 5).await;
    // Meanwhile another tenant's listing is answered by r1, whole.
    let r = h.get(&format!("{DETAIL}?limit=10"), None).await;
    assert_eq!(r.header("x-aggregate-missing-regions"), None, "{}", r.text);
    for r in futures::future::join_all(slow).await {
        let r = r.unwrap();
        assert_eq!(r.header("x-aggregate-missing-regions"), Some("r1"));
    }
    let timeouts = "vbs_upstream_calls_total{region=\"r1\",outcome=\"timeout\"}";
    assert_eq!(h.metric(timeouts).await.as_deref(), Some("5"));
    assert_eq!(
        breaker_state(&h, "r1").await,
        "0",
        "closed: the region answers"
    );
    // Not suspect either: the next page waits for r1 as long as it needs.
    let r = h.get(&format!("{DETAIL}?limit=9"), None).await;
    assert_eq!(r.header("x-aggregate-missing-regions"), None);
    gate.add_permits(100);
}

/// Round two, class 3: a 429 with `Retry-After` from a limiter that throttles one tenant
/// holds back that tenant only (`upstream.retry_after_scope = "project"`, the default), and
/// does not count against the region; with `"region"`, everyone.
#[tokio::test]
async fn a_tenants_429_holds_back_that_tenant_only() {
    let throttled = cinder_sim::Fault {
        status: axum::http::StatusCode::TOO_MANY_REQUESTS,
        body: r#"{"overLimit": {"code": 429, "message": "Rate limit exceeded"}}"#.into(),
        headers: vec![("Retry-After", "600".into())],
    };
    let (a, b) = (crate::support::TOKEN, "user:xyz789");
    let detail_of = |token: &str| {
        let project = token.split_once(':').unwrap().1;
        format!("/v3/{project}/backups/detail")
    };
    for (scope, b_held) in [("project", false), ("region", true)] {
        let h = two_regions(&format!("[upstream]\nretry_after_scope = \"{scope}\"\n")).await;
        h.regions[0]
            .refuse
            .write()
            .unwrap()
            .insert(a.to_string(), throttled.clone());
        for _ in 0..3 {
            let r = h.get_with(&detail_of(a), &[("X-Auth-Token", a)]).await;
            assert_eq!(
                r.header("x-aggregate-missing-regions"),
                Some("r0"),
                "{scope}"
            );
        }
        assert_eq!(
            h.regions[0].calls(),
            1,
            "{scope}: a held back after its 429"
        );
        let r = h.get_with(&detail_of(b), &[("X-Auth-Token", b)]).await;
        let missing = r.header("x-aggregate-missing-regions").is_some();
        assert_eq!(missing, b_held, "{scope}: {}", r.text);
        let breaker = breaker_state(&h, "r0").await;
        assert_eq!(breaker, "0", "{scope}");
    }
}
