//! The payment service's HTTP routes, and how checkout's refusals answer.

pub mod payments;

use axum::Router;
use axum::routing::get;
use mercato_kit::ApiError;
use mercato_kit::auth::User;
use mercato_kit::idempotency;
use uuid::Uuid;

use crate::AppState;
use crate::checkout::PaymentError;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/payments", get(payments::list).post(payments::create))
        .route("/payments/{id}", get(payments::get_one))
        .with_state(state)
}

/// The user id of a signed-in user (admins included).
pub fn user_id(user: &User) -> Result<Uuid, ApiError> {
    user.id
        .parse()
        .map_err(|_| ApiError::unauthorized("token subject is not a user"))
}

fn order_unavailable(detail: String) -> ApiError {
    ApiError::conflict("order_unavailable", "Order not found or unavailable").with_detail(detail)
}

impl From<PaymentError> for ApiError {
    fn from(e: PaymentError) -> Self {
        match e {
            PaymentError::OrderNotFound => ApiError::not_found("Order not found"),
            PaymentError::OrderUnavailable(status) => {
                order_unavailable(format!("the order is {status}"))
            }
            PaymentError::AlreadyPaid => order_unavailable("the order is already paid".into()),
            PaymentError::WrongAmount { total, currency } => ApiError::field(
                "amount",
                format!("must equal the order total, {total} {currency}"),
            ),
            PaymentError::KeyReused => idempotency::key_reused("was used with another payment"),
            PaymentError::Order(e) => e,
            PaymentError::Vanished => ApiError::internal("payment vanished"),
            PaymentError::Database(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use mercato_contract::wire::OrderStatus;

    use super::*;

    fn answer(e: PaymentError) -> (StatusCode, String, Option<String>) {
        let e = ApiError::from(e);
        (e.status, e.code.to_string(), e.detail)
    }

    #[test]
    fn payment_refusals_answer_with_their_status_and_code() {
        assert_eq!(
            answer(PaymentError::OrderNotFound),
            (StatusCode::NOT_FOUND, "not_found".into(), None)
        );
        assert_eq!(
            answer(PaymentError::OrderUnavailable(OrderStatus::Cancelled)),
            (
                StatusCode::CONFLICT,
                "order_unavailable".into(),
                Some("the order is CANCELLED".into())
            )
        );
        assert_eq!(
            answer(PaymentError::AlreadyPaid),
            (
                StatusCode::CONFLICT,
                "order_unavailable".into(),
                Some("the order is already paid".into())
            )
        );
        assert_eq!(
            answer(PaymentError::Vanished).0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn a_wrong_amount_names_the_field_and_the_total() {
        let e = ApiError::from(PaymentError::WrongAmount {
            total: 2500,
            currency: "EUR".into(),
        });
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.errors[0].field, "amount");
        assert_eq!(e.errors[0].message, "must equal the order total, 2500 EUR");
    }

    #[test]
    fn a_reused_key_says_it_was_used_with_another_payment() {
        let e = ApiError::from(PaymentError::KeyReused);
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.code, "idempotency_key_reused");
        assert_eq!(e.errors[0].message, "was used with another payment");
    }

    #[test]
    fn the_order_services_answer_is_passed_on_as_it_is() {
        let e = ApiError::from(PaymentError::Order(ApiError::unavailable("Order service")));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
