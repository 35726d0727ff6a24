//! `/internal/orders`: read by the payment service, and the payment events it delivers.
//! Service tokens only; the gateway never routes here.

use axum::extract::State;
use mercato_kit::auth::{OrderPaymentEvents, OrderRead, Service};
use mercato_kit::{ApiError, ApiResult, Json, Path};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::orders::{self, Order};

#[utoipa::path(get, path = "/internal/orders/{id}", tag = "internal",
    responses((status = 200, body = Order), (status = 404, body = mercato_kit::Problem)))]
pub async fn get_one(
    State(state): State<AppState>,
    _caller: Service<OrderRead>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Order>> {
    orders::get(&state.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Order not found"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Outcome {
    Succeeded,
    Declined,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "SUCCEEDED",
            Outcome::Declined => "DECLINED",
        }
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentEvent {
    /// Unique per event; a redelivery carries the same id.
    pub event_id: Uuid,
    pub payment_id: Uuid,
    pub outcome: Outcome,
    pub amount: i64,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct EventResult {
    /// Whether this delivery changed the order (false for a redelivery or a no-op).
    pub applied: bool,
    pub status: String,
}

/// Applies a payment outcome exactly once: SUCCEEDED marks a pending order PAID and
/// commits its reservation; DECLINED leaves it PENDING. If the product service cannot
/// commit, the answer is 503 and nothing is recorded, so the sender retries.
#[utoipa::path(post, path = "/internal/orders/{id}/payment-events", tag = "internal", request_body = PaymentEvent,
    responses((status = 200, body = EventResult), (status = 404, body = mercato_kit::Problem), (status = 503, body = mercato_kit::Problem)))]
pub async fn payment_event(
    State(state): State<AppState>,
    _caller: Service<OrderPaymentEvents>,
    Path(id): Path<Uuid>,
    Json(event): Json<PaymentEvent>,
) -> ApiResult<Json<EventResult>> {
    let mut tx = state.pool.begin().await?;
    let order = orders::row(&mut tx, id, true)
        .await?
        .ok_or_else(|| ApiError::not_found("Order not found"))?;
    let seen = orders::payment_event_seen(&mut tx, event.event_id).await?;
    if seen {
        return Ok(Json(EventResult {
            applied: false,
            status: order.status,
        }));
    }
    let applied = match (event.outcome, order.status.as_str()) {
        (Outcome::Succeeded, "PENDING") => {
            if event.amount != order.total {
                tracing::error!(order = %id, paid = event.amount, total = order.total, "payment amount differs from the order total");
            }
            state.product.commit(id).await?;
            orders::set_status(&mut tx, id, "PAID").await?;
            true
        }
        (Outcome::Succeeded, "PAID") => false,
        (Outcome::Succeeded, other) => {
            tracing::error!(order = %id, payment = %event.payment_id, status = other,
                "payment succeeded for an order that is no longer pending; it needs a refund");
            false
        }
        (Outcome::Declined, _) => false,
    };
    orders::record_payment_event(
        &mut tx,
        event.event_id,
        id,
        event.payment_id,
        event.outcome.as_str(),
        applied,
    )
    .await?;
    tx.commit().await?;
    let status = if applied {
        "PAID".to_string()
    } else {
        order.status
    };
    tracing::info!(order = %id, outcome = event.outcome.as_str(), applied, "payment event");
    Ok(Json(EventResult { applied, status }))
}
