//! The database limit: one checkout's work run straight against the services' databases
//! through the services' own checkout functions (the ones their handlers call), with
//! the HTTP calls between services replaced by direct calls into the callee's code: no
//! HTTP, no JSON and no token checks in between.

use std::time::Duration;

use mercato_contract::wire::{
    EventResult, LineItem, Order, PaymentEvent, Reservation, ReserveRequest,
};
use mercato_kit::ApiError;
use mercato_order::checkout::{self as order_checkout, PlaceOrder, Stock};
use mercato_payment::checkout::{self as payment_checkout, Method, Orders, Pay};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

/// Connections to the product, order and payment databases.
#[derive(Clone)]
pub struct Pools {
    pub product: PgPool,
    pub order: PgPool,
    pub payment: PgPool,
}

const TTL: Duration = Duration::from_secs(900);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The product service's stock, as its handlers keep it.
struct ProductDb<'a>(&'a PgPool);

impl Stock for ProductDb<'_> {
    async fn reserve(&self, request: &ReserveRequest) -> Result<Reservation, ApiError> {
        let (_, reservation) = mercato_product::reservations::reserve(self.0, request, TTL).await?;
        Ok(reservation)
    }

    async fn commit(&self, order_id: Uuid) -> Result<Reservation, ApiError> {
        mercato_product::reservations::commit(self.0, order_id).await
    }

    async fn release(&self, order_id: Uuid) -> Result<Reservation, ApiError> {
        mercato_product::reservations::release(self.0, order_id).await
    }
}

/// The order service, as its internal handlers answer the payment service.
struct OrderDb<'a> {
    pool: &'a PgPool,
    stock: ProductDb<'a>,
}

impl Orders for OrderDb<'_> {
    async fn order(&self, id: Uuid) -> Result<Order, ApiError> {
        let mut conn = self.pool.acquire().await?;
        mercato_order::orders::get(&mut conn, id)
            .await?
            .ok_or_else(|| ApiError::not_found("Order not found"))
    }

    async fn deliver(&self, order_id: Uuid, event: &PaymentEvent) -> Result<EventResult, ApiError> {
        Ok(order_checkout::apply_payment(self.pool, &self.stock, order_id, event).await?)
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// One checkout's database work, in the order the services do it, with the commits each
/// step makes: place the order (reserve: product 1; store it and its lines in one
/// statement that returns them: order 1) → pay it (the payment service reads the order
/// with its lines in one statement: order 1; records the payment, returned by its insert,
/// and its outbox event: payment 1) → one outbox pass (claims the event: payment 1,
/// shared by the events of one batch; applies it to the order, recording it first as the
/// dedupe, committing the reservation and marking it PAID: order 1, product 1; records
/// the delivery: payment 1). Order 3, payment 3, product 2.
pub async fn checkout(pools: &Pools, product_id: Uuid, user: Uuid) -> Result<(), String> {
    let stock = ProductDb(&pools.product);
    let orders = OrderDb {
        pool: &pools.order,
        stock: ProductDb(&pools.product),
    };
    let placed = order_checkout::place_order(
        &pools.order,
        &stock,
        TTL,
        PlaceOrder {
            user,
            idempotency_key: None,
            items: vec![LineItem {
                product_id,
                quantity: 1,
            }],
        },
    )
    .await
    .map_err(|e| err(ApiError::from(e)))?;
    let order = placed.into_inner();

    let pay = Pay {
        user,
        idempotency_key: None,
        order_id: order.id,
        amount: order.total,
        method: Method::FakeCard,
    };
    payment_checkout::pay(&pools.payment, &orders, &Notify::new(), pay)
        .await
        .map_err(|e| err(ApiError::from(e)))?;

    let pass = mercato_payment::outbox::deliver_due(
        &pools.payment,
        &orders,
        &mercato_payment::outbox::Policy {
            max_backoff: MAX_BACKOFF,
            ..Default::default()
        },
    )
    .await
    .map_err(err)?;
    if pass.failed > 0 {
        return Err(format!("{} payment events not delivered", pass.failed));
    }
    Ok(())
}
