//! Prometheus metrics: requests by route template and status, latency, DB pool gauges.

use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use std::sync::Arc;

use crate::error::ApiError;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// The metrics of one service process.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    pool_size: Gauge,
    pool_idle: Gauge,
    pool_max: Gauge,
    pool: Option<PgPool>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(service: &str, pool: Option<PgPool>) -> Arc<Self> {
        let mut registry = Registry::with_prefix("mercato");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let (pool_size, pool_idle, pool_max) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        let sub = registry.sub_registry_with_label(("service".into(), service.to_string().into()));
        sub.register(
            "http_requests",
            "HTTP requests by route template and status",
            requests.clone(),
        );
        sub.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            latency.clone(),
        );
        if pool.is_some() {
            sub.register(
                "db_pool_connections",
                "Open database connections",
                pool_size.clone(),
            );
            sub.register(
                "db_pool_idle_connections",
                "Idle database connections",
                pool_idle.clone(),
            );
            sub.register(
                "db_pool_max_connections",
                "Configured pool maximum",
                pool_max.clone(),
            );
        }
        Arc::new(Self {
            registry: Mutex::new(registry),
            requests,
            latency,
            pool_size,
            pool_idle,
            pool_max,
            pool,
        })
    }

    /// Registers a service's own metric next to the standard ones.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry.register(name, help, metric);
    }

    /// Renders the OpenMetrics text exposition.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        if let Some(pool) = &self.pool {
            self.pool_size.set(i64::from(pool.size()));
            self.pool_idle
                .set(i64::try_from(pool.num_idle()).unwrap_or(i64::MAX));
            self.pool_max
                .set(i64::from(pool.options().get_max_connections()));
        }
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// The methods the services answer. Any token is a valid HTTP method, so the raw method
/// would let each client add series to `/metrics` forever: every other one is counted as
/// `OTHER` and refused by `refuse_unknown_methods`.
const KNOWN_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// The metrics label of `method`: itself when known, else `OTHER`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Middleware: a request with a made-up method is answered `501 Not Implemented` before it
/// reaches a handler. `TRACE` and `CONNECT` are standard methods no route serves: they are
/// routed, and so answered `405` with `Allow` (RFC 9110 §15.5.6), under the `OTHER` label.
pub async fn refuse_unknown_methods(req: Request, next: Next) -> Response {
    let method = req.method();
    if KNOWN_METHODS.contains(method) || *method == Method::TRACE || *method == Method::CONNECT {
        return next.run(req).await;
    }
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "method_not_implemented",
        "Method not implemented",
    )
    .with_detail(format!(
        "this service answers {}",
        KNOWN_METHODS.map(|m| m.to_string()).join(", ")
    ))
    .into_response()
}

/// Middleware: counts and times every request under its route template (not its raw
/// path, so ids do not explode the label space) and its method (unknown ones as `OTHER`),
/// and logs one line per request.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method()).to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    metrics
        .latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    if route != "/healthz" && route != "/readyz" && route != "/metrics" {
        tracing::info!(%method, %route, status, latency_ms = elapsed.as_millis() as u64, "request completed");
    }
    response
}

/// `GET /metrics`.
pub async fn handler(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.render() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            body,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("encoding metrics: {e}")).into_response(),
    }
}
