//! Start simulated regions and a proxy in front of them, all on 127.0.0.1:0.

use std::collections::BTreeMap;
use std::sync::Arc;

use cinder_sim::{Backup, SimConfig, SimRegion};
use serde_json::Value;
use vbs_proxy::{AppState, Config};

pub const PROJECT: &str = "abc123";
pub const TOKEN: &str = "user:abc123";

pub struct Harness {
    pub regions: Vec<Arc<SimRegion>>,
    pub region_urls: Vec<String>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn ids(&self) -> Vec<String> {
        self.json()["backups"]
            .as_array()
            .expect("backups array")
            .iter()
            .map(|b| b["id"].as_str().expect("id").to_string())
            .collect()
    }

    pub fn next(&self) -> Option<String> {
        self.json()["backups_links"][0]["href"]
            .as_str()
            .map(str::to_string)
    }
}

impl Harness {
    /// Regions with these settings and rows; `extra` is more proxy TOML (sections after the
    /// regions). Caching is off (`cache.ttl = 0`) unless `extra` has a `[cache]` section:
    /// these tests change the regions between requests.
    pub async fn start(regions: Vec<(SimConfig, Vec<Backup>)>, extra: &str) -> Harness {
        let mut sims = Vec::new();
        let mut urls = Vec::new();
        let mut toml = String::new();
        for (i, (config, rows)) in regions.into_iter().enumerate() {
            let sim = SimRegion::new(config, rows);
            let url = sim.spawn().await.expect("region listens");
            toml.push_str(&format!("[[regions]]\nname = \"r{i}\"\nurl = \"{url}\"\n"));
            sims.push(sim);
            urls.push(url);
        }
        toml.push_str(extra);
        if !extra.contains("[cache]") {
            toml.push_str("\n[cache]\nttl = \"0s\"\n");
        }
        let (base, state) = serve(&toml).await;
        Harness {
            regions: sims,
            region_urls: urls,
            base,
            client: reqwest::Client::new(),
            state,
        }
    }

    /// Another proxy with a whole configuration of its own (its own `[[regions]]`), sharing
    /// this harness's simulated regions.
    pub async fn restart_proxy(&self, toml: &str) -> Harness {
        let (base, state) = serve(toml).await;
        Harness {
            regions: self.regions.clone(),
            region_urls: self.region_urls.clone(),
            base,
            client: reqwest::Client::new(),
            state,
        }
    }

    /// The value of one `/metrics` series (`name{labels}`), if it is there.
    pub async fn metric(&self, series: &str) -> Option<String> {
        let text = self.get_with("/metrics", &[]).await.text;
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(str::to_string)
    }

    pub async fn get_with(&self, path_or_url: &str, headers: &[(&str, &str)]) -> Reply {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        };
        let mut req = self.client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("proxy answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        Reply {
            status,
            headers,
            text,
        }
    }

    /// GET with the test token and a microversion (None: no header).
    pub async fn get(&self, path_or_url: &str, version: Option<&str>) -> Reply {
        let v = version.map(|v| format!("volume {v}"));
        let mut headers = vec![("X-Auth-Token", TOKEN)];
        if let Some(v) = &v {
            headers.push(("OpenStack-API-Version", v.as_str()));
        }
        self.get_with(path_or_url, &headers).await
    }

    pub fn calls(&self) -> Vec<usize> {
        self.regions.iter().map(|r| r.calls()).collect()
    }

    pub fn total_calls(&self) -> usize {
        self.calls().iter().sum()
    }
}

/// The router for `toml` on `127.0.0.1:0`, the regions' versions learnt: (base URL, state).
async fn serve(toml: &str) -> (String, AppState) {
    let config = Config::from_toml(toml).expect("valid test config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let state = AppState::new(config);
    vbs_proxy::regions::versions::refresh(&state.regions).await;
    let app = vbs_proxy::router(state.clone())
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, state)
}

/// The `vbs-proxy serve` binary on `config` (JSON logs, `listen = 127.0.0.1:0`): the child,
/// its log lines still to read, and the address it logged as serving on.
pub fn spawn_serve(
    config: &std::path::Path,
    env: &[(&str, &str)],
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    String,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vbs-proxy"))
        .args(["serve", "--config"])
        .arg(config)
        .env("VBS_PROXY__LOG__FORMAT", "json")
        // The test's own RUST_LOG, if any, is not the proxy's (it would override log.level).
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the proxy logs before exiting")
            .expect("a line");
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["fields"]["message"] == "serving" {
            break v["fields"]["listen"]
                .as_str()
                .expect("an address")
                .to_string();
        }
    };
    (child, lines, addr)
}

/// Send SIGTERM to a spawned proxy.
pub fn sigterm(child: &std::process::Child) {
    let sent = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(sent.success());
}

/// A plain backup row in `PROJECT`.
pub fn backup(id: &str, created_at: &str) -> Backup {
    Backup {
        id: id.to_string(),
        project_id: PROJECT.to_string(),
        user_id: "user".into(),
        status: "available".into(),
        size: 1,
        object_count: Some(1),
        availability_zone: Some("az".into()),
        container: Some("c".into()),
        created_at: created_at.to_string(),
        updated_at: None,
        display_name: Some(format!("name-{id}")),
        display_description: None,
        fail_reason: None,
        volume_id: "vol".into(),
        parent_id: None,
        num_dependent_backups: 0,
        snapshot_id: None,
        data_timestamp: created_at.to_string(),
        metadata: BTreeMap::new(),
        deleted: false,
    }
}

/// `n` rows `{prefix}-000..`, one minute apart.
pub fn rows(prefix: &str, n: usize) -> Vec<Backup> {
    (0..n)
        .map(|i| {
            backup(
                &format!("{prefix}-{i:03}"),
                &format!("2024-01-01T{:02}:{:02}:00.000000", i / 60, i % 60),
            )
        })
        .collect()
}

/// Wait (yielding, never sleeping) until `cond` holds; bounded at 30 s.
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    let wait = async {
        while !cond() {
            tokio::task::yield_now().await;
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .is_err()
    {
        panic!("timed out waiting for {what}");
    }
}
