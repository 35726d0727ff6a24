//! A service that is still starting (its database not there yet) keeps running: the ops
//! port says why it is not ready and the public port answers 503 until the service is
//! built, rather than the process exiting into CrashLoopBackOff.

use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

use crate::error::ApiError;
use crate::server::Routers;

/// How long a caller of a starting service is told to wait before trying again.
const RETRY_AFTER_SECS: u64 = 5;

tokio::task_local! {
    static STARTUP: Startup;
}

/// What a starting service is waiting for, as the code building it last reported.
#[derive(Debug, Clone)]
pub struct Startup(Arc<Mutex<String>>);

impl Default for Startup {
    fn default() -> Self {
        Self(Arc::new(Mutex::new("starting".into())))
    }
}

impl Startup {
    /// Records why the service building on this task is not ready yet (read by `/readyz`
    /// and the public API's 503). Outside a start-up (a test building a pool) it does
    /// nothing.
    pub fn report(reason: impl Into<String>) {
        let reason = reason.into();
        let _ = STARTUP.try_with(|startup| startup.set(reason));
    }

    fn set(&self, reason: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    /// The reason last reported.
    pub fn reason(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `build` with this as the start-up that [`Startup::report`] writes to.
    pub async fn scope<F: Future>(&self, build: F) -> F::Output {
        STARTUP.scope(self.clone(), build).await
    }
}

/// The routers a service serves from the moment its ports are bound: answering for a
/// starting service until [`Gate::open`] hands them the built one.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    startup: Startup,
    public: Arc<OnceLock<Router>>,
    ops: Arc<OnceLock<Router>>,
}

impl Gate {
    pub fn startup(&self) -> &Startup {
        &self.startup
    }

    /// Whether the built service answers now.
    pub fn is_open(&self) -> bool {
        self.public.get().is_some()
    }

    /// From now on the built service answers on both ports.
    pub fn open(&self, routers: Routers) {
        let _ = self.public.set(routers.public);
        let _ = self.ops.set(routers.ops);
    }

    /// The routers to serve: the built service's once open; before, the public port
    /// answers 503 problem+json with the reason, and the ops port answers `/healthz` 200
    /// (the process is alive: no restart would help) and everything else, `/readyz`
    /// included, 503 with the reason.
    pub fn routers(&self) -> Routers {
        Routers {
            public: gated(self.public.clone(), self.startup.clone(), false),
            ops: gated(self.ops.clone(), self.startup.clone(), true),
        }
    }
}

fn gated(built: Arc<OnceLock<Router>>, startup: Startup, ops: bool) -> Router {
    Router::new().fallback(move |req: Request| {
        let (built, startup) = (built.clone(), startup.clone());
        async move {
            if let Some(router) = built.get() {
                return match router.clone().oneshot(req).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
            }
            if ops && req.uri().path() == "/healthz" {
                return axum::Json(serde_json::json!({ "status": "starting" })).into_response();
            }
            not_ready(&startup, ops)
        }
    })
}

fn not_ready(startup: &Startup, ops: bool) -> Response {
    let (code, title) = if ops {
        ("not_ready", "Not ready")
    } else {
        ("starting", "Service starting")
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, title)
        .with_detail(startup.reason())
        .with_retry_after(RETRY_AFTER_SECS)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    async fn answer(router: &Router, path: &str) -> (u16, String) {
        let response = router
            .clone()
            .oneshot(
                Request::get(path)
                    .body(axum::body::Body::empty())
                    .expect("a request"),
            )
            .await
            .expect("infallible");
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("a body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_starting_service_says_why_until_it_is_built() {
        let gate = Gate::default();
        let routers = gate.routers();
        gate.startup()
            .scope(async { Startup::report("database not reachable yet: refused") })
            .await;

        assert_eq!(answer(&routers.ops, "/healthz").await.0, 200);
        let (status, body) = answer(&routers.ops, "/readyz").await;
        assert_eq!(status, 503);
        assert!(
            body.contains("database not reachable yet: refused"),
            "{body}"
        );
        let (status, body) = answer(&routers.public, "/things").await;
        assert_eq!(status, 503);
        assert!(body.contains("Service starting"), "{body}");
        assert!(body.contains("database not reachable yet"), "{body}");

        gate.open(Routers {
            public: Router::new().route("/things", get(|| async { "things" })),
            ops: Router::new().route("/readyz", get(|| async { "ready" })),
        });
        assert_eq!(
            answer(&routers.public, "/things").await,
            (200, "things".into())
        );
        assert_eq!(answer(&routers.ops, "/readyz").await, (200, "ready".into()));
        assert_eq!(answer(&routers.ops, "/healthz").await.0, 404);
    }

    #[test]
    fn reports_outside_a_start_up_go_nowhere() {
        Startup::report("nobody listens");
        assert_eq!(Startup::default().reason(), "starting");
    }
}
