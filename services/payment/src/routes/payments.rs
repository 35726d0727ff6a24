//! `/payments`: pay a pending order, read payments.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use mercato_kit::auth::User;
use mercato_kit::{ApiError, ApiResult, FieldError, IdempotencyKey, Json, Path, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::user_id;
use crate::AppState;
use crate::checkout::{self, Method, Pay};
use crate::payments::{self, Payment};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    pub order_id: Uuid,
    /// Minor units; must equal the order's total.
    #[schema(minimum = 1)]
    pub amount: i64,
    /// `fake-card` (succeeds) or `fake-card-declined` (is declined).
    #[schema(pattern = "^(fake-card|fake-card-declined)$")]
    pub method: String,
}

impl CreatePayment {
    /// The payment asked for, or every offending field.
    fn parse(self, user: Uuid, idempotency_key: Option<String>) -> ApiResult<Pay> {
        let mut errors = Vec::new();
        if self.amount <= 0 {
            errors.push(FieldError::new(
                "amount",
                "must be a positive number of minor units",
            ));
        }
        let method = Method::parse(&self.method);
        if method.is_none() {
            errors.push(FieldError::new(
                "method",
                "must be fake-card or fake-card-declined",
            ));
        }
        match method {
            Some(method) if errors.is_empty() => Ok(Pay {
                user,
                idempotency_key,
                order_id: self.order_id,
                amount: self.amount,
                method,
            }),
            _ => Err(ApiError::validation(errors)),
        }
    }
}

/// Pays an order: the caller's own, PENDING, for exactly its total. `fake-card`
/// succeeds, `fake-card-declined` is declined; either way the outcome reaches the order
/// service through the outbox. With an `Idempotency-Key`, a retry returns the first payment.
#[utoipa::path(post, path = "/payments", tag = "payments", security(("bearer" = [])), request_body = CreatePayment,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key: 1 to 255 visible ASCII characters",
        min_length = 1, max_length = 255, pattern = r"^[!-~]+$")),
    responses((status = 201, body = Payment, description = "Created; a retry with the same Idempotency-Key answers the first one again"),
        (status = 404, description = "No such order of the caller's"),
        (status = 409, description = "The order is not pending or already paid"),
        (status = 422, description = "A field is invalid, or the amount is not the order's total")))]
pub async fn create(
    State(state): State<AppState>,
    user: User,
    IdempotencyKey(key): IdempotencyKey,
    Json(req): Json<CreatePayment>,
) -> ApiResult<Response> {
    let request = req.parse(user_id(&user)?, key)?;
    let paid = checkout::pay(&state.pool, &state.order, &state.outbox_wake, request).await?;
    Ok(paid.into_response())
}

fn payment_not_found() -> ApiError {
    ApiError::not_found("Payment not found")
}

/// A payment as its owner sees it. A success the order refused (it was cancelled or
/// expired before the payment reached it) is REFUNDED, with `refunded_at`.
#[utoipa::path(get, path = "/payments/{id}", tag = "payments", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The payment's id")),
    responses((status = 200, body = Payment), (status = 404, description = "No such payment of the caller's")))]
pub async fn get_one(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Payment>> {
    let payment = payments::get(&mut *state.pool.acquire().await?, id)
        .await?
        .ok_or_else(payment_not_found)?;
    if !user.is_admin() && payment.user_id != user_id(&user)? {
        return Err(payment_not_found());
    }
    Ok(Json(payment))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[param(nullable = false)]
    pub order_id: Option<Uuid>,
    /// Page size, default 50.
    #[param(minimum = 1, maximum = 100, nullable = false)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PaymentList {
    pub items: Vec<Payment>,
}

/// The caller's payments (admins: everyone's), optionally for one order.
#[utoipa::path(get, path = "/payments", tag = "payments", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = PaymentList)))]
pub async fn list(
    State(state): State<AppState>,
    user: User,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<PaymentList>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::field("limit", "must be 1 to 100"));
    }
    let owner = if user.is_admin() {
        None
    } else {
        Some(user_id(&user)?)
    };
    let items = payments::list(&mut *state.pool.acquire().await?, owner, q.order_id, limit).await?;
    Ok(Json(PaymentList { items }))
}
