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
use crate::reservations::{self, Reservation, ReserveRequest};

/// Reserves stock for every item of an order, or for none. Repeating the call for the
/// same order id returns the first reservation (200) instead of reserving twice.
#[utoipa::path(post, path = paths::RESERVATIONS, tag = "internal", request_body = ReserveRequest,
    responses((status = 201, body = Reservation), (status = 404, body = mercato_kit::Problem), (status = 409, body = mercato_kit::Problem)))]
pub async fn reserve(
    State(state): State<AppState>,
    _caller: Service<ProductReserve>,
    Json(req): Json<ReserveRequest>,
) -> ApiResult<impl IntoResponse> {
    let (status, reservation) =
        reservations::reserve(&state.pool, &req, state.reservation_ttl).await?;
    if status == StatusCode::CREATED {
        tracing::info!(order = %req.order_id, total = reservation.total, "stock reserved");
    }
    Ok((status, Json(reservation)))
}

#[utoipa::path(get, path = paths::RESERVATION, tag = "internal",
    responses((status = 200, body = Reservation), (status = 404, body = mercato_kit::Problem)))]
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

#[utoipa::path(post, path = paths::RESERVATION_COMMIT, tag = "internal",
    responses((status = 200, body = Reservation), (status = 409, body = mercato_kit::Problem)))]
pub async fn commit(
    State(state): State<AppState>,
    _caller: Service<ProductReserve>,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<Reservation>> {
    Ok(Json(reservations::commit(&state.pool, order_id).await?))
}

#[utoipa::path(post, path = paths::RESERVATION_RELEASE, tag = "internal",
    responses((status = 200, body = Reservation), (status = 409, body = mercato_kit::Problem)))]
pub async fn release(
    State(state): State<AppState>,
    _caller: Service<ProductReserve>,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<Reservation>> {
    Ok(Json(reservations::release(&state.pool, order_id).await?))
}
