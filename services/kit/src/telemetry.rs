//! Logging set up once per process, and the request id every log line and hop carries.

use std::io::IsTerminal;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing),
/// so tests that start several services in one process can all call it.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal()))
            .try_init()
    };
    // An already-installed subscriber (tests) is fine.
    let _ = result;
}

/// The request id of the request being handled by this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `fut` with `id` as the current request id (for work spawned off a request).
pub async fn with_request_id<F: std::future::Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// Accepts a caller's id when it is short printable ASCII, otherwise makes one, so a
/// client cannot inject log lines or unbounded strings.
fn accept_or_generate(header: Option<&HeaderValue>) -> String {
    header
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Middleware: takes `x-request-id` or makes one, opens the request's span (so every log
/// line inside carries it), makes it current for outgoing calls, and echoes it back.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = accept_or_generate(req.headers().get(&REQUEST_ID_HEADER));
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    req.headers_mut().insert(REQUEST_ID_HEADER, value.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
    );
    let mut response = REQUEST_ID.scope(id, next.run(req).instrument(span)).await;
    response.headers_mut().insert(REQUEST_ID_HEADER, value);
    response
}

/// Adds the current request id to an outgoing request.
pub fn propagate(builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match current_request_id() {
        Some(id) => builder.header(REQUEST_ID_HEADER, id),
        None => builder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_request_ids_are_replaced() {
        let ok = HeaderValue::from_static("abc-123");
        assert_eq!(accept_or_generate(Some(&ok)), "abc-123");
        let long = HeaderValue::from_str(&"a".repeat(200)).unwrap();
        assert_ne!(accept_or_generate(Some(&long)).len(), 200);
        let spaced = HeaderValue::from_static("a b");
        assert_ne!(accept_or_generate(Some(&spaced)), "a b");
        assert_eq!(accept_or_generate(None).len(), 36);
    }
}
