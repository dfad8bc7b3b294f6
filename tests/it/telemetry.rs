//! Telemetry through the real binary: OTLP/HTTP export decoded by an in-test receiver, the
//! client's trace continued through the proxy to the regions; and `/metrics` after known
//! traffic.

use std::sync::{Arc, Mutex};

use axum::routing::post;
use cinder_sim::{SimConfig, SimRegion};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use prost::Message;

use crate::support::{rows, Harness, TOKEN};

/// An OTLP/HTTP receiver: `POST /v1/traces` with protobuf `ExportTraceServiceRequest`.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("valid OTLP protobuf");
                for rs in request.resource_spans {
                    for ss in rs.scope_spans {
                        sink.lock().unwrap().extend(ss.spans);
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_follow_the_client_through_the_proxy_to_every_region() {
    let (collector, spans) = otlp_receiver().await;
    let regions = [
        SimRegion::new(SimConfig::default(), rows("a", 3)),
        SimRegion::new(SimConfig::default(), rows("b", 3)),
    ];
    let mut toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n[telemetry]\notlp_endpoint = \"{collector}\"\n[cache]\nttl = \"0s\"\n"
    );
    for (i, r) in regions.iter().enumerate() {
        toml.push_str(&format!(
            "[[regions]]\nname = \"r{i}\"\nurl = \"{}\"\n",
            r.spawn().await.unwrap()
        ));
    }
    let dir = std::env::temp_dir().join(format!("vbs-proxy-otel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("otel.toml");
    std::fs::write(&config, toml).unwrap();
    let (mut child, _lines, addr) = crate::support::spawn_serve(&config, &[]);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/v3/abc123/backups/detail?limit=2"))
        .header("X-Auth-Token", TOKEN)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Shutdown flushes the batch exporter.
    crate::support::sigterm(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());

    let spans = spans.lock().unwrap().clone();
    let server: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(server.len(), 1, "{spans:#?}");
    assert_eq!(hex(&server[0].trace_id), trace_id);
    assert_eq!(hex(&server[0].parent_span_id), "00f067aa0ba902b7");
    assert_eq!(server[0].name, "GET /v3/{project_id}/backups/detail");
    let clients: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32 && hex(&s.trace_id) == trace_id)
        .collect();
    let mut names: Vec<&str> = clients.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["GET r0", "GET r1"], "one client span per region");
    // Each region saw the trace, with its client span as the parent.
    for (region, span) in regions.iter().zip([
        clients.iter().find(|s| s.name == "GET r0"),
        clients.iter().find(|s| s.name == "GET r1"),
    ]) {
        let seen = region.traceparents.lock().unwrap().clone();
        let expected = format!("00-{trace_id}-{}-01", hex(&span.unwrap().span_id));
        assert!(seen.contains(&expected), "{seen:?} lacks {expected}");
    }
}

#[tokio::test]
async fn metrics_count_known_traffic() {
    let h = Harness::start(
        vec![
            (SimConfig::default(), rows("a", 3)),
            (SimConfig::default(), rows("b", 3)),
        ],
        "",
    )
    .await;
    for _ in 0..3 {
        assert_eq!(h.get("/v3/abc123/backups/detail", None).await.status, 200);
    }
    assert_eq!(
        h.get("/v3/abc123/backups/detail?limit=-1", None)
            .await
            .status,
        400
    );
    assert_eq!(
        h.get_with("/v3/abc123/backups/detail", &[]).await.status,
        401
    );
    let r = h.get("/v3/abc123/backups/detail", None).await;
    assert!(r
        .header("x-openstack-request-id")
        .unwrap()
        .starts_with("req-"));
    let text = h.get_with("/metrics", &[]).await.text;
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    let route = "/v3/{project_id}/backups/detail";
    assert_eq!(
        value(&format!(
            "vbs_http_requests_total{{route=\"{route}\",status=\"200\"}} "
        )),
        4.0
    );
    assert_eq!(
        value(&format!(
            "vbs_http_requests_total{{route=\"{route}\",status=\"400\"}} "
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "vbs_http_requests_total{{route=\"{route}\",status=\"401\"}} "
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "vbs_http_request_duration_seconds_count{{route=\"{route}\"}} "
        )),
        6.0
    );
    // Four listings, each one call per region (no cache in this harness).
    assert_eq!(
        value("vbs_upstream_calls_total{region=\"r0\",outcome=\"ok\"} "),
        4.0 + 1.0
    ); // + version probe
    assert_eq!(
        value("vbs_upstream_latency_seconds_count{region=\"r1\"} "),
        5.0
    );
    assert_eq!(value("vbs_http_requests_in_flight "), 1.0); // this scrape
    assert_eq!(value("vbs_upstream_breaker_state{region=\"r0\"} "), 0.0);
    assert!(!text.contains(TOKEN));
}

/// A real scrape after traffic passes `promtool check metrics` (Debian's `prometheus`
/// package; `.ci/run` installs it) without a lint, and the OpenMetrics form a scraper may ask
/// for writes each family once.
#[tokio::test]
async fn metrics_pass_promtool_and_write_each_family_once() {
    use std::io::Write;
    let h = Harness::start(
        vec![
            (SimConfig::default(), rows("a", 3)),
            (SimConfig::default(), rows("b", 3)),
        ],
        "[cache]\nttl = \"60s\"\n",
    )
    .await;
    for path in [
        "/v3/abc123/backups/detail?limit=2",
        "/v3/abc123/backups/detail?limit=2",
        "/v3/abc123/backups/detail?limit=2&marker=a-002",
        "/v3/abc123/backups/detail?limit=-1",
    ] {
        h.get(path, None).await;
    }
    let text = h.get_with("/metrics", &[]).await.text;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; .ci/run installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "{said}\n{text}"
    );
    assert!(
        text.contains("vbs_cache_hits_total{layer=\"responses\"} 1"),
        "{text}"
    );

    let open = h
        .get_with(
            "/metrics",
            &[(
                "Accept",
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            )],
        )
        .await;
    assert!(open
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let helps: Vec<&str> = open
        .text
        .lines()
        .filter(|l| l.starts_with("# HELP "))
        .collect();
    let distinct: std::collections::HashSet<&str> = helps
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(helps.len(), distinct.len(), "{}", open.text);
    assert!(distinct.contains("vbs_cache_hits"));
    assert!(open.text.trim_end().ends_with("# EOF"));
}
