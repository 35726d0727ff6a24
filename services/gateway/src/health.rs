//! `GET /health`: every service's readiness; 200 only when all are ready.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::Gateway;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when every service is ready, else `degraded`.
    pub status: &'static str,
    /// Per service: `ready`, `not ready` or `unreachable`.
    pub upstreams: BTreeMap<&'static str, &'static str>,
}

async fn probe(g: &Gateway, base: &str) -> &'static str {
    let Ok(req) = Request::get(format!("{base}/readyz")).body(Body::empty()) else {
        return "unreachable";
    };
    match tokio::time::timeout(Duration::from_secs(2), g.client.request(req)).await {
        Ok(Ok(r)) if r.status().is_success() => "ready",
        Ok(Ok(_)) => "not ready",
        _ => "unreachable",
    }
}

#[utoipa::path(get, path = "/health", tag = "gateway",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(g): State<Gateway>) -> impl IntoResponse {
    let checks = g.upstreams.all().map(|(c, base)| {
        let g = g.clone();
        let base = base.to_string();
        async move { (c.name(), probe(&g, &base).await) }
    });
    let upstreams: BTreeMap<_, _> = futures::future::join_all(checks)
        .await
        .into_iter()
        .collect();
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
