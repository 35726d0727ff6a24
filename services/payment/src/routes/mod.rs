//! The payment service's HTTP routes.

pub mod payments;

use axum::Router;
use axum::routing::get;

use crate::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/payments", get(payments::list).post(payments::create))
        .route("/payments/{id}", get(payments::get_one))
        .with_state(state)
}
