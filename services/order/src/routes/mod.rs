//! The order service's HTTP routes, and how checkout's refusals answer.

pub mod internal;
pub mod orders;

use axum::Router;
use axum::routing::{get, post};
use mercato_contract::wire::paths;
use mercato_kit::ApiError;
use mercato_kit::auth::User;
use mercato_kit::idempotency;
use uuid::Uuid;

use crate::AppState;
use crate::checkout::{CheckoutError, Viewer};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/orders", get(orders::list).post(orders::create))
        .route("/orders/{id}", get(orders::get_one))
        .route("/orders/{id}/cancel", post(orders::cancel))
        .route(paths::ORDER, get(internal::get_one))
        .route(paths::PAYMENT_EVENTS, post(internal::payment_event))
        .with_state(state)
}

/// The user id of a signed-in user (admins included).
pub fn user_id(user: &User) -> Result<Uuid, ApiError> {
    user.id.parse().map_err(|_| CheckoutError::NotAUser.into())
}

/// Who is asking, as checkout sees it.
pub fn viewer(user: &User) -> Viewer {
    if user.is_admin() {
        Viewer::Admin
    } else {
        user_id(user).map_or(Viewer::NotAUser, Viewer::Customer)
    }
}

pub fn order_not_found() -> ApiError {
    ApiError::not_found("Order not found")
}

impl From<CheckoutError> for ApiError {
    fn from(e: CheckoutError) -> Self {
        match e {
            CheckoutError::NotFound => order_not_found(),
            CheckoutError::NotAUser => ApiError::unauthorized("token subject is not a user"),
            CheckoutError::KeyReused => idempotency::key_reused("was used with other items"),
            CheckoutError::ReservationExpired => {
                ApiError::conflict("reservation_expired", "Reservation expired")
                    .with_detail("retry with a new Idempotency-Key")
            }
            CheckoutError::NotPending(status) => {
                ApiError::conflict("order_not_pending", "Order cannot be cancelled")
                    .with_detail(format!("the order is {status}"))
            }
            CheckoutError::Product(e) => e,
            CheckoutError::BadEvent(e) => ApiError::validation(vec![e]),
            CheckoutError::Vanished => ApiError::internal("order vanished"),
            CheckoutError::Database(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use mercato_contract::wire::OrderStatus;

    use super::*;

    fn answer(e: CheckoutError) -> (StatusCode, String, Option<String>) {
        let e = ApiError::from(e);
        (e.status, e.code.to_string(), e.detail)
    }

    #[test]
    fn checkout_refusals_answer_with_their_status_and_code() {
        assert_eq!(
            answer(CheckoutError::NotFound),
            (StatusCode::NOT_FOUND, "not_found".into(), None)
        );
        assert_eq!(answer(CheckoutError::NotAUser).0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            answer(CheckoutError::KeyReused).0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            answer(CheckoutError::ReservationExpired),
            (
                StatusCode::CONFLICT,
                "reservation_expired".into(),
                Some("retry with a new Idempotency-Key".into())
            )
        );
        assert_eq!(
            answer(CheckoutError::NotPending(OrderStatus::Paid)),
            (
                StatusCode::CONFLICT,
                "order_not_pending".into(),
                Some("the order is PAID".into())
            )
        );
        assert_eq!(
            answer(CheckoutError::Vanished).0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            answer(CheckoutError::Database(sqlx::Error::PoolTimedOut))
                .0
                .as_u16()
                / 100,
            5
        );
    }

    #[test]
    fn a_reused_key_names_the_header_and_what_differs() {
        let e = ApiError::from(CheckoutError::KeyReused);
        assert_eq!(e.code, "idempotency_key_reused");
        assert_eq!(e.errors[0].field, "Idempotency-Key");
        assert_eq!(e.errors[0].message, "was used with other items");
    }

    #[test]
    fn the_product_services_answer_is_passed_on_as_it_is() {
        let refused = ApiError::conflict("insufficient_stock", "Not enough stock")
            .with_field("items[0].quantity", "only 1 in stock");
        let e = ApiError::from(CheckoutError::Product(refused));
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert_eq!(e.code, "insufficient_stock");
        assert_eq!(e.errors[0].field, "items[0].quantity");
    }
}
