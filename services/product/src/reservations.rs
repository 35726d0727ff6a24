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
    let items = items_of(db, order_id).await?;
    Ok(Some(summarise(order_id, status, expires_at, items)))
}

async fn items_of(db: &mut PgConnection, order_id: Uuid) -> Result<Vec<PricedItem>, sqlx::Error> {
    sqlx::query_as(
        "SELECT product_id, name, quantity, unit_price, currency::text AS currency
         FROM reservation_items WHERE order_id = $1 ORDER BY product_id",
    )
    .bind(order_id)
    .fetch_all(db)
    .await
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
    let inserted: Option<OffsetDateTime> = sqlx::query_scalar(
        "INSERT INTO reservations (order_id, status, expires_at)
         VALUES ($1, $3, now() + make_interval(secs => $2)) ON CONFLICT DO NOTHING
         RETURNING expires_at",
    )
    .bind(req.order_id)
    .bind(ttl.as_secs_f64())
    .bind(ReservationStatus::Reserved)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(expires_at) = inserted else {
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
    };

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
    // One statement for every line; `reserved` is in product-id order, as a read lists it.
    sqlx::query(
        "INSERT INTO reservation_items (order_id, product_id, name, quantity, unit_price, currency)
         SELECT $1, line.product_id, line.name, line.quantity, line.unit_price, line.currency
         FROM unnest($2::uuid[], $3::text[], $4::int4[], $5::int8[], $6::text[])
              AS line (product_id, name, quantity, unit_price, currency)",
    )
    .bind(req.order_id)
    .bind(reserved.iter().map(|i| i.product_id).collect::<Vec<_>>())
    .bind(reserved.iter().map(|i| i.name.clone()).collect::<Vec<_>>())
    .bind(reserved.iter().map(|i| i.quantity).collect::<Vec<_>>())
    .bind(reserved.iter().map(|i| i.unit_price).collect::<Vec<_>>())
    .bind(
        reserved
            .iter()
            .map(|i| i.currency.clone())
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    // What was just written, so nothing is read back.
    let reservation = summarise(
        req.order_id,
        ReservationStatus::Reserved,
        expires_at,
        reserved,
    );
    Ok((StatusCode::CREATED, reservation))
}

/// Locks an order's reservation for the rest of the transaction; its status and expiry.
async fn lock(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<(ReservationStatus, OffsetDateTime), ApiError> {
    sqlx::query_as("SELECT status, expires_at FROM reservations WHERE order_id = $1 FOR UPDATE")
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::not_found("Reservation not found"))
}

/// Makes a reservation permanent (the order was paid). Idempotent.
pub async fn commit(db: &PgPool, order_id: Uuid) -> Result<Reservation, ApiError> {
    let mut tx = db.begin().await?;
    let (status, expires_at) = lock(&mut tx, order_id).await?;
    match status {
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
    let items = items_of(&mut tx, order_id).await?;
    tx.commit().await?;
    Ok(summarise(
        order_id,
        ReservationStatus::Committed,
        expires_at,
        items,
    ))
}

/// Returns a reservation's stock (the order was cancelled or expired). Idempotent.
pub async fn release(db: &PgPool, order_id: Uuid) -> Result<Reservation, ApiError> {
    let mut tx = db.begin().await?;
    let (status, expires_at) = lock(&mut tx, order_id).await?;
    match status {
        ReservationStatus::Reserved => return_stock(&mut tx, &[order_id]).await?,
        ReservationStatus::Released => {}
        ReservationStatus::Committed => {
            return Err(ApiError::conflict(
                "reservation_committed",
                "Reservation already committed",
            ));
        }
    }
    let items = items_of(&mut tx, order_id).await?;
    tx.commit().await?;
    Ok(summarise(
        order_id,
        ReservationStatus::Released,
        expires_at,
        items,
    ))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use mercato_kit::testing::TestDb;

    use super::*;

    async fn product(db: &PgPool, price: i64, stock: i32) -> Uuid {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO products (id, name, category, price, currency, stock)
             VALUES ($1, $2, 'test', $3, 'EUR', $4)",
        )
        .bind(id)
        .bind(format!("product {id}"))
        .bind(price)
        .bind(stock)
        .execute(db)
        .await
        .unwrap();
        id
    }

    async fn stock(db: &PgPool, id: Uuid) -> i32 {
        sqlx::query_scalar("SELECT stock FROM products WHERE id = $1")
            .bind(id)
            .fetch_one(db)
            .await
            .unwrap()
    }

    fn same(a: &Reservation, b: &Reservation) {
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap()
        );
    }

    #[tokio::test]
    async fn each_step_answers_with_the_reservation_as_it_is_stored() {
        let (_db, pool) = TestDb::migrated(&crate::MIGRATOR).await;
        let (a, b) = (product(&pool, 250, 5).await, product(&pool, 1000, 1).await);
        let order_id = Uuid::new_v4();
        let request = ReserveRequest {
            order_id,
            // Not in product-id order: the answer lists lines as a read does.
            items: [(a, 2), (b, 1)]
                .into_iter()
                .map(|(product_id, quantity)| LineItem {
                    product_id,
                    quantity,
                })
                .rev()
                .collect(),
        };
        let (status, reserved) = reserve(&pool, &request, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(reserved.status, ReservationStatus::Reserved);
        assert_eq!((reserved.total, reserved.currency.as_str()), (1500, "EUR"));
        same(&reserved, &get(&pool, order_id).await.unwrap().unwrap());
        assert_eq!((stock(&pool, a).await, stock(&pool, b).await), (3, 0));

        let (again, replayed) = reserve(&pool, &request, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(again, StatusCode::OK);
        same(&reserved, &replayed);

        let committed = commit(&pool, order_id).await.unwrap();
        assert_eq!(committed.status, ReservationStatus::Committed);
        same(&committed, &get(&pool, order_id).await.unwrap().unwrap());
        same(&committed, &commit(&pool, order_id).await.unwrap());
        assert_eq!(
            release(&pool, order_id).await.unwrap_err().status,
            StatusCode::CONFLICT
        );
        assert_eq!((stock(&pool, a).await, stock(&pool, b).await), (3, 0));
    }

    #[tokio::test]
    async fn a_release_answers_with_the_released_reservation_and_returns_the_stock_once() {
        let (_db, pool) = TestDb::migrated(&crate::MIGRATOR).await;
        let a = product(&pool, 250, 5).await;
        let order_id = Uuid::new_v4();
        let request = ReserveRequest {
            order_id,
            items: vec![LineItem {
                product_id: a,
                quantity: 4,
            }],
        };
        reserve(&pool, &request, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(stock(&pool, a).await, 1);
        let released = release(&pool, order_id).await.unwrap();
        assert_eq!(released.status, ReservationStatus::Released);
        same(&released, &get(&pool, order_id).await.unwrap().unwrap());
        same(&released, &release(&pool, order_id).await.unwrap());
        assert_eq!(stock(&pool, a).await, 5);
        assert_eq!(
            commit(&pool, order_id).await.unwrap_err().status,
            StatusCode::CONFLICT
        );
    }
}
