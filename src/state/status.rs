//! The operator's view (README, "Status page"): the facts `GET /status` and `/status.json`
//! show, gathered from the sub-states' own in-process counters (never by scraping the
//! proxy's `/metrics`). Rates are over the last minute: a sampler reads the cumulative
//! counters every second into a ring of [`Recent`], and a view subtracts the oldest reading
//! from one taken when it is asked for.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::AppState;
use crate::cache::Caches;
use crate::regions::guard::tally::Counts;
use crate::regions::guard::BreakerState;

/// How far back the rates look.
pub const WINDOW: Duration = Duration::from_secs(60);

/// What outlives a change of state (a reload, Keystone's catalog): when the proxy started,
/// the last minute of readings, and the last reload.
pub struct Recent {
    started: Instant,
    started_at: SystemTime,
    readings: Mutex<VecDeque<Reading>>,
    last_reload: Mutex<Option<Reload>>,
}

/// A reload of the configuration, as the page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Reload {
    pub at_unix: u64,
    /// `applied`, `unchanged` or `invalid`.
    pub outcome: &'static str,
    /// What changed, or what was wrong with the file.
    pub detail: String,
}

/// The cumulative counters at one moment.
#[derive(Clone)]
struct Reading {
    at: Instant,
    regions: Vec<(String, Counts)>,
    /// Per layer: hits, misses, stale served, coalesced, evictions.
    layers: [[u64; 5]; 2],
    /// Plain-id markers: remembered, cold.
    markers: [u64; 2],
    /// Fleet operations: done, failed.
    fleet: [u64; 2],
    /// Keystone validations: asked, failed.
    keystone: [u64; 2],
    /// Requests answered by the proxy.
    requests: u64,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            started: Instant::now(),
            started_at: SystemTime::now(),
            readings: Mutex::default(),
            last_reload: Mutex::default(),
        }
    }
}

impl Recent {
    pub fn reloaded(&self, outcome: &'static str, detail: String) {
        let reload = Reload {
            at_unix: unix(SystemTime::now()),
            outcome,
            detail,
        };
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(reload);
    }

    fn keep(&self, reading: Reading) {
        let mut readings = self.readings.lock().unwrap_or_else(|p| p.into_inner());
        // One more than the window's seconds: the oldest is the window's start.
        while readings.len() > WINDOW.as_secs() as usize {
            readings.pop_front();
        }
        readings.push_back(reading);
    }

    fn oldest(&self) -> Option<Reading> {
        let readings = self.readings.lock().unwrap_or_else(|p| p.into_inner());
        readings.front().cloned()
    }
}

/// Every second, for as long as the proxy serves: a reading of the state being served.
pub async fn sample(mut states: tokio::sync::watch::Receiver<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let state = states.borrow_and_update().clone();
        state.recent.keep(read(&state));
    }
}

fn read(state: &AppState) -> Reading {
    let layer = |m: &crate::cache::metrics::LayerMetrics| {
        [m.hits.get(), m.misses.get(), m.stale.get(), m.coalesced.get(), m.evictions.get()]
    };
    let positions = &state.lister.positions;
    let fleet = state.lister.positions.shared.as_ref().map_or([0, 0], |f| {
        [f.metrics.done.load(Relaxed), f.metrics.failed.load(Relaxed)]
    });
    let keystone = state.keystone.as_ref().map_or([0, 0], |k| {
        [k.asked.load(Relaxed), k.failed.load(Relaxed)]
    });
    Reading {
        at: Instant::now(),
        regions: state
            .regions
            .iter()
            .map(|r| (r.name.clone(), r.guard.tally.reading()))
            .collect(),
        layers: [
            layer(state.caches.responses.metrics()),
            layer(state.caches.pages.metrics()),
        ],
        markers: [positions.remembered.get(), positions.cold.get()],
        fleet,
        keystone,
        requests: state.metrics.http.answered(),
    }
}

/// Everything the page shows.
#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub started_at_unix: u64,
    pub uptime_seconds: u64,
    /// SHA-256 (its first 12 hex digits) of the configuration in force, secrets left out:
    /// two replicas with the same digest run the same settings.
    pub config_digest: String,
    /// The seconds the rates and counts below are over (up to 60; less just after start).
    pub window_seconds: f64,
    pub requests_per_second: f64,
    pub reloads: Reloads,
    pub regions: Vec<RegionStatus>,
    /// Projects refused (`[tenants]` limits, or past their turn at a region) in the last minute.
    pub tenants_throttled: u64,
    pub caches: Vec<LayerStatus>,
    pub markers: Markers,
    pub fleet: Option<FleetStatus>,
    pub keystone: Option<KeystoneStatus>,
}

#[derive(Debug, Serialize)]
pub struct Reloads {
    pub applied: u64,
    pub invalid: u64,
    pub last: Option<Reload>,
}

#[derive(Debug, Serialize)]
pub struct RegionStatus {
    pub name: String,
    pub url: String,
    /// `up`, `suspect`, `backing off`, `breaker open`, `breaker half-open` or
    /// `misconfigured`, the worst that holds.
    pub state: &'static str,
    /// Why, when it is not `up`.
    pub cause: Option<String>,
    pub last_failure: Option<Failure>,
    pub calls_per_second: f64,
    /// Calls by outcome over the window (the `vbs_upstream_calls_total` outcomes: refusals
    /// of the proxy's own guard, such as `rate_limited`, included).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Upper bounds of the latency buckets the median and the 99th percentile call fell
    /// in, over the window; `null` without calls (or slower than 10 s).
    pub latency_p50_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
    pub in_flight: usize,
    pub max_concurrency: usize,
    /// Calls per second the proxy holds it to (0: no limit).
    pub rate_limit: f64,
    /// Projects with calls waiting their turn at its limiter now.
    pub flows_waiting: usize,
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub at_unix: u64,
    pub seconds_ago: u64,
    pub what: String,
}

#[derive(Debug, Serialize)]
pub struct LayerStatus {
    pub layer: &'static str,
    /// Fresh hits over lookups, over the window; `null` without lookups.
    pub hit_ratio: Option<f64>,
    pub hits: u64,
    pub misses: u64,
    pub stale_served: u64,
    pub coalesced: u64,
    pub evictions: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub entries: u64,
}

#[derive(Debug, Serialize)]
pub struct Markers {
    /// Plain-id markers resumed from remembered positions, over the window.
    pub remembered: u64,
    /// Plain-id markers that took the cold path, over the window.
    pub cold: u64,
}

#[derive(Debug, Serialize)]
pub struct FleetStatus {
    pub redis_up: bool,
    pub replicas_alive: u32,
    pub operations_per_second: f64,
    pub failed: u64,
    pub last_error: Option<Failure>,
}

#[derive(Debug, Serialize)]
pub struct KeystoneStatus {
    pub verdicts_cached: u64,
    pub validations_per_second: f64,
    pub failed: u64,
    pub last_failure: Option<Failure>,
}

impl Status {
    /// The page's facts now.
    pub fn of(state: &AppState) -> Status {
        let now = read(state);
        // Until the sampler has a reading a second old: everything since the start.
        let since_start = Reading {
            at: state.recent.started,
            regions: Vec::new(),
            layers: [[0; 5]; 2],
            markers: [0; 2],
            fleet: [0; 2],
            keystone: [0; 2],
            requests: 0,
        };
        let then = state.recent.oldest().filter(|r| r.at < now.at).unwrap_or(since_start);
        let window = now.at - then.at;
        // Over a second at least: just after the start a handful of calls is not a rate.
        let per_second = |n: u64| (n as f64 / window.as_secs_f64().max(1.0) * 10.0).round() / 10.0;
        let delta = |now: u64, then: u64| now.saturating_sub(then);
        let recent = &state.recent;
        let reloads = |outcome| state.metrics.reloads(outcome);
        Status {
            version: env!("CARGO_PKG_VERSION"),
            started_at_unix: unix(recent.started_at),
            uptime_seconds: recent.started.elapsed().as_secs(),
            config_digest: config_digest(&state.config),
            window_seconds: (window.as_secs_f64() * 10.0).round() / 10.0,
            requests_per_second: per_second(delta(now.requests, then.requests)),
            reloads: Reloads {
                applied: reloads("applied"),
                invalid: reloads("invalid"),
                last: recent.last_reload.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            },
            regions: regions(state, &now, &then, &per_second),
            tenants_throttled: state.regions.metrics.throttled.count(),
            caches: layers(state, &now, &then),
            markers: Markers {
                remembered: delta(now.markers[0], then.markers[0]),
                cold: delta(now.markers[1], then.markers[1]),
            },
            fleet: state.lister.positions.shared.as_ref().map(|fleet| FleetStatus {
                redis_up: fleet.is_up(),
                replicas_alive: fleet.replicas_alive(),
                operations_per_second: per_second(
                    delta(now.fleet[0], then.fleet[0])
                        + delta(now.fleet[1], then.fleet[1]),
                ),
                failed: delta(now.fleet[1], then.fleet[1]),
                last_error: failure(&fleet.metrics.last_error),
            }),
            keystone: state.keystone.as_ref().map(|keystone| KeystoneStatus {
                verdicts_cached: keystone.verdicts_kept(),
                validations_per_second: per_second(delta(
                    now.keystone[0],
                    then.keystone[0],
                )),
                failed: delta(now.keystone[1], then.keystone[1]),
                last_failure: failure(&keystone.last_failure),
            }),
        }
    }
}

fn regions(
    state: &AppState,
    now: &Reading,
    then: &Reading,
    per_second: &dyn Fn(u64) -> f64,
) -> Vec<RegionStatus> {
    let clock = tokio::time::Instant::now();
    state
        .regions
        .iter()
        .zip(&now.regions)
        .map(|(region, (_, counts))| {
            let guard = &region.guard;
            let earlier = then
                .regions
                .iter()
                .find(|(name, _)| *name == region.name)
                .map_or_else(Counts::default, |(_, c)| c.clone());
            let window = counts.since(&earlier);
            let (state, cause) = judge(region, clock);
            let ms = |q| window.latency_quantile(q).map(|d| d.as_millis() as u64);
            RegionStatus {
                name: region.name.clone(),
                url: without_credentials(&region.base),
                state,
                cause,
                last_failure: guard.tally.last_failure().map(|(at, what)| Failure {
                    at_unix: unix(at),
                    seconds_ago: ago(at),
                    what: what.to_string(),
                }),
                calls_per_second: per_second(window.calls()),
                latency_p50_ms: ms(0.5),
                latency_p99_ms: ms(0.99),
                outcomes: window.outcomes,
                in_flight: guard.in_flight(),
                max_concurrency: guard.settings.max_concurrency,
                rate_limit: guard.settings.rate_limit,
                flows_waiting: guard.fair.flows_waiting(),
            }
        })
        .collect()
}

/// A region's state and its cause: the worst that holds now.
fn judge(
    region: &crate::regions::RegionClient,
    now: tokio::time::Instant,
) -> (&'static str, Option<String>) {
    let guard = &region.guard;
    if region.misconfigured() {
        let why = "it answers 404 to project listings: its url is probably wrong";
        return ("misconfigured", Some(why.into()));
    }
    if let Some((cause, retry_in)) = guard.open_since(now) {
        let state = match guard.breaker() {
            BreakerState::HalfOpen => "breaker half-open",
            _ => "breaker open",
        };
        let next = retry_in.as_secs_f64().ceil() as u64;
        return (state, Some(format!("{cause}; next try in {next} s")));
    }
    if let Some(left) = guard.backing_off(now) {
        let left = left.as_secs_f64().ceil() as u64;
        return ("backing off", Some(format!("it answered 429 with Retry-After: {left} s left")));
    }
    if let Some((projects, longest)) = guard.tenants_held(now) {
        let left = longest.as_secs_f64().ceil() as u64;
        let why = format!(
            "it answered 429 with Retry-After: {projects} project(s) held back, for up to {left} s"
        );
        return ("backing off", Some(why));
    }
    if guard.suspect_grace().is_some() {
        let why = "a call's deadline passed and it has not answered since";
        return ("suspect", Some(why.into()));
    }
    ("up", None)
}

fn layers(state: &AppState, now: &Reading, then: &Reading) -> Vec<LayerStatus> {
    let caches = &state.caches;
    let max = Caches::layer_budget(&state.config.cache);
    let sizes = [
        ("responses", caches.responses.weighted_size(), caches.responses.entry_count()),
        ("region_pages", caches.pages.weighted_size(), caches.pages.entry_count()),
    ];
    sizes
        .into_iter()
        .enumerate()
        .map(|(i, (layer, bytes, entries))| {
            let [hits, misses, stale, coalesced, evictions]: [u64; 5] = std::array::from_fn(|k| {
                now.layers[i][k].saturating_sub(then.layers[i][k])
            });
            let lookups = hits + misses + stale;
            LayerStatus {
                layer,
                hit_ratio: (lookups > 0).then(|| ((hits + stale) as f64 / lookups as f64 * 1000.0).round() / 1000.0),
                hits,
                misses,
                stale_served: stale,
                coalesced,
                evictions,
                bytes,
                max_bytes: max,
                entries,
            }
        })
        .collect()
}

fn failure(last: &Mutex<Option<(SystemTime, String)>>) -> Option<Failure> {
    let last = last.lock().unwrap_or_else(|p| p.into_inner());
    last.as_ref().map(|(at, what)| Failure {
        at_unix: unix(*at),
        seconds_ago: ago(*at),
        what: what.clone(),
    })
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn ago(at: SystemTime) -> u64 {
    SystemTime::now().duration_since(at).map_or(0, |d| d.as_secs())
}

/// The configuration's digest: its settings as the proxy holds them (secrets print as
/// hidden, so a changed password does not change it).
fn config_digest(config: &crate::config::Config) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{config:?}").as_bytes());
    crate::cache::hex(&digest[..6])
}

/// A region's URL as the page may show it: any user or password in it taken out.
fn without_credentials(base: &str) -> String {
    match reqwest::Url::parse(base) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.as_str().trim_end_matches('/').to_string()
        }
        _ => base.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_credentials() {
        assert_eq!(without_credentials("http://u:p@127.0.0.1:9/volume"), "http://127.0.0.1:9/volume");
        assert_eq!(without_credentials("http://127.0.0.1:9"), "http://127.0.0.1:9");
    }
}
