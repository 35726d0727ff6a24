//! The product service's HTTP routes.

pub mod conditional;
pub mod products;
pub mod reservations;

use axum::Router;
use axum::routing::{get, post};
use mercato_contract::wire::paths;

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
        .route(paths::RESERVATIONS, post(reservations::reserve))
        .route(paths::RESERVATION, get(reservations::get_one))
        .route(paths::RESERVATION_COMMIT, post(reservations::commit))
        .route(paths::RESERVATION_RELEASE, post(reservations::release))
        .with_state(state)
}
