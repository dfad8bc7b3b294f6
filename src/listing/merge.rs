//! Merge and re-paginate: a k-way merge over the regions' sorted listings that answers what
//! one Cinder holding the union would answer.
//!
//! Each region is read lazily from a [`Position`], in chunks, only as far as the page needs:
//! a page costs about `regions × (offset + limit)` upstream items however deep it is. A region
//! is continued with Cinder's `marker` only when the last row passed is safe as a marker (see
//! [`Comparator::safe_marker`]); past NULL/default sort values it is continued with `offset`
//! from the last safe marker, which avoids Cinder's own paging bug on nullable keys.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use crate::listing::cursor::Position;
pub use crate::cinder::item::{Item, ListPage};
use crate::listing::sort::Comparator;
use crate::regions::RegionError;

/// Reads one chunk of a region's listing. `params` are complete (filters, sort, limit,
/// marker, offset, with_count); items come parsed for the page's comparator.
pub trait Source {
    fn list(
        &self,
        region: usize,
        params: Vec<(String, String)>,
    ) -> impl Future<Output = Result<ListPage, RegionError>> + Send;
}

/// Where one region starts for this page.
#[derive(Debug, Clone, Default)]
pub struct Start {
    pub position: Position,
    /// Rows that sort at or before this item are passed over (a client's plain marker from
    /// another region, or one that is unsafe as an upstream marker).
    pub after: Option<Item>,
    /// The position was remembered just after `after` was shown, less this many rows (none
    /// or one) read again: the first call asks for the page plus these rather than a whole
    /// chunk, and a re-read row must still sort at or before `after`. If it does not, rows
    /// were deleted since and the page is marked [`Page::stale_start`].
    pub(crate) reread: Option<u64>,
}

#[derive(Clone)]
pub struct PageRequest<'a> {
    pub filters: &'a [(String, String)],
    pub sort_param: String,
    pub comparator: &'a Comparator,
    pub limit: usize,
    pub offset: u64,
    pub with_count: bool,
    /// The most rows asked of a region in one call (the proxy's `max_limit`).
    pub chunk: usize,
    /// How long the page waits for a region once the others have answered.
    pub graces: Graces,
    /// Keep where every region stood after each item ([`Page::after_each`]).
    pub record_positions: bool,
    /// The most rows this page may read from the regions, all calls together
    /// (`server.max_upstream_rows`, less what an earlier walk for the same request read).
    pub max_rows: u64,
}

/// How long a page waits for a region once the others have answered, before it goes on
/// without it (a straggler: missing from this page; its call goes on in the region-page
/// cache's task, and its answer is there for the next request).
#[derive(Debug, Clone, Default)]
pub struct Graces {
    /// `upstream.partial_grace`: for the last region, once every other has answered.
    pub partial: Option<Duration>,
    /// Per region: a region that let a deadline pass and has not answered since
    /// (`regions/guard/pace.rs`) gets this long once every region that is not suspect has
    /// answered, however many others are still out.
    pub suspect: Vec<Option<Duration>>,
}

impl Graces {
    fn suspect(&self, region: usize) -> Option<Duration> {
        self.suspect.get(region).copied().flatten()
    }
}

#[derive(Debug, Default)]
pub struct Page {
    /// (region index, item), in order.
    pub items: Vec<(usize, Item)>,
    /// Where each region stands after the page's last item.
    pub positions: Vec<Position>,
    /// Where each region stood just after each item, when asked for: one row of as many
    /// as there are regions per item of `items` (see [`Page::after`]).
    pub(crate) after_each: Vec<Passed>,
    /// A remembered start no longer held (see [`Start::reread`]): the page is not exact.
    pub(crate) stale_start: bool,
    /// Sum of the answering regions' counts, when asked for.
    pub count: Option<u64>,
    /// Regions that failed, with why; they contributed nothing after failing.
    pub failed: Vec<(usize, RegionError)>,
    /// Upstream calls made, per region.
    pub calls: Vec<u32>,
    /// Rows read from the regions, all calls together.
    pub rows_read: u64,
    /// The page needed more than `max_rows` rows: it is not complete, and not an answer.
    pub over_budget: bool,
}

/// Where a walk stands in one region while the page is merged: a [`Position`] whose marker
/// is kept as the row itself (a reference count) rather than a copy of its id, since it moves
/// with every row passed and only a few of its values are ever kept
/// ([`Passed::position`]).
#[derive(Debug, Clone)]
pub(crate) struct Passed {
    marker: PassedMarker,
    skip: u64,
}

#[derive(Debug, Clone)]
enum PassedMarker {
    /// The page's start, as given.
    Given(Option<String>),
    /// A row passed on this page.
    Row(Item),
}

impl Passed {
    fn new(start: Position) -> Passed {
        Passed {
            marker: PassedMarker::Given(start.marker),
            skip: start.skip,
        }
    }

    pub(crate) fn position(&self) -> Position {
        Position {
            marker: match &self.marker {
                PassedMarker::Given(marker) => marker.clone(),
                PassedMarker::Row(item) => Some(item.id().to_string()),
            },
            skip: self.skip,
        }
    }
}

impl Page {
    /// Where each region stood just after item `i` (when positions were recorded).
    pub(crate) fn after(&self, i: usize) -> &[Passed] {
        let regions = self.positions.len();
        &self.after_each[i * regions..(i + 1) * regions]
    }
}

struct Reader {
    passed: Passed,
    fetched: Passed,
    buffer: VecDeque<Item>,
    after: Option<Item>,
    reread: Option<u64>,
    /// A re-read row sorted after the bound.
    stale: bool,
    exhausted: bool,
    failed: bool,
    count: Option<u64>,
    calls: u32,
}

impl Reader {
    fn needs_fetch(&self) -> bool {
        !self.failed && !self.exhausted && self.buffer.is_empty()
    }
}

fn advance(position: &mut Passed, item: &Item, cmp: &Comparator) {
    if cmp.safe_marker(item) {
        position.marker = PassedMarker::Row(item.clone());
        position.skip = 0;
    } else {
        position.skip += 1;
    }
}

pub async fn paginate<S: Source>(source: &S, req: PageRequest<'_>, starts: Vec<Start>) -> Page {
    let cmp = req.comparator;
    let need = req.offset.saturating_add(req.limit as u64);
    let mut readers: Vec<Reader> = starts
        .into_iter()
        .map(|s| Reader {
            passed: Passed::new(s.position.clone()),
            fetched: Passed::new(s.position),
            buffer: VecDeque::new(),
            after: s.after,
            reread: s.reread,
            stale: false,
            exhausted: false,
            failed: false,
            count: None,
            calls: 0,
        })
        .collect();
    let mut failed = Vec::new();
    let mut budget = Budget {
        left: req.max_rows,
        read: 0,
        exceeded: false,
    };
    let mut passed_total: u64 = 0;
    let mut emitted: Vec<(usize, Item)> = Vec::with_capacity(req.limit.min(1024));
    let mut after_each: Vec<Passed> = Vec::new();
    if req.record_positions {
        after_each.reserve(req.limit.min(1024) * readers.len());
    }
    // The last row emitted: the same backup at another region's head is passed over.
    let mut last: Option<Item> = None;

    let remaining = |passed: u64| need - passed.min(need);
    fill(
        source,
        &req,
        remaining(0),
        &mut readers,
        &mut failed,
        &mut budget,
    )
    .await;
    while emitted.len() < req.limit && !budget.exceeded {
        fill(
            source,
            &req,
            remaining(passed_total),
            &mut readers,
            &mut failed,
            &mut budget,
        )
        .await;
        if budget.exceeded {
            break;
        }
        // The smallest head; ties go to the lower region index.
        let mut best: Option<usize> = None;
        for (i, r) in readers.iter().enumerate() {
            if let Some(head) = r.buffer.front() {
                if best.is_none_or(|b| {
                    cmp.compare(head, readers[b].buffer.front().expect("head"))
                        .is_lt()
                }) {
                    best = Some(i);
                }
            }
        }
        let Some(i) = best else { break };
        let item = readers[i].buffer.pop_front().expect("head");
        advance(&mut readers[i].passed, &item, cmp);
        if last.as_ref().map(Item::id) == Some(item.id()) {
            continue; // the same backup from another region: returned once
        }
        last = Some(item.clone());
        passed_total += 1;
        if passed_total > req.offset {
            emitted.push((i, item));
            if req.record_positions {
                after_each.extend(readers.iter().map(|r| r.passed.clone()));
            }
        }
    }
    // A duplicate of the last item still waiting at another region's head belongs to this
    // page, or the next page would start with it.
    if let Some(last) = &last {
        for r in readers.iter_mut() {
            while r.buffer.front().map(Item::id) == Some(last.id()) {
                let item = r.buffer.pop_front().expect("head");
                advance(&mut r.passed, &item, cmp);
            }
        }
    }
    let count = req.with_count.then(|| {
        readers
            .iter()
            .filter(|r| !r.failed)
            .map(|r| r.count.unwrap_or(0))
            .sum()
    });
    Page {
        items: emitted,
        count,
        calls: readers.iter().map(|r| r.calls).collect(),
        stale_start: readers.iter().any(|r| r.stale),
        positions: readers.iter().map(|r| r.passed.position()).collect(),
        after_each,
        failed,
        rows_read: budget.read,
        over_budget: budget.exceeded,
    }
}

/// What a page may still read from the regions.
struct Budget {
    left: u64,
    read: u64,
    /// A call was needed that the budget could not pay for.
    exceeded: bool,
}

/// Make sure every live region has a head to compare (or is known to be exhausted): pass over
/// rows before each region's `after` bound and fetch where the buffer ran dry.
async fn fill<S: Source>(
    source: &S,
    req: &PageRequest<'_>,
    remaining: u64,
    readers: &mut [Reader],
    failed: &mut Vec<(usize, RegionError)>,
    budget: &mut Budget,
) {
    let cmp = req.comparator;
    let chunk = req.chunk;
    loop {
        for r in readers.iter_mut() {
            pass_over_bound(r, cmp);
        }
        let needy: Vec<usize> = (0..readers.len())
            .filter(|&i| {
                readers[i].needs_fetch()
                    && (readers[i].calls == 0 || remaining > 0 || readers[i].after.is_some())
            })
            .collect();
        if needy.is_empty() {
            return;
        }
        let wants: Vec<usize> = needy
            .iter()
            .map(|&i| {
                let r = &readers[i];
                // Scanning past a bound: rows passed over do not count toward the page.
                match (&r.after, r.reread) {
                    (Some(_), Some(reread)) if r.calls == 0 => {
                        remaining.saturating_add(reread).min(chunk as u64) as usize
                    }
                    (Some(_), _) => chunk,
                    (None, _) => remaining.min(chunk as u64) as usize,
                }
            })
            .collect();
        // Every row these calls may bring is paid for before they are made: a request's cost
        // to the regions is bounded whatever its offset or marker.
        let cost: u64 = wants.iter().map(|&w| w as u64).sum();
        if cost > budget.left {
            budget.exceeded = true;
            return;
        }
        budget.left -= cost;
        let calls = needy.iter().zip(&wants).map(|(&i, &want)| {
            let r = &readers[i];
            let params = chunk_params(req, want, &r.fetched.position(), req.with_count && r.calls == 0);
            async move { (i, want, source.list(i, params).await) }
        });
        let asked = needy.clone();
        let mut answers = join_with_grace(calls.collect(), &asked, &req.graces).await;
        // A region the grace gave up on is a straggler: missing from this page.
        for &i in &asked {
            if !answers.iter().any(|(j, _, _)| *j == i) {
                answers.push((i, 0, Err(RegionError::Straggler)));
            }
        }
        for (i, want, result) in answers {
            let r = &mut readers[i];
            r.calls += 1;
            match result {
                Ok(page) => {
                    if r.calls == 1 {
                        r.count = page.count;
                        if r.reread.is_some_and(|n| n > 0) {
                            let bound = r.after.as_ref().expect("a remembered start has a bound");
                            r.stale = page
                                .items
                                .first()
                                .is_none_or(|first| cmp.compare(first, bound).is_gt());
                        }
                    }
                    // Empty, or short without a next link: nothing more here. A short page with
                    // a link is the region's own osapi_max_limit; keep reading.
                    r.exhausted =
                        page.items.is_empty() || (page.items.len() < want && !page.has_next);
                    budget.read += page.items.len() as u64;
                    for item in page.items {
                        advance(&mut r.fetched, &item, cmp);
                        r.buffer.push_back(item);
                    }
                }
                Err(e) => {
                    r.failed = true;
                    r.buffer.clear();
                    failed.push((i, e));
                }
            }
        }
    }
}

/// Every call's answer, as (region, rows wanted, result), but for the stragglers given up by
/// their grace (see [`Graces`]): once every call to a region that is not suspect has
/// answered, the suspect ones get the longest of their graces (from the last answer, or from
/// the start when all are suspect); with `partial`, once every call but one has answered,
/// the last gets that long (or its own grace, if shorter).
async fn join_with_grace<F>(
    calls: Vec<F>,
    regions: &[usize],
    graces: &Graces,
) -> Vec<(usize, usize, Result<ListPage, RegionError>)>
where
    F: Future<Output = (usize, usize, Result<ListPage, RegionError>)>,
{
    use futures::stream::{FuturesUnordered, StreamExt};
    let total = calls.len();
    let any_suspect = regions.iter().any(|&i| graces.suspect(i).is_some());
    if !any_suspect && (graces.partial.is_none() || total < 2) {
        return futures::future::join_all(calls).await;
    }
    let mut out: Vec<usize> = regions.to_vec();
    let mut pending: FuturesUnordered<F> = calls.into_iter().collect();
    let mut done = Vec::with_capacity(total);
    let mut last_answer = tokio::time::Instant::now();
    while !out.is_empty() {
        let trusted_out = out.iter().filter(|&&i| graces.suspect(i).is_none()).count();
        let suspects_grace = out.iter().filter_map(|&i| graces.suspect(i)).max();
        let last_one = (out.len() == 1 && total > 1).then_some(graces.partial).flatten();
        let grace = match (trusted_out, suspects_grace, last_one) {
            (0, Some(g), Some(p)) => Some(g.min(p)),
            (0, Some(g), None) => Some(g),
            (_, _, Some(p)) => Some(p),
            _ => None,
        };
        let next = match grace {
            None => pending.next().await,
            Some(grace) => match tokio::time::timeout_at(last_answer + grace, pending.next()).await {
                Ok(next) => next,
                Err(_) => break, // the rest are stragglers
            },
        };
        let Some(answer) = next else { break };
        last_answer = tokio::time::Instant::now();
        out.retain(|&i| i != answer.0);
        done.push(answer);
    }
    done
}

fn pass_over_bound(r: &mut Reader, cmp: &Comparator) {
    let Some(bound) = &r.after else { return };
    while let Some(head) = r.buffer.front() {
        if cmp.compare(head, bound).is_gt() {
            r.after = None;
            return;
        }
        let item = r.buffer.pop_front().expect("head");
        advance(&mut r.passed, &item, cmp);
    }
    if r.exhausted || r.failed {
        r.after = None;
    }
}

fn chunk_params(
    req: &PageRequest<'_>,
    want: usize,
    from: &Position,
    with_count: bool,
) -> Vec<(String, String)> {
    let mut params = req.filters.to_vec();
    params.push(("sort".into(), req.sort_param.clone()));
    params.push(("limit".into(), want.to_string()));
    if let Some(marker) = &from.marker {
        params.push(("marker".into(), marker.clone()));
    }
    if from.skip > 0 {
        params.push(("offset".into(), from.skip.to_string()));
    }
    if with_count {
        params.push(("with_count".into(), "true".into()));
    }
    params
}
