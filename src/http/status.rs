//! `GET /status` (an HTML page: no script, no external asset, readable on a phone, refreshed
//! every 5 s) and `GET /status.json`, the same facts (`state/status.rs`). On the API listener
//! they need the admin token (`X-Admin-Token`, or as the password of HTTP Basic
//! authentication, which a browser asks for); on `admin.listen`, an address the operator keeps
//! private, they need nothing. Never reachable without one or the other.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::state::status::{Failure, Status};
use crate::state::AppState;

/// The status page on the API listener: the admin token first.
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match admitted(&state, &headers) {
        None => html(&Status::of(&state)),
        Some(refused) => refused,
    }
}

/// `/status.json` on the API listener: the admin token first.
pub async fn json(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match admitted(&state, &headers) {
        None => json_of(&Status::of(&state)),
        Some(refused) => refused,
    }
}

/// The state `admin.listen` serves from: the one being served now.
type Current = tokio::sync::watch::Receiver<AppState>;

/// The page on `admin.listen` (no token: the address is the protection).
pub async fn private_page(State(current): State<Current>) -> Response {
    let state = current.borrow().clone();
    html(&Status::of(&state))
}

/// `/status.json` on `admin.listen`.
pub async fn private_json(State(current): State<Current>) -> Response {
    let state = current.borrow().clone();
    json_of(&Status::of(&state))
}

/// `/metrics` on `admin.listen`.
pub async fn private_metrics(State(current): State<Current>, headers: HeaderMap) -> Response {
    let state = current.borrow().clone();
    let (metrics, caches, regions) = (state.metrics.clone(), state.caches.clone(), state.regions.clone());
    super::admin::metrics(State(metrics), State(caches), State(regions), headers).await
}

/// The admin token, in `X-Admin-Token` or as HTTP Basic's password (any user name). Without
/// it a browser is asked for it (401 with `WWW-Authenticate: Basic`); without `admin.token`
/// the page is not served here at all (404, as the admin routes). `None`: admitted; else the
/// refusal.
fn admitted(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()
        })
        .and_then(|pair| {
            let colon = pair.iter().position(|b| *b == b':')?;
            HeaderValue::from_bytes(&pair[colon + 1..]).ok()
        });
    let mut headers = headers.clone();
    if let (Some(password), false) = (basic, headers.contains_key("x-admin-token")) {
        headers.insert("x-admin-token", password);
    }
    let refused = super::admin::authorized(&state.config, &headers).err()?;
    let mut answer = refused.into_response();
    if answer.status() == StatusCode::UNAUTHORIZED {
        let challenge = HeaderValue::from_static("Basic realm=\"vbs-proxy status\"");
        answer.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    Some(answer)
}

fn json_of(status: &Status) -> Response {
    let body = serde_json::to_string(status).expect("the status serializes");
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    (headers, body).into_response()
}

fn html(status: &Status) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        // Nothing from elsewhere, no script: the page is text and its own style.
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
        ),
    ];
    (headers, render(status)).into_response()
}

/// Text for HTML: every byte that could start markup escaped.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;padding:8px;max-width:70em;color:#222}\
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #ddd;vertical-align:top}\
.wrap{overflow-x:auto}.state{font-weight:bold;padding:2px 6px;border-radius:3px;white-space:nowrap}\
.up{background:#d4f4d4}.suspect,.backing-off,.breaker-half-open{background:#fbe7b5}.breaker-open,.misconfigured,.down{background:#f8c8c8}\
.muted{color:#666}small{color:#666}";

/// The page: regions first (which one is sick, and why), then the caches, the fleet and
/// Keystone, then the build.
fn render(s: &Status) -> String {
    let mut out = String::with_capacity(8192);
    let w = &mut out;
    let _ = write!(
        w,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=refresh content=5><title>vbs-proxy status</title><style>{STYLE}</style></head><body>\
         <h1>vbs-proxy {} <small>up {} · config {} · {:.1} requests/s</small></h1>\
         <p class=muted>Rates and counts over the last {:.0} s. Refreshes every 5 s.</p>",
        esc(s.version),
        duration(s.uptime_seconds),
        esc(&s.config_digest),
        s.requests_per_second,
        s.window_seconds,
    );
    let _ = write!(
        w,
        "<h2>Regions</h2><div class=wrap><table id=regions><tr><th>Region</th><th>State</th>\
         <th>Calls/s</th><th>Outcomes</th><th>Latency p50 / p99</th><th>In flight</th>\
         <th>Waiting</th><th>Last failure</th></tr>"
    );
    for r in &s.regions {
        let class = r.state.replace(' ', "-");
        let cause = r.cause.as_deref().map(|c| format!("<br><small>{}</small>", esc(c)));
        let outcomes: Vec<String> = r.outcomes.iter().map(|(k, v)| format!("{} {v}", esc(k))).collect();
        let rate = match r.rate_limit {
            l if l > 0.0 => format!("<br><small>limit {l}/s</small>"),
            _ => String::new(),
        };
        let _ = write!(
            w,
            "<tr data-region=\"{name}\"><td>{name}<br><small>{url}</small></td>\
             <td><span class=\"state {class}\">{state}</span>{cause}</td>\
             <td>{cps:.1}{rate}</td><td>{outcomes}</td><td>{p50} / {p99}</td>\
             <td>{inf} / {max}</td><td>{flows}</td><td>{last}</td></tr>",
            name = esc(&r.name),
            url = esc(&r.url),
            state = esc(r.state),
            cause = cause.unwrap_or_default(),
            cps = r.calls_per_second,
            outcomes = if outcomes.is_empty() { "–".into() } else { outcomes.join("<br>") },
            p50 = ms(r.latency_p50_ms),
            p99 = ms(r.latency_p99_ms),
            inf = r.in_flight,
            max = r.max_concurrency,
            flows = r.flows_waiting,
            last = failure(r.last_failure.as_ref()),
        );
    }
    let _ = write!(
        w,
        "</table></div><p>Projects throttled in the last minute: {}</p>",
        s.tenants_throttled
    );
    let _ = write!(
        w,
        "<h2>Caches</h2><div class=wrap><table id=caches><tr><th>Layer</th><th>Hit ratio</th>\
         <th>Hits / misses / stale</th><th>Coalesced</th><th>Evictions</th><th>Bytes</th><th>Entries</th></tr>"
    );
    for l in &s.caches {
        let ratio = l.hit_ratio.map_or("–".into(), |r| format!("{:.1} %", r * 100.0));
        let _ = write!(
            w,
            "<tr><td>{}</td><td>{ratio}</td><td>{} / {} / {}</td><td>{}</td><td>{}</td>\
             <td>{} of {}</td><td>{}</td></tr>",
            l.layer,
            l.hits,
            l.misses,
            l.stale_served,
            l.coalesced,
            l.evictions,
            bytes(l.bytes),
            bytes(l.max_bytes),
            l.entries
        );
    }
    let _ = write!(
        w,
        "</table></div><p>Plain-id markers: {} resumed from remembered positions, {} cold.</p>",
        s.markers.remembered, s.markers.cold
    );
    match &s.fleet {
        Some(f) => {
            let (class, state) = if f.redis_up { ("up", "up") } else { ("down", "down") };
            let _ = write!(
                w,
                "<h2>Fleet</h2><p id=fleet>Redis <span class=\"state {class}\">{state}</span> · \
                 {} replicas alive · {:.1} operations/s · {} failed · last error: {}</p>",
                f.replicas_alive,
                f.operations_per_second,
                f.failed,
                failure(f.last_error.as_ref())
            );
        }
        None => w.push_str("<h2>Fleet</h2><p id=fleet class=muted>Off: this replica alone.</p>"),
    }
    match &s.keystone {
        Some(k) => {
            let _ = write!(
                w,
                "<h2>Keystone</h2><p id=keystone>{} verdicts cached · {:.1} validations/s · {} failed · \
                 last failure: {}</p>",
                k.verdicts_cached,
                k.validations_per_second,
                k.failed,
                failure(k.last_failure.as_ref())
            );
        }
        None => w.push_str("<h2>Keystone</h2><p id=keystone class=muted>Off: tokens are checked by the regions.</p>"),
    }
    let last = s.reloads.last.as_ref().map_or("none".to_string(), |r| {
        format!("{} ({}), {}", esc(r.outcome), esc(&r.detail), duration_ago(r.at_unix))
    });
    let _ = write!(
        w,
        "<h2>Configuration</h2><p id=reloads>Digest {} · reloads applied {}, refused {} · last: {last}</p>\
         <p class=muted>The same facts: <a href=\"status.json\">status.json</a>.</p></body></html>",
        esc(&s.config_digest),
        s.reloads.applied,
        s.reloads.invalid,
    );
    out
}

fn ms(ms: Option<u64>) -> String {
    ms.map_or("–".into(), |ms| format!("≤ {ms} ms"))
}

fn failure(f: Option<&Failure>) -> String {
    f.map_or("–".into(), |f| {
        format!("{}<br><small>{} ago</small>", esc(&f.what), duration(f.seconds_ago))
    })
}

fn duration_ago(at_unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{} ago", duration(now.saturating_sub(at_unix)))
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86400),
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n < 10 << 10 => format!("{n} B"),
        n if n < 10 << 20 => format!("{} KiB", n >> 10),
        n => format!("{} MiB", n >> 20),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_could_be_markup_is_escaped() {
        assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
    }
}
