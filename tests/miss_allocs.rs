//! The real miss's budget (issue 27; docs/performance.md): allocations and bytes allocated
//! per miss of a 50-item page over three regions, each request a caller of its own, so every
//! one is its own fetch (nothing coalesced, nothing cached for it): the whole router, the
//! three region calls (reqwest, hyper), the parse, the merge, the page and its rendering,
//! counted by a counting global allocator on the proxy's thread. The regions run on a thread
//! and runtime of their own: their allocations are not the proxy's. The test fails when a miss
//! costs more than 10% above the committed figures, and when it costs far less (then lower
//! them here, so the guard keeps its bite).
//!
//! A test binary of its own: the global allocator is the whole binary's.

use axum::body::Body;

#[path = "common/counting.rs"]
mod counting;
use counting::{serve, Counting};

/// Allocations per real miss the last change measured (debug build, as `cargo test` runs).
const ALLOCATIONS_PER_MISS: f64 = 960.0;

/// Bytes allocated per real miss, likewise.
const BYTES_PER_MISS: f64 = 549_700.0;

const MISSES: usize = 200;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A listing for caller `n` (its own token: its own cache key, its own region pages).
fn request(n: usize) -> axum::http::Request<Body> {
    let project = vbs_proxy::demo::PROJECTS[0];
    let mut request = axum::http::Request::get(format!("/v3/{project}/backups/detail?limit=50"))
        .header("X-Auth-Token", format!("caller{n}:{project}"))
        .header("Host", "127.0.0.1:8776")
        .body(Body::empty())
        .expect("a request");
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    request
}

/// Three simulated regions (the demo's realistic rows) on a thread and runtime of their own:
/// their URLs.
fn regions_elsewhere() -> Vec<String> {
    let (sender, urls) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the regions' runtime");
        runtime.block_on(async move {
            let mut spawned = Vec::new();
            for seed in 1..=3u64 {
                let rows = vbs_proxy::demo::sample_backups(seed as usize, 400, seed);
                let region = cinder_sim::SimRegion::new(cinder_sim::SimConfig::default(), rows);
                spawned.push(region.spawn().await.expect("the region listens"));
                std::mem::forget(region);
            }
            sender.send(spawned).expect("the test waits");
            std::future::pending::<()>().await;
        });
    });
    urls.recv().expect("the regions start")
}

#[test]
fn a_real_miss_stays_within_its_allocation_budget() {
    let urls = regions_elsewhere();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (allocations, bytes, length) = runtime.block_on(async {
        let regions: String = urls
            .iter()
            .enumerate()
            .map(|(i, url)| format!("[[regions]]\nname = \"r{i}\"\nurl = \"{url}\"\n"))
            .collect();
        let config = vbs_proxy::Config::from_toml(&format!(
            "{regions}[cache]\nttl = \"1h\"\n[log]\nlevel = \"warn\"\n"
        ))
        .expect("a valid configuration");
        let state = vbs_proxy::AppState::new(config);
        vbs_proxy::regions::versions::refresh(&state.regions).await;
        let app = vbs_proxy::router(state);
        // Warm: connections to the regions open, metric series made.
        let (status, length) = serve(&app, request(0)).await;
        assert_eq!(status, 200);
        for n in 1..20 {
            assert_eq!(serve(&app, request(n)).await, (200, length));
        }
        let requests: Vec<_> = (100..100 + MISSES).map(request).collect();
        counting::start();
        for request in requests {
            let (status, served) = serve(&app, request).await;
            assert!(status == 200 && served == length, "a whole page");
        }
        let (allocations, bytes) = counting::stop();
        (
            allocations as f64 / MISSES as f64,
            bytes as f64 / MISSES as f64,
            length,
        )
    });
    eprintln!(
        "real miss of a 50-item page over three regions ({length} bytes): {allocations:.1} \
         allocations and {bytes:.0} bytes allocated per miss (committed: {ALLOCATIONS_PER_MISS} \
         and {BYTES_PER_MISS})"
    );
    for (what, measured, committed) in [
        ("allocations", allocations, ALLOCATIONS_PER_MISS),
        ("bytes allocated", bytes, BYTES_PER_MISS),
    ] {
        counting::hold(
            what,
            "real miss",
            measured,
            committed,
            "tests/miss_allocs.rs",
        );
    }
}
