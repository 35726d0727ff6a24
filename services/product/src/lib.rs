//! The product service: the catalog (public reads, admin writes) and stock, reserved for
//! whole orders at once by the order service.

pub mod catalog;
pub mod openapi;
pub mod reservations;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use clap::Parser;
use mercato_contract::Component;
use mercato_kit::client::ServiceClientConfig;
use mercato_kit::config::{DatabaseConfig, JwtConfig, ServerConfig};
use mercato_kit::jwt::Verifier;
use mercato_kit::server::{self, App, Ops, ServiceConfig};
use sqlx::PgPool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Parser)]
#[command(
    name = "mercato-product",
    version,
    about = "Mercato product service: catalog and stock"
)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub jwt: JwtConfig,
    /// Reads auth's revocation feed.
    #[command(flatten)]
    pub client: ServiceClientConfig,
    /// How long an unconfirmed reservation holds stock before it returns.
    #[arg(long, env = "RESERVATION_TTL_SECS", default_value_t = 30 * 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub reservation_ttl_secs: u64,
    /// How often expired reservations are swept.
    #[arg(long, env = "RESERVATION_SWEEP_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub reservation_sweep_secs: u64,
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub verifier: Arc<Verifier>,
    pub reservation_ttl: Duration,
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl ServiceConfig for Config {
    const COMPONENT: Component = Component::Product;

    fn server(&self) -> &ServerConfig {
        &self.server
    }

    async fn build(&self) -> anyhow::Result<App> {
        let config = self;
        let verifier = Verifier::load(&config.jwt)?;
        let pool = mercato_kit::db::connect_and_migrate(&config.database, &MIGRATOR).await;
        let state = AppState {
            pool: pool.clone(),
            verifier,
            reservation_ttl: Duration::from_secs(config.reservation_ttl_secs),
        };
        let ops = Ops::new(Component::Product, Some(pool), openapi::document())
            .with_revocations(&state.verifier);
        ops.metrics.rows_by_status(
            "stock_reservations",
            "Stock reservations by status (reserved, committed, released)",
            state.pool.clone(),
            "reservations",
            &["RESERVED", "COMMITTED", "RELEASED"],
        );
        // Released covers both an order's release and the sweeper's: the expiries are
        // counted apart, where the sweeper knows them.
        let expiries = ops.metrics.counter(
            "stock_reservation_expiries",
            "Reservations released by the sweeper because they ran out",
        );
        let router = server::build(routes::router(state.clone()), ops, &config.server);
        // The sweeper that returns the stock of expired reservations.
        let every = Duration::from_secs(config.reservation_sweep_secs);
        let (verifier, pool) = (state.verifier.clone(), state.pool.clone());
        let sweeper = move || {
            server::spawn_every(every, "expired reservations released", move || {
                let (pool, expiries) = (pool.clone(), expiries.clone());
                async move {
                    reservations::release_expired(&pool).await.inspect(|n| {
                        expiries.inc_by(*n);
                    })
                }
            });
        };
        Ok(App::new(router, verifier, &config.jwt)
            .with_task(sweeper)
            .with_revocation_feed(&config.client)
            .await)
    }
}
