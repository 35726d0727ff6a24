//! The database limit: the statements one checkout commits, run straight against the
//! services' databases through the services' own data-access functions, with no HTTP,
//! no JSON and no token checks in between.

use std::time::Duration;

use mercato_kit::items::LineItem;
use sqlx::PgPool;
use uuid::Uuid;

/// Connections to the product, order and payment databases.
#[derive(Clone)]
pub struct Pools {
    pub product: PgPool,
    pub order: PgPool,
    pub payment: PgPool,
}

const TTL: Duration = Duration::from_secs(900);

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// One checkout's database work, in the order the services do it:
/// reserve → store the order (and read it back) → the payment service reads the order →
/// record payment + outbox row → mark the event delivered → apply it to the order
/// (lock, dedupe, commit the reservation, mark PAID, record the event).
pub async fn checkout(pools: &Pools, product_id: Uuid, user: Uuid) -> Result<(), String> {
    let order_id = Uuid::new_v4();
    let request = mercato_product::reservations::ReserveRequest {
        order_id,
        items: vec![LineItem {
            product_id,
            quantity: 1,
        }],
    };
    let (_, reservation) = mercato_product::reservations::reserve(&pools.product, &request, TTL)
        .await
        .map_err(err)?;
    let reservation: mercato_order::product::Reservation =
        serde_json::from_value(serde_json::to_value(&reservation).map_err(err)?).map_err(err)?;
    mercato_order::orders::insert(
        &pools.order,
        order_id,
        user,
        None,
        "replay",
        &reservation,
        TTL,
    )
    .await
    .map_err(err)?;
    mercato_order::orders::get(&pools.order, order_id)
        .await
        .map_err(err)?;
    let order = mercato_order::orders::get(&pools.order, order_id)
        .await
        .map_err(err)?
        .ok_or("order vanished")?;

    let payment_id = Uuid::new_v4();
    let mut tx = pools.payment.begin().await.map_err(err)?;
    let new = mercato_payment::payments::NewPayment {
        id: payment_id,
        order_id,
        user_id: user,
        amount: order.total,
        currency: &order.currency,
        method: "fake-card",
        status: "SUCCEEDED",
        idempotency_key: None,
        request_hash: "replay",
    };
    mercato_payment::payments::insert(&mut tx, &new)
        .await
        .map_err(err)?;
    mercato_payment::outbox::enqueue(&mut tx, payment_id, order_id, "SUCCEEDED", order.total)
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)?;
    mercato_payment::payments::get(&pools.payment, payment_id)
        .await
        .map_err(err)?;
    sqlx::query(
        "UPDATE outbox SET delivered_at = now(), attempts = attempts + 1 WHERE payment_id = $1",
    )
    .bind(payment_id)
    .execute(&pools.payment)
    .await
    .map_err(err)?;

    let mut tx = pools.order.begin().await.map_err(err)?;
    mercato_order::orders::row(&mut tx, order_id, true)
        .await
        .map_err(err)?;
    let event_id = Uuid::new_v4();
    mercato_order::orders::payment_event_seen(&mut tx, event_id)
        .await
        .map_err(err)?;
    mercato_product::reservations::commit(&pools.product, order_id)
        .await
        .map_err(err)?;
    mercato_order::orders::set_status(&mut tx, order_id, "PAID")
        .await
        .map_err(err)?;
    mercato_order::orders::record_payment_event(
        &mut tx,
        event_id,
        order_id,
        payment_id,
        "SUCCEEDED",
        true,
    )
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)?;
    Ok(())
}
