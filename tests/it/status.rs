//! Issue 26: the operator's view. `GET /status` and `/status.json` show each region's state and
//! its cause (a healthy region, a hung one, one answering 429), behind the admin token on the
//! API listener or on `admin.listen` with none; a headless Chromium renders the page; SIGHUP
//! reloads the configuration under load.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cinder_sim::{Fault, SimConfig};
use serde_json::Value;

use crate::support::{rows, until, Harness, TOKEN};

const DETAIL: &str = "/v3/abc123/backups/detail";
const ADMIN: &str = "operator-secret-0123";

/// Three regions: `r0` healthy, `throttling` answering 429 with `Retry-After: 300`, `hung`
/// accepting connections and never answering. `extra`: more proxy TOML.
async fn three_regions(extra: &str) -> (Harness, String) {
    let base = Harness::start(
        vec![
            (SimConfig::default(), rows("a", 5)),
            (SimConfig::default(), rows("b", 5)),
        ],
        "",
    )
    .await;
    let mut fault = Fault::new(429, "{}").unwrap();
    fault.headers.push(("Retry-After", "300".into()));
    *base.regions[1].fault.write().unwrap() = Some(fault);
    let (hung, _) = crate::hardening::hanging_region().await;
    let toml = format!(
        "[[regions]]\nname = \"r0\"\nurl = \"{}\"\n\
         [[regions]]\nname = \"throttling\"\nurl = \"{}\"\n\
         [[regions]]\nname = \"hung\"\nurl = \"{hung}\"\n\
         [upstream]\ntimeout = \"500ms\"\nretries = 0\n\
         [admin]\ntoken = \"{ADMIN}\"\n\
         [cache]\nttl = \"0s\"\n{extra}",
        base.region_urls[0], base.region_urls[1]
    );
    (base, toml)
}

/// A few listings, each answered without the two sick regions.
async fn some_listings(h: &Harness) {
    for i in 0..3 {
        let r = h.get(&format!("{DETAIL}?name=n{i}"), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
}

fn region<'a>(status: &'a Value, name: &str) -> &'a Value {
    let regions = status["regions"].as_array().expect("regions");
    regions.iter().find(|r| r["name"] == name).expect(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_region_shows_its_state_and_cause() {
    let (base, toml) = three_regions("").await;
    let h = base.restart_proxy(&toml).await;
    some_listings(&h).await;

    // Never without the admin token: a browser is asked for it.
    let r = h.get_with("/status", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"vbs-proxy status\"")
    );
    let r = h
        .get_with("/status.json", &[("X-Admin-Token", "guess")])
        .await;
    assert_eq!(r.status, 403);
    let r = h.get_with("/status.json", &[("X-Auth-Token", TOKEN)]).await;
    assert_eq!(r.status, 401, "a tenant's token is not the admin's");

    let r = h
        .get_with("/status.json", &[("X-Admin-Token", ADMIN)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let status = r.json();
    let r0 = region(&status, "r0");
    assert_eq!(r0["state"], "up", "{r0}");
    assert!(r0["outcomes"]["ok"].as_u64().unwrap() >= 3, "{r0}");
    assert!(r0["latency_p50_ms"].as_u64().is_some(), "{r0}");
    assert_eq!(r0["max_concurrency"], 64);

    let throttling = region(&status, "throttling");
    assert_eq!(throttling["state"], "backing off", "{throttling}");
    let cause = throttling["cause"].as_str().unwrap();
    assert!(cause.contains("Retry-After"), "{cause}");
    // The first call was answered 429; the others were held back by the proxy itself.
    assert!(
        throttling["outcomes"]["backing_off"].as_u64().unwrap() >= 2,
        "{throttling}"
    );
    assert!(
        throttling["last_failure"]["what"]
            .as_str()
            .unwrap()
            .contains("429"),
        "{throttling}"
    );

    let hung = region(&status, "hung");
    let state = hung["state"].as_str().unwrap();
    assert!(["suspect", "breaker open"].contains(&state), "{hung}");
    assert!(hung["outcomes"]["timeout"].as_u64().unwrap() >= 1, "{hung}");
    let what = hung["last_failure"]["what"].as_str().unwrap();
    assert!(what.contains("timed out"), "{what}");

    let layers = status["caches"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert!(layers.iter().all(|l| l["max_bytes"].as_u64().unwrap() > 0));
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["fleet"], Value::Null);
    assert_eq!(status["config_digest"].as_str().unwrap().len(), 12);

    // The page, with the token as a browser sends it (HTTP Basic's password).
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("operator:{ADMIN}"));
    let r = h
        .get_with("/status", &[("Authorization", &format!("Basic {basic}"))])
        .await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(
        r.text
            .contains("<span class=\"state backing-off\">backing off</span>"),
        "{}",
        r.text
    );
    assert!(!r.text.contains("<script"), "no script");
    // The admin token is nowhere on the page.
    assert!(!r.text.contains(ADMIN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_loads_nothing_and_runs_nothing() {
    let h = Harness::start(
        vec![(SimConfig::default(), rows("a", 1))],
        &format!("[admin]\ntoken = \"{ADMIN}\"\n"),
    )
    .await;
    let r = h.get_with("/status", &[("X-Admin-Token", ADMIN)]).await;
    assert_eq!(r.status, 200);
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    for markup in ["<script", "src=", "<link", "href=\"http", "@import", "url("] {
        assert!(!r.text.contains(markup), "{markup} in {}", r.text);
    }
    // It refreshes itself, and fits a phone's width.
    assert!(r.text.contains("<meta http-equiv=refresh content=5>"));
    assert!(r.text.contains("width=device-width"));
}

/// The whole server (`vbs_proxy::serve`) on `toml` with `admin.listen` on a free loopback
/// port: the API's base URL and the private listener's.
async fn served_with_private_listener(toml: &str) -> (String, String) {
    let private = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = format!("{toml}\n[admin]\nlisten = \"{private}\"\n")
        .replace(&format!("[admin]\ntoken = \"{ADMIN}\"\n"), "");
    let config = vbs_proxy::Config::from_toml(&toml).expect("valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = vbs_proxy::AppState::new(config);
    tokio::spawn(vbs_proxy::serve(
        state,
        listener,
        std::future::pending(),
        None,
    ));
    let private = format!("http://{private}");
    let client = reqwest::Client::new();
    let mut tries = 0;
    while client
        .get(format!("{private}/status.json"))
        .send()
        .await
        .is_err()
    {
        tries += 1;
        assert!(tries < 500, "admin.listen never answered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (base, private)
}

/// Issue 26, point 3: the page as a person sees it. Headless Chromium (Debian's `chromium`,
/// which .ci/run installs) loads `/status` from `admin.listen` (no token there); the rendered
/// DOM shows each region's state and cause. A screenshot is kept in target/tmp/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_shows_which_region_is_sick_and_why() {
    let (_regions, toml) = three_regions("").await;
    let (api, private) = served_with_private_listener(&toml).await;
    let client = reqwest::Client::new();
    for i in 0..3 {
        let r = client
            .get(format!("{api}{DETAIL}?name=n{i}"))
            .header("X-Auth-Token", TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Not on the API listener without a token (none is configured there: not served at all).
    let r = client.get(format!("{api}/status")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let url = format!("{private}/status");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let dom = chromium(&["--dump-dom", &url]);
    let _ = chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1100,900",
        &url,
    ]);
    assert!(shot.exists(), "a screenshot at {}", shot.display());
    // Each region's row, as rendered: its name, its state and why.
    let row = |name: &str| -> String {
        let start = dom
            .find(&format!("data-region=\"{name}\""))
            .unwrap_or_else(|| panic!("{name}'s row in {dom}"));
        let end = dom[start..].find("</tr>").unwrap() + start;
        dom[start..end].to_string()
    };
    assert!(row("r0").contains(">up</span>"), "{}", row("r0"));
    let throttling = row("throttling");
    assert!(throttling.contains(">backing off</span>"), "{throttling}");
    assert!(throttling.contains("Retry-After"), "{throttling}");
    let hung = row("hung");
    assert!(
        hung.contains(">suspect</span>") || hung.contains(">breaker open</span>"),
        "{hung}"
    );
    assert!(hung.contains("timed out"), "{hung}");
}

/// Runs headless Chromium with `args`; its standard output.
fn chromium(args: &[&str]) -> String {
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
        ])
        .arg("--no-first-run")
        .arg(format!(
            "--user-data-dir={}",
            std::env::temp_dir()
                .join(format!("vbs-chromium-{}", std::process::id()))
                .display()
        ))
        .args(args)
        .output()
        .expect("chromium (Debian package `chromium`; .ci/run installs it)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue 26, point 2: SIGHUP under load. The binary serves region `r0` from one simulated
/// region with a TTL of an hour, while clients keep listing. A new TTL alone keeps the cached
/// answer (the region is not asked again); then the file names another region's URL and
/// `ttl = 0`: no request fails, the new region's rows come back, and nothing is cached any
/// more (the listings reach it). An invalid file then changes nothing and is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_region_url_and_ttl_under_load() {
    let h = Harness::start(
        vec![
            (SimConfig::default(), rows("a", 5)),
            (SimConfig::default(), rows("b", 5)),
        ],
        "",
    )
    .await;
    let (dir, file) = config_file("reload");
    let config = |url: &str, ttl: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[cache]\nttl = \"{ttl}\"\n[[regions]]\nname = \"r0\"\nurl = \"{url}\"\n"
        )
    };
    std::fs::write(&file, config(&h.region_urls[0], "1h")).unwrap();
    let (mut child, lines, addr) = crate::support::spawn_serve(&file, &[]);
    // Its log lines are read (a full pipe would stop the proxy), and the reloads' kept.
    let reloads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = reloads.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("reload") {
                seen.lock().unwrap().push(line);
            }
        }
    });
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();

    // The load: 4 clients listing until told to stop (at most 30 s, 5,000 requests each).
    let stop = Arc::new(AtomicBool::new(false));
    let (failed, saw_b, answered) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (client, base, stop) = (client.clone(), base.clone(), stop.clone());
            let (failed, saw_b, answered) = (failed.clone(), saw_b.clone(), answered.clone());
            tokio::spawn(async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                for _ in 0..5000 {
                    if stop.load(Ordering::Relaxed) || std::time::Instant::now() > deadline {
                        break;
                    }
                    let r = client
                        .get(format!("{base}{DETAIL}"))
                        .header("X-Auth-Token", TOKEN)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            let body: Value = r.json().await.unwrap();
                            let first = body["backups"][0]["id"].as_str().unwrap_or("").to_string();
                            if first.starts_with('b') {
                                saw_b.store(true, Ordering::Relaxed);
                            }
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    until("the load is under way", || {
        answered.load(Ordering::Relaxed) >= 20
    })
    .await;
    let a_calls = h.regions[0].calls.load(Ordering::Relaxed);
    assert!(a_calls <= 3, "an hour's TTL: one listing call, {a_calls}");
    let counted = |outcome: &'static str| reloads_counted(&client, &base, outcome);
    let reloaded = |outcome: &'static str, n: u64| until_reloads(&client, &base, outcome, n);

    // Only the TTL changes: the cached answers stay (the region is not asked again).
    std::fs::write(&file, config(&h.region_urls[0], "2h")).unwrap();
    hangup(&child);
    reloaded("applied", 1).await;
    let from = answered.load(Ordering::Relaxed);
    until("20 more answers", || {
        answered.load(Ordering::Relaxed) >= from + 20
    })
    .await;
    assert_eq!(
        h.regions[0].calls.load(Ordering::Relaxed),
        a_calls,
        "the cache was kept"
    );

    std::fs::write(&file, config(&h.region_urls[1], "0s")).unwrap();
    hangup(&child);
    until("the new region's rows", || saw_b.load(Ordering::Relaxed)).await;
    // ttl = 0 applies: every listing from now on reaches the new region.
    let before = h.regions[1].calls.load(Ordering::Relaxed);
    let from = answered.load(Ordering::Relaxed);
    until("40 more answers", || {
        answered.load(Ordering::Relaxed) >= from + 40
    })
    .await;
    let calls = h.regions[1].calls.load(Ordering::Relaxed) - before;
    // (Four clients: identical misses may share one call, so at least 10.)
    assert!(
        calls >= 10,
        "nothing cached after the reload: {calls} calls for 40 answers"
    );

    // An invalid file: logged, counted, nothing changes.
    std::fs::write(&file, "[cache]\nttl = \"soon\"\n").unwrap();
    hangup(&child);
    reloaded("invalid", 1).await;
    assert_eq!(counted("applied").await, 2);
    let from = answered.load(Ordering::Relaxed);
    until("more answers", || {
        answered.load(Ordering::Relaxed) >= from + 10
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed across two reloads"
    );
    let logged = reloads.lock().unwrap().join("\n");
    assert!(
        logged.contains("cache.ttl"),
        "the invalid file's key is named: {logged}"
    );
    assert!(saw_b.load(Ordering::Relaxed));
    crate::support::sigterm(&child);
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A SIGHUP that comes while the regions' versions are first read (here as long as a hung
/// region's deadline, after the proxy said it is serving) is a reload once serving starts,
/// not the default action, which would end the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_while_starting_is_a_reload() {
    let (hung, seen) = crate::hardening::hanging_region().await;
    let (dir, file) = config_file("early-hup");
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\ntimeout = \"3s\"\nretries = 0\n\
         [[regions]]\nname = \"hung\"\nurl = \"{hung}\"\n"
    );
    std::fs::write(&file, toml).unwrap();
    let (mut child, mut lines, _addr) = crate::support::spawn_serve(&file, &[]);
    // The first read of the version document is under way (it waits out the deadline).
    until("the version document asked of the hung region", || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    hangup(&child);
    let reread = lines.find(|line| {
        let line = line.as_deref().unwrap_or("");
        line.contains("configuration read again")
    });
    assert!(
        reread.is_some(),
        "the proxy ended on the SIGHUP: {:?}",
        child.try_wait()
    );
    assert!(child.try_wait().unwrap().is_none(), "still serving");
    crate::support::sigterm(&child);
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload that keeps the regions keeps the remembered plain-id positions: a dashboard's
/// next page (the last id shown as `marker`) resumes every region where it stood, as before
/// the reload, instead of taking the cold path; and the markers' counts go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_plain_markers_warm() {
    let h = Harness::start(
        vec![
            (SimConfig::default(), rows("a", 5)),
            (SimConfig::default(), rows("b", 5)),
        ],
        "",
    )
    .await;
    let (dir, file) = config_file("warm");
    let config = |ttl: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[cache]\nttl = \"{ttl}\"\n\
             [[regions]]\nname = \"r0\"\nurl = \"{}\"\n[[regions]]\nname = \"r1\"\nurl = \"{}\"\n",
            h.region_urls[0], h.region_urls[1]
        )
    };
    std::fs::write(&file, config("30s")).unwrap();
    let (mut child, lines, addr) = crate::support::spawn_serve(&file, &[]);
    // Its log is read (a full pipe would stop the proxy).
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    let (client, base) = (reqwest::Client::new(), format!("http://{addr}"));
    let list = |query: String| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client
                .get(format!("{base}{DETAIL}?{query}"))
                .header("X-Auth-Token", TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let markers = || async {
        (
            counter(&client, &base, "vbs_plain_markers_remembered_total").await,
            counter(&client, &base, "vbs_plain_markers_cold_total").await,
        )
    };
    let page = list("limit=3".into()).await;
    let last = page["backups"][2]["id"].as_str().unwrap().to_string();
    let next = list(format!("limit=3&marker={last}")).await;
    assert_eq!(markers().await, (1, 0), "remembered from the first page");

    // A new TTL, the same regions. Counted once the new state serves.
    std::fs::write(&file, config("60s")).unwrap();
    hangup(&child);
    until_reloads(&client, &base, "applied", 1).await;
    assert_eq!(
        reloads_counted(&client, &base, "applied").await,
        1,
        "the reload is applied"
    );
    // The same marker and query but another page size: not a cached answer, the same
    // remembered positions.
    let again = list(format!("limit=2&marker={last}")).await;
    let ids = |page: &Value| -> Vec<String> {
        let rows = page["backups"].as_array().unwrap();
        rows.iter()
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&again), ids(&next)[..2], "the same rows");
    assert_eq!(
        markers().await,
        (2, 0),
        "resumed from the positions remembered before the reload, counts carried on"
    );
    crate::support::sigterm(&child);
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A counter of the proxy at `base` (`series`: `name{labels}`), 0 when not there yet.
async fn counter(client: &reqwest::Client, base: &str, series: &str) -> u64 {
    let text = client.get(format!("{base}/metrics")).send().await.unwrap();
    let text = text.text().await.unwrap();
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse::<u64>().ok())
        .unwrap_or(0)
}

/// Reloads of the proxy at `base` with `outcome` (counted once the new state serves).
async fn reloads_counted(client: &reqwest::Client, base: &str, outcome: &str) -> u64 {
    let series = format!("vbs_config_reloads_total{{outcome=\"{outcome}\"}}");
    counter(client, base, &series).await
}

/// Until `n` reloads with `outcome` are counted (polled, at most 10 s).
async fn until_reloads(client: &reqwest::Client, base: &str, outcome: &str, n: u64) {
    for _ in 0..500 {
        if reloads_counted(client, base, outcome).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no {outcome} reload");
}

/// A directory of its own for a test's configuration file, and the file's path in it.
fn config_file(test: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("vbs-proxy-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vbs-proxy.toml");
    (dir, file)
}

fn hangup(child: &std::process::Child) {
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
}
