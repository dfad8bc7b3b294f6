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

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use axum::body::Body;
use http_body::Body as _;
use tower::ServiceExt;

/// Allocations per real miss the last change measured (debug build, as `cargo test` runs).
const ALLOCATIONS_PER_MISS: f64 = 1_210.0;
/// Bytes allocated per real miss, likewise.
const BYTES_PER_MISS: f64 = 659_800.0;
const MISSES: usize = 200;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn count(size: usize) {
    // `try_with`: the allocator may run while the thread's locals are being torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        let _ = BYTES.try_with(|n| n.set(n.get() + size as u64));
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

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

/// One request through the router, its body read frame by frame: the status and the body's
/// length.
async fn serve(app: &axum::Router, request: axum::http::Request<Body>) -> (u16, usize) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut length = 0;
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        if let Ok(data) = frame.expect("the body streams").into_data() {
            length += data.len();
        }
    }
    (status, length)
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
        COUNTING.with(|c| c.set(true));
        for request in requests {
            let (status, served) = serve(&app, request).await;
            assert!(status == 200 && served == length, "a whole page");
        }
        COUNTING.with(|c| c.set(false));
        (
            ALLOCATIONS.with(Cell::get) as f64 / MISSES as f64,
            BYTES.with(Cell::get) as f64 / MISSES as f64,
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
        assert!(
            measured <= committed * 1.10,
            "{what} per real miss rose to {measured:.1}, more than 10% above the committed \
             {committed} (tests/miss_allocs.rs)"
        );
        assert!(
            measured >= committed * 0.80,
            "{what} per real miss fell to {measured:.1}, far below the committed {committed}: \
             lower the figure in tests/miss_allocs.rs so the guard keeps its bite"
        );
    }
}
