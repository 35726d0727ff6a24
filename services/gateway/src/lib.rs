//! The gateway: the one entry point. Routes the public API to the services, streaming
//! bodies both ways; assigns and propagates request ids; turns anonymous requests to
//! protected routes away before forwarding; limits each client's rate; answers 503/504
//! naming the service that is down or slow; reports every service's readiness, probed in
//! the background. It settles who the client is (through trusted proxies only) and passes
//! that on to the services, signed.

pub mod cache;
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
use mercato_contract::{Component, OPS_PORT, env};
use mercato_kit::client::ServiceClientConfig;
use mercato_kit::config::{JwtConfig, ServerConfig};
use mercato_kit::edge::{EdgeKey, TrustedProxies};
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
    /// Base URL of the storefront; set, the gateway routes `/`, `/shop/…` and `/assets/…`
    /// to it. Unset, those paths are 404 and the gateway serves the API only.
    #[arg(long, env = env::STOREFRONT_URL)]
    pub storefront_url: Option<String>,
    /// How long a service may take to start answering before the client gets 504.
    #[arg(long, env = "UPSTREAM_TIMEOUT_MS", default_value_t = 10_000)]
    pub upstream_timeout_ms: u64,
    /// Requests each client address may make per minute (as a burst, refilled evenly).
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE", default_value_t = 600)]
    pub rate_limit_per_minute: u32,
    /// Origins allowed by CORS, comma separated; `*` for any; empty disables CORS.
    #[arg(long, env = "CORS_ORIGINS", default_value = "")]
    pub cors_origins: String,
    /// CIDRs of the proxies in front of the gateway, comma separated; `X-Forwarded-For` is
    /// believed only through them. Empty: the TCP peer is the client.
    #[arg(long, env = env::TRUSTED_PROXIES, default_value = "")]
    pub trusted_proxies: TrustedProxies,
    /// Key (at least 32 characters) signing the client address passed to the services;
    /// auth needs the same key to believe it. Unset, services see the gateway as every client.
    #[arg(long, env = env::EDGE_KEY, hide_env_values = true)]
    pub edge_key: Option<EdgeKey>,
    /// Base URL of auth's operational endpoints (default: auth's host on the ops port).
    #[arg(long, env = env::AUTH_OPS_URL)]
    pub auth_ops_url: Option<String>,
    /// Base URL of product's operational endpoints (default: its host on the ops port).
    #[arg(long, env = env::PRODUCT_OPS_URL)]
    pub product_ops_url: Option<String>,
    /// Base URL of order's operational endpoints (default: its host on the ops port).
    #[arg(long, env = env::ORDER_OPS_URL)]
    pub order_ops_url: Option<String>,
    /// Base URL of payment's operational endpoints (default: its host on the ops port).
    #[arg(long, env = env::PAYMENT_OPS_URL)]
    pub payment_ops_url: Option<String>,
    /// Public reads (answers marked `Cache-Control: public, max-age=N`) the gateway keeps
    /// and answers itself for up to N seconds; 0 turns its cache off.
    #[arg(long, env = "PUBLIC_CACHE_ENTRIES", default_value_t = 4096)]
    pub public_cache_entries: usize,
    /// Memory the gateway's cached answers may take, in MiB.
    #[arg(long, env = "PUBLIC_CACHE_MIB", default_value_t = 32)]
    pub public_cache_mib: usize,
    /// The longest the gateway keeps a public answer, in seconds, whatever its `max-age`
    /// allows; 0 turns its cache off.
    #[arg(long, env = "PUBLIC_CACHE_MAX_SECS", default_value_t = 1)]
    pub public_cache_max_secs: u64,
    /// How often every service's `/readyz` is probed for `/health`, in milliseconds.
    #[arg(long, env = "HEALTH_PROBE_INTERVAL_MS", default_value_t = 2_000,
        value_parser = clap::value_parser!(u64).range(10..))]
    pub health_probe_interval_ms: u64,
}

/// Where a service's operational endpoints are: `explicit` if given, else the host of its
/// public `base` URL on the contract's ops port.
fn ops_url(c: Component, base: &str, explicit: Option<&str>) -> anyhow::Result<String> {
    if let Some(url) = explicit {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let mut url = url::Url::parse(base)
        .map_err(|e| anyhow::anyhow!("{} is not a URL ({e}): {base:?}", c.url_env()))?;
    url.set_port(Some(OPS_PORT))
        .map_err(|()| anyhow::anyhow!("{} has no host: {base:?}", c.url_env()))?;
    url.set_path("");
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The services behind the gateway.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub auth: String,
    pub product: String,
    pub order: String,
    pub payment: String,
    pub storefront: Option<String>,
}

impl Upstreams {
    pub fn base(&self, c: Component) -> Option<&str> {
        match c {
            Component::Auth => Some(&self.auth),
            Component::Product => Some(&self.product),
            Component::Order => Some(&self.order),
            Component::Payment => Some(&self.payment),
            Component::Storefront => self.storefront.as_deref(),
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

/// What every request of the gateway reads, behind one `Arc`: a request clones the handle,
/// not the parts.
#[derive(Clone)]
pub struct Gateway(Arc<Parts>);

impl std::ops::Deref for Gateway {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

pub struct Parts {
    pub verifier: Arc<Verifier>,
    pub upstreams: Arc<Upstreams>,
    pub client: proxy::HttpClient,
    pub timeout: Duration,
    pub limiter: Arc<KeyedLimiter>,
    pub trusted_proxies: Arc<TrustedProxies>,
    pub edge_key: Option<EdgeKey>,
    pub health: Arc<health::Board>,
    /// Public reads answered without the hop (`None`: off).
    pub cache: Option<Arc<cache::PublicCache>>,
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
        let upstreams = Upstreams {
            auth: config.client.auth_url.trim_end_matches('/').to_string(),
            product: config.product_url.trim_end_matches('/').to_string(),
            order: config.order_url.trim_end_matches('/').to_string(),
            payment: config.payment_url.trim_end_matches('/').to_string(),
            storefront: config
                .storefront_url
                .as_deref()
                .map(|u| u.trim_end_matches('/').to_string()),
        };
        let explicit = [
            config.auth_ops_url.as_deref(),
            config.product_ops_url.as_deref(),
            config.order_ops_url.as_deref(),
            config.payment_ops_url.as_deref(),
        ];
        let probes = upstreams
            .all()
            .into_iter()
            .zip(explicit)
            .map(|((c, base), explicit)| Ok((c, ops_url(c, base, explicit)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if config.edge_key.is_none() {
            tracing::warn!(
                "no {} set: the services will see the gateway's address as every client's",
                env::EDGE_KEY
            );
        }
        let client = proxy::client();
        let health = Arc::new(health::Board::new(probes));
        let ops = Ops::new(Component::Gateway, None, openapi::document());
        let cache = cache::PublicCache::new(
            cache::Limits {
                entries: config.public_cache_entries,
                bytes: config.public_cache_mib.saturating_mul(1 << 20),
                max_age: Duration::from_secs(config.public_cache_max_secs),
            },
            &ops.metrics,
        );
        let state = Gateway(Arc::new(Parts {
            verifier,
            upstreams: Arc::new(upstreams),
            client: client.clone(),
            timeout: Duration::from_millis(config.upstream_timeout_ms),
            limiter: Arc::new(KeyedLimiter::new(
                config.rate_limit_per_minute,
                Duration::from_secs(60),
            )),
            trusted_proxies: Arc::new(config.trusted_proxies.clone()),
            edge_key: config.edge_key.clone(),
            health: health.clone(),
            cache,
        }));
        let mut api = Router::new().route("/health", get(health::health));
        if state.upstreams.storefront.is_some() {
            api = api.route("/", any(proxy::forward));
        }
        for prefix in [
            "/auth",
            "/users",
            "/products",
            "/orders",
            "/payments",
            "/shop",
            "/assets",
        ] {
            api = api
                .route(prefix, any(proxy::forward))
                .route(&format!("{prefix}/{{*rest}}"), any(proxy::forward));
        }
        let api = api.with_state(state.clone());
        let ops = ops.with_revocations(&state.verifier);
        let metrics = ops.metrics.clone();
        let mut routers = server::build(api, ops, &config.server);
        // Outside the standard layers (and inside CORS, which answers for it too).
        routers.public = routers.public.layer(axum::middleware::from_fn_with_state(
            (state.clone(), metrics),
            proxy::cached_read,
        ));
        if let Some(layer) = cors(&config.cors_origins)? {
            routers.public = routers.public.layer(layer);
        }
        let every = Duration::from_millis(config.health_probe_interval_ms);
        Ok(App::new(routers, state.verifier.clone(), &config.jwt)
            .with_task(move || health.spawn_prober(client, every))
            .with_revocation_feed(&config.client)
            .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_urls_default_to_the_service_host_on_the_ops_port() {
        assert_eq!(
            ops_url(Component::Order, "http://demo-order.shop.svc:8080", None).unwrap(),
            "http://demo-order.shop.svc:9090"
        );
        assert_eq!(
            ops_url(
                Component::Order,
                "http://x:8080",
                Some("http://127.0.0.1:7001/")
            )
            .unwrap(),
            "http://127.0.0.1:7001"
        );
        let e = ops_url(Component::Auth, "not a url", None).unwrap_err();
        assert!(e.to_string().contains("AUTH_URL"), "{e}");
    }
}
