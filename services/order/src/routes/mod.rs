//! The order service's HTTP routes.

pub mod internal;
pub mod orders;

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/orders", get(orders::list).post(orders::create))
        .route("/orders/{id}", get(orders::get_one))
        .route("/orders/{id}/cancel", post(orders::cancel))
        .route("/internal/orders/{id}", get(internal::get_one))
        .route(
            "/internal/orders/{id}/payment-events",
            post(internal::payment_event),
        )
        .with_state(state)
}
