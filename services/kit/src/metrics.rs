//! Prometheus metrics: requests by route template and status, latency, DB pool gauges, and
//! what a service reads from its database at each scrape (rows by status, backlogs).

use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    method: &'static str,
    route: String,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

/// Work run before each scrape (reading a gauge from the database).
type Refresh = Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// How long the refreshes of one scrape may take: a slow database leaves the gauges at
/// their last values rather than the scrape timing out.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
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
    refreshes: Mutex<Vec<Refresh>>,
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
            refreshes: Mutex::new(Vec::new()),
        })
    }

    /// Registers a counter and returns it, for a service to count its own events with.
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        let counter = Counter::default();
        self.register(name, help, counter.clone());
        counter
    }

    /// Runs `refresh` before each scrape (bounded by [`REFRESH_TIMEOUT`]), for gauges read
    /// from the database: they are then as fresh as the scrape, whichever replica or
    /// background task last changed the rows.
    pub fn on_scrape<F, Fut>(&self, refresh: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let refresh: Refresh = Arc::new(move || Box::pin(refresh()));
        self.refreshes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(refresh);
    }

    /// Registers `name{status}`: the rows of `table` in each of `statuses` (the values its
    /// `status` CHECK allows, each reported even at 0, and only those: the label stays
    /// bounded), counted at each scrape. The count lives in the database, so it is the
    /// same on every replica (aggregate with `max`) and survives restarts; `increase()`
    /// of a final status counts the orders (payments, reservations) that reached it.
    pub fn rows_by_status(
        &self,
        name: &str,
        help: &str,
        pool: PgPool,
        table: &'static str,
        statuses: &'static [&'static str],
    ) {
        let family = Family::<StatusLabel, Gauge>::default();
        for status in statuses {
            family
                .get_or_create(&StatusLabel {
                    status: label_of(status),
                })
                .set(0);
        }
        self.register(name, help, family.clone());
        let query = format!("SELECT status, count(*) FROM {table} GROUP BY status");
        self.on_scrape(move || {
            let (pool, family, query) = (pool.clone(), family.clone(), query.clone());
            async move {
                let rows: Vec<(String, i64)> = match sqlx::query_as(&query).fetch_all(&pool).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, table, "metrics: counting rows by status failed");
                        return;
                    }
                };
                for status in statuses {
                    let n = rows
                        .iter()
                        .find(|(s, _)| s == status)
                        .map_or(0, |(_, n)| *n);
                    family
                        .get_or_create(&StatusLabel {
                            status: label_of(status),
                        })
                        .set(n);
                }
            }
        });
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

    /// Runs every [`Metrics::on_scrape`] refresh, all at once, each for at most
    /// [`REFRESH_TIMEOUT`].
    pub async fn refresh(&self) {
        let refreshes = self
            .refreshes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        futures::future::join_all(
            refreshes
                .iter()
                .map(|refresh| tokio::time::timeout(REFRESH_TIMEOUT, refresh())),
        )
        .await;
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

/// A status as a label value: the database's `PAID` as `paid`, lower case like every
/// other label value here.
fn label_of(status: &str) -> String {
    status.to_ascii_lowercase()
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

/// The metrics label of a status: a registered code as itself, any other (a status is any
/// three digits) as its class, so even a misbehaving upstream adds at most five series.
pub fn status_label(status: StatusCode) -> &'static str {
    let code = status.as_u16();
    if let Some((_, label)) = STATUSES.iter().find(|(known, _)| *known == code) {
        return label;
    }
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The statuses this store answers with, each its own series.
const STATUSES: [(u16, &str); 22] = [
    (200, "200"),
    (201, "201"),
    (202, "202"),
    (204, "204"),
    (301, "301"),
    (302, "302"),
    (304, "304"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (409, "409"),
    (412, "412"),
    (413, "413"),
    (415, "415"),
    (422, "422"),
    (429, "429"),
    (500, "500"),
    (501, "501"),
    (503, "503"),
    (504, "504"),
];

/// The route label of a request: its route template (not its raw path, so ids do not
/// explode the label space), or `unmatched` for a path no route serves.
fn route_label(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_string(), |p| p.as_str().to_string())
}

/// The route label of every request no route matched, whatever its path.
pub const UNMATCHED: &str = "unmatched";

/// Middleware: counts and times every request under its route template, its method
/// (unknown ones as `OTHER`) and its status (unusual ones by class), and logs one line per
/// request. Every label takes a bounded set of values: no client can add series.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = route_label(&req);
    let response = next.run(req).await;
    metrics.record(&method, &route, response.status(), started.elapsed());
    response
}

impl Metrics {
    /// Counts, times and logs one request answered with `status` after `elapsed`, under
    /// its route template `route`: what [`track`] does for every request, for an answer
    /// given before the layers (the gateway's cached reads).
    pub fn record(&self, method: &Method, route: &str, status: StatusCode, elapsed: Duration) {
        let method = method_label(method);
        let status = status_label(status);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method,
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
        if route != "/healthz" && route != "/readyz" && route != "/metrics" {
            tracing::info!(%method, %route, status, latency_ms = elapsed.as_millis() as u64, "request completed");
        }
    }
}

/// `GET /metrics`.
pub async fn handler(State(metrics): State<Arc<Metrics>>) -> Response {
    metrics.refresh().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_outside_the_known_set_are_counted_by_class() {
        assert_eq!(status_label(StatusCode::CONFLICT), "409");
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT), "4xx");
        assert_eq!(status_label(StatusCode::from_u16(599).unwrap()), "5xx");
        assert_eq!(status_label(StatusCode::from_u16(999).unwrap()), "5xx");
    }
}
