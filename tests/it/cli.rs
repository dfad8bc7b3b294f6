//! The real binary: `check-config` exit codes, and `serve` answering then shutting down
//! cleanly on SIGTERM.

use std::process::Command;

use cinder_sim::{SimConfig, SimRegion};

use crate::support::{rows, TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_vbs-proxy");

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vbs-proxy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `--help` says what the proxy serves and how any key is set from the environment (a new
/// user found neither snapshots nor the overrides there).
#[test]
fn help_names_the_resources_and_the_environment_overrides() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf-8");
    for needle in [
        "snapshots",
        "volumes",
        "VBS_PROXY__SECTION__KEY",
        "config/default.toml",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn check_config_accepts_the_example_and_rejects_bad_keys_with_64() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/vbs-proxy.toml");
    let out = Command::new(BIN)
        .args(["check-config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = temp_config(
        "bad.toml",
        "[server]\nmax_limit = -3\n[[regions]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n",
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server.max_limit"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An environment override is validated too, and named.
    let good = temp_config(
        "good.toml",
        "[[regions]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n",
    );
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&good)
        .env("VBS_PROXY__UPSTREAM__ON_REGION_FAILURE", "sometimes")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(stderr.contains("upstream.on_region_failure"), "{stderr}");
}

#[tokio::test]
async fn serve_answers_and_exits_cleanly_on_sigterm() {
    let region = SimRegion::new(SimConfig::default(), rows("a", 5));
    let url = region.spawn().await.unwrap();
    let config = temp_config(
        "serve.toml",
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n[[regions]]\nname = \"a\"\nurl = \"{url}\"\n"),
    );
    // `_lines` keeps the log pipe open while the proxy runs.
    let (mut child, _lines, addr) =
        crate::support::spawn_serve(&config, &[("VBS_PROXY__SERVER__MAX_LIMIT", "3")]);
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/v3/abc123/backups/detail"))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["backups"][0]["id"], "a-004");
    // max_limit came from the environment: a page of 3, and a next link.
    assert_eq!(body["backups"].as_array().unwrap().len(), 3);
    assert!(body["backups_links"][0]["href"]
        .as_str()
        .unwrap()
        .contains("marker="));

    crate::support::sigterm(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish() {
    let region = SimRegion::new(SimConfig::default(), rows("a", 5));
    let url = region.spawn().await.unwrap();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    *region.gate.write().unwrap() = Some(gate.clone());
    let config = temp_config(
        "graceful.toml",
        &format!("[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"60s\"\n[log]\nformat = \"json\"\n[[regions]]\nname = \"a\"\nurl = \"{url}\"\n"),
    );
    let (mut child, mut lines, addr) = crate::support::spawn_serve(&config, &[]);
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .get(format!("http://{addr}/v3/abc123/backups/detail?limit=2"))
            .header("X-Auth-Token", TOKEN)
            .send()
            .await
            .unwrap()
            .status()
    });
    crate::support::until("the request at the region", || region.calls() >= 1).await;
    crate::support::sigterm(&child);
    // The proxy logs that it is shutting down, then the region answers.
    loop {
        let line = lines.next().expect("the proxy logs its shutdown").unwrap();
        if line.contains("shutting down") {
            break;
        }
    }
    gate.add_permits(10);
    assert_eq!(in_flight.await.unwrap(), 200);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

/// `RUST_LOG` is read, over `log.level`: one that is not a filter is said so at start (and
/// the proxy logs at info), where before it was silently ignored.
#[test]
fn rust_log_is_read_and_a_bad_one_is_said() {
    use std::io::BufRead;
    let config = temp_config(
        "rust-log.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\
         [[regions]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n",
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "vbs_proxy=loud")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut before_serving = Vec::new();
    for line in lines {
        let line: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if line["fields"]["message"] == "serving" {
            break;
        }
        before_serving.push(line);
    }
    crate::support::sigterm(&child);
    child.wait().unwrap();
    let said = before_serving.iter().any(|l| {
        l["level"] == "WARN"
            && l["fields"]["source"] == "RUST_LOG"
            && l["fields"]["value"] == "vbs_proxy=loud"
    });
    assert!(said, "no word of the bad RUST_LOG: {before_serving:?}");
}

/// Text logs written to a pipe (or a file) carry no colour codes; and an idle instance stops
/// on SIGTERM without waiting for its shutdown grace, idle keep-alive connections or not.
/// (Two worker threads: the simulated region answers while this test blocks on sockets.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_text_logs_are_plain_and_idle_shutdown_is_immediate() {
    use std::io::{BufRead, Read, Write};
    let region = SimRegion::new(SimConfig::default(), rows("a", 1));
    let url = region.spawn().await.unwrap();
    let config = temp_config(
        "text.toml",
        &format!("[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"1h\"\n[log]\nformat = \"text\"\n[[regions]]\nname = \"a\"\nurl = \"{url}\"\n"),
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut log = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    log.read_line(&mut line).unwrap();
    assert!(line.contains("serving"), "{line}");
    assert!(
        !line.contains('\u{1b}'),
        "colour codes in a piped log: {line:?}"
    );
    let addr = line
        .split("listen=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the address in the log line")
        .to_string();
    // A keep-alive connection left idle after a request, and one that never sent anything.
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let _silent = std::net::TcpStream::connect(&addr).unwrap();
    crate::support::sigterm(&child);
    // Bounded far below the one-hour grace: the proxy must not wait for it.
    let exited = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("an idle proxy exits on SIGTERM without waiting for its grace")
    .unwrap()
    .unwrap();
    assert!(exited.success(), "{exited:?}");
    let mut rest = String::new();
    log.read_to_string(&mut rest).unwrap();
    assert!(
        !rest.contains('\u{1b}'),
        "colour codes in a piped log: {rest:?}"
    );
}
