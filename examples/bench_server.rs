//! Servers for the macro benchmark (bench/run.sh), both answering from memory:
//!
//! * `bench_server region PORT SEED` — a fast fake Cinder region: the version document at `/`
//!   and realistic detail pages (every field) at `/v3/{p}/backups/detail`, honouring `limit`
//!   (capped at 1,000, Cinder's `osapi_max_limit`), `offset`, `marker` and the direction of
//!   the default sort (`sort=created_at:asc,id:asc` reverses it; other keys keep the default
//!   order: this server is for measuring the proxy, not for checking it); `GET /__calls` says
//!   how many listings it served.
//! * `bench_server ceiling PORT FILE` — the ceiling: the bytes of FILE for every request, as a
//!   minimal Rust HTTP server would serve a cached page.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use cinder_sim::{Row, Version};

struct Region {
    /// Item JSON objects, in the default order (created_at desc, id desc), and their ids.
    items: Vec<String>,
    ids: Vec<String>,
    /// The same, in the opposite order.
    ascending: Vec<String>,
    ascending_ids: Vec<String>,
    /// Pre-rendered pages for the common limits.
    page_50: Bytes,
    page_1000: Bytes,
    calls: AtomicU64,
    base: String,
}

fn render(items: &[String]) -> Bytes {
    Bytes::from(format!("{{\"backups\": [{}]}}", items.join(", ")))
}

async fn listing(State(r): State<Arc<Region>>, RawQuery(q): RawQuery) -> impl IntoResponse {
    r.calls.fetch_add(1, Ordering::Relaxed);
    let (mut limit, mut offset, mut marker, mut ascending) = (1000, 0, None, false);
    for (key, value) in q
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
    {
        match key {
            "limit" => limit = value.parse::<usize>().unwrap_or(1000).min(1000),
            "offset" => offset = value.parse::<usize>().unwrap_or(0),
            "marker" => marker = Some(value.to_string()),
            "sort" => ascending = value.starts_with("created_at:asc"),
            _ => {}
        }
    }
    let order: &[String] = if ascending { &r.ascending } else { &r.items };
    let ids: &[String] = if ascending { &r.ascending_ids } else { &r.ids };
    let after = marker
        .and_then(|m| ids.iter().position(|id| *id == m))
        .map_or(0, |i| i + 1);
    let start = (after + offset).min(order.len());
    let end = (start + limit).min(order.len());
    let body = match (start, end - start, ascending) {
        (0, 50, false) => r.page_50.clone(),
        (0, 1000, false) => r.page_1000.clone(),
        _ => render(&order[start..end]),
    };
    ([(header::CONTENT_TYPE, "application/json")], body)
}

async fn versions(State(r): State<Arc<Region>>) -> impl IntoResponse {
    let doc = format!(
        r#"{{"versions": [{{"id": "v3.0", "status": "CURRENT", "version": "3.71", "min_version": "3.0", "updated": "2023-08-31T00:00:00Z", "links": [{{"rel": "self", "href": "{}/v3/"}}]}}]}}"#,
        r.base
    );
    (
        axum::http::StatusCode::MULTIPLE_CHOICES,
        [(header::CONTENT_TYPE, "application/json")],
        doc,
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, port) = (args[1].as_str(), args[2].parse::<u16>().expect("a port"));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let app = match mode {
        "region" => {
            let seed: u64 = args[3].parse().expect("a seed");
            let base = format!("http://127.0.0.1:{port}");
            let mut rows = vbs_proxy::demo::sample_backups(seed as usize, 1100, seed);
            rows.retain(|b| !b.deleted);
            rows.truncate(1000);
            rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
            let items: Vec<String> = rows
                .iter()
                .map(|b| {
                    serde_json::to_string(&b.detail(Version::new(3, 0), &base, "p", false)).unwrap()
                })
                .collect();
            let ids: Vec<String> = rows.iter().map(|b| b.id.clone()).collect();
            let region = Arc::new(Region {
                page_50: render(&items[..50]),
                page_1000: render(&items[..1000]),
                ascending: items.iter().rev().cloned().collect(),
                ascending_ids: ids.iter().rev().cloned().collect(),
                ids,
                items,
                calls: AtomicU64::new(0),
                base,
            });
            Router::new()
                .route("/", get(versions))
                .route("/v3/", get(versions))
                .route("/v3/{p}/backups/detail", get(listing))
                .route(
                    "/__calls",
                    get(|State(r): State<Arc<Region>>| async move {
                        r.calls.load(Ordering::Relaxed).to_string()
                    }),
                )
                .with_state(region)
        }
        "ceiling" => {
            let body = Bytes::from(std::fs::read(&args[3]).expect("the body file"));
            Router::new().fallback(get(move || {
                let body = body.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }))
        }
        other => panic!("unknown mode {other}"),
    };
    axum::serve(listener, app).await.unwrap();
}
