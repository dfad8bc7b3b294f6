//! `GET /v3/{project}/backups[/detail]` and the VBS alias `/native/backups/detail`:
//! parse → cache → (on a miss, in a task of its own) resolve the marker → merge over the
//! regions → render.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::error::ApiError;
use super::{body::Chunks, Caller};
use crate::app::AppState;
use crate::cache::coalescing::{Fetched, Served};
use crate::cache::Produced;
use crate::listing::cursor::{self, Cursor, Position};
use crate::listing::item::Item;
use crate::listing::links::Rewriter;
use crate::listing::merge::{self, PageRequest, Start};
use crate::listing::request::ListQuery;
use crate::listing::sort::Comparator;
use crate::regions::source::{self, RegionSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Detail,
    /// `GET .../backups`: `id`, `name`, `links` only.
    Summary,
}

/// A listing request, owned, so it can be produced in a task of its own.
pub struct ListRequest {
    pub scope: String,
    pub path: String,
    pub query: ListQuery,
    pub caller: Caller,
    pub kind: Kind,
    /// HMAC of the token: the caller's part of every cache key.
    pub identity: String,
    /// The client asked for `Cache-Control: no-cache` (and that is honoured).
    pub refresh: bool,
}

pub async fn handle(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
    kind: Kind,
) -> Response {
    let (parts, _body) = request.into_parts();
    match prepare(&state, &parts, caller.clone(), kind) {
        Ok(request) => serve(state, request, &parts.headers).await,
        Err(e) => caller.answered(e.into_response()),
    }
}

/// Everything decided from the request alone; its errors (bad input) are never cached.
fn prepare(
    state: &AppState,
    parts: &axum::http::request::Parts,
    caller: Caller,
    kind: Kind,
) -> Result<ListRequest, ApiError> {
    let path = parts.uri.path();
    let scope = super::scope(path)?;
    let query = ListQuery::parse(
        parts.uri.query(),
        caller.ctx.version,
        state.config.server.max_limit,
    )?;
    let identity = state.caches.identity(caller.ctx.token.as_bytes());
    let refresh = state.caches.honor_client_no_cache && asks_no_cache(&parts.headers);
    Ok(ListRequest {
        scope,
        path: path.to_string(),
        query,
        caller,
        kind,
        identity,
        refresh,
    })
}

fn asks_no_cache(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|d| {
                matches!(
                    d.trim().to_ascii_lowercase().as_str(),
                    "no-cache" | "no-store" | "max-age=0"
                )
            })
        })
    })
}

/// The response-layer key: who, which version, which representation, which canonical query.
fn response_key(r: &ListRequest) -> String {
    format!(
        "{}\n{}\n{:?}\n{}{}\n{}",
        r.identity,
        r.caller.ctx.version,
        r.kind,
        r.caller.public_base,
        r.path,
        r.query.canonical()
    )
}

async fn serve(state: AppState, request: ListRequest, headers: &HeaderMap) -> Response {
    let key = response_key(&request);
    let request = Arc::new(request);
    let refresh = request.refresh;
    let (st, rq) = (state.clone(), request.clone());
    let served = state
        .caches
        .responses
        .get(key, refresh, move || produce_for_cache(st, rq))
        .await;
    let ttl = state.caches.ttl;
    let recent = matches!(served, Served::Recent(_));
    let mut calls = 0;
    let (produced, cache_status, age) = match served {
        Served::Lost => {
            let e = ApiError::Internal("The listing could not be produced.".into());
            return request.caller.answered(e.into_response());
        }
        Served::Shed => {
            let e = ApiError::Busy("The proxy is at capacity; retry shortly.".into());
            return request.caller.answered(e.into_response());
        }
        Served::Hit(e) | Served::Recent(e) => {
            let age = e.age(tokio::time::Instant::now());
            let left = ttl.saturating_sub(age).as_secs();
            let detail = if recent {
                "; detail=refreshed-recently"
            } else {
                ""
            };
            (
                e.value.clone(),
                format!("vbs-proxy; hit; ttl={left}{detail}"),
                Some(age.as_secs()),
            )
        }
        Served::StaleWhileRevalidate(e) => {
            let age = e.age(tokio::time::Instant::now());
            (
                e.value.clone(),
                "vbs-proxy; hit; fwd=stale".to_string(),
                Some(age.as_secs()),
            )
        }
        Served::StaleIfError(e) => {
            let age = e.age(tokio::time::Instant::now());
            (
                e.value.clone(),
                "vbs-proxy; hit; fwd=stale; detail=stale-if-error".to_string(),
                Some(age.as_secs()),
            )
        }
        Served::Fetched { fetched, collapsed } => {
            let fwd = if refresh { "request" } else { "miss" };
            let mut status = format!("vbs-proxy; fwd={fwd}");
            if collapsed {
                status.push_str("; collapsed");
            }
            if fetched.store.is_some() {
                status.push_str("; stored");
            }
            if fetched.value.degraded {
                status.push_str("; detail=stale-if-error");
            }
            if !collapsed {
                calls = fetched.value.calls;
            }
            (fetched.value.clone(), status, None)
        }
    };
    let mut response = respond(&produced, &request, headers, cache_status, age);
    response
        .extensions_mut()
        .insert(super::observe::UpstreamCalls(calls));
    response
}

/// The response for this request from a produced answer: its own next link, its headers.
fn respond(
    produced: &Produced,
    request: &ListRequest,
    headers: &HeaderMap,
    cache_status: String,
    age: Option<u64>,
) -> Response {
    let not_modified = produced
        .etag
        .as_ref()
        .is_some_and(|etag| matches_etag(headers, etag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = match &produced.cursor {
            None => Chunks::new([produced.head.clone(), Bytes::new(), produced.tail.clone()]),
            Some(cursor) => {
                let href = format!(
                    "{}{}?{}",
                    request.caller.public_base,
                    request.path,
                    request.query.next_query(cursor)
                );
                let href = serde_json::to_vec(&href).expect("a string serialises");
                Chunks::new([
                    produced.head.clone(),
                    Bytes::from(href),
                    produced.tail.clone(),
                ])
            }
        };
        let mut r = axum::body::Body::new(body).into_response();
        *r.status_mut() = produced.status;
        if let Some(ct) = &produced.content_type {
            r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        super::error::set_retry_after(produced.status, r.headers_mut());
        if let Some(missing) = &produced.missing_regions {
            r.headers_mut()
                .insert(super::MISSING_REGIONS, missing.clone());
        }
        r
    };
    let h = response.headers_mut();
    request.caller.response_headers(h);
    if let Some(etag) = &produced.etag {
        h.insert(header::ETAG, etag.clone());
    }
    h.insert(
        super::CACHE_STATUS,
        HeaderValue::try_from(cache_status).expect("ascii"),
    );
    if let Some(age) = age {
        h.insert(header::AGE, HeaderValue::from(age));
    }
    response
}

/// `If-None-Match` against a weak validator (weak comparison, RFC 9110 §13.1.2).
fn matches_etag(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or("").trim_start_matches("W/");
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.trim_start_matches("W/") == ours)
        })
}

async fn produce_for_cache(state: AppState, request: Arc<ListRequest>) -> Fetched<Arc<Produced>> {
    let produced = match list(&state, &request).await {
        Ok(p) => p,
        Err(e) => {
            let (status, content_type, body) = e.into_parts();
            Produced {
                status,
                head: body,
                cursor: None,
                tail: Bytes::new(),
                etag: None,
                missing_regions: None,
                content_type,
                degraded: false,
                calls: 0,
            }
        }
    };
    let complete = produced.status == StatusCode::OK
        && produced.missing_regions.is_none()
        && !produced.degraded;
    // A region missing, or covered by a stale page: the response layer's own stale entry, if
    // any, is the better answer.
    let failed = produced.missing_regions.is_some()
        || produced.degraded
        || produced.status.is_server_error()
        || produced.status == StatusCode::TOO_MANY_REQUESTS;
    let store = (state.caches.enabled && complete).then(|| {
        // Its bytes; the layer adds the key's and its own bookkeeping.
        let weight =
            (produced.len() + std::mem::size_of::<Produced>()).min(u32::MAX as usize) as u32;
        (weight, Arc::from(request.scope.as_str()))
    });
    Fetched {
        value: Arc::new(produced),
        store,
        failed,
    }
}

async fn list(state: &AppState, request: &ListRequest) -> Result<Produced, ApiError> {
    let ListRequest {
        scope,
        query,
        caller,
        kind,
        ..
    } = request;
    let scope = scope.as_str();
    let sort_param = query.sort.to_param();
    let regions = state.regions.client.regions.len();
    let binding = cursor_binding(state, scope, caller, query, &sort_param);
    // Cinder looks the marker up before it checks the sort keys; so does the proxy.
    let columns = query.sort.resolve();
    let fields: Vec<&'static str> = columns
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|(c, _)| c.field)
        .collect();

    enum Marker {
        None,
        Cursor(Cursor),
        Backup(usize, Item),
    }
    let marker = match &query.marker {
        None => Marker::None,
        Some(m) if cursor::is_cursor(m) => Marker::Cursor(
            Cursor::decode(m, &state.cursor_key, &binding, regions)
                .map_err(|e| ApiError::bad_request(format!("Invalid marker: {e}.")))?,
        ),
        Some(id) => {
            let (region, item) = source::find_backup(
                &state.regions,
                &state.caches,
                scope,
                id,
                &fields,
                &caller.ctx,
            )
            .await?;
            Marker::Backup(region, item)
        }
    };
    let comparator = Comparator {
        keys: columns?,
        collation: state.config.merge.collation,
    };
    let starts: Vec<Start> = match marker {
        Marker::None => vec![Start::default(); regions],
        Marker::Cursor(c) => c
            .positions
            .into_iter()
            .map(|position| Start {
                position,
                after: None,
            })
            .collect(),
        Marker::Backup(holder, item) => (0..regions)
            .map(|i| {
                if i == holder && comparator.safe_marker(&item) {
                    let position = Position {
                        marker: Some(item.id().to_string()),
                        skip: 0,
                    };
                    Start {
                        position,
                        after: None,
                    }
                } else {
                    // Other regions do not know this id: read them past its sort values.
                    Start {
                        position: Position::default(),
                        after: Some(item.clone()),
                    }
                }
            })
            .collect(),
    };

    let source = RegionSource::new(
        &state.regions,
        &state.caches,
        scope,
        &fields,
        &caller.ctx,
        &request.identity,
        request.refresh,
    );
    let page_request = PageRequest {
        filters: &query.filters,
        sort_param,
        comparator: &comparator,
        limit: query.limit,
        offset: query.offset,
        with_count: query.with_count,
        chunk: state.config.server.max_limit,
        partial_grace: state.config.upstream.partial_grace,
    };
    let page = merge::paginate(&source, page_request, starts).await;
    let missing = source::judge_failures(&state.regions, &page.failed)?;
    for (region, item) in &page.items {
        state.caches.holders.insert(item.id().into(), *region);
    }

    let rewriter = Rewriter::new(&state.regions.bases, &caller.public_base);
    let cursor = next_link(query, page.items.len(), page.count).then(|| {
        Cursor {
            positions: page.positions.clone(),
        }
        .encode(&state.cursor_key, &binding)
    });
    let (head, tail) = render(&page.items, *kind, &rewriter, cursor.is_some(), page.count);
    let etag = Produced::etag_for(&head, cursor.as_deref(), &tail);
    Ok(Produced {
        status: StatusCode::OK,
        head: Bytes::from(head),
        cursor,
        tail: Bytes::from(tail),
        etag: Some(etag),
        missing_regions: (!missing.is_empty()).then(|| {
            HeaderValue::try_from(missing.join(",")).expect("region names are header-safe")
        }),
        content_type: Some(HeaderValue::from_static("application/json")),
        degraded: source.degraded.load(Ordering::Relaxed),
        calls: page.calls.iter().sum(),
    })
}

/// A cursor is valid only for the query that produced it.
fn cursor_binding(
    state: &AppState,
    scope: &str,
    caller: &Caller,
    query: &ListQuery,
    sort_param: &str,
) -> Vec<u8> {
    let mut b = format!("{scope}\n{}\n{sort_param}\n", caller.ctx.version);
    for (k, v) in &query.filters {
        crate::listing::request::push_pair(&mut b, k, v);
    }
    for r in &state.regions.client.regions {
        b.push('\n');
        b.push_str(&r.name);
    }
    b.into_bytes()
}

/// `common.py _get_collection_links`: a link when the page is non-empty and `limit` is at
/// most the page length — or the total count when with_count is on (`count or len(items)`).
fn next_link(query: &ListQuery, len: usize, count: Option<u64>) -> bool {
    let item_count = match count {
        Some(c) if c > 0 => c,
        _ => len as u64,
    };
    len > 0 && query.limit as u64 <= item_count
}

/// `{"backups": [...], "backups_links": [...], "count": N}`, in Cinder's key order, items
/// copied from the regions' bytes with hrefs rewritten. With a next link, the body is split
/// where its href goes: the href repeats each client's own parameters.
fn render(
    items: &[(usize, Item)],
    kind: Kind,
    rewriter: &Rewriter<'_>,
    next: bool,
    count: Option<u64>,
) -> (Vec<u8>, Vec<u8>) {
    let size: usize = items.iter().map(|(_, i)| i.raw().len() + 16).sum();
    let mut out = Vec::with_capacity(size + 256);
    out.extend_from_slice(b"{\"backups\": [");
    for (n, (_, item)) in items.iter().enumerate() {
        if n > 0 {
            out.extend_from_slice(b", ");
        }
        match kind {
            Kind::Detail => rewriter.write_json(item.raw(), &mut out),
            Kind::Summary => write_summary(item, rewriter, &mut out),
        }
    }
    out.push(b']');
    let mut tail = Vec::with_capacity(64);
    if next {
        out.extend_from_slice(b", \"backups_links\": [{\"rel\": \"next\", \"href\": ");
        tail.extend_from_slice(b"}]");
    }
    if let Some(count) = count {
        tail.extend_from_slice(format!(", \"count\": {count}").as_bytes());
    }
    tail.push(b'}');
    if !next {
        out.append(&mut tail);
    }
    (out, tail)
}

/// The summary view (`api/views/backups.py summary`): `id`, `name`, `links`.
fn write_summary(item: &Item, rewriter: &Rewriter<'_>, out: &mut Vec<u8>) {
    #[derive(serde::Deserialize)]
    struct Summary<'a> {
        #[serde(borrow)]
        name: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        links: Option<&'a serde_json::value::RawValue>,
    }
    let summary: Summary<'_> = serde_json::from_slice(item.raw()).unwrap_or(Summary {
        name: None,
        links: None,
    });
    out.extend_from_slice(b"{\"id\": ");
    out.extend_from_slice(
        serde_json::to_string(item.id())
            .expect("a string serialises")
            .as_bytes(),
    );
    out.extend_from_slice(b", \"name\": ");
    out.extend_from_slice(summary.name.map_or("null", |r| r.get()).as_bytes());
    out.extend_from_slice(b", \"links\": ");
    rewriter.write_json(summary.links.map_or("[]", |r| r.get()).as_bytes(), out);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::microversion::Version;

    #[test]
    fn next_link_rule_is_cinders() {
        let q = |raw: &str| ListQuery::parse(Some(raw), Version::new(3, 45), 1000).unwrap();
        assert!(next_link(&q("limit=2"), 2, None));
        assert!(!next_link(&q("limit=3"), 2, None));
        assert!(!next_link(&q("limit=0"), 0, None));
        // with_count quirk: a short page still links when count >= limit.
        assert!(next_link(&q("limit=5&with_count=true"), 2, Some(12)));
        assert!(!next_link(&q("limit=5&with_count=true"), 0, Some(12)));
        // count 0 falls back to the page length (`item_count or len(items)`).
        assert!(!next_link(&q("limit=5&with_count=true"), 2, Some(0)));
        // no limit: only a page of max_limit links.
        assert!(next_link(&q(""), 1000, None));
        assert!(!next_link(&q(""), 999, None));
    }
}
