//! What the allocation guards (tests/hit_allocs.rs, tests/miss_allocs.rs) share: a counting
//! global allocator that counts, on the test's own thread and only while asked to, the
//! allocations and bytes allocated; and a request sent through the router with its body read
//! frame by frame. Each guard is a test binary of its own: the global allocator is the whole
//! binary's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use axum::body::Body;
use http_body::Body as _;
use tower::ServiceExt;

pub struct Counting;

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

/// Count this thread's allocations from now on.
pub fn start() {
    COUNTING.with(|c| c.set(true));
}

/// Stop counting: the allocations and bytes allocated counted so far.
pub fn stop() -> (u64, u64) {
    COUNTING.with(|c| c.set(false));
    (ALLOCATIONS.with(Cell::get), BYTES.with(Cell::get))
}

/// One request through the router, its body read frame by frame (no copy): the status and
/// the body's length.
pub async fn serve(app: &axum::Router, request: axum::http::Request<Body>) -> (u16, usize) {
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

/// Fails when `measured` is more than 10 % above `committed`, or more than 20 % below it (then
/// the committed figure is to be lowered, so the guard keeps its bite).
pub fn hold(what: &str, per: &str, measured: f64, committed: f64, file: &str) {
    assert!(
        measured <= committed * 1.10,
        "{what} per {per} rose to {measured:.1}, more than 10% above the committed {committed} ({file})"
    );
    assert!(
        measured >= committed * 0.80,
        "{what} per {per} fell to {measured:.1}, far below the committed {committed}: lower the \
         figure in {file} so the guard keeps its bite"
    );
}
