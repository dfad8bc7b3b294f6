//! Dashboard paging with plain ids (issue: Horizon asks `limit=N+1` and passes the id of the
//! N-th row it showed as `marker`). With the positions of each page's last rows remembered, each
//! page costs the regions about `regions × (limit + 1)` rows plus the marker look-up, at any
//! depth; with them forgotten (the cold path) the answer is the same, only dearer.

use std::sync::atomic::Ordering;

use cinder_sim::{Backup, SimConfig};

use crate::support::{backup, Harness, PROJECT};

const REGIONS: usize = 3;
const PER_REGION: usize = 1000;

/// 3 × 1,000 rows, interleaved in time across the regions, sizes 1–7 (so `size` has ties),
/// or 0–6 with `zero_sizes` (0 is the column's default: unsafe as an upstream marker).
fn rows(region: usize, zero_sizes: bool) -> Vec<Backup> {
    (0..PER_REGION)
        .map(|i| {
            let minute = i * REGIONS + region;
            let mut b = backup(
                &format!("r{region}-{i:04}"),
                &format!(
                    "2024-01-{:02}T{:02}:{:02}:00.000000",
                    1 + minute / 1440,
                    minute / 60 % 24,
                    minute % 60
                ),
            );
            b.size = ((i * 7 + region * 3) % 7) as i64 + i64::from(!zero_sizes);
            b
        })
        .collect()
}

async fn world(zero_sizes: bool) -> Harness {
    Harness::start(
        (0..REGIONS)
            .map(|r| (SimConfig::default(), rows(r, zero_sizes)))
            .collect(),
        "",
    )
    .await
}

/// Every row in the order `sort` gives (as the reference Cinder over the union would; the
/// rows' status is the same, so a status sort falls to created_at and id).
fn union_order(h: &Harness, sort: &str) -> Vec<String> {
    let mut all: Vec<Backup> = h
        .regions
        .iter()
        .flat_map(|r| r.backups.read().unwrap().clone())
        .collect();
    match sort {
        "size:asc" => {
            all.sort_by(|a, b| (a.size, &a.created_at, &a.id).cmp(&(b.size, &b.created_at, &b.id)))
        }
        "status:asc" => all.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id))),
        "created_at:desc,id:desc" => {
            all.sort_by(|a, b| (&b.created_at, &b.id).cmp(&(&a.created_at, &a.id)))
        }
        _ => panic!("no reference order for {sort}"),
    }
    all.into_iter().map(|b| b.id).collect()
}

fn rows_sent(h: &Harness) -> usize {
    h.regions
        .iter()
        .map(|r| r.rows_sent.load(Ordering::SeqCst))
        .sum()
}

/// One Horizon-style page: `limit = shown + 1`, the marker of the last row shown before.
async fn page(h: &Harness, sort: &str, shown: usize, marker: Option<&str>) -> (Vec<String>, usize) {
    let before = rows_sent(h);
    let mut path = format!(
        "/v3/{PROJECT}/backups/detail?sort={sort}&limit={}",
        shown + 1
    );
    if let Some(m) = marker {
        path.push_str(&format!("&marker={m}"));
    }
    let reply = h
        .get_with(
            &path,
            &[
                ("X-Auth-Token", crate::support::TOKEN),
                ("Cache-Control", "no-cache"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    (reply.ids(), rows_sent(h) - before)
}

/// Walk `pages` pages; per page, the ids must be the union's and the rows the regions sent
/// within `bound(page number)`. Returns the rows sent per page.
async fn walk(
    h: &Harness,
    sort: &str,
    shown: usize,
    pages: usize,
    cold: bool,
    bound: impl Fn(usize) -> usize,
) -> Vec<usize> {
    let order = union_order(h, sort);
    let mut cost = Vec::new();
    let mut marker: Option<String> = None;
    for n in 0..pages {
        if cold {
            h.state.lister.positions.clear();
        }
        let (ids, sent) = page(h, sort, shown, marker.as_deref()).await;
        let from = n * shown;
        let want = &order[from..(from + shown + 1).min(order.len())];
        assert_eq!(
            ids,
            want,
            "page {} ({sort}, {shown} a page, cold: {cold})",
            n + 1
        );
        assert!(
            sent <= bound(n + 1),
            "page {}: the regions sent {sent} rows (bound {})",
            n + 1,
            bound(n + 1)
        );
        cost.push(sent);
        marker = Some(ids[shown - 1].clone());
    }
    cost
}

#[tokio::test]
async fn remembered_plain_markers_cost_a_page_at_any_depth() {
    let h = world(false).await;
    for (sort, shown, pages) in [("created_at:desc,id:desc", 50, 59), ("size:asc", 20, 149)] {
        // At most every region's `limit + 1` rows, plus the marker's look-up (one row).
        let bound = |_page: usize| REGIONS * (shown + 1) + 1;
        let cost = walk(&h, sort, shown, pages, false, bound).await;
        eprintln!(
            "remembered, sort={sort}, {shown} a page: rows sent at page 1 {}, page 40 {}, max {}",
            cost[0],
            cost[39],
            cost.iter().max().unwrap()
        );
    }
    assert!(h.state.lister.positions.remembered.get() > 150);
}

/// Where the rows before a position have the column's default (`size` 0, NULL), the region
/// resumes one row earlier and checks that row still sorts before the marker: one more row
/// per region.
#[tokio::test]
async fn positions_after_default_values_cost_one_row_more_per_region() {
    let h = world(true).await;
    let (shown, pages) = (20, 60);
    let cost = walk(&h, "size:asc", shown, pages, false, |_| {
        REGIONS * (shown + 2) + 1
    })
    .await;
    eprintln!(
        "remembered, sort=size:asc with size 0 rows: rows sent at page 1 {}, page 40 {}",
        cost[0], cost[39]
    );
}

/// A sort on a column that changes (`status`) is never remembered: a row's move would move
/// the position. Exact all the same.
#[tokio::test]
async fn sorts_on_changing_columns_take_the_cold_path() {
    let h = world(false).await;
    walk(&h, "status:asc", 50, 5, false, |_| usize::MAX).await;
    assert_eq!(h.state.lister.positions.remembered.get(), 0);
    assert_eq!(h.state.lister.positions.cold.get(), 4);
}

#[tokio::test]
async fn cold_plain_markers_are_still_exact() {
    let h = world(false).await;
    for (sort, shown, pages) in [("created_at:desc,id:desc", 50, 45), ("size:asc", 20, 45)] {
        // Cold: the regions that do not hold the marker are read from their start.
        let cost = walk(&h, sort, shown, pages, true, |_| usize::MAX).await;
        eprintln!(
            "cold, sort={sort}, {shown} a page: rows sent at page 1 {}, page 40 {}",
            cost[0], cost[39]
        );
        assert!(
            cost[39] > cost[0],
            "a cold page deep in the walk reads more"
        );
    }
    assert_eq!(h.state.lister.positions.remembered.get(), 0);
}

#[tokio::test]
async fn a_remembered_row_deleted_since_gets_the_cold_answer() {
    let h = world(false).await;
    let sort = "created_at:desc,id:desc";
    let (first, _) = page(&h, sort, 50, None).await;
    // Another region's last row before a remembered marker (the page's last row) deleted: its
    // remembered position is gone, the page is still the union's, by the cold path.
    let marker = first[50].clone();
    let remembered = h.state.lister.positions.remembered.get();
    page(&h, sort, 50, Some(&marker)).await;
    assert_eq!(
        h.state.lister.positions.remembered.get(),
        remembered + 1,
        "the page's last row is remembered"
    );
    let holder = &marker[..2];
    let other = first[..50]
        .iter()
        .rev()
        .find(|id| !id.starts_with(holder))
        .unwrap()
        .clone();
    delete(&h, &other);
    let (remembered_before, cold_before) = (
        h.state.lister.positions.remembered.get(),
        h.state.lister.positions.cold.get(),
    );
    let (ids, _) = page(&h, sort, 50, Some(&marker)).await;
    let order = union_order(&h, sort);
    let at = order.iter().position(|id| *id == marker).unwrap();
    assert_eq!(ids, &order[at + 1..at + 52]);
    assert_eq!(h.state.lister.positions.cold.get(), cold_before + 1);
    assert_eq!(
        h.state.lister.positions.remembered.get(),
        remembered_before,
        "found remembered, then its region's row was missing"
    );
    // A remembered marker itself deleted: Cinder's 404, remembered or not.
    let gone = first[49].clone();
    delete(&h, &gone);
    let reply = h
        .get(
            &format!("/v3/{PROJECT}/backups/detail?sort={sort}&limit=51&marker={gone}"),
            None,
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    assert_eq!(
        reply.json()["itemNotFound"]["message"],
        format!("Backup {gone} could not be found.")
    );
}

/// Delete row `id` (`r{region}-...`) from its region.
fn delete(h: &Harness, id: &str) {
    let region: usize = id[1..2].parse().unwrap();
    h.regions[region]
        .backups
        .write()
        .unwrap()
        .retain(|b| b.id != id);
}
