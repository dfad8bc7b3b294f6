//! Logs (`tracing`, text or JSON) and, when `telemetry.otlp_endpoint` is set, OpenTelemetry
//! traces exported over OTLP/HTTP (protobuf). With no endpoint no OpenTelemetry layer exists,
//! so spans cost what plain `tracing` spans cost.

use std::collections::HashMap;
use std::io::IsTerminal;

use async_trait::async_trait;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{Config, LogFormat};

/// Keeps the exporter alive; `shutdown` flushes what is buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("vbs-proxy: flushing traces failed: {e}");
            }
        }
    }
}

/// Install the global subscriber (logs, and traces when configured). Call once, inside the
/// tokio runtime (the exporter sends on it).
pub fn init(config: &Config) -> Telemetry {
    // `RUST_LOG`, when set, over `log.level`: what a Rust program is expected to read.
    let asked = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| ("RUST_LOG", v))
        .unwrap_or(("log.level", config.log.level.clone()));
    let (filter, refused) = match tracing_subscriber::EnvFilter::try_new(&asked.1) {
        Ok(filter) => (filter, None),
        Err(e) => (
            tracing_subscriber::EnvFilter::new("info"),
            Some(e.to_string()),
        ),
    };
    let fmt = match config.log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
        // Colour codes only for a person at a terminal, never into a file or a pipe.
        // The module path says nothing to an operator: not in text lines.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .with_target(false)
            .boxed(),
    };
    let provider = config
        .telemetry
        .otlp_endpoint
        .as_ref()
        .map(|endpoint| provider(endpoint, &config.telemetry.service_name));
    TRACES_ON.store(provider.is_some(), std::sync::atomic::Ordering::Relaxed);
    let otel = provider.as_ref().map(|p| {
        // Spans of this crate only (not every dependency's), at any level the filter passes.
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("vbs-proxy"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("vbs_proxy", tracing::Level::INFO),
            )
    });
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    if asked.0 == "log.level" && refused.is_none() {
        let _ = LOG_FILTER.set(handle);
    }
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .init();
    if let Some(error) = refused {
        let (source, value) = asked;
        tracing::warn!(source, value, error, "not a log filter: logging at info");
    }
    Telemetry { provider }
}

/// Spans are exported (`telemetry.otlp_endpoint`): what only traces need is worked out.
static TRACES_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Are spans exported over OTLP?
pub fn traces_on() -> bool {
    TRACES_ON.load(std::sync::atomic::Ordering::Relaxed)
}

/// The log filter, when `log.level` set it (not `RUST_LOG`, which a reload leaves alone).
static LOG_FILTER: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
> = std::sync::OnceLock::new();

/// Log at `level` from now on (a reload changed `log.level`); false when the level was not
/// `log.level`'s to set (`RUST_LOG` set it, or no subscriber of this module is installed).
pub fn set_log_level(level: &str) -> Result<bool, String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    match LOG_FILTER.get() {
        Some(handle) => handle
            .reload(filter)
            .map(|()| true)
            .map_err(|e| e.to_string()),
        None => Ok(false),
    }
}

fn provider(endpoint: &str, service: &str) -> SdkTracerProvider {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_http_client(OtlpClient {
            client: reqwest::Client::new(),
            runtime: tokio::runtime::Handle::current(),
        })
        .build()
        .expect("the OTLP exporter builds from a validated endpoint");
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_string())
        .build();
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build()
}

/// The exporter's HTTP client: the project's reqwest, run on the proxy's runtime (the batch
/// processor exports from a thread of its own).
#[derive(Debug)]
struct OtlpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let send = async move {
            let request = reqwest::Request::try_from(request.map(reqwest::Body::from))?;
            let response = client.execute(request).await?;
            let mut out = Response::builder().status(response.status());
            for (k, v) in response.headers() {
                out = out.header(k, v);
            }
            let body = response.bytes().await?;
            Ok::<_, HttpError>(out.body(body)?)
        };
        self.runtime.spawn(send).await?
    }
}

/// The W3C trace context of `span` as headers (`traceparent`), for an upstream request.
/// Empty when no OpenTelemetry layer is installed.
pub fn trace_headers(span: &tracing::Span) -> HashMap<String, String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut headers = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut headers);
    headers
}

/// Make `span` a child of the client's `traceparent`, if it sent one.
pub fn adopt_parent(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let carrier: HashMap<String, String> = headers
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "traceparent" | "tracestate"))
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    if !carrier.is_empty() {
        let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
    }
}
