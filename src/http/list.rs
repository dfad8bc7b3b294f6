//! `GET /v3/{project}/backups[/detail]` and the VBS alias `/native/backups/detail`:
//! parse → resolve the marker → merge over the regions → render.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::Caller;
use crate::app::AppState;
use crate::cursor::{self, Cursor, Position};
use crate::fanout::{self, RegionSource};
use crate::links::Rewriter;
use crate::merge::{self, Item, PageRequest, Start};
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
    let project = &super::decode_segment(project_from_path(parts.uri.path()));
    let query = ListQuery::parse(
        parts.uri.query(),
        caller.ctx.version,
        state.config.server.max_limit,
    )?;
    let sort_param = query.sort.to_param();
    let source = RegionSource {
        upstream: &state.upstream,
        project,
        ctx: &caller.ctx,
    };
    let regions = state.upstream.regions.len();
    let binding = cursor_binding(state, project, caller, &query, &sort_param);

    // Cinder looks the marker up before it checks the sort keys; so does the proxy.
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
            let (region, item) = fanout::find_backup(state, project, id, &caller.ctx).await?;
            Marker::Backup(region, item)
        }
    };
    let comparator = Comparator {
        keys: query.sort.resolve()?,
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
                    let id = item.get("id").and_then(Value::as_str).map(str::to_string);
                    Start {
                        position: Position {
                            marker: id,
                            skip: 0,
                        },
                        after: None,
                    }
                } else {
                    // Other regions do not know this id: scan them past its sort values.
                    Start {
                        position: Position::default(),
                        after: Some(item.clone()),
                    }
                }
            })
            .collect(),
    };

    let page = merge::paginate(
        &source,
        PageRequest {
            filters: &query.filters,
            sort_param,
            comparator: &comparator,
            limit: query.limit,
            offset: query.offset,
            with_count: query.with_count,
            chunk: state.config.server.max_limit,
        },
        starts,
    )
    .await;
    let missing = fanout::judge_failures(state, &page.failed, regions)?;
    for (region, item) in &page.items {
        if let Some(id) = item.get("id").and_then(Value::as_str) {
            state.id_regions.insert(id.to_string(), *region);
        }
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
    let body = render(page.items, kind, &rewriter, next, page.count);

    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    caller.response_headers(headers);
    if !missing.is_empty() {
        headers.insert(
            super::MISSING_REGIONS,
            HeaderValue::try_from(missing.join(",")).expect("names are header-safe"),
        );
    }
    Ok(response)
}

/// `/v3/{project}/...`: the path segment after `v3`, as the client sent it.
fn project_from_path(path: &str) -> &str {
    path.trim_start_matches('/').split('/').nth(1).unwrap_or("")
}

/// A cursor is valid only for the query that produced it.
fn cursor_binding(
    state: &AppState,
    project: &str,
    caller: &Caller,
    query: &ListQuery,
    sort_param: &str,
) -> Vec<u8> {
    let mut b = format!("{project}\n{}\n{sort_param}\n", caller.ctx.version);
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

fn render(
    items: Vec<(usize, Item)>,
    kind: Kind,
    rewriter: &Rewriter<'_>,
    next: Option<String>,
    count: Option<u64>,
) -> String {
    let backups: Vec<Value> = items
        .into_iter()
        .map(|(_, mut item)| {
            rewriter.rewrite_map(&mut item);
            match kind {
                Kind::Detail => Value::Object(item),
                Kind::Summary => {
                    let mut summary = Map::with_capacity(3);
                    for key in ["id", "name", "links"] {
                        summary.insert(key.to_string(), item.remove(key).unwrap_or(Value::Null));
                    }
                    Value::Object(summary)
                }
            }
        })
        .collect();
    let mut body = Map::with_capacity(3);
    body.insert("backups".into(), Value::Array(backups));
    if let Some(href) = next {
        body.insert(
            "backups_links".into(),
            serde_json::json!([{"rel": "next", "href": href}]),
        );
    }
    if let Some(count) = count {
        body.insert("count".into(), count.into());
    }
    Value::Object(body).to_string()
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

    #[test]
    fn project_is_the_segment_after_v3() {
        assert_eq!(project_from_path("/v3/abc/backups/detail"), "abc");
        assert_eq!(project_from_path("/v3/abc/native/backups/detail"), "abc");
    }
}
