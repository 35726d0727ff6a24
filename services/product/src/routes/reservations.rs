//! `/internal/reservations`: stock held for orders. Service tokens with the
//! `product:reserve` scope only; the gateway never routes here.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use mercato_contract::wire::paths;
use mercato_kit::auth::{ProductReserve, Service};
use mercato_kit::{ApiError, ApiResult, Json, Path};
use uuid::Uuid;

use crate::AppState;
use crate::cache::Change;
use crate::reservations::{self, Reservation, ReserveRequest};

/// Drops this replica's cached copies of the products whose stock `reservation` moved, at
/// once, so its own next read shows the new stock (other replicas hear of it from the
/// database's notification, as this one does too).
fn stock_moved(state: &AppState, reservation: &Reservation) {
    for item in &reservation.items {
        state.catalog.apply(Change::Product(item.product_id));
    }
}

/// Reserves stock for every item of an order, or for none. Repeating the call for the
/// same order id returns the first reservation (200) instead of reserving twice.
#[utoipa::path(post, path = paths::RESERVATIONS, tag = "internal", security(("bearer" = [])), request_body = ReserveRequest,
    responses((status = 200, body = Reservation, description = "Already reserved for this order"),
        (status = 201, body = Reservation), (status = 404, description = "A product does not exist"),
        (status = 409, description = "Not enough stock, or the order's reservation ended")))]
pub async fn reserve(
    State(state): State<AppState>,
    _caller: Service<ProductReserve>,
    Json(req): Json<ReserveRequest>,
) -> ApiResult<impl IntoResponse> {
    let (status, reservation) =
        reservations::reserve(&state.pool, &req, state.reservation_ttl).await?;
    if status == StatusCode::CREATED {
        stock_moved(&state, &reservation);
        tracing::info!(order = %req.order_id, total = reservation.total, "stock reserved");
    }
    Ok((status, Json(reservation)))
}

#[utoipa::path(get, path = paths::RESERVATION, tag = "internal", security(("bearer" = [])), params(("order_id" = Uuid, Path, description = "The order the stock is held for")),
    responses((status = 200, body = Reservation), (status = 404, description = "No reservation for this order")))]
pub async fn get_one(
    State(state): State<AppState>,
    _caller: Service<ProductReserve>,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<Reservation>> {
    reservations::get(&state.pool, order_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Reservation not found"))
}

#[utoipa::path(post, path = paths::RESERVATION_COMMIT, tag = "internal", security(("bearer" = [])), params(("order_id" = Uuid, Path, description = "The order the stock is held for")),
    responses((status = 200, body = Reservation), (status = 404, description = "No reservation for this order"),
        (status = 409, description = "The reservation was released or expired")))]
pub async fn commit(
    State(state): State<AppState>,
    _caller: Service<ProductReserve>,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<Reservation>> {
    Ok(Json(reservations::commit(&state.pool, order_id).await?))
}

#[utoipa::path(post, path = paths::RESERVATION_RELEASE, tag = "internal", security(("bearer" = [])), params(("order_id" = Uuid, Path, description = "The order the stock is held for")),
    responses((status = 200, body = Reservation), (status = 404, description = "No reservation for this order"),
        (status = 409, description = "The reservation was already committed")))]
pub async fn release(
    State(state): State<AppState>,
    _caller: Service<ProductReserve>,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<Reservation>> {
    let reservation = reservations::release(&state.pool, order_id).await?;
    stock_moved(&state, &reservation);
    Ok(Json(reservation))
}
