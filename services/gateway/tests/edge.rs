//! The gateway at the edge, against fake services that count their readiness probes and
//! echo what the gateway told them: operational endpoints on their own port, a `/health`
//! that costs the services nothing per hit, and a client address that no client can forge.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{any, get};
use mercato_contract::{CLIENT_ADDRESS_HEADER, RELAYED_CLIENT_HEADER};
use mercato_kit::edge::EdgeKey;
use mercato_kit::server::{Listeners, Routers, Spawned, spawn};
use mercato_kit::testing::{TestAuth, TestKeys, poll};
use serde_json::{Value, json};

const EDGE_KEY: &str = "edge-key-for-the-gateway-tests-0123456789";

/// A service stand-in: `/readyz` on its ops port counts its calls and answers as `ready`
/// says; every public path echoes the client headers it received.
struct FakeService {
    server: Spawned,
    probes: Arc<AtomicUsize>,
    ready: Arc<AtomicBool>,
}

impl FakeService {
    /// `routes` are served before the echo (the fake auth's token grant and feed).
    async fn start(routes: Router) -> Self {
        let probes = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(true));
        let (p, r) = (probes.clone(), ready.clone());
        let ops = Router::new().route(
            "/readyz",
            get(move || {
                p.fetch_add(1, Ordering::SeqCst);
                let ready = r.load(Ordering::SeqCst);
                async move {
                    if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                }
            }),
        );
        let echo = |headers: HeaderMap| async move {
            let all = |name: &str| -> Vec<String> {
                headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(String::from))
                    .collect()
            };
            axum::Json(json!({
                "client_address": all(CLIENT_ADDRESS_HEADER),
                "forwarded_for": all("x-forwarded-for"),
                "relayed": all(RELAYED_CLIENT_HEADER),
            }))
        };
        let public = routes.route("/{*rest}", any(echo));
        Self {
            server: Spawned::start(Routers { public, ops }).await,
            probes,
            ready,
        }
    }
}

struct Edge {
    gateway: Spawned,
    services: Vec<FakeService>,
    http: reqwest::Client,
    _keys: TestKeys,
}

impl Edge {
    async fn start(extra: &[&str]) -> Self {
        let keys = TestKeys::new();
        // The fake auth also grants the gateway its token and serves an empty revocation feed.
        let (auth_routes, _) = TestAuth::routes(&keys);
        let mut services = vec![FakeService::start(auth_routes).await];
        for _ in 0..3 {
            services.push(FakeService::start(Router::new()).await);
        }
        let mut args = vec![
            "mercato-gateway".to_string(),
            format!("--jwks-path={}", keys.jwks_path().display()),
            "--log-level=error".into(),
            "--client-id=gateway".into(),
            "--client-secret=gateway-secret".into(),
        ];
        for (name, s) in ["auth", "product", "order", "payment"]
            .iter()
            .zip(&services)
        {
            args.push(format!("--{name}-url={}", s.server.url("")));
            args.push(format!("--{name}-ops-url={}", s.server.ops_url("")));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        let listeners = Listeners::bind(local, local).await.expect("bind");
        let gateway = spawn::<mercato_gateway::Config>(args, listeners)
            .await
            .expect("the gateway starts");
        Self {
            gateway,
            services,
            http: reqwest::Client::new(),
            _keys: keys,
        }
    }

    fn probes(&self) -> usize {
        self.services
            .iter()
            .map(|s| s.probes.load(Ordering::SeqCst))
            .sum()
    }

    async fn health(&self) -> (u16, Value) {
        let r = self
            .http
            .get(self.gateway.url("/health"))
            .send()
            .await
            .expect("the gateway answers");
        (
            r.status().as_u16(),
            r.json().await.expect("a health document"),
        )
    }

    async fn wait_healthy(&self) {
        let (status, body) = poll(100, || self.health(), |(s, _)| *s == 200).await;
        assert_eq!(status, 200, "{body}");
    }

    /// `POST /auth/login` (public) as `forwarded_for` says, with extra headers.
    async fn login(&self, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.gateway.url("/auth/login"))
            .json(&json!({}));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send().await.expect("the gateway answers")
    }
}

fn edge_key() -> EdgeKey {
    EDGE_KEY.parse().expect("a long enough key")
}

#[tokio::test]
async fn the_gateways_operational_endpoints_answer_on_the_ops_port_only() {
    let edge = Edge::start(&[]).await;
    for path in ["/metrics", "/readyz", "/healthz"] {
        let ops = edge
            .http
            .get(edge.gateway.ops_url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(ops.status(), 200, "{path} on the ops port");
        let public = edge.http.get(edge.gateway.url(path)).send().await.unwrap();
        assert_eq!(public.status(), 404, "{path} on the public port");
    }
    edge.wait_healthy().await;
}

#[tokio::test]
async fn health_hits_cost_the_services_no_probes() {
    // One probe round at start, then none for an hour.
    let edge = Edge::start(&["--health-probe-interval-ms=3600000"]).await;
    edge.wait_healthy().await;
    let before = edge.probes();
    assert!(
        before <= 4,
        "{before} probes for one round of four services"
    );
    for _ in 0..100 {
        let (status, body) = edge.health().await;
        assert_eq!(status, 200);
        assert_eq!(body["upstreams"]["payment"], "ready");
    }
    assert_eq!(edge.probes(), before);
}

#[tokio::test]
async fn a_service_going_down_shows_in_health_within_the_probe_interval() {
    let mut edge = Edge::start(&["--health-probe-interval-ms=50"]).await;
    edge.wait_healthy().await;
    edge.services[0].ready.store(false, Ordering::SeqCst);
    let order = edge.services.remove(2);
    order.server.stop().await;
    let (status, body) = poll(
        100,
        || edge.health(),
        |(_, b)| b["upstreams"]["auth"] == "not ready" && b["upstreams"]["order"] == "unreachable",
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["upstreams"]["auth"], "not ready");
    assert_eq!(body["upstreams"]["order"], "unreachable");
    assert_eq!(body["upstreams"]["product"], "ready");
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_are_limited_each_by_its_own_address() {
    let edge = Edge::start(&[
        "--trusted-proxies=127.0.0.0/8",
        "--rate-limit-per-minute=2",
        &format!("--edge-key={EDGE_KEY}"),
    ])
    .await;
    let alice = [("x-forwarded-for", "203.0.113.1")];
    for _ in 0..2 {
        assert_eq!(edge.login(&alice).await.status(), 200);
    }
    assert_eq!(edge.login(&alice).await.status(), 429);
    // Bob comes through the same proxy, and still has his whole allowance.
    let bob = edge.login(&[("x-forwarded-for", "203.0.113.2")]).await;
    assert_eq!(bob.status(), 200);
    let seen: Value = bob.json().await.unwrap();
    let signed = seen["client_address"][0].as_str().unwrap();
    assert_eq!(
        edge_key().verify(signed),
        Some("203.0.113.2".parse().unwrap())
    );
    assert_eq!(seen["forwarded_for"], json!(["203.0.113.2, 127.0.0.1"]));
}

#[tokio::test]
async fn an_untrusted_peers_forged_forwarded_for_is_ignored() {
    let edge = Edge::start(&["--trusted-proxies=10.0.0.0/8", "--rate-limit-per-minute=2"]).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let forged = format!("203.0.113.{i}, 10.0.0.1");
        statuses.push(
            edge.login(&[("x-forwarded-for", &forged)])
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429]);
}

#[tokio::test]
async fn the_gateway_overwrites_a_client_supplied_client_address() {
    let edge = Edge::start(&[&format!("--edge-key={EDGE_KEY}")]).await;
    let replayed = edge_key().sign("6.6.6.6".parse().unwrap());
    for supplied in ["6.6.6.6", "6.6.6.6;sig=forged", replayed.as_str()] {
        let r = edge
            .login(&[
                (CLIENT_ADDRESS_HEADER, supplied),
                ("x-forwarded-for", "6.6.6.6"),
            ])
            .await;
        assert_eq!(r.status(), 200);
        let seen: Value = r.json().await.unwrap();
        let values = seen["client_address"].as_array().unwrap();
        assert_eq!(values.len(), 1, "{seen}");
        let value = values[0].as_str().unwrap();
        assert_eq!(
            edge_key().verify(value),
            Some("127.0.0.1".parse().unwrap()),
            "{supplied}"
        );
        assert_eq!(seen["forwarded_for"], json!(["127.0.0.1"]));
    }
}

#[tokio::test]
async fn a_fresh_storefront_relay_names_the_shopper_and_a_stale_or_forged_one_does_not() {
    let edge = Edge::start(&[
        &format!("--edge-key={EDGE_KEY}"),
        "--rate-limit-per-minute=2",
    ])
    .await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let shopper = |n: u8| edge_key().sign_relay(format!("203.0.113.{n}").parse().unwrap(), now);
    // Two shoppers behind the one storefront: each has the whole allowance.
    for n in [1, 2] {
        for _ in 0..2 {
            let r = edge.login(&[(RELAYED_CLIENT_HEADER, &shopper(n))]).await;
            assert_eq!(r.status(), 200);
            let seen: Value = r.json().await.unwrap();
            let value = seen["client_address"][0].as_str().unwrap();
            assert_eq!(
                edge_key().verify(value),
                Some(format!("203.0.113.{n}").parse().unwrap())
            );
            assert_eq!(seen["relayed"], json!([]), "never passed on");
        }
        assert_eq!(
            edge.login(&[(RELAYED_CLIENT_HEADER, &shopper(n))])
                .await
                .status(),
            429
        );
    }
    // A relay two minutes old, or signed with another key, is the peer's own request.
    let stale = edge_key().sign_relay("203.0.113.9".parse().unwrap(), now - 120);
    let other: EdgeKey = "some-other-key-some-other-key-0123456".parse().unwrap();
    let forged = other.sign_relay("203.0.113.9".parse().unwrap(), now);
    for relay in [stale, forged] {
        let r = edge.login(&[(RELAYED_CLIENT_HEADER, &relay)]).await;
        let seen: Value = r.json().await.unwrap();
        let value = seen["client_address"][0].as_str().unwrap();
        assert_eq!(edge_key().verify(value), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(seen["relayed"], json!([]), "never passed on");
    }
}

#[tokio::test]
async fn without_an_edge_key_no_client_address_reaches_the_services() {
    let edge = Edge::start(&[]).await;
    let r = edge.login(&[(CLIENT_ADDRESS_HEADER, "6.6.6.6")]).await;
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["client_address"], json!([]));
}

/// The series the gateway's `/metrics` reports.
async fn series(edge: &Edge) -> Vec<String> {
    let text = edge
        .http
        .get(edge.gateway.ops_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut series: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_string()))
        .collect();
    series.sort();
    series
}

#[tokio::test]
async fn spraying_the_gateway_with_random_paths_and_methods_adds_no_series() {
    let edge = Edge::start(&[]).await;
    let send = |method: String, path: String| {
        let http = edge.http.clone();
        let url = edge.gateway.url(&path);
        async move {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            http.request(method, url).send().await.unwrap().status()
        }
    };
    for method in ["GET", "BREW"] {
        for path in ["/products/x", "/nowhere"] {
            send(method.into(), path.into()).await;
        }
    }
    series(&edge).await;
    let before = series(&edge).await;
    for i in 0..500 {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let method = if i % 2 == 0 {
            token[..6].to_ascii_uppercase()
        } else {
            "GET".to_string()
        };
        let path = if i % 3 == 0 {
            format!("/products/{token}")
        } else {
            format!("/{token}")
        };
        send(method, path).await;
    }
    let after = series(&edge).await;
    let added: Vec<&String> = after.iter().filter(|s| !before.contains(s)).collect();
    assert!(added.is_empty(), "new series: {added:#?}");
}
