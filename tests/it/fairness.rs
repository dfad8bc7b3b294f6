//! Issue 25: the regions' capacity is shared between projects, not handed out in arrival
//! order. One project floods with listings that always miss while another asks for a page at
//! a time; with `rate_limit = 10` and every other key at its default (`queue_timeout` 100 ms),
//! the quiet project's answers are all complete, and the regions are held to their rate.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use cinder_sim::SimConfig;

use crate::support::{rows, Harness};

const NOISY: &str = "noisy00";
const QUIET: &str = "quiet00";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quiet_project_is_served_while_another_floods() {
    // Each region holds three backups of each project.
    let mut regions = Vec::new();
    for r in 0..3 {
        let mut backups = rows(&format!("n{r}"), 3);
        for b in &mut backups {
            b.project_id = NOISY.into();
        }
        let mut quiet = rows(&format!("q{r}"), 3);
        for b in &mut quiet {
            b.project_id = QUIET.into();
        }
        backups.extend(quiet);
        regions.push((SimConfig::default(), backups));
    }
    let h = Arc::new(Harness::start(regions, "[upstream]\nrate_limit = 10\n").await);
    let flooding = Arc::new(AtomicBool::new(true));
    let noisy_sent = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    // Twelve clients of one project, each listing with an offset of its own (always a miss),
    // until the quiet project is done (at most 300 requests each).
    let flood: Vec<_> = (0..12)
        .map(|c| {
            let (h, flooding, sent) = (h.clone(), flooding.clone(), noisy_sent.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..300 {
                    if !flooding.load(Ordering::SeqCst) {
                        break;
                    }
                    // A filter of its own: the regions must be asked every time.
                    let path = format!("/v3/{NOISY}/backups/detail?name=n{c}-{i}");
                    let token = [("X-Auth-Token", format!("u:{NOISY}"))];
                    let token: Vec<(&str, &str)> =
                        token.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let r = h.get_with(&path, &token).await;
                    let degraded = r.header("x-aggregate-missing-regions").is_some();
                    statuses.push((r.status, degraded));
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                statuses
            })
        })
        .collect();
    // The flood is on before the quiet project asks.
    crate::support::until("the flood is on", || {
        noisy_sent.load(Ordering::SeqCst) >= 24
    })
    .await;
    let quiet_token = format!("u:{QUIET}");
    let mut incomplete = Vec::new();
    // A page every 0.6 s (pacing the quiet client, not waiting for anything).
    let mut pace = tokio::time::interval(std::time::Duration::from_millis(600));
    for i in 0..8 {
        pace.tick().await;
        let path = format!("/v3/{QUIET}/backups/detail?offset={i}&limit=1000");
        let r = h.get_with(&path, &[("X-Auth-Token", &quiet_token)]).await;
        let expected = 9usize.saturating_sub(i);
        let complete = r.status == 200
            && r.header("x-aggregate-missing-regions").is_none()
            && r.ids().len() == expected;
        if !complete {
            incomplete.push((i, r.status, r.text.chars().take(200).collect::<String>()));
        }
    }
    flooding.store(false, Ordering::SeqCst);
    let mut noisy = Vec::new();
    for task in flood {
        noisy.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut by_status = std::collections::BTreeMap::new();
    for status in &noisy {
        *by_status.entry(*status).or_insert(0) += 1;
    }
    let calls: Vec<usize> = h.regions.iter().map(|r| r.calls()).collect();
    assert!(
        incomplete.is_empty(),
        "the quiet project's incomplete answers (the flood's statuses {by_status:?}, \
         region calls {calls:?}, {elapsed:.1} s): {incomplete:?}"
    );
    // The regions were contended: the flood did not get everything it asked for.
    assert!(noisy.len() > 100, "the flood sent {}", noisy.len());
    assert!(
        noisy
            .iter()
            .any(|&(status, degraded)| status != 200 || degraded),
        "the flood was never refused: {by_status:?}"
    );
    // Waiting turns are visible, per region (no label per project).
    let waited = h
        .metric("vbs_upstream_queue_wait_seconds_count{region=\"r0\"}")
        .await;
    let waited: f64 = waited.expect("queue waits are scraped").parse().unwrap();
    assert!(waited > 0.0, "no call waited its turn at r0");
    let waiting = h.metric("vbs_upstream_flows_waiting{region=\"r0\"}").await;
    assert!(waiting.is_some(), "projects waiting are scraped");
    // Each region held to its rate: a second's burst, then ten a second.
    for (i, region) in h.regions.iter().enumerate() {
        let calls = region.calls() as f64;
        assert!(
            calls <= 10.0 + 10.0 * elapsed + 1.0,
            "r{i}: {calls} calls in {elapsed:.1} s"
        );
    }
}

/// `[tenants]`: one project past its rate and burst gets 429 `overLimit` with `Retry-After`
/// before any region is asked, for listings, shows and pass-through alike; its cache hits are
/// still served, another project is untouched, and the refusal is neither cached nor counted
/// against the regions.
#[tokio::test]
async fn a_project_past_its_limit_gets_429_and_its_cache_hits() {
    let h = Harness::start(
        vec![
            (SimConfig::default(), rows("a", 2)),
            (SimConfig::default(), rows("b", 2)),
        ],
        "[tenants]\nrate = 0.01\nburst = 2\n[cache]\nttl = \"60s\"\n",
    )
    .await;
    let get = |project: &str, path: &str| {
        let (h, token) = (&h, format!("u:{project}"));
        let path = format!("/v3/{project}/{path}");
        async move { h.get_with(&path, &[("X-Auth-Token", &token)]).await }
    };
    assert_eq!(get(NOISY, "backups/detail?limit=1").await.status, 200);
    let hit = get(NOISY, "backups/detail?limit=1").await;
    assert_eq!(hit.status, 200, "a cache hit is not counted");
    assert_eq!(get(NOISY, "backups/detail?limit=2").await.status, 200);
    let asked = h.total_calls();
    for path in ["backups/detail?limit=3", "backups/b-000", "types"] {
        let refused = get(NOISY, path).await;
        assert_eq!(refused.status, 429, "{path}: {}", refused.text);
        let fault = &refused.json()["overLimit"];
        assert_eq!(fault["code"], 429);
        let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!(wait >= 1, "{path}: Retry-After {wait}");
        assert_eq!(fault["retryAfter"], wait.to_string());
    }
    assert_eq!(
        h.total_calls(),
        asked,
        "no region was asked for a refused request"
    );
    // Still refused (nothing was cached), its hits still served, another project untouched.
    assert_eq!(get(NOISY, "backups/detail?limit=3").await.status, 429);
    assert_eq!(get(NOISY, "backups/detail?limit=1").await.status, 200);
    assert_eq!(get(QUIET, "backups/detail?limit=3").await.status, 200);
    let refused = h.metric("vbs_tenant_limited_total").await;
    assert_eq!(refused.as_deref(), Some("4"));
}

/// Three projects that each ask more than a third of a region's rate get a third each,
/// however many clients each has (12, 6 and 6: in arrival order the first would take half):
/// after the burst and the next second (taken as they come: under load, calls that arrive while
/// the burst is being spent find tokens refilled and no queue yet), the region's calls split
/// within 10 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn equal_demand_gets_equal_shares() {
    const PROJECTS: [&str; 3] = ["share0a", "share1b", "share2c"];
    let h = Arc::new(
        Harness::start(
            vec![(SimConfig::default(), rows("a", 1))],
            "[upstream]\nrate_limit = 50\nqueue_timeout = \"1s\"\n",
        )
        .await,
    );
    // Past the burst (50) and the next second (50), this many calls are counted.
    const SKIPPED: usize = 100;
    const COUNTED: usize = 150;
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = PROJECTS
        .iter()
        .zip([12, 6, 6])
        .flat_map(|(project, clients)| (0..clients).map(move |c| (*project, c)))
        .map(|(project, c)| {
            let (h, done) = (h.clone(), done.clone());
            tokio::spawn(async move {
                let token = format!("u:{project}");
                for i in 0..1000 {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    let path = format!("/v3/{project}/backups/detail?name=c{c}-{i}");
                    h.get_with(&path, &[("X-Auth-Token", &token)]).await;
                }
            })
        })
        .collect();
    let region = h.regions[0].clone();
    let listings = |r: &cinder_sim::SimRegion| {
        let requests = r.requests.lock().unwrap();
        let listed = requests.iter().filter(|r| r.contains("/backups/detail"));
        listed.cloned().collect::<Vec<String>>()
    };
    crate::support::until("the burst and the counted calls", || {
        listings(&region).len() >= SKIPPED + COUNTED
    })
    .await;
    done.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let requests = region.requests.lock().unwrap().clone();
    let listed: Vec<&String> = requests
        .iter()
        .filter(|r| r.contains("/backups/detail"))
        .collect();
    let counted = &listed[SKIPPED..SKIPPED + COUNTED];
    for project in PROJECTS {
        let share = counted.iter().filter(|r| r.contains(project)).count();
        let fair = COUNTED / PROJECTS.len();
        assert!(
            share.abs_diff(fair) * 10 <= fair,
            "{project}: {share} of {COUNTED} calls (a fair share is {fair})"
        );
    }
}
