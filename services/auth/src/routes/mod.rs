//! The auth service's HTTP routes.

pub mod auth;
pub mod users;

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/verify", post(auth::verify))
        .route("/auth/token", post(auth::token))
        .route("/auth/jwks", get(auth::jwks))
        .route(
            mercato_kit::revocation::FEED_PATH,
            get(auth::revocation_feed),
        )
        .route("/users/me", get(users::get_me).put(users::update_me))
        .route("/users/profile", get(users::get_me).put(users::update_me))
        .route("/users", get(users::list).post(users::create))
        .route(
            "/users/{id}",
            get(users::get_one)
                .put(users::update_one)
                .delete(users::delete_one),
        )
        .with_state(state)
}
