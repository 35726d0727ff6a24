//! The storefront: the shop in a web browser. Pages are rendered on the server from
//! templates that escape every value, and work with plain links and forms (a small script
//! only guards against double clicks). It holds no data of its own: everything it shows
//! and does goes through the gateway's public API, with the shopper's own token, exactly as
//! the CLI would. Sessions, carts and CSRF tokens live in signed `HttpOnly` cookies, so any
//! replica serves any shopper.

pub mod api;
pub mod cookies;
pub mod pages;
pub mod views;
pub mod visit;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use clap::{Parser, ValueEnum};
use mercato_contract::{Component, DEFAULT_REFRESH_TOKEN_TTL_SECS, env};
use mercato_kit::config::ServerConfig;
use mercato_kit::edge::EdgeKey;
use mercato_kit::server::{self, App, Ops, ServiceConfig};

use crate::api::Api;
use crate::cookies::CookieKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecureCookies {
    /// When the request reached the gateway over HTTPS (a trusted proxy said so).
    Auto,
    /// Always (the shop is only ever served over HTTPS).
    Always,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "mercato-storefront",
    version,
    about = "Mercato storefront: the shop in a web browser"
)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerConfig,
    /// Base URL of the gateway, whose public API the storefront uses.
    #[arg(long, env = env::GATEWAY_URL)]
    pub gateway_url: String,
    /// Key (at least 32 characters) signing cookies and CSRF tokens; the same on every
    /// replica.
    #[arg(long, env = env::STOREFRONT_COOKIE_KEY, hide_env_values = true)]
    pub storefront_cookie_key: CookieKey,
    /// When cookies are marked `Secure`.
    #[arg(long, env = env::STOREFRONT_SECURE_COOKIES, value_enum, default_value = "auto")]
    pub storefront_secure_cookies: SecureCookies,
    /// The store's edge key (at least 32 characters): with it the storefront believes the
    /// shopper's address the gateway signed, and vouches for it on the API calls it makes
    /// for that shopper, so rate limits and login lock-outs count each shopper, not the
    /// storefront. Unset, every shopper counts as the storefront.
    #[arg(long, env = env::EDGE_KEY, hide_env_values = true)]
    pub edge_key: Option<EdgeKey>,
    /// How long a call to the API may take, in milliseconds.
    #[arg(long, env = "UPSTREAM_TIMEOUT_MS", default_value_t = 10_000)]
    pub upstream_timeout_ms: u64,
    /// How long a session cookie lives, in seconds (the refresh token's lifetime).
    #[arg(long, env = env::REFRESH_TOKEN_TTL_SECS, default_value_t = DEFAULT_REFRESH_TOKEN_TTL_SECS)]
    pub refresh_token_ttl_secs: u64,
}

/// What every page handler shares.
#[derive(Debug, Clone)]
pub struct Shop {
    pub api: Api,
    pub key: CookieKey,
    pub secure_cookies: SecureCookies,
    pub session_ttl_secs: u64,
    pub edge_key: Option<EdgeKey>,
    pub categories: Arc<views::CategoryCache>,
}

impl FromRef<Shop> for Api {
    fn from_ref(s: &Shop) -> Self {
        s.api.clone()
    }
}

/// The Content-Security-Policy of every page: only this origin's script and stylesheet
/// (no inline script or style), forms post only here, and no one may frame the shop.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'; object-src 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/assets/");
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        // Pages show one shopper's cart and account: no shared cache may keep them.
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
        h.insert(
            HeaderName::from_static("vary"),
            HeaderValue::from_static("cookie"),
        );
    }
    response
}

impl Config {
    pub fn shop(&self) -> anyhow::Result<Shop> {
        Ok(Shop {
            api: Api::new(
                &self.gateway_url,
                Duration::from_millis(self.upstream_timeout_ms),
            )?,
            key: self.storefront_cookie_key.clone(),
            secure_cookies: self.storefront_secure_cookies,
            session_ttl_secs: self.refresh_token_ttl_secs,
            edge_key: self.edge_key.clone(),
            categories: Arc::default(),
        })
    }
}

/// The storefront's routes.
pub fn router(shop: Shop) -> Router {
    pages::routes()
        .with_state(shop)
        .layer(middleware::from_fn(security_headers))
}

impl ServiceConfig for Config {
    const COMPONENT: Component = Component::Storefront;

    fn server(&self) -> &ServerConfig {
        &self.server
    }

    async fn build(&self) -> anyhow::Result<App> {
        let shop = self.shop()?;
        if shop.edge_key.is_none() {
            tracing::warn!(
                "no {} set: the gateway will count every shopper's API calls as the storefront's",
                env::EDGE_KEY
            );
        }
        let ops = Ops::new(
            Component::Storefront,
            None,
            utoipa::openapi::OpenApiBuilder::new().build(),
        );
        Ok(App::without_tokens(server::build(
            router(shop),
            ops,
            &self.server,
        )))
    }
}
