//! Logging and traces set up once per process, and the request id every log line and
//! hop carries: W3C `traceparent` joins a request's spans across the gateway and the
//! services, and a request that arrives without an id takes its trace id as its id.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The exporter of this process's traces, when an OTLP endpoint is set.
static TRACES: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber: logs filtered by `filter`, and, when `otlp_endpoint` is
/// set, traces (every span at INFO and above, whatever the log filter) batched to that
/// OTLP/HTTP collector as `service`. Safe to call more than once (later calls do
/// nothing), so tests that start several services in one process can all call it.
pub fn init(format: LogFormat, filter: &str, otlp_endpoint: Option<&str>, service: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let traces = otlp_endpoint.and_then(|endpoint| match exporter(endpoint, service) {
        Ok(provider) => Some(provider),
        Err(e) => {
            eprintln!("warning: traces are off: cannot export to {endpoint}: {e}");
            None
        }
    });
    let otel = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("mercato"))
            .with_filter(LevelFilter::INFO)
    });
    let registry = tracing_subscriber::registry().with(otel);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stdout().is_terminal())
                    .with_filter(filter),
            )
            .try_init()
    };
    // An already-installed subscriber (tests) is fine; its exporter stays the one used.
    if result.is_ok()
        && let Some(provider) = traces
    {
        let _ = TRACES.set(provider);
    }
}

fn exporter(endpoint: &str, service: &str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(Duration::from_secs(5))
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build())
}

/// Sends the spans still waiting in the batch now. Blocks: call it off the async
/// runtime (at exit, or from `spawn_blocking`).
pub fn flush_traces() {
    if let Some(provider) = TRACES.get()
        && let Err(e) = provider.force_flush()
    {
        eprintln!("warning: flushing traces failed: {e}");
    }
}

/// The W3C trace context of a request (`traceparent`, `tracestate`).
fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Writes the current span's trace context into `headers` (replacing the caller's), so
/// the next hop's spans join this trace as children of this one. Without traces, nothing.
pub fn inject_trace(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        propagator().inject_context(&cx, &mut HeaderInjector(headers));
    }
}

/// The request id of the request being handled by this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `fut` with `id` as the current request id (for work spawned off a request).
pub async fn with_request_id<F: std::future::Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// A caller's id when it is short printable ASCII, so a client cannot inject log lines
/// or unbounded strings.
fn accepted(header: Option<&HeaderValue>) -> Option<String> {
    header
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
}

/// The `x-request-id` to answer a request with that no layer saw (the gateway's cached
/// reads): the caller's, when it is acceptable, else a new one.
pub fn answer_request_id(headers: &HeaderMap) -> HeaderValue {
    accepted(headers.get(&REQUEST_ID_HEADER))
        .and_then(|id| HeaderValue::from_str(&id).ok())
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        })
}

/// Middleware: opens the request's span (so every log line inside carries it) as a child
/// of the caller's `traceparent`, if any; takes `x-request-id`, or, without one, the trace
/// id (a new id when traces are off); makes it current for outgoing calls, and echoes it
/// back.
pub async fn request_id(
    State(service): State<&'static str>,
    mut req: Request,
    next: Next,
) -> Response {
    let span = tracing::info_span!(
        "request",
        service,
        request_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        method = %req.method(),
        path = %req.uri().path(),
        otel.kind = "server",
    );
    let parent = propagator().extract(&HeaderExtractor(req.headers()));
    // Fails only when traces are off: there is no trace to join then.
    let _ = span.set_parent(parent);
    let trace = span.context().span().span_context().clone();
    let id = accepted(req.headers().get(&REQUEST_ID_HEADER)).unwrap_or_else(|| {
        if trace.is_valid() {
            trace.trace_id().to_string()
        } else {
            uuid::Uuid::new_v4().to_string()
        }
    });
    span.record("request_id", id.as_str());
    if trace.is_valid() {
        span.record("trace_id", trace.trace_id().to_string());
    }
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    req.headers_mut().insert(REQUEST_ID_HEADER, value.clone());
    let mut response = REQUEST_ID.scope(id, next.run(req).instrument(span)).await;
    response.headers_mut().insert(REQUEST_ID_HEADER, value);
    response
}

/// Adds the current request id and trace context to an outgoing request.
pub fn propagate(builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let mut headers = HeaderMap::new();
    inject_trace(&mut headers);
    if let Some(id) = current_request_id()
        && let Ok(value) = HeaderValue::from_str(&id)
    {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    builder.headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_request_ids_are_replaced() {
        let ok = HeaderValue::from_static("abc-123");
        assert_eq!(accepted(Some(&ok)).as_deref(), Some("abc-123"));
        let long = HeaderValue::from_str(&"a".repeat(200)).unwrap();
        assert_eq!(accepted(Some(&long)), None);
        let spaced = HeaderValue::from_static("a b");
        assert_eq!(accepted(Some(&spaced)), None);
        assert_eq!(accepted(None), None);
    }
}
