//! The HTTP shell every service shares: standard layers, the public API with its
//! `/openapi.json`, the operational endpoints (`/healthz`, `/readyz`, `/metrics`) on a port
//! of their own that the public Service does not expose, and graceful shutdown of both.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::PgPool;
use tokio::net::TcpListener;

use mercato_contract::Component;

use crate::config::{JwtConfig, ServerConfig};
use crate::error::{self, ApiError};
use crate::jwt::Verifier;
use crate::metrics::{self, Metrics};
use crate::startup::Gate;

pub use crate::openapi::BearerAuth;

/// A readiness check beyond the database: `Err` says what is not ready.
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the operational endpoints need.
#[derive(Clone)]
pub struct Ops {
    pub service: &'static str,
    pub pool: Option<PgPool>,
    pub metrics: Arc<Metrics>,
    pub openapi: Arc<utoipa::openapi::OpenApi>,
    pub checks: Vec<ReadyCheck>,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Ops {
    pub fn new(
        component: Component,
        pool: Option<PgPool>,
        openapi: utoipa::openapi::OpenApi,
    ) -> Self {
        let service = component.name();
        Self {
            service,
            metrics: Metrics::new(service, pool.clone()),
            pool,
            openapi: Arc::new(openapi),
            checks: Vec::new(),
        }
    }

    pub fn with_check(mut self, check: ReadyCheck) -> Self {
        self.checks.push(check);
        self
    }
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(ops): State<Ops>) -> Response {
    let mut failures = Vec::new();
    if let Some(pool) = &ops.pool {
        let ping = tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("SELECT 1").execute(pool),
        )
        .await;
        match ping {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: database unreachable");
                failures.push("database unreachable".to_string());
            }
            Err(_) => failures.push("database timed out".to_string()),
        }
    }
    failures.extend(ops.checks.iter().filter_map(|check| check().err()));
    if failures.is_empty() {
        axum::Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "Not ready")
            .with_detail(failures.join("; "))
            .into_response()
    }
}

async fn openapi(State(ops): State<Ops>) -> impl IntoResponse {
    axum::Json(ops.openapi.as_ref().clone())
}

async fn deadline(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            "Request took too long",
        )
        .into_response(),
    }
}

/// What a service serves: the public API (with its `/openapi.json`) on `HTTP_ADDR`, and the
/// operational endpoints on `OPS_ADDR`, which only kubelet and Prometheus reach.
#[derive(Debug, Clone)]
pub struct Routers {
    pub public: Router,
    pub ops: Router,
}

impl Routers {
    /// A bare router on the public port and nothing on the ops port: a stand-in for a
    /// service in tests.
    pub fn public_only(public: Router) -> Self {
        Self {
            public,
            ops: Router::new(),
        }
    }
}

/// Reads the whole request body (up to the limit) before routing. A handler that answers
/// without reading it (401, or 404 for a malformed id) would leave it unread, and hyper
/// closes such a connection after the response; the gateway, which pools connections,
/// then sent its next request into the closing connection and answered it 503 (found by
/// `make fuzz`). Every body a handler reads is read whole anyway.
async fn read_body_first(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "Request body too large",
                )
                .into_response()
            } else {
                ApiError::bad_request("unreadable_body", "Could not read request body")
                    .into_response()
            }
        }
    }
}

/// Wraps a service's API router with `/openapi.json` and builds the operational router
/// beside it, both with the standard layers: request id + span, metrics and access log,
/// deadline, body limit, problem+json fallbacks.
pub fn build(api: Router, ops: Ops, config: &ServerConfig) -> Routers {
    let (metrics, service) = (ops.metrics.clone(), ops.service);
    let public = api.route("/openapi.json", get(openapi).with_state(ops.clone()));
    let operational = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ops)
        .route(
            "/metrics",
            get(metrics::handler).with_state(metrics.clone()),
        );
    Routers {
        public: layered(public, service, metrics.clone(), config),
        ops: layered(operational, service, metrics, config),
    }
}

fn layered(
    router: Router,
    service: &'static str,
    metrics: Arc<Metrics>,
    config: &ServerConfig,
) -> Router {
    router
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            config.max_body_bytes,
            read_body_first,
        ))
        .layer(middleware::from_fn_with_state(
            config.request_timeout(),
            deadline,
        ))
        .layer(middleware::from_fn(metrics::refuse_unknown_methods))
        .layer(middleware::from_fn_with_state(metrics, metrics::track))
        .layer(middleware::from_fn_with_state(
            service,
            crate::telemetry::request_id,
        ))
}

/// The start-up skeleton every service shares. A service's configuration (parsed from
/// flags and environment) builds the service: connect, migrate, assemble the router, and
/// name the background work. [`main`] runs a binary from it, [`spawn`] runs it inside
/// this process (the devstack and the tests).
pub trait ServiceConfig: clap::Parser + Send + Sync + 'static {
    /// Which part of the store this is (names logs, metrics and errors).
    const COMPONENT: Component;

    fn server(&self) -> &ServerConfig;

    /// Connects, migrates and assembles the service; serves nothing and starts nothing yet.
    fn build(&self) -> impl Future<Output = anyhow::Result<App>> + Send;
}

/// A built service: its routers, and what to start once it serves (the JWKS reloader
/// always, plus the service's own periodic work).
pub struct App {
    pub routers: Routers,
    verifier: Option<Arc<Verifier>>,
    reload_every: Duration,
    tasks: Vec<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl App {
    /// A service whose tokens `verifier` checks, its key set re-read as `jwt` says.
    pub fn new(routers: Routers, verifier: Arc<Verifier>, jwt: &JwtConfig) -> Self {
        Self {
            routers,
            verifier: Some(verifier),
            reload_every: Duration::from_secs(jwt.jwks_reload_interval_secs.max(1)),
            tasks: Vec::new(),
        }
    }

    /// A component that verifies no tokens itself (the storefront: a client of the API,
    /// whose answers say what a token may do).
    pub fn without_tokens(routers: Routers) -> Self {
        Self {
            routers,
            verifier: None,
            reload_every: Duration::ZERO,
            tasks: Vec::new(),
        }
    }

    /// The verifier whose key set (and revocation list) the started service keeps fresh.
    pub fn verifier(&self) -> Option<&Arc<Verifier>> {
        self.verifier.as_ref()
    }

    /// Background work to start with the service (a sweep, the outbox).
    pub fn with_task(mut self, start: impl FnOnce() + Send + 'static) -> Self {
        self.tasks.push(Box::new(start));
        self
    }

    /// Starts the background work and returns the routers to serve.
    pub fn start(self) -> Routers {
        if let Some(verifier) = &self.verifier {
            verifier.spawn_reloader(self.reload_every);
        }
        for task in self.tasks {
            task();
        }
        self.routers
    }
}

/// A service's whole life from its parsed configuration: [`run`] with the app built and
/// its background work started.
pub async fn run_service<C: ServiceConfig>(config: C) -> anyhow::Result<()> {
    run(C::COMPONENT, config.server(), async {
        Ok(config.build().await?.start())
    })
    .await
}

/// Builds a service from `args` (the binary name first), as its binary would from the
/// same environment, starts its background work and serves it on `listeners` (the
/// addresses in `args` are not bound: the caller chose the ports). Returns once the
/// service is built (its database reached and migrated), or with the error that stopped
/// the build.
pub async fn spawn<C: ServiceConfig>(
    args: Vec<String>,
    listeners: Listeners,
) -> anyhow::Result<Spawned> {
    spawn_starting::<C>(args, listeners)?.built().await
}

/// [`spawn`] without waiting: serves at once, answering as a starting service (`/healthz`
/// 200, `/readyz` and the API 503 with the reason) until the service is built.
pub fn spawn_starting<C: ServiceConfig>(
    args: Vec<String>,
    listeners: Listeners,
) -> anyhow::Result<Starting> {
    let config = C::try_parse_from(args)
        .map_err(|e| anyhow::anyhow!("{} configuration: {e}", C::COMPONENT.name()))?;
    let gate = Gate::default();
    let server = Spawned::start_on(listeners, gate.routers());
    let build = tokio::spawn(async move {
        let built = gate
            .startup()
            .scope(async { anyhow::Ok(config.build().await?.start()) })
            .await?;
        gate.open(built);
        Ok(())
    });
    Ok(Starting { server, build })
}

/// A service serving while it is built: see [`spawn_starting`].
#[derive(Debug)]
pub struct Starting {
    pub server: Spawned,
    build: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Starting {
    /// Waits until the service is built, or stops it and returns why its build failed.
    pub async fn built(self) -> anyhow::Result<Spawned> {
        let failed = match self.build.await {
            Ok(Ok(())) => return Ok(self.server),
            Ok(Err(e)) => e,
            Err(e) => anyhow::anyhow!("the build task failed: {e}"),
        };
        self.server.stop().await;
        Err(failed)
    }
}

/// The two sockets a service serves on.
#[derive(Debug)]
pub struct Listeners {
    pub public: TcpListener,
    pub ops: TcpListener,
}

impl Listeners {
    /// Binds both addresses, with a clear error naming the one that is taken.
    pub async fn bind(public: SocketAddr, ops: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            public: bind(public).await?,
            ops: bind(ops).await?,
        })
    }
}

/// A service's whole life: set up logging, bind the ports (failing fast and clearly when
/// one is taken), serve at once as a starting service while `start` builds the app (so a
/// database that is not there yet leaves the process running and not ready, rather than
/// restarting it), then serve the app until SIGTERM or Ctrl-C. A build that fails for
/// another reason (a bad key file) ends the process.
pub async fn run(
    component: Component,
    server: &ServerConfig,
    start: impl Future<Output = anyhow::Result<Routers>>,
) -> anyhow::Result<()> {
    crate::telemetry::init(
        server.log_format,
        &server.log_level,
        server.otel_exporter_otlp_endpoint.as_deref(),
        component.name(),
    );
    let listeners = Listeners::bind(server.http_addr, server.ops_addr).await?;
    let gate = Gate::default();
    let serving = serve(
        listeners,
        gate.routers(),
        Duration::from_secs(server.shutdown_grace_secs),
    );
    tokio::pin!(serving);
    tokio::select! {
        stopped = &mut serving => return stopped,
        built = gate.startup().scope(start) => gate.open(built?),
    }
    serving.await
}

/// Runs `task` every `every` until the process ends, logging how much it did (when it
/// did something) or why it failed; a failed round is retried on the next tick.
pub fn spawn_every<F, Fut, E>(
    every: Duration,
    what: &'static str,
    mut task: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<u64, E>> + Send,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match task().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(count = n, "{what}"),
                Err(e) => tracing::warn!(error = %e, "{what}: failed; retrying next round"),
            }
        }
    })
}

/// Binds the configured address, with a clear error when it is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Serves until SIGTERM or Ctrl-C, then stops accepting and drains in-flight requests
/// for at most `grace`.
pub async fn serve(listeners: Listeners, routers: Routers, grace: Duration) -> anyhow::Result<()> {
    serve_until(listeners, routers, shutdown_signal(), grace).await
}

/// [`serve`] with an explicit shutdown trigger (tests stop services this way). Both
/// listeners stop accepting on the same trigger and share the grace period.
pub async fn serve_until(
    listeners: Listeners,
    routers: Routers,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    let (addr, ops_addr) = (listeners.public.local_addr()?, listeners.ops.local_addr()?);
    tracing::info!(%addr, %ops_addr, "listening");
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let trigger = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stopping_tx.send(true);
    });
    let stopping = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stopping| *stopping).await;
    };
    let public = axum::serve(
        listeners.public,
        routers
            .public
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopping(stopping_rx.clone()))
    .into_future();
    let ops = axum::serve(
        listeners.ops,
        routers
            .ops
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopping(stopping_rx.clone()))
    .into_future();
    let drained = async move {
        stopping(stopping_rx).await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = futures::future::try_join(public, ops) => result.map(|_| ()).map_err(Into::into),
        () = drained => {
            tracing::warn!(?grace, "grace period over; exiting with requests still in flight");
            Ok(())
        }
    };
    trigger.abort();
    result
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// The whole `main` of a service binary: parse configuration (exiting with one line on a
/// bad setting), build the runtime, run until shutdown, and exit non-zero on failure.
pub fn main<C: ServiceConfig>() -> std::process::ExitCode {
    let config = crate::config::parse::<C>();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run_service(config));
    // The spans of the last requests, before the process goes.
    crate::telemetry::flush_traces();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{} service stopped", C::COMPONENT.name());
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A server running on its own task until stopped or dropped: how the devstack and the
/// tests run services in one process.
#[derive(Debug)]
pub struct Spawned {
    /// The public API.
    pub addr: SocketAddr,
    /// The operational endpoints.
    pub ops_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Spawned {
    /// Serves on two random local ports.
    pub async fn start(routers: Routers) -> Self {
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        let listeners = Listeners::bind(local, local)
            .await
            .expect("bind two local ports");
        Self::start_on(listeners, routers)
    }

    pub fn start_on(listeners: Listeners, routers: Routers) -> Self {
        let unknown = SocketAddr::from(([127, 0, 0, 1], 0));
        let addr = listeners.public.local_addr().unwrap_or(unknown);
        let ops_addr = listeners.ops.local_addr().unwrap_or(unknown);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = rx.await;
            };
            if let Err(e) = serve_until(listeners, routers, stop, Duration::from_secs(5)).await {
                tracing::error!(error = %e, "server failed");
            }
        });
        Self {
            addr,
            ops_addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// A URL on the public port.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the operational port (`/healthz`, `/readyz`, `/metrics`).
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ops_addr)
    }

    /// Stops accepting, drains, and waits until the server has stopped.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogFormat;

    fn config() -> ServerConfig {
        ServerConfig {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ops_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_format: LogFormat::Pretty,
            log_level: "warn".into(),
            otel_exporter_otlp_endpoint: None,
            max_body_bytes: 1024,
            request_timeout_secs: 5,
            shutdown_grace_secs: 1,
        }
    }

    async fn service() -> Spawned {
        let api = Router::new().route("/things/{id}", get(|| async { "a thing" }));
        let ops = Ops::new(
            Component::Product,
            None,
            utoipa::openapi::OpenApi::default(),
        );
        Spawned::start(build(api, ops, &config())).await
    }

    async fn status(http: &reqwest::Client, method: &str, url: &str) -> u16 {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method token");
        http.request(method, url)
            .send()
            .await
            .expect("the server answers")
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn operational_endpoints_answer_on_the_ops_port_only() {
        let server = service().await;
        let http = reqwest::Client::new();
        for path in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(
                status(&http, "GET", &server.ops_url(path)).await,
                200,
                "{path}"
            );
            assert_eq!(status(&http, "GET", &server.url(path)).await, 404, "{path}");
        }
        assert_eq!(
            status(&http, "GET", &server.url("/openapi.json")).await,
            200
        );
        assert_eq!(
            status(&http, "GET", &server.ops_url("/openapi.json")).await,
            404
        );
        assert_eq!(status(&http, "GET", &server.url("/things/1")).await, 200);
        assert_eq!(
            status(&http, "GET", &server.ops_url("/things/1")).await,
            404
        );
        server.stop().await;
    }

    /// The series `/metrics` reports (every sample line, whatever its value).
    async fn series(http: &reqwest::Client, server: &Spawned) -> Vec<String> {
        let text = http
            .get(server.ops_url("/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text");
        let mut series: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
            .collect();
        series.sort();
        series
    }

    #[tokio::test]
    async fn spraying_random_paths_and_methods_adds_no_series() {
        let server = service().await;
        let http = reqwest::Client::new();
        // One of each kind of request first: each method the spray uses, and a made-up
        // one, on a known route and on an unknown path; then the scrape itself.
        for method in ["GET", "POST", "DELETE", "PATCH", "BREW"] {
            for path in ["/things/1", "/nowhere"] {
                status(&http, method, &server.url(path)).await;
            }
        }
        series(&http, &server).await;
        let before = series(&http, &server).await;
        assert!(
            before.iter().any(|s| s.contains("route=\"unmatched\"")),
            "{before:#?}"
        );

        for i in 0..500 {
            let token = uuid::Uuid::new_v4().simple().to_string();
            let method = if i % 2 == 0 {
                token[..8].to_ascii_uppercase()
            } else {
                ["GET", "POST", "DELETE", "PATCH"][i % 4].to_string()
            };
            let path = if i % 3 == 0 {
                format!("/things/{token}")
            } else {
                format!("/{token}/{i}")
            };
            let answered = status(&http, &method, &server.url(&path)).await;
            assert!(
                [200, 404, 405, 501].contains(&answered),
                "{method} {path}: {answered}"
            );
        }
        let after = series(&http, &server).await;
        let added: Vec<&String> = after.iter().filter(|s| !before.contains(s)).collect();
        assert!(added.is_empty(), "new series: {added:#?}");
        assert_eq!(after.len(), before.len());
        server.stop().await;
    }
}
