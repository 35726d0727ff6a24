//! `/products`: the public catalog and its admin management.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mercato_kit::auth::Admin;
use mercato_kit::{ApiError, ApiResult, Json, Path, Query};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::catalog::{self, Product, ProductFields};

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[param(nullable = false)]
    pub category: Option<String>,
    /// Page size, at least 1 (larger values than 100 are capped at 100).
    #[param(minimum = 1, nullable = false)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(nullable = false, min_length = 1, pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<Product>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn encode_cursor(p: &Product) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", p.created_at.unix_timestamp_nanos(), p.id))
}

fn decode_cursor(cursor: &str) -> Option<(OffsetDateTime, Uuid)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (nanos, id) = raw.split_once(':')?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos.parse().ok()?).ok()?;
    Some((at, id.parse().ok()?))
}

#[utoipa::path(get, path = "/products", tag = "products", params(ListQuery),
    responses((status = 200, body = ProductPage)))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<ProductPage>> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit < 1 {
        return Err(ApiError::field("limit", "must be at least 1"));
    }
    let limit = limit.min(MAX_LIMIT);
    let after = match q.cursor.as_deref() {
        Some(c) => Some(
            decode_cursor(c)
                .ok_or_else(|| ApiError::field("cursor", "is not a cursor this API returned"))?,
        ),
        None => None,
    };
    // One extra row tells whether another page exists.
    let mut items = catalog::list(&state.pool, q.category.as_deref(), after, limit + 1).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        items.last().map(encode_cursor)
    } else {
        None
    };
    Ok(Json(ProductPage { items, next_cursor }))
}

#[utoipa::path(get, path = "/products/{id}", tag = "products", params(("id" = Uuid, Path, description = "The product's id")),
    responses((status = 200, body = Product), (status = 404, description = "No such product")))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Product>> {
    catalog::get(&state.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Product not found"))
}

#[utoipa::path(post, path = "/products", tag = "products", security(("bearer" = [])), request_body = ProductFields,
    responses((status = 201, body = Product)))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Json(fields): Json<ProductFields>,
) -> ApiResult<impl IntoResponse> {
    let changes = fields.parse(true)?;
    let product = catalog::insert(&state.pool, &changes).await?;
    tracing::info!(product = %product.id, "product created");
    Ok((StatusCode::CREATED, Json(product)))
}

/// Full update: every field but `description` is required.
#[utoipa::path(put, path = "/products/{id}", tag = "products", security(("bearer" = [])), request_body = ProductFields, params(("id" = Uuid, Path, description = "The product's id")),
    responses((status = 200, body = Product), (status = 404, description = "No such product")))]
pub async fn replace(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<Uuid>,
    Json(fields): Json<ProductFields>,
) -> ApiResult<Json<Product>> {
    let changes = fields.parse(true)?;
    updated(catalog::update(&state.pool, id, &changes).await?)
}

/// Partial update, e.g. `{"price": 1299}`.
#[utoipa::path(patch, path = "/products/{id}", tag = "products", security(("bearer" = [])), request_body = ProductFields, params(("id" = Uuid, Path, description = "The product's id")),
    responses((status = 200, body = Product), (status = 404, description = "No such product")))]
pub async fn patch(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<Uuid>,
    Json(fields): Json<ProductFields>,
) -> ApiResult<Json<Product>> {
    let changes = fields.parse(false)?;
    updated(catalog::update(&state.pool, id, &changes).await?)
}

fn updated(product: Option<Product>) -> ApiResult<Json<Product>> {
    product
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Product not found"))
}

#[utoipa::path(delete, path = "/products/{id}", tag = "products", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The product's id")),
    responses((status = 204, description = "Removed from the catalog"), (status = 404, description = "No such product")))]
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    if catalog::deactivate(&state.pool, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("Product not found"))
    }
}
