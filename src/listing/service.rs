//! The listing service: a request → its plan (marker or cursor → where each region starts) →
//! the merge over the regions (a [`merge::Source`]) → the rendered page. No HTTP types: the
//! handler in `http/list.rs` extracts, calls [`list`] (through the response cache) and answers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;

use super::cursor::{self, Cursor, CursorKey};
use super::links::Rewriter;
use super::merge::{self, PageRequest};
use super::plan::{self, Marker};
use super::positions::RememberedPositions;
use super::render;
use super::request::ListQuery;
use crate::cinder::resource::Resource;
use super::sort::Comparator;
use super::target::Target;
use std::mem::size_of;

use crate::cache::coalescing::{FetchOutcome, Fetching, Lookup};
use crate::cache::key::{Identity, Owner, ResponseKey};
use crate::cache::{Answer, Caches, ItemKey, RenderedPage};
use crate::config::Collation;
use crate::error::RequestError;
use crate::listing::source::{self, Asking, RegionSource};
use crate::regions::{CallContext, Regions};

/// What the listing needs to produce answers: the regions, the caches (region pages and the
/// id → region map), the cursor key, the remembered positions and its settings.
pub struct Lister {
    pub regions: Arc<Regions>,
    pub caches: Arc<Caches>,
    pub(crate) cursor_key: Arc<CursorKey>,
    /// Where each region stood after each row served: plain-id markers resume there.
    pub positions: RememberedPositions,
    /// Requests' targets already worked out, by raw request.
    pub targets: super::target::Targets,
    pub settings: Settings,
}

/// The listing's settings (`server.max_limit`, `merge.collation`, `upstream.partial_grace`,
/// `server.max_upstream_rows`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_limit: usize,
    pub collation: Collation,
    pub partial_grace: Option<Duration>,
    /// `upstream.suspect_grace`: a region that let a deadline pass is waited for only a grace.
    pub suspect_grace: bool,
    pub max_upstream_rows: u64,
}

/// The caller's request needs more of the regions than one request may take.
fn over_budget(max: u64) -> RequestError {
    RequestError::bad_request(format!(
        "Invalid input received: This listing would read more than {max} rows from the \
         regions (server.max_upstream_rows). Page with the marker of the previous page \
         instead of a deep offset."
    ))
}

/// A listing request, owned, so it can be produced in a task of its own.
pub struct ListRequest {
    /// What is asked, the same for every caller.
    pub target: Arc<Target>,
    pub ctx: CallContext,
    /// HMAC of the token: the caller's part of every cache key.
    pub identity: Identity,
    /// Keystone's word on the token, when Keystone was asked.
    pub token_info: Option<Arc<crate::identity::TokenInfo>>,
    /// The client asked for `Cache-Control: no-cache` (and that is honoured).
    pub refresh: bool,
}

impl ListRequest {
    /// Whose data its pages are, for purges (worked out when something is stored).
    /// The same request, made by the proxy itself to refresh a stale page nobody waits for.
    fn in_background(&self) -> ListRequest {
        ListRequest {
            target: self.target.clone(),
            ctx: CallContext {
                background: true,
                ..self.ctx.clone()
            },
            identity: self.identity,
            token_info: self.token_info.clone(),
            refresh: self.refresh,
        }
    }

    pub fn owner(&self) -> Owner {
        Owner::of(
            &self.target.scope,
            self.token_info.as_ref().and_then(|t| t.project_id.as_deref()),
            self.identity,
        )
    }
}

/// The answer to `request` from the response cache, or produced (once for every concurrent
/// request with the same key, in a task of its own) and stored when it is whole.
pub async fn answer(lister: &Arc<Lister>, request: Arc<ListRequest>) -> Lookup<Arc<Answer>> {
    let key = request.target.response_key(request.identity);
    let refresh = request.refresh;
    let producer = lister.clone();
    let produce = move |key: &ResponseKey, why: Fetching| {
        let request = match why {
            Fetching::ForRequests => request,
            Fetching::Refresh => Arc::new(request.in_background()),
        };
        // Fleet mode: the page may come from another replica (L2), under the same key.
        let shared_key = producer
            .caches
            .shared
            .as_ref()
            .filter(|_| producer.caches.enabled)
            .map(|_| *key);
        async move {
            match (&producer.caches.shared, shared_key) {
                (Some(shared), Some(key)) => {
                    let owner = request.owner();
                    shared
                        .fetch(&key, &owner, refresh, || produce(producer.clone(), request))
                        .await
                }
                _ => produce(producer.clone(), request).await,
            }
        }
    };
    lister.caches.responses.get(key, refresh, produce).await
}

/// The page for `request`, with whether to keep it: whole (every region answered from fresh
/// data), or failed (a region missing, or covered by a stale page: the layer's own stale entry,
/// if any, is the better answer).
async fn produce(producer: Arc<Lister>, request: Arc<ListRequest>) -> FetchOutcome<Arc<Answer>> {
    {
        // A page to produce needs the regions: within the project's limit (cache hits never
        // come here; nor does the proxy's own refresh of a page it served stale count).
        let tenant = crate::regions::tenant(&request.target.scope, &request.ctx.token);
        let admitted = match request.ctx.background {
            true => Ok(None),
            false => producer.regions.tenant_admits(&tenant).await.map(Some),
        };
        let answer = match admitted {
            Ok(_under_way) => list(&producer, &request).await,
            Err(refused) => Err(refused),
        };
        // Whole: every region answered from fresh data. A region missing, or covered by a
        // stale page, is a failure: the layer's own stale entry, if any, is the better answer.
        let whole = answer
            .as_ref()
            .is_ok_and(|p| p.missing_regions.is_none() && !p.degraded);
        let failed = match &answer {
            Ok(p) => p.missing_regions.is_some() || p.degraded,
            Err(e) => e.is_upstream_failure(),
        };
        let store = (producer.caches.enabled && whole).then(|| {
            // Its bytes; the layer adds the key's and its own bookkeeping.
            let size = answer.as_ref().map_or(0, RenderedPage::len) + size_of::<RenderedPage>();
            (size.min(u32::MAX as usize) as u32, request.owner())
        });
        FetchOutcome {
            value: Arc::new(answer),
            store,
            failed,
            age: Duration::ZERO,
        }
    }
}

/// The page for `request`: resolve its marker, merge the regions from there, remember where
/// the page left each region, render.
pub async fn list(lister: &Lister, request: &ListRequest) -> Result<RenderedPage, RequestError> {
    let Target {
        resource,
        scope,
        query,
        ..
    } = &*request.target;
    let ctx = &request.ctx;
    let sort_param = query.sort.to_param();
    let binding = cursor_binding(resource, &lister.regions, scope, ctx, query, &sort_param);
    // Cinder looks the marker up before it checks the sort keys; so does the proxy.
    let columns = query.sort.resolve(resource, ctx.version);
    let fields: Vec<&'static str> = columns
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|(c, _)| c.field)
        .collect();
    // Positions in a sort on columns that never change stay true; others are not remembered.
    let rememberable = columns
        .as_deref()
        .is_ok_and(|keys| keys.iter().all(|(c, _)| c.stable));
    // However the regions split the rows, a page past `offset` reads at least `offset +
    // limit` of them: refused before any region is asked.
    let max_rows = lister.settings.max_upstream_rows;
    if query.offset.saturating_add(query.limit as u64) > max_rows {
        return Err(over_budget(max_rows));
    }
    let marker = resolve_marker(lister, request, &binding, &fields, rememberable).await?;
    let comparator = Comparator {
        keys: columns?,
        collation: lister.settings.collation,
    };
    let asking = Asking {
        resource,
        scope,
        fields: &fields,
        ctx,
        identity: request.identity,
        owner: request.owner(),
        refresh: request.refresh,
    };
    let source = RegionSource::new(&lister.regions, &lister.caches, asking);
    let page_request = PageRequest {
        filters: &query.filters,
        sort_param,
        comparator: &comparator,
        limit: query.limit,
        offset: query.offset,
        with_count: query.with_count,
        chunk: lister.settings.max_limit,
        graces: merge::Graces {
            partial: lister.settings.partial_grace,
            suspect: match lister.settings.suspect_grace {
                true => lister.regions.iter().map(|r| r.guard.suspect_grace()).collect(),
                false => Vec::new(),
            },
        },
        record_positions: rememberable,
        max_rows,
    };
    let page = merge_from(lister, &source, page_request, &marker).await;
    if page.over_budget {
        return Err(over_budget(max_rows));
    }
    let missing = source::judge_failures(&lister.regions, &page.failed)?;
    remember(lister, request, &binding, &page, rememberable);
    let degraded = source.degraded.load(Ordering::Relaxed);
    if missing.is_empty() && !degraded {
        // Whole: the response layer keeps this page; its region pages need not be kept too.
        source.forget_pages();
    }
    Ok(render_page(lister, request, &binding, page, missing, degraded))
}

/// Where the page starts: nowhere in particular, a cursor of ours, or a client's plain id
/// (looked up in the regions, resumed from remembered positions when the proxy served that
/// row before).
async fn resolve_marker(
    lister: &Lister,
    request: &ListRequest,
    binding: &[u8],
    fields: &[&'static str],
    rememberable: bool,
) -> Result<Marker, RequestError> {
    let target = &request.target;
    let regions = lister.regions.len();
    Ok(match &target.query.marker {
        None => Marker::None,
        Some(m) if cursor::is_cursor(m) => Marker::Cursor(
            Cursor::decode(m, &lister.cursor_key, binding, regions)
                .map_err(|e| RequestError::bad_request(format!("Invalid marker: {e}.")))?,
        ),
        Some(id) => {
            // Looked up even when its positions are remembered: a row deleted since gets
            // Cinder's 404, as on the cold path.
            let (region, item) = source::find_item(
                target.resource,
                &lister.regions,
                &lister.caches,
                &target.scope,
                id,
                fields,
                &request.ctx,
            )
            .await?;
            let key = RememberedPositions::key(request.identity, binding, id);
            let found = match rememberable {
                true => lister.positions.find(&key).await,
                false => None,
            };
            match found {
                Some(positions) if positions.len() == regions => Marker::Remembered {
                    holder: region,
                    item,
                    positions,
                },
                _ => Marker::Id(region, item),
            }
        }
    })
}

/// The merge from `marker`'s starts. A remembered start whose row is gone from a region (or
/// rows before it were) is walked again cold: the cold path does not depend on them.
async fn merge_from(
    lister: &Lister,
    source: &RegionSource<'_>,
    page_request: PageRequest<'_>,
    marker: &Marker,
) -> merge::Page {
    let (regions, comparator) = (lister.regions.len(), page_request.comparator);
    let starts = plan::starts(marker, regions, comparator);
    let page = merge::paginate(source, page_request.clone(), starts).await;
    match marker {
        Marker::Remembered { holder, item, .. } => {
            let gone = page
                .failed
                .iter()
                .any(|(_, e)| e.status() == Some(http::StatusCode::NOT_FOUND));
            if gone || page.stale_start {
                lister.positions.cold.inc();
                let cold = Marker::Id(*holder, item.clone());
                let starts = plan::starts(&cold, regions, comparator);
                // One budget for the request: the walk again gets what the first left.
                let left = page_request.max_rows.saturating_sub(page.rows_read);
                let again = PageRequest {
                    max_rows: left,
                    ..page_request
                };
                return merge::paginate(source, again, starts).await;
            }
            lister.positions.remembered.inc();
        }
        Marker::Id(..) => {
            lister.positions.cold.inc();
        }
        Marker::None | Marker::Cursor(_) => {}
    }
    page
}

/// What the page teaches: which region holds each id (for show and plain-id markers; one
/// region holds them all), and where each region stood after the rows clients take their next
/// marker from (only a whole page's positions are exact for every region).
fn remember(
    lister: &Lister,
    request: &ListRequest,
    binding: &[u8],
    page: &merge::Page,
    rememberable: bool,
) {
    if lister.regions.len() > 1 {
        for (region, item) in &page.items {
            let key = ItemKey::of(request.target.resource.collection, item.id());
            // Most rows listed were listed before, by the same region: a lookup (which also
            // keeps the entry popular) costs a fraction of an insert (its write, the
            // eviction policy's housekeeping): 6 % of a real miss in perf when every row was
            // inserted again.
            if lister.caches.holders.get(&key) != Some(*region) {
                lister.caches.holders.insert(key, *region);
            }
        }
    }
    if rememberable && page.failed.is_empty() {
        // Kept for the rows clients take their next marker from (positions.rs,
        // REMEMBERED_ROWS), not for every row.
        let entries = page
            .items
            .iter()
            .enumerate()
            .rev()
            .take(super::positions::REMEMBERED_ROWS)
            .map(|(i, (_, item))| {
                let key = RememberedPositions::key(request.identity, binding, item.id());
                let after: Arc<[_]> = page.after(i).iter().map(merge::Passed::position).collect();
                (key, after)
            })
            .collect();
        lister.positions.remember(entries);
    }
}

/// Cinder's envelope around the page's rows (links on the proxy), split around the next
/// link's marker (a cursor over where each region stands), with its validator.
fn render_page(
    lister: &Lister,
    request: &ListRequest,
    binding: &[u8],
    page: merge::Page,
    missing: Vec<String>,
    degraded: bool,
) -> RenderedPage {
    let target = &request.target;
    let rewriter = Rewriter::new(&lister.regions.bases, &target.public_base);
    let next_marker = render::next_link(&target.query, page.items.len(), page.count).then(|| {
        let cursor = Cursor {
            positions: page.positions.clone(),
        }
        .encode(&lister.cursor_key, binding);
        super::target::marker_in_link(&cursor)
    });
    let (head, tail) = render::render(
        target.resource,
        &page.items,
        target.view,
        &rewriter,
        next_marker.is_some(),
        page.count,
    );
    let etag = RenderedPage::etag_for(&head, next_marker.as_deref(), &tail);
    // The buffers grew by doubling: the cached page keeps its bytes, not up to twice as many.
    let (mut head, mut tail) = (head, tail);
    head.shrink_to_fit();
    tail.shrink_to_fit();
    RenderedPage {
        head: Bytes::from(head),
        next_marker,
        tail: Bytes::from(tail),
        etag: Some(etag),
        missing_regions: (!missing.is_empty()).then(|| {
            HeaderValue::try_from(missing.join(",")).expect("region names are header-safe")
        }),
        degraded,
        calls: page.calls.iter().sum(),
    }
}

/// A cursor is valid only for the query that produced it.
fn cursor_binding(
    resource: &Resource,
    regions: &Regions,
    scope: &str,
    ctx: &CallContext,
    query: &ListQuery,
    sort_param: &str,
) -> Vec<u8> {
    // The collection too: a cursor of one resource is not valid for another.
    let mut b = format!(
        "{}\n{scope}\n{}\n{sort_param}\n",
        resource.collection, ctx.version
    );
    for (k, v) in &query.filters {
        crate::cinder::query::push_pair(&mut b, k, v);
    }
    for r in regions.iter() {
        b.push('\n');
        b.push_str(&r.name);
    }
    b.into_bytes()
}
