//! Stock reservations: taken for a whole order at once (all or nothing, idempotent per
//! order id), then committed when paid or released when cancelled or expired. Names, prices
//! and stock are read here from the product rows this transaction locks, never from the
//! catalogue cache (`crate::cache`), so an order is never priced or stocked from a stale copy.

use std::time::Duration;

use axum::http::StatusCode;
pub use mercato_contract::wire::{PricedItem, Reservation, ReservationStatus, ReserveRequest};
use mercato_kit::ApiError;
use mercato_kit::items::{self, LineItem};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

async fn load(db: &mut PgConnection, order_id: Uuid) -> Result<Option<Reservation>, sqlx::Error> {
    let head: Option<(ReservationStatus, OffsetDateTime)> =
        sqlx::query_as("SELECT status, expires_at FROM reservations WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&mut *db)
            .await?;
    let Some((status, expires_at)) = head else {
        return Ok(None);
    };
    let items: Vec<PricedItem> = sqlx::query_as(
        "SELECT product_id, name, quantity, unit_price, currency::text AS currency
         FROM reservation_items WHERE order_id = $1 ORDER BY product_id",
    )
    .bind(order_id)
    .fetch_all(&mut *db)
    .await?;
    Ok(Some(summarise(order_id, status, expires_at, items)))
}

fn summarise(
    order_id: Uuid,
    status: ReservationStatus,
    expires_at: OffsetDateTime,
    items: Vec<PricedItem>,
) -> Reservation {
    let total = items
        .iter()
        .map(|i| i.unit_price * i64::from(i.quantity))
        .sum();
    let currency = items
        .first()
        .map(|i| i.currency.clone())
        .unwrap_or_default();
    Reservation {
        order_id,
        status,
        expires_at,
        items,
        total,
        currency,
    }
}

/// Reserves every item or none. Rows are locked in product-id order, so concurrent
/// reservations cannot deadlock, and `stock >= quantity` is checked in the same
/// statement that decrements it, so stock can never go negative.
pub async fn reserve(
    db: &PgPool,
    req: &ReserveRequest,
    ttl: Duration,
) -> Result<(StatusCode, Reservation), ApiError> {
    items::validate(&req.items)?;
    let mut tx = db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO reservations (order_id, status, expires_at)
         VALUES ($1, $3, now() + make_interval(secs => $2)) ON CONFLICT DO NOTHING",
    )
    .bind(req.order_id)
    .bind(ttl.as_secs_f64())
    .bind(ReservationStatus::Reserved)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        // A retry for the same order: answer with the first result if it asked the same.
        let existing = load(&mut tx, req.order_id)
            .await?
            .ok_or_else(|| ApiError::internal("reservation vanished"))?;
        let mut asked: Vec<(Uuid, i64)> = req
            .items
            .iter()
            .map(|i| (i.product_id, i.quantity))
            .collect();
        asked.sort();
        let held: Vec<(Uuid, i64)> = existing
            .items
            .iter()
            .map(|i| (i.product_id, i64::from(i.quantity)))
            .collect();
        if asked != held {
            return Err(ApiError::conflict(
                "reservation_mismatch",
                "Order already has a different reservation",
            ));
        }
        return Ok((StatusCode::OK, existing));
    }

    let mut order: Vec<(usize, &LineItem)> = req.items.iter().enumerate().collect();
    order.sort_by_key(|(_, item)| item.product_id);
    let mut reserved = Vec::with_capacity(order.len());
    for (index, item) in order {
        let quantity =
            i32::try_from(item.quantity).map_err(|_| ApiError::internal("quantity range"))?;
        let taken: Option<(String, i64, String)> = sqlx::query_as(
            "UPDATE products SET stock = stock - $2, updated_at = now()
             WHERE id = $1 AND active AND stock >= $2
             RETURNING name, price, currency::text",
        )
        .bind(item.product_id)
        .bind(quantity)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((name, unit_price, currency)) = taken else {
            // Dropping the transaction rolls back everything taken so far.
            let stock: Option<i32> =
                sqlx::query_scalar("SELECT stock FROM products WHERE id = $1 AND active")
                    .bind(item.product_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Err(match stock {
                None => ApiError::not_found("Product not found")
                    .with_field(format!("items[{index}].product_id"), "no such product"),
                Some(left) => ApiError::conflict("insufficient_stock", "Not enough stock")
                    .with_field(
                        format!("items[{index}].quantity"),
                        format!("only {left} in stock"),
                    ),
            });
        };
        reserved.push(PricedItem {
            product_id: item.product_id,
            name,
            quantity,
            unit_price,
            currency,
        });
    }
    if reserved.windows(2).any(|w| w[0].currency != w[1].currency) {
        return Err(ApiError::field(
            "items",
            "all products of one order must share a currency",
        ));
    }
    for item in &reserved {
        sqlx::query(
            "INSERT INTO reservation_items (order_id, product_id, name, quantity, unit_price, currency)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(req.order_id)
        .bind(item.product_id)
        .bind(&item.name)
        .bind(item.quantity)
        .bind(item.unit_price)
        .bind(&item.currency)
        .execute(&mut *tx)
        .await?;
    }
    let reservation = load(&mut tx, req.order_id)
        .await?
        .ok_or_else(|| ApiError::internal("reservation vanished"))?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, reservation))
}

async fn lock_status(tx: &mut PgConnection, order_id: Uuid) -> Result<ReservationStatus, ApiError> {
    sqlx::query_scalar::<_, ReservationStatus>(
        "SELECT status FROM reservations WHERE order_id = $1 FOR UPDATE",
    )
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("Reservation not found"))
}

/// Makes a reservation permanent (the order was paid). Idempotent.
pub async fn commit(db: &PgPool, order_id: Uuid) -> Result<Reservation, ApiError> {
    let mut tx = db.begin().await?;
    match lock_status(&mut tx, order_id).await? {
        ReservationStatus::Reserved => {
            sqlx::query(
                "UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1",
            )
            .bind(order_id)
            .bind(ReservationStatus::Committed)
            .execute(&mut *tx)
            .await?;
        }
        ReservationStatus::Committed => {}
        ReservationStatus::Released => {
            return Err(ApiError::conflict(
                "reservation_released",
                "Reservation already released",
            ));
        }
    }
    let r = load(&mut tx, order_id)
        .await?
        .ok_or_else(|| ApiError::internal("reservation vanished"))?;
    tx.commit().await?;
    Ok(r)
}

/// Returns a reservation's stock (the order was cancelled or expired). Idempotent.
pub async fn release(db: &PgPool, order_id: Uuid) -> Result<Reservation, ApiError> {
    let mut tx = db.begin().await?;
    match lock_status(&mut tx, order_id).await? {
        ReservationStatus::Reserved => return_stock(&mut tx, &[order_id]).await?,
        ReservationStatus::Released => {}
        ReservationStatus::Committed => {
            return Err(ApiError::conflict(
                "reservation_committed",
                "Reservation already committed",
            ));
        }
    }
    let r = load(&mut tx, order_id)
        .await?
        .ok_or_else(|| ApiError::internal("reservation vanished"))?;
    tx.commit().await?;
    Ok(r)
}

/// Puts the stock of locked RESERVED reservations back and marks them RELEASED. Product
/// rows are locked in id order, as `reserve` does, to avoid deadlocks.
async fn return_stock(tx: &mut PgConnection, order_ids: &[Uuid]) -> Result<(), sqlx::Error> {
    let amounts: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT product_id, sum(quantity)::bigint FROM reservation_items
         WHERE order_id = ANY($1) GROUP BY product_id ORDER BY product_id",
    )
    .bind(order_ids)
    .fetch_all(&mut *tx)
    .await?;
    for (product_id, quantity) in amounts {
        sqlx::query("UPDATE products SET stock = stock + $2, updated_at = now() WHERE id = $1")
            .bind(product_id)
            .bind(i32::try_from(quantity).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = ANY($1)")
        .bind(order_ids)
        .bind(ReservationStatus::Released)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Releases reservations past their expiry; returns how many. Safe to run on every
/// replica at once (`SKIP LOCKED`).
pub async fn release_expired(db: &PgPool) -> Result<u64, sqlx::Error> {
    let mut tx = db.begin().await?;
    let expired: Vec<Uuid> = sqlx::query_scalar(
        "SELECT order_id FROM reservations WHERE status = $1 AND expires_at < now()
         ORDER BY expires_at LIMIT 500 FOR UPDATE SKIP LOCKED",
    )
    .bind(ReservationStatus::Reserved)
    .fetch_all(&mut *tx)
    .await?;
    if !expired.is_empty() {
        return_stock(&mut tx, &expired).await?;
    }
    tx.commit().await?;
    Ok(expired.len() as u64)
}

pub async fn get(db: &PgPool, order_id: Uuid) -> Result<Option<Reservation>, sqlx::Error> {
    let mut conn = db.acquire().await?;
    load(&mut conn, order_id).await
}
