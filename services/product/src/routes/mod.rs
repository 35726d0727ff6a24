//! The product service's HTTP routes.

pub mod products;
pub mod reservations;

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/products", get(products::list).post(products::create))
        .route(
            "/products/{id}",
            get(products::get_one)
                .put(products::replace)
                .patch(products::patch)
                .delete(products::delete),
        )
        .route("/internal/reservations", post(reservations::reserve))
        .route(
            "/internal/reservations/{order_id}",
            get(reservations::get_one),
        )
        .route(
            "/internal/reservations/{order_id}/commit",
            post(reservations::commit),
        )
        .route(
            "/internal/reservations/{order_id}/release",
            post(reservations::release),
        )
        .with_state(state)
}
