//! The cache-hit path's budget (docs/performance.md, "The cache-hit path"): allocations and bytes allocated per hit
//! of a 50-item page, through the whole router (observation, inbound protection, the listing
//! handler, the body), counted by a counting global allocator on the test's thread. The
//! figures are deterministic (the same code allocates the same) where timings are not, so CI
//! can hold them: the test fails when a hit costs more than 10% above the committed figures,
//! and when it costs far less (then lower them here, so the guard keeps its bite).
//!
//! A test binary of its own: the global allocator is the whole binary's.

use axum::body::Body;

#[path = "common/counting.rs"]
mod counting;
use counting::{serve, Counting};

/// Allocations per hit the last change measured (debug build, as `cargo test` runs). The 24th
/// (since 8f2e47f) is matchit's: the route label's lookup walks past the `{project_id}`
/// wildcard beside `/v3/`'s static children and keeps the skipped node in a `Vec` (matchit
/// 0.8, `tree.rs`, `skipped_nodes`); the router's own lookup does the same.
const ALLOCATIONS_PER_HIT: f64 = 24.0;

/// Bytes allocated per hit, likewise.
const BYTES_PER_HIT: f64 = 6_812.0;

const HITS: usize = 1_000;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn request() -> axum::http::Request<Body> {
    // The simulated region takes `user:project` tokens for the project.
    let project = vbs_proxy::demo::PROJECTS[0];
    let mut request = axum::http::Request::get(format!("/v3/{project}/backups/detail?limit=50"))
        .header("X-Auth-Token", format!("user:{project}"))
        .header("Host", "127.0.0.1:8776")
        .body(Body::empty())
        .expect("a request");
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    request
}

#[test]
fn a_cache_hit_stays_within_its_allocation_budget() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (allocations, bytes, length) = runtime.block_on(async {
        // The demo's realistic rows (every status, NULL names, ties), 50 of them on the page.
        let rows = vbs_proxy::demo::sample_backups(0, 400, 1);
        let region = cinder_sim::SimRegion::new(cinder_sim::SimConfig::default(), rows);
        let url = region.spawn().await.expect("the region listens");
        let config = vbs_proxy::Config::from_toml(&format!(
            "[[regions]]\nname = \"r0\"\nurl = \"{url}\"\n[cache]\nttl = \"1h\"\n[log]\nlevel = \"warn\"\n"
        ))
        .expect("a valid configuration");
        let state = vbs_proxy::AppState::new(config);
        vbs_proxy::regions::versions::refresh(&state.regions).await;
        let app = vbs_proxy::router(state);
        let (status, length) = serve(&app, request()).await;
        assert_eq!(status, 200, "the miss that fills the cache");
        // Warm: the first hits create the metric series and the like.
        for _ in 0..10 {
            assert_eq!(serve(&app, request()).await, (200, length));
        }
        let requests: Vec<_> = (0..HITS).map(|_| request()).collect();
        counting::start();
        for request in requests {
            let (status, served) = serve(&app, request).await;
            assert!(status == 200 && served == length, "a hit");
        }
        let (allocations, bytes) = counting::stop();
        (
            allocations as f64 / HITS as f64,
            bytes as f64 / HITS as f64,
            length,
        )
    });
    eprintln!(
        "cache hit of a 50-item page ({length} bytes): {allocations:.1} allocations and \
         {bytes:.0} bytes allocated per hit (committed: {ALLOCATIONS_PER_HIT} and {BYTES_PER_HIT})"
    );
    for (what, measured, committed) in [
        ("allocations", allocations, ALLOCATIONS_PER_HIT),
        ("bytes allocated", bytes, BYTES_PER_HIT),
    ] {
        counting::hold(
            what,
            "cache hit",
            measured,
            committed,
            "tests/hit_allocs.rs",
        );
    }
}
