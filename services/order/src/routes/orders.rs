//! `/orders`: place, list, read and cancel orders.

use axum::extract::State;
use axum::response::IntoResponse;
use mercato_contract::wire::{Order, OrderStatus};
use mercato_kit::auth::User;
use mercato_kit::items::{self, LineItem};
use mercato_kit::{ApiError, ApiResult, FieldError, IdempotencyKey, Json, Path, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{order_not_found, user_id, viewer};
use crate::checkout::{self, PlaceOrder};
use crate::{AppState, orders};

/// `{"items": [...]}`, or the single-item shorthand `{"product_id", "quantity"}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    pub items: Option<Vec<LineItem>>,
    pub product_id: Option<Uuid>,
    pub quantity: Option<i64>,
}

impl CreateOrder {
    fn into_items(self) -> Result<Vec<LineItem>, ApiError> {
        match (self.items, self.product_id, self.quantity) {
            (Some(items), None, None) => Ok(items),
            (None, Some(product_id), Some(quantity)) => Ok(vec![LineItem {
                product_id,
                quantity,
            }]),
            (None, None, None) => Err(ApiError::missing_fields(&["items"])),
            (None, Some(_), None) => Err(ApiError::missing_fields(&["quantity"])),
            (None, None, Some(_)) => Err(ApiError::missing_fields(&["product_id"])),
            (Some(_), _, _) => Err(ApiError::field(
                "items",
                "give either items or product_id and quantity, not both",
            )),
        }
    }
}

/// Places an order: stock is reserved for every item at once and prices come from the
/// product service. With an `Idempotency-Key`, a retry returns the first order.
#[utoipa::path(post, path = "/orders", tag = "orders", security(("bearer" = [])), request_body = CreateOrder,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key")),
    responses((status = 201, body = Order), (status = 404, body = mercato_kit::Problem), (status = 409, body = mercato_kit::Problem),
        (status = 422, body = mercato_kit::Problem), (status = 503, body = mercato_kit::Problem)))]
pub async fn create(
    State(state): State<AppState>,
    user: User,
    IdempotencyKey(key): IdempotencyKey,
    Json(body): Json<CreateOrder>,
) -> ApiResult<axum::response::Response> {
    let user = user_id(&user)?;
    let lines = body.into_items()?;
    items::validate(&lines)?;
    let request = PlaceOrder {
        user,
        idempotency_key: key,
        items: lines,
    };
    let placed = checkout::place_order(
        &state.pool,
        state.product.as_ref(),
        state.order_ttl,
        request,
    )
    .await?;
    Ok(placed.into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// PENDING, PAID, CANCELLED or EXPIRED.
    pub status: Option<String>,
    /// 1–100, default 20.
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<Order>,
    pub limit: i64,
    pub offset: i64,
}

/// The caller's orders, newest first; admins see everyone's.
#[utoipa::path(get, path = "/orders", tag = "orders", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = OrderPage)))]
pub async fn list(
    State(state): State<AppState>,
    user: User,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<OrderPage>> {
    let mut errors = Vec::new();
    let status = match q.status.map(|s| s.to_ascii_uppercase()) {
        Some(s) => {
            let parsed = OrderStatus::parse(&s);
            if parsed.is_none() {
                errors.push(FieldError::new(
                    "status",
                    "must be PENDING, PAID, CANCELLED or EXPIRED",
                ));
            }
            parsed
        }
        None => None,
    };
    let (limit, offset) = (q.limit.unwrap_or(20), q.offset.unwrap_or(0));
    if !(1..=100).contains(&limit) {
        errors.push(FieldError::new("limit", "must be 1 to 100"));
    }
    if offset < 0 {
        errors.push(FieldError::new("offset", "must not be negative"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let owner = viewer(&user).owner()?;
    let mut conn = state.pool.acquire().await?;
    let items = orders::list(&mut conn, owner, status, limit, offset).await?;
    Ok(Json(OrderPage {
        items,
        limit,
        offset,
    }))
}

/// Someone else's order is answered 404, exactly like a missing one.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders", security(("bearer" = [])),
    responses((status = 200, body = Order), (status = 404, body = mercato_kit::Problem)))]
pub async fn get_one(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Order>> {
    let mut conn = state.pool.acquire().await?;
    let order = orders::get(&mut conn, id)
        .await?
        .ok_or_else(order_not_found)?;
    viewer(&user).may_see(order.user_id)?;
    Ok(Json(order))
}

/// Cancels a pending order and returns its stock.
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    responses((status = 200, body = Order), (status = 404, body = mercato_kit::Problem), (status = 409, body = mercato_kit::Problem)))]
pub async fn cancel(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Order>> {
    let order = checkout::cancel(&state.pool, state.product.as_ref(), viewer(&user), id).await?;
    Ok(Json(order))
}
