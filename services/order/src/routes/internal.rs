//! `/internal/orders`: read by the payment service, and the payment events it delivers.
//! Service tokens only; the gateway never routes here.

use axum::extract::State;
use mercato_contract::wire::{EventResult, Order, PaymentEvent, paths};
use mercato_kit::auth::{OrderPaymentEvents, OrderRead, Service};
use mercato_kit::{ApiResult, Json, Path};
use uuid::Uuid;

use super::order_not_found;
use crate::{AppState, checkout, orders};

#[utoipa::path(get, path = paths::ORDER, tag = "internal", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The order's id")),
    responses((status = 200, body = Order), (status = 404, description = "No such order")))]
pub async fn get_one(
    State(state): State<AppState>,
    _caller: Service<OrderRead>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Order>> {
    let mut conn = state.pool.acquire().await?;
    orders::get(&mut conn, id)
        .await?
        .map(Json)
        .ok_or_else(order_not_found)
}

/// Applies a payment outcome exactly once: SUCCEEDED marks a pending order PAID and
/// commits its reservation; DECLINED leaves it PENDING. A success for an order that is
/// cancelled or expired (or whose reservation ran out) is refused: 200 with that status,
/// and the payment service refunds it. If the product service cannot commit for now, the
/// answer is 503 and nothing is recorded, so the sender retries.
#[utoipa::path(post, path = paths::PAYMENT_EVENTS, tag = "internal", security(("bearer" = [])), request_body = PaymentEvent,
    params(("id" = Uuid, Path, description = "The order's id")),
    responses((status = 200, body = EventResult),
        (status = 404, body = mercato_kit::Problem, content_type = "application/problem+json"),
        (status = 422, description = "An amount that is not the order total, or an outcome events never carry; nothing changes",
            body = mercato_kit::Problem, content_type = "application/problem+json"),
        (status = 503, body = mercato_kit::Problem, content_type = "application/problem+json")))]
pub async fn payment_event(
    State(state): State<AppState>,
    _caller: Service<OrderPaymentEvents>,
    Path(id): Path<Uuid>,
    Json(event): Json<PaymentEvent>,
) -> ApiResult<Json<EventResult>> {
    let result = checkout::apply_payment(&state.pool, state.product.as_ref(), id, &event).await?;
    Ok(Json(result))
}
