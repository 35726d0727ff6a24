//! The order service: orders that reserve stock at the product service, priced by it,
//! and settled by payment events; pending orders expire and return their stock.

pub mod checkout;
pub mod openapi;
pub mod orders;
pub mod product;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use clap::Parser;
use mercato_contract::{Component, env};
use mercato_kit::client::{ServiceClientConfig, TokenSource, UpstreamConfig};
use mercato_kit::config::{DatabaseConfig, JwtConfig, ServerConfig};
use mercato_kit::jwt::Verifier;
use mercato_kit::server::{self, App, Ops, ServiceConfig};
use sqlx::PgPool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Parser)]
#[command(
    name = "mercato-order",
    version,
    about = "Mercato order service: orders that reserve stock"
)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub jwt: JwtConfig,
    #[command(flatten)]
    pub client: ServiceClientConfig,
    #[command(flatten)]
    pub upstream: UpstreamConfig,
    /// Base URL of the product service.
    #[arg(long, env = env::PRODUCT_URL)]
    pub product_url: String,
    /// How long an order may stay unpaid before it expires and its stock returns.
    /// Keep it below the product service's reservation TTL.
    #[arg(long, env = "ORDER_TTL_SECS", default_value_t = 15 * 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub order_ttl_secs: u64,
    /// How often expired orders and unreleased reservations are swept.
    #[arg(long, env = "ORDER_SWEEP_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub order_sweep_secs: u64,
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub verifier: Arc<Verifier>,
    pub product: Arc<product::ProductClient>,
    pub order_ttl: Duration,
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl ServiceConfig for Config {
    const COMPONENT: Component = Component::Order;

    fn server(&self) -> &ServerConfig {
        &self.server
    }

    async fn build(&self) -> anyhow::Result<App> {
        let config = self;
        let verifier = Verifier::load(&config.jwt)?;
        let pool = mercato_kit::db::connect_and_migrate(&config.database, &MIGRATOR).await;
        let tokens = Arc::new(TokenSource::new(&config.client, &config.upstream));
        let state = AppState {
            pool: pool.clone(),
            verifier,
            product: Arc::new(product::ProductClient::new(
                &config.product_url,
                &config.upstream,
                tokens,
            )),
            order_ttl: Duration::from_secs(config.order_ttl_secs),
        };
        let ops = Ops::new(Component::Order, Some(pool), openapi::document())
            .with_revocations(&state.verifier);
        ops.metrics.rows_by_status(
            "orders",
            "Orders by status (pending, paid, cancelled, expired)",
            state.pool.clone(),
            "orders",
            &["PENDING", "PAID", "CANCELLED", "EXPIRED"],
        );
        let router = server::build(routes::router(state.clone()), ops, &config.server);
        let verifier = state.verifier.clone();
        // The sweeper that expires unpaid orders and returns their stock.
        let every = Duration::from_secs(config.order_sweep_secs);
        let sweeper = move || {
            server::spawn_every(every, "unpaid orders expired", move || {
                let state = state.clone();
                async move {
                    checkout::sweep(&state.pool, state.product.as_ref(), orders::SWEEP_BATCH).await
                }
            });
        };
        Ok(App::new(router, verifier, &config.jwt)
            .with_task(sweeper)
            .with_revocation_feed(&config.client)
            .await)
    }
}
