//! What every Mercato service shares: typed configuration, telemetry with request ids,
//! problem+json errors and extractors, JWT signing/verification and the extractors that
//! say who may call a handler, the database pool and migrations, health, metrics,
//! OpenAPI serving, rate limits and graceful shutdown.

pub mod auth;
pub mod client;
pub mod conditional;
pub mod config;
pub mod db;
pub mod edge;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod items;
pub mod jwt;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod ratelimit;
pub mod revocation;
pub mod secret;
pub mod server;
pub mod startup;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{ApiError, ApiResult, FieldError, Problem};
pub use extract::{IdempotencyKey, Json, Path, Query};
pub use mercato_contract as contract;
