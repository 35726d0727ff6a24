//! `GET /health`: every service's readiness; 200 only when all are ready. The services'
//! `/readyz` (on their ops ports) are probed in the background at a fixed interval, so a
//! flood of `/health` costs the services nothing: each hit reads the last results.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use mercato_contract::Component;
use serde::Serialize;
use utoipa::ToSchema;

use crate::Gateway;
use crate::proxy::HttpClient;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when every service is ready, else `degraded`.
    pub status: &'static str,
    /// Per service, as of the last background probe: `ready`, `not ready`, `unreachable`,
    /// or `unknown` before the first probe has answered.
    pub upstreams: BTreeMap<&'static str, &'static str>,
}

/// How long one probe may take before its service counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The last known readiness of every service, and where to probe it.
#[derive(Debug)]
pub struct Board {
    targets: Vec<(Component, String)>,
    last: RwLock<BTreeMap<&'static str, &'static str>>,
}

impl Board {
    /// `targets`: each service and the base URL of its operational endpoints.
    pub fn new(targets: Vec<(Component, String)>) -> Self {
        let last = targets.iter().map(|(c, _)| (c.name(), "unknown")).collect();
        Self {
            targets,
            last: RwLock::new(last),
        }
    }

    /// Probes every service's `/readyz` at once and records the answers.
    pub async fn refresh(&self, client: &HttpClient) {
        let probes = self.targets.iter().map(|(c, base)| async move {
            (c.name(), probe(client, &format!("{base}/readyz")).await)
        });
        let results = futures::future::join_all(probes).await;
        let mut last = self.last.write().unwrap_or_else(|p| p.into_inner());
        last.extend(results);
    }

    /// Probes now and then every `every`, for as long as a gateway serves this board.
    pub fn spawn_prober(self: &Arc<Self>, client: HttpClient, every: Duration) {
        let board = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(board) = board.upgrade() else { break };
                board.refresh(&client).await;
            }
        });
    }

    fn snapshot(&self) -> BTreeMap<&'static str, &'static str> {
        self.last.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn probe(client: &HttpClient, url: &str) -> &'static str {
    let Ok(req) = Request::get(url).body(Body::empty()) else {
        return "unreachable";
    };
    match tokio::time::timeout(PROBE_TIMEOUT, client.request(req)).await {
        Ok(Ok(r)) if r.status().is_success() => "ready",
        Ok(Ok(_)) => "not ready",
        _ => "unreachable",
    }
}

#[utoipa::path(get, path = "/health", tag = "gateway",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(g): State<Gateway>) -> impl IntoResponse {
    let upstreams = g.health.snapshot();
    let all_ready = upstreams.values().all(|s| *s == "ready");
    let status = if all_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if all_ready { "ok" } else { "degraded" },
        upstreams,
    };
    (status, axum::Json(body))
}
