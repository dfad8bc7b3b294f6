//! `GET /v3/{project}/backups[/detail]` and the VBS alias `/native/backups/detail`:
//! parse → resolve the marker → merge over the regions → render.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::Caller;
use crate::app::AppState;
use crate::cursor::{self, Cursor, Position};
use crate::fanout::{self, RegionSource};
use crate::item::Item;
use crate::links::Rewriter;
use crate::merge::{self, PageRequest, Start};
use crate::query::ListQuery;
use crate::sort::Comparator;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Detail,
    /// `GET .../backups`: `id`, `name`, `links` only.
    Summary,
}

pub async fn handle(State(state): State<Arc<AppState>>, request: Request, kind: Kind) -> Response {
    let (parts, _body) = request.into_parts();
    let caller = match Caller::from_parts(&state, &parts) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let version = caller.ctx.version;
    match list(&state, &parts, &caller, kind).await {
        Ok(response) => response,
        Err(e) => e.into_response_with(Some(version)),
    }
}

async fn list(
    state: &AppState,
    parts: &axum::http::request::Parts,
    caller: &Caller,
    kind: Kind,
) -> Result<Response, ApiError> {
    let scope = super::scope(parts.uri.path())?;
    let query = ListQuery::parse(
        parts.uri.query(),
        caller.ctx.version,
        state.config.server.max_limit,
    )?;
    let sort_param = query.sort.to_param();
    let regions = state.upstream.regions.len();
    let binding = cursor_binding(state, scope, caller, &query, &sort_param);
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
            let (region, item) =
                fanout::find_backup(state, scope, id, &fields, &caller.ctx).await?;
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

    let source = RegionSource {
        upstream: &state.upstream,
        scope,
        fields: &fields,
        ctx: &caller.ctx,
    };
    let request = PageRequest {
        filters: &query.filters,
        sort_param,
        comparator: &comparator,
        limit: query.limit,
        offset: query.offset,
        with_count: query.with_count,
        chunk: state.config.server.max_limit,
    };
    let page = merge::paginate(&source, request, starts).await;
    let missing = fanout::judge_failures(state, &page.failed, regions)?;
    for (region, item) in &page.items {
        state.id_regions.insert(item.id().to_string(), *region);
    }

    let rewriter = Rewriter {
        region_bases: &state.region_bases,
        public_base: &caller.public_base,
    };
    let next = next_link(&query, page.items.len(), page.count).then(|| {
        let cursor = Cursor {
            positions: page.positions.clone(),
        }
        .encode(&state.cursor_key, &binding);
        format!(
            "{}{}?{}",
            caller.public_base,
            parts.uri.path(),
            query.next_query(&cursor)
        )
    });
    let body = render(&page.items, kind, &rewriter, next.as_deref(), page.count);

    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    caller.response_headers(headers);
    if !missing.is_empty() {
        let names = HeaderValue::try_from(missing.join(",")).expect("region names are header-safe");
        headers.insert(super::MISSING_REGIONS, names);
    }
    Ok(response)
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
        crate::query::push_pair(&mut b, k, v);
    }
    for r in &state.upstream.regions {
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
/// copied from the regions' bytes with hrefs rewritten.
fn render(
    items: &[(usize, Item)],
    kind: Kind,
    rewriter: &Rewriter<'_>,
    next: Option<&str>,
    count: Option<u64>,
) -> Vec<u8> {
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
    if let Some(href) = next {
        out.extend_from_slice(b", \"backups_links\": [{\"rel\": \"next\", \"href\": ");
        out.extend_from_slice(
            serde_json::to_string(href)
                .expect("a string serialises")
                .as_bytes(),
        );
        out.extend_from_slice(b"}]");
    }
    if let Some(count) = count {
        out.extend_from_slice(format!(", \"count\": {count}").as_bytes());
    }
    out.push(b'}');
    out
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
