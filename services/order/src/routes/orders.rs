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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    pub items: Option<Vec<LineItem>>,
    pub product_id: Option<Uuid>,
    pub quantity: Option<i64>,
}

// Written out because the two shapes are exclusive: a derived schema would make every
// field optional and so promise that `{}` is an order.
impl utoipa::PartialSchema for CreateOrder {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::Ref;
        use utoipa::openapi::schema::{
            AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder,
        };
        let closed = || Some(AdditionalProperties::FreeForm(false));
        let lines = ObjectBuilder::new()
            .property(
                "items",
                ArrayBuilder::new()
                    .items(Ref::from_schema_name(LineItem::name()))
                    .min_items(Some(1))
                    .max_items(Some(items::MAX_ITEMS)),
            )
            .required("items")
            .additional_properties(closed());
        let mut one = ObjectBuilder::new().additional_properties(closed());
        if let utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(line)) =
            LineItem::schema()
        {
            for (name, property) in line.properties {
                one = one.property(name.clone(), property).required(name);
            }
        }
        OneOfBuilder::new()
            .description(Some(
                "Either `items` (1 to 50 lines, each product once) or one product's \
                 `product_id` and `quantity`.",
            ))
            .item(lines)
            .item(one)
            .into()
    }
}

impl ToSchema for CreateOrder {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((LineItem::name().into_owned(), LineItem::schema()));
    }
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
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key: 1 to 255 visible ASCII characters",
        min_length = 1, max_length = 255, pattern = r"^[!-~]+$")),
    responses((status = 201, body = Order, description = "Created; a retry with the same Idempotency-Key answers the first one again"),
        (status = 404, description = "A product does not exist"),
        (status = 409, description = "Not enough stock, or the first attempt's reservation expired")))]
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
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// PENDING, PAID, CANCELLED or EXPIRED, in any case.
    #[param(
        nullable = false,
        pattern = r"^([Pp][Ee][Nn][Dd][Ii][Nn][Gg]|[Pp][Aa][Ii][Dd]|[Cc][Aa][Nn][Cc][Ee][Ll][Ll][Ee][Dd]|[Ee][Xx][Pp][Ii][Rr][Ee][Dd])$"
    )]
    pub status: Option<String>,
    /// Page size, default 20.
    #[param(minimum = 1, maximum = 100, nullable = false)]
    pub limit: Option<i64>,
    #[param(minimum = 0, maximum = 10_000, nullable = false)]
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
    let (limit, offset) = mercato_kit::page::limit_offset(q.limit, q.offset, 20, &mut errors);
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
#[utoipa::path(get, path = "/orders/{id}", tag = "orders", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The order's id")),
    responses((status = 200, body = Order), (status = 404, description = "No such order of the caller's")))]
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
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The order's id")),
    responses((status = 200, body = Order), (status = 404, description = "No such order of the caller's"),
        (status = 409, description = "The order is no longer pending")))]
pub async fn cancel(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Order>> {
    let order = checkout::cancel(&state.pool, state.product.as_ref(), viewer(&user), id).await?;
    Ok(Json(order))
}
