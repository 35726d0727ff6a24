//! `/orders`: place, list, read and cancel orders.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use mercato_kit::auth::User;
use mercato_kit::items::{self, LineItem};
use mercato_kit::{ApiError, ApiResult, FieldError, IdempotencyKey, Json, Path, Query};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::orders::{self, Order};

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

fn user_uuid(user: &User) -> ApiResult<Uuid> {
    user.id
        .parse()
        .map_err(|_| ApiError::unauthorized("token subject is not a user"))
}

/// A fingerprint of what was asked, so a reused idempotency key with another body is caught.
fn request_hash(items: &[LineItem]) -> String {
    let canonical = items::canonical(items)
        .iter()
        .map(|(id, q)| format!("{id}:{q}"))
        .collect::<Vec<_>>()
        .join(",");
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The order id for an idempotency key: the same key from the same user always names the
/// same order, so concurrent retries share one reservation and one row.
fn order_id_for(user: Uuid, key: &str) -> Uuid {
    Uuid::new_v5(&user, key.as_bytes())
}

fn replay(order: Order, hash: &str, stored_hash: &str) -> ApiResult<axum::response::Response> {
    if hash != stored_hash {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "Idempotency-Key already used for a different request",
        )
        .with_field("Idempotency-Key", "was used with other items"));
    }
    let mut response = (StatusCode::CREATED, Json(order)).into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
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
    let user_id = user_uuid(&user)?;
    let lines = body.into_items()?;
    items::validate(&lines)?;
    let hash = request_hash(&lines);
    let order_id = match &key {
        Some(key) => order_id_for(user_id, key),
        None => Uuid::new_v4(),
    };
    if key.is_some() {
        let mut conn = state.pool.acquire().await?;
        if let Some(existing) = orders::row(&mut conn, order_id, false).await? {
            let order = orders::get(&state.pool, order_id)
                .await?
                .ok_or_else(|| ApiError::internal("order vanished"))?;
            return replay(order, &hash, &existing.request_hash);
        }
    }

    let reservation = state.product.reserve(order_id, &lines).await?;
    if reservation.status != "RESERVED" {
        // A retry of an attempt that died after reserving, whose reservation has since expired.
        return Err(
            ApiError::conflict("reservation_expired", "Reservation expired")
                .with_detail("retry with a new Idempotency-Key"),
        );
    }
    let inserted = orders::insert(
        &state.pool,
        order_id,
        user_id,
        key.as_deref(),
        &hash,
        &reservation,
        state.order_ttl,
    )
    .await;
    match inserted {
        Ok(true) => {
            tracing::info!(order = %order_id, total = reservation.total, "order placed");
            let order = orders::get(&state.pool, order_id)
                .await?
                .ok_or_else(|| ApiError::internal("order vanished"))?;
            Ok((StatusCode::CREATED, Json(order)).into_response())
        }
        Ok(false) => {
            // A concurrent request with the same key stored it first.
            let mut conn = state.pool.acquire().await?;
            let existing = orders::row(&mut conn, order_id, false)
                .await?
                .ok_or_else(|| ApiError::internal("order vanished"))?;
            let order = orders::get(&state.pool, order_id)
                .await?
                .ok_or_else(|| ApiError::internal("order vanished"))?;
            replay(order, &hash, &existing.request_hash)
        }
        Err(e) => {
            // Do not hold stock for an order that was never stored.
            if let Err(release) = state.product.release(order_id).await {
                tracing::warn!(order = %order_id, error = %release, "could not release; the reservation will expire");
            }
            Err(e.into())
        }
    }
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

const STATUSES: [&str; 4] = ["PENDING", "PAID", "CANCELLED", "EXPIRED"];

/// The caller's orders, newest first; admins see everyone's.
#[utoipa::path(get, path = "/orders", tag = "orders", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = OrderPage)))]
pub async fn list(
    State(state): State<AppState>,
    user: User,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<OrderPage>> {
    let mut errors = Vec::new();
    let status = q.status.map(|s| s.to_ascii_uppercase());
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        errors.push(FieldError::new(
            "status",
            "must be PENDING, PAID, CANCELLED or EXPIRED",
        ));
    }
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
    let owner = if user.is_admin() {
        None
    } else {
        Some(user_uuid(&user)?)
    };
    let items = orders::list(&state.pool, owner, status.as_deref(), limit, offset).await?;
    Ok(Json(OrderPage {
        items,
        limit,
        offset,
    }))
}

fn not_found() -> ApiError {
    ApiError::not_found("Order not found")
}

/// Someone else's order is answered 404, exactly like a missing one.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders", security(("bearer" = [])),
    responses((status = 200, body = Order), (status = 404, body = mercato_kit::Problem)))]
pub async fn get_one(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Order>> {
    let order = orders::get(&state.pool, id).await?.ok_or_else(not_found)?;
    if !user.is_admin() && order.user_id != user_uuid(&user)? {
        return Err(not_found());
    }
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
    let mut tx = state.pool.begin().await?;
    let row = orders::row(&mut tx, id, true)
        .await?
        .ok_or_else(not_found)?;
    if !user.is_admin() && row.user_id != user_uuid(&user)? {
        return Err(not_found());
    }
    if row.status != "PENDING" {
        return Err(
            ApiError::conflict("order_not_pending", "Order cannot be cancelled")
                .with_detail(format!("the order is {}", row.status)),
        );
    }
    orders::set_status(&mut tx, id, "CANCELLED").await?;
    tx.commit().await?;
    tracing::info!(order = %id, "order cancelled");
    // The cancellation stands even if the product service is down: the sweep keeps
    // retrying the release, and the reservation's own expiry is the last resort.
    orders::release_stock(&state, id).await;
    orders::get(&state.pool, id)
        .await?
        .map(Json)
        .ok_or_else(not_found)
}
