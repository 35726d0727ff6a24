//! The gateway: the one entry point. Routes the public API to the services, streaming
//! bodies both ways; assigns and propagates request ids; turns anonymous requests to
//! protected routes away before forwarding; limits each client's rate; answers 503/504
//! naming the service that is down or slow; reports every service's readiness.

pub mod health;
pub mod openapi;
pub mod proxy;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::routing::{any, get};
use clap::Parser;
use mercato_contract::{Component, env};
use mercato_kit::client::ServiceClientConfig;
use mercato_kit::config::{JwtConfig, ServerConfig};
use mercato_kit::jwt::Verifier;
use mercato_kit::ratelimit::KeyedLimiter;
use mercato_kit::server::{self, App, Ops, ServiceConfig};
use tower_http::cors::{AllowOrigin, CorsLayer};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "mercato-gateway",
    version,
    about = "Mercato gateway: the store's one entry point"
)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub jwt: JwtConfig,
    /// The auth service (`AUTH_URL`), and this gateway's client for its revocation feed.
    #[command(flatten)]
    pub client: ServiceClientConfig,
    /// Base URL of the product service.
    #[arg(long, env = env::PRODUCT_URL)]
    pub product_url: String,
    /// Base URL of the order service.
    #[arg(long, env = env::ORDER_URL)]
    pub order_url: String,
    /// Base URL of the payment service.
    #[arg(long, env = env::PAYMENT_URL)]
    pub payment_url: String,
    /// How long a service may take to start answering before the client gets 504.
    #[arg(long, env = "UPSTREAM_TIMEOUT_MS", default_value_t = 10_000)]
    pub upstream_timeout_ms: u64,
    /// Requests each client address may make per minute (as a burst, refilled evenly).
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE", default_value_t = 600)]
    pub rate_limit_per_minute: u32,
    /// Origins allowed by CORS, comma separated; `*` for any; empty disables CORS.
    #[arg(long, env = "CORS_ORIGINS", default_value = "")]
    pub cors_origins: String,
    /// Take the client address from the last `X-Forwarded-For` hop (behind an ingress).
    #[arg(long, env = env::TRUST_FORWARDED_FOR, default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_forwarded_for: bool,
}

/// The services behind the gateway.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub auth: String,
    pub product: String,
    pub order: String,
    pub payment: String,
}

impl Upstreams {
    pub fn base(&self, c: Component) -> Option<&str> {
        match c {
            Component::Auth => Some(&self.auth),
            Component::Product => Some(&self.product),
            Component::Order => Some(&self.order),
            Component::Payment => Some(&self.payment),
            Component::Gateway => None,
        }
    }

    pub fn all(&self) -> [(Component, &str); 4] {
        [
            (Component::Auth, self.auth.as_str()),
            (Component::Product, self.product.as_str()),
            (Component::Order, self.order.as_str()),
            (Component::Payment, self.payment.as_str()),
        ]
    }
}

#[derive(Clone)]
pub struct Gateway {
    pub verifier: Arc<Verifier>,
    pub upstreams: Arc<Upstreams>,
    pub client: proxy::HttpClient,
    pub timeout: Duration,
    pub limiter: Arc<KeyedLimiter>,
    pub trust_forwarded_for: bool,
}

impl FromRef<Gateway> for Arc<Verifier> {
    fn from_ref(g: &Gateway) -> Self {
        g.verifier.clone()
    }
}

fn cors(origins: &str) -> anyhow::Result<Option<CorsLayer>> {
    let origins: Vec<&str> = origins
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins == ["*"] {
        AllowOrigin::any()
    } else {
        let parsed = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o)
                    .map_err(|_| anyhow::anyhow!("invalid CORS_ORIGINS entry {o:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(parsed)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                axum::http::header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(600)),
    ))
}

impl ServiceConfig for Config {
    const COMPONENT: Component = Component::Gateway;

    fn server(&self) -> &ServerConfig {
        &self.server
    }

    async fn build(&self) -> anyhow::Result<App> {
        let config = self;
        let verifier = Verifier::load(&config.jwt)?;
        let state = Gateway {
            verifier,
            upstreams: Arc::new(Upstreams {
                auth: config.client.auth_url.trim_end_matches('/').to_string(),
                product: config.product_url.trim_end_matches('/').to_string(),
                order: config.order_url.trim_end_matches('/').to_string(),
                payment: config.payment_url.trim_end_matches('/').to_string(),
            }),
            client: proxy::client(),
            timeout: Duration::from_millis(config.upstream_timeout_ms),
            limiter: Arc::new(KeyedLimiter::new(
                config.rate_limit_per_minute,
                Duration::from_secs(60),
            )),
            trust_forwarded_for: config.trust_forwarded_for,
        };
        let mut api = Router::new().route("/health", get(health::health));
        for prefix in ["/auth", "/users", "/products", "/orders", "/payments"] {
            api = api
                .route(prefix, any(proxy::forward))
                .route(&format!("{prefix}/{{*rest}}"), any(proxy::forward));
        }
        let api = api.with_state(state.clone());
        let ops = Ops::new(Component::Gateway, None, openapi::document())
            .with_revocations(&state.verifier);
        let mut router = server::build(api, ops, &config.server);
        if let Some(layer) = cors(&config.cors_origins)? {
            router = router.layer(layer);
        }
        Ok(App::new(router, state.verifier, &config.jwt)
            .with_revocation_feed(&config.client)
            .await)
    }
}
