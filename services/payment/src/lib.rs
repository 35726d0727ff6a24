//! The payment service: payments checked against the order they settle, with outcomes
//! delivered to the order service through a transactional outbox.

pub mod checkout;
pub mod openapi;
pub mod order;
pub mod outbox;
pub mod payments;
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
use tokio::sync::Notify;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Parser)]
#[command(
    name = "mercato-payment",
    version,
    about = "Mercato payment service: payments that settle orders"
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
    /// Base URL of the order service.
    #[arg(long, env = env::ORDER_URL)]
    pub order_url: String,
    /// How often the outbox looks for due events when nothing wakes it.
    #[arg(long, env = "OUTBOX_POLL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub outbox_poll_ms: u64,
    /// Longest wait between two delivery attempts of one event.
    #[arg(long, env = "OUTBOX_MAX_BACKOFF_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub outbox_max_backoff_secs: u64,
    /// Delivery attempts before a payment event becomes a dead letter (counted on /metrics).
    #[arg(long, env = "OUTBOX_MAX_ATTEMPTS", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub outbox_max_attempts: i32,
    /// How long a dispatcher's claim on an event lasts; longer than one call to the order
    /// service with its retries, or another replica delivers it again meanwhile.
    #[arg(long, env = "OUTBOX_LEASE_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub outbox_lease_secs: u64,
    /// Run the outbox dispatcher in this process (turn off to run it elsewhere).
    #[arg(long, env = "OUTBOX_DISPATCH", default_value_t = true, action = clap::ArgAction::Set)]
    pub outbox_dispatch: bool,
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub verifier: Arc<Verifier>,
    pub order: Arc<order::OrderClient>,
    /// Wakes the outbox dispatcher when a payment is written.
    pub outbox_wake: Arc<Notify>,
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl ServiceConfig for Config {
    const COMPONENT: Component = Component::Payment;

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
            order: Arc::new(order::OrderClient::new(
                &config.order_url,
                &config.upstream,
                tokens,
            )),
            outbox_wake: Arc::new(Notify::new()),
        };
        let ops = Ops::new(Component::Payment, Some(pool), openapi::document())
            .with_revocations(&state.verifier);
        let outbox_metrics = outbox::Metrics::default();
        outbox_metrics.register(&ops.metrics, state.pool.clone());
        ops.metrics.rows_by_status(
            "payments",
            "Payments by outcome (succeeded, declined, refunded)",
            state.pool.clone(),
            "payments",
            &["SUCCEEDED", "DECLINED", "REFUNDED"],
        );
        let router = server::build(routes::router(state.clone()), ops, &config.server);
        let verifier = state.verifier.clone();
        // The outbox dispatcher, unless another process runs it.
        let (dispatch, poll) = (
            config.outbox_dispatch,
            Duration::from_millis(config.outbox_poll_ms),
        );
        let policy = outbox::Policy {
            lease: Duration::from_secs(config.outbox_lease_secs),
            max_attempts: config.outbox_max_attempts,
            max_backoff: Duration::from_secs(config.outbox_max_backoff_secs),
            ..outbox::Policy::default()
        };
        let dispatcher = move || {
            if !dispatch {
                tracing::info!("outbox dispatcher disabled in this process");
                return;
            }
            tokio::spawn(outbox::dispatch(
                state.pool,
                state.order,
                state.outbox_wake,
                poll,
                policy,
                outbox_metrics,
            ));
        };
        Ok(App::new(router, verifier, &config.jwt)
            .with_task(dispatcher)
            .with_revocation_feed(&config.client)
            .await)
    }
}
