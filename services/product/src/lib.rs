//! The product service: the catalog (public reads, admin writes) and stock, reserved for
//! whole orders at once by the order service.

pub mod cache;
pub mod catalog;
pub mod openapi;
pub mod reservations;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::http::HeaderValue;
use clap::Parser;
use mercato_contract::Component;
use mercato_kit::client::ServiceClientConfig;
use mercato_kit::config::{DatabaseConfig, JwtConfig, ServerConfig};
use mercato_kit::jwt::Verifier;
use mercato_kit::server::{self, App, Ops, ServiceConfig};
use sqlx::PgPool;

use crate::cache::{CacheMetrics, CatalogCache, Limits};

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
    /// How many products and catalog pages each replica keeps in memory (0: no cache, every
    /// public read goes to the database).
    #[arg(long, env = "CATALOG_CACHE_ENTRIES", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub catalog_cache_entries: u64,
    /// How much memory (MiB) those entries may take at most, oldest evicted first.
    #[arg(long, env = "CATALOG_CACHE_MIB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub catalog_cache_mib: u64,
    /// How long (seconds) the gateway or a CDN may reuse a public catalog answer without
    /// asking (`Cache-Control: public, max-age`): stock shown to shoppers may lag by this
    /// much more; orders never rely on it (reservations read stock under lock).
    #[arg(long, env = "CATALOG_MAX_AGE_SECS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(0..=60))]
    pub catalog_max_age_secs: u64,
}

impl Config {
    fn cache_limits(&self) -> Limits {
        Limits {
            entries: usize::try_from(self.catalog_cache_entries).unwrap_or(usize::MAX),
            bytes: usize::try_from(self.catalog_cache_mib << 20).unwrap_or(usize::MAX),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub verifier: Arc<Verifier>,
    pub reservation_ttl: Duration,
    /// Public catalog reads, kept in memory while they cannot be stale.
    pub catalog: Arc<CatalogCache>,
    /// `Cache-Control` of public catalog reads.
    pub cache_control: HeaderValue,
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
        let ops = Ops::new(Component::Product, Some(pool.clone()), openapi::document())
            .with_revocations(&verifier);
        let catalog =
            CatalogCache::new(config.cache_limits(), CacheMetrics::register(&ops.metrics));
        let state = AppState {
            pool: pool.clone(),
            verifier,
            reservation_ttl: Duration::from_secs(config.reservation_ttl_secs),
            catalog: catalog.clone(),
            cache_control: routes::conditional::public_for(config.catalog_max_age_secs),
        };
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
        let (verifier, pool, swept) = (state.verifier.clone(), state.pool.clone(), catalog.clone());
        let sweeper = move || {
            server::spawn_every(every, "expired reservations released", move || {
                let (pool, expiries, swept) = (pool.clone(), expiries.clone(), swept.clone());
                async move {
                    reservations::release_expired(&pool).await.inspect(|n| {
                        expiries.inc_by(*n);
                        // Stock came back: this replica's next read shows it at once
                        // (the others hear of it from the database, as this one does).
                        if *n > 0 {
                            swept.apply(cache::Change::Everything);
                        }
                    })
                }
            });
        };
        // The cache's listener: none when the cache is off (it would stay empty anyway).
        let listening = config.catalog_cache_entries > 0;
        let listener = {
            let pool = state.pool.clone();
            move || {
                if listening {
                    cache::listener::spawn(&pool, catalog);
                }
            }
        };
        Ok(App::new(router, verifier, &config.jwt)
            .with_task(sweeper)
            .with_task(listener)
            .with_revocation_feed(&config.client)
            .await)
    }
}
