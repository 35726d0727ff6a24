//! `/products`: the public catalog and its admin management.

use axum::extract::State;
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mercato_kit::auth::Admin;
use mercato_kit::{ApiError, ApiResult, Json, Path, Query};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::conditional;
use crate::AppState;
use crate::cache::{Change, ListKey, reads};
use crate::catalog::{self, Product, ProductFields, ProductPage, Updated};

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

/// The catalog, a page at a time, for anyone. Answered from the replica's cache while its
/// change listener is connected, so it is as fresh as the last change notified to it
/// (milliseconds after the change commits).
#[utoipa::path(get, path = "/products", tag = "products",
    params(ListQuery, ("If-None-Match" = Option<String>, Header, nullable = false, description = "ETags of copies the client holds (`\"3\", W/\"4\"`) or `*`: if one is still current, the answer is 304 with no body. A value that is not such a list is ignored (the full answer comes), as RFC 9110 lets a cache do. Optional")),
    responses((status = 200, body = ProductPage, headers(
            ("ETag" = String, description = "A strong tag of this page as it is now: send it back as If-None-Match"),
            ("Cache-Control" = String, description = "`public, max-age=N` (CATALOG_MAX_AGE_SECS, 1 by default): shared caches may serve this page, stock included, up to N seconds old"))),
        (status = 304, description = "Not modified: the page is still the one tagged in If-None-Match; no body", headers(
            ("ETag" = String, description = "The page's current tag"),
            ("Cache-Control" = String, description = "As for 200")))))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit < 1 {
        return Err(ApiError::field("limit", "must be at least 1"));
    }
    let after = match q.cursor.as_deref() {
        Some(c) => Some(
            catalog::decode_cursor(c)
                .ok_or_else(|| ApiError::field("cursor", "is not a cursor this API returned"))?,
        ),
        None => None,
    };
    let key = ListKey {
        category: q.category,
        after,
        limit: limit.min(MAX_LIMIT),
    };
    let page = reads::page(&state.catalog, &state.pool, key).await?;
    Ok(conditional::answer(&headers, &page, &state.cache_control))
}

/// The strong entity tag of a product as it is now: its version, quoted.
pub fn etag(product: &Product) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", product.version))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// A product with its `ETag`.
fn tagged(status: StatusCode, product: Product) -> Response {
    (status, [(ETAG, etag(&product))], Json(product)).into_response()
}

fn if_match_malformed() -> ApiError {
    ApiError::field(
        "If-Match",
        "must be * or entity tags as this API sends them in ETag, e.g. \"3\"",
    )
}

/// The versions `If-Match` accepts: `None` without the header or with `*` (any current
/// product). Comparison is strong, so a weak tag (`W/"3"`) matches nothing, nor does a
/// tag this API never sent.
pub fn if_match(headers: &HeaderMap) -> Result<Option<Vec<i64>>, ApiError> {
    let mut values = headers.get_all(IF_MATCH).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut versions = Vec::new();
    for value in values {
        let text = value.to_str().map_err(|_| if_match_malformed())?;
        for tag in text.split(',').map(str::trim) {
            if tag == "*" {
                return Ok(None);
            }
            let (weak, quoted) = match tag.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, tag),
            };
            let opaque = quoted
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .filter(|t| !t.contains('"'))
                .ok_or_else(if_match_malformed)?;
            if let (false, Ok(version)) = (weak, opaque.parse::<i64>()) {
                versions.push(version);
            }
        }
    }
    Ok(Some(versions))
}

/// One product, for anyone; from the replica's cache, as fresh as the catalog page.
#[utoipa::path(get, path = "/products/{id}", tag = "products",
    params(("id" = Uuid, Path, description = "The product's id"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "ETags of copies the client holds (`\"3\", W/\"4\"`) or `*`: if one is still current, the answer is 304 with no body. A value that is not such a list is ignored (the full answer comes), as RFC 9110 lets a cache do. Optional")),
    responses((status = 200, body = Product, headers(
            ("ETag" = String, description = "The product's version, quoted: send it back as If-Match (edits) or If-None-Match (reads)"),
            ("Cache-Control" = String, description = "`public, max-age=N` (CATALOG_MAX_AGE_SECS, 1 by default): shared caches may serve this product, stock included, up to N seconds old"))),
        (status = 304, description = "Not modified: the product is still at the version tagged in If-None-Match; no body", headers(
            ("ETag" = String, description = "The product's current version, quoted"),
            ("Cache-Control" = String, description = "As for 200"))),
        (status = 404, description = "No such product")))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let product = reads::product(&state.catalog, &state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("Product not found"))?;
    Ok(conditional::answer(
        &headers,
        &product,
        &state.cache_control,
    ))
}

#[utoipa::path(post, path = "/products", tag = "products", security(("bearer" = [])), request_body = ProductFields,
    responses((status = 201, body = Product, headers(("ETag" = String, description = "The product's version, quoted")))))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Json(fields): Json<ProductFields>,
) -> ApiResult<Response> {
    let changes = fields.parse(true)?;
    let product = catalog::insert(&state.pool, &changes).await?;
    state.catalog.apply(Change::Product(product.id));
    tracing::info!(product = %product.id, "product created");
    Ok(tagged(StatusCode::CREATED, product))
}

/// Full update: every field but `description` is required. With `If-Match`, only if the
/// product has not changed since it was read (orders taking stock change it too).
#[utoipa::path(put, path = "/products/{id}", tag = "products", security(("bearer" = [])), request_body = ProductFields,
    params(("id" = Uuid, Path, description = "The product's id"), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|(W/)?"[^"]*"(\s*,\s*(W/)?"[^"]*")*)$"#, description = "The ETag the product was read with (or `*`); the write is refused (412) if it changed since. Optional")),
    responses((status = 200, body = Product, headers(("ETag" = String, description = "The product's new version, quoted"))),
        (status = 404, description = "No such product"),
        (status = 412, description = "The product changed since it was read (If-Match); nothing changed",
            body = mercato_kit::Problem, content_type = "application/problem+json")))]
pub async fn replace(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Json(fields): Json<ProductFields>,
) -> ApiResult<Response> {
    let versions = if_match(&headers)?;
    let changes = fields.parse(true)?;
    updated(
        &state,
        catalog::update(&state.pool, id, &changes, versions.as_deref()).await?,
    )
}

/// Partial update, e.g. `{"price": 1299}`. With `If-Match`, only if the product has not
/// changed since it was read (orders taking stock change it too).
#[utoipa::path(patch, path = "/products/{id}", tag = "products", security(("bearer" = [])), request_body = ProductFields,
    params(("id" = Uuid, Path, description = "The product's id"), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|(W/)?"[^"]*"(\s*,\s*(W/)?"[^"]*")*)$"#, description = "The ETag the product was read with (or `*`); the write is refused (412) if it changed since. Optional")),
    responses((status = 200, body = Product, headers(("ETag" = String, description = "The product's new version, quoted"))),
        (status = 404, description = "No such product"),
        (status = 412, description = "The product changed since it was read (If-Match); nothing changed",
            body = mercato_kit::Problem, content_type = "application/problem+json")))]
pub async fn patch(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Json(fields): Json<ProductFields>,
) -> ApiResult<Response> {
    let versions = if_match(&headers)?;
    let changes = fields.parse(false)?;
    updated(
        &state,
        catalog::update(&state.pool, id, &changes, versions.as_deref()).await?,
    )
}

fn updated(state: &AppState, outcome: Updated) -> ApiResult<Response> {
    match outcome {
        Updated::Done(product) => {
            state.catalog.apply(Change::Product(product.id));
            Ok(tagged(StatusCode::OK, product))
        }
        Updated::Stale(now) => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "The product changed since it was read",
        )
        .with_field(
            "If-Match",
            format!(
                "the product is at ETag \"{}\" now: read it again and retry",
                now.version
            ),
        )),
        Updated::Missing => Err(ApiError::not_found("Product not found")),
    }
}

#[utoipa::path(delete, path = "/products/{id}", tag = "products", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The product's id")),
    responses((status = 204, description = "Removed from the catalog"), (status = 404, description = "No such product")))]
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    if catalog::deactivate(&state.pool, id).await? {
        state.catalog.apply(Change::Product(id));
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("Product not found"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                IF_MATCH,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn if_match_takes_strong_tags_and_star_and_refuses_what_is_no_tag() {
        assert_eq!(if_match(&headers(&[])).ok(), Some(None));
        assert_eq!(if_match(&headers(&["*"])).ok(), Some(None));
        assert_eq!(if_match(&headers(&["\"3\""])).ok(), Some(Some(vec![3])));
        assert_eq!(
            if_match(&headers(&["\"3\", \"5\"", "\"7\""])).ok(),
            Some(Some(vec![3, 5, 7]))
        );
        assert_eq!(
            if_match(&headers(&["W/\"3\""])).ok(),
            Some(Some(vec![])),
            "a weak tag never matches"
        );
        assert_eq!(if_match(&headers(&["\"abc\""])).ok(), Some(Some(vec![])));
        for bad in ["3", "\"3", "W/3", ""] {
            let e = if_match(&headers(&[bad])).err();
            assert_eq!(
                e.map(|e| (e.status, e.errors[0].field.clone())),
                Some((StatusCode::UNPROCESSABLE_ENTITY, "If-Match".to_string())),
                "{bad}"
            );
        }
    }
}
