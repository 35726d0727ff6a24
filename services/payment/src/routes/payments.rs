//! `/payments`: pay a pending order, read payments.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mercato_kit::auth::User;
use mercato_kit::{ApiError, ApiResult, FieldError, IdempotencyKey, Json, Path, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::payments::{self, NewPayment, Payment};
use crate::{AppState, outbox};

pub const METHODS: [&str; 2] = ["fake-card", "fake-card-declined"];

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    pub order_id: Uuid,
    /// Minor units; must equal the order's total.
    pub amount: i64,
    /// `fake-card` (succeeds) or `fake-card-declined` (is declined).
    pub method: String,
}

/// The order as the payment service reads it from the order service.
#[derive(Debug, Deserialize)]
struct OrderView {
    user_id: Uuid,
    status: String,
    total: i64,
    currency: String,
}

fn user_uuid(user: &User) -> ApiResult<Uuid> {
    user.id
        .parse()
        .map_err(|_| ApiError::unauthorized("token subject is not a user"))
}

fn replay(payment: Payment, hash: &str) -> ApiResult<Response> {
    if payment.request_hash != hash {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "Idempotency-Key already used for a different request",
        )
        .with_field("Idempotency-Key", "was used with another payment"));
    }
    let mut response = (StatusCode::CREATED, Json(payment)).into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}

fn order_not_found() -> ApiError {
    ApiError::not_found("Order not found")
}

/// Pays an order: the caller's own, PENDING, for exactly its total. `fake-card`
/// succeeds, `fake-card-declined` is declined; either way the outcome reaches the order
/// service through the outbox. With an `Idempotency-Key`, a retry returns the first payment.
#[utoipa::path(post, path = "/payments", tag = "payments", security(("bearer" = [])), request_body = CreatePayment,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key")),
    responses((status = 201, body = Payment), (status = 404, body = mercato_kit::Problem), (status = 409, body = mercato_kit::Problem),
        (status = 422, body = mercato_kit::Problem), (status = 503, body = mercato_kit::Problem)))]
pub async fn create(
    State(state): State<AppState>,
    user: User,
    IdempotencyKey(key): IdempotencyKey,
    Json(req): Json<CreatePayment>,
) -> ApiResult<Response> {
    let user_id = user_uuid(&user)?;
    let mut errors = Vec::new();
    if req.amount <= 0 {
        errors.push(FieldError::new(
            "amount",
            "must be a positive number of minor units",
        ));
    }
    if !METHODS.contains(&req.method.as_str()) {
        errors.push(FieldError::new(
            "method",
            "must be fake-card or fake-card-declined",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let hash = format!("{}:{}:{}", req.order_id, req.amount, req.method);
    let payment_id = match &key {
        Some(key) => Uuid::new_v5(&user_id, key.as_bytes()),
        None => Uuid::new_v4(),
    };
    if key.is_some()
        && let Some(existing) = payments::get(&state.pool, payment_id).await?
    {
        return replay(existing, &hash);
    }

    let order: OrderView = state
        .order
        .get(&format!("/internal/orders/{}", req.order_id))
        .await
        .map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                order_not_found()
            } else {
                e
            }
        })?;
    if order.user_id != user_id {
        return Err(order_not_found());
    }
    if order.status != "PENDING" {
        return Err(
            ApiError::conflict("order_unavailable", "Order not found or unavailable")
                .with_detail(format!("the order is {}", order.status)),
        );
    }
    if req.amount != order.total {
        return Err(ApiError::field(
            "amount",
            format!(
                "must equal the order total, {} {}",
                order.total, order.currency
            ),
        ));
    }

    let status = if req.method == "fake-card" {
        "SUCCEEDED"
    } else {
        "DECLINED"
    };
    let new = NewPayment {
        id: payment_id,
        order_id: req.order_id,
        user_id,
        amount: req.amount,
        currency: &order.currency,
        method: &req.method,
        status,
        idempotency_key: key.as_deref(),
        request_hash: &hash,
    };
    let mut tx = state.pool.begin().await?;
    let inserted = payments::insert(&mut tx, &new).await.map_err(|e| {
        if mercato_kit::error::is_unique_violation(&e, "payments_one_success_per_order") {
            ApiError::conflict("order_unavailable", "Order not found or unavailable")
                .with_detail("the order is already paid")
        } else {
            e.into()
        }
    })?;
    if !inserted {
        // A concurrent request with the same key won the race; answer with its payment.
        drop(tx);
        let existing = payments::get(&state.pool, payment_id)
            .await?
            .ok_or_else(|| ApiError::internal("payment vanished"))?;
        return replay(existing, &hash);
    }
    outbox::enqueue(&mut tx, payment_id, req.order_id, status, req.amount).await?;
    tx.commit().await?;
    state.outbox_wake.notify_one();
    tracing::info!(payment = %payment_id, order = %req.order_id, status, "payment recorded");
    let payment = payments::get(&state.pool, payment_id)
        .await?
        .ok_or_else(|| ApiError::internal("payment vanished"))?;
    Ok((StatusCode::CREATED, Json(payment)).into_response())
}

fn payment_not_found() -> ApiError {
    ApiError::not_found("Payment not found")
}

#[utoipa::path(get, path = "/payments/{id}", tag = "payments", security(("bearer" = [])),
    responses((status = 200, body = Payment), (status = 404, body = mercato_kit::Problem)))]
pub async fn get_one(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Payment>> {
    let payment = payments::get(&state.pool, id)
        .await?
        .ok_or_else(payment_not_found)?;
    if !user.is_admin() && payment.user_id != user_uuid(&user)? {
        return Err(payment_not_found());
    }
    Ok(Json(payment))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub order_id: Option<Uuid>,
    /// 1–100, default 50.
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
        Some(user_uuid(&user)?)
    };
    let items = payments::list(&state.pool, owner, q.order_id, limit).await?;
    Ok(Json(PaymentList { items }))
}
