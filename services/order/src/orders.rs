//! Orders: their view, their SQL, and the sweep that expires unpaid ones.

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::product::Reservation;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct OrderItem {
    pub product_id: Uuid,
    pub name: String,
    pub quantity: i32,
    /// Minor units, as priced by the product service when the order was placed.
    pub unit_price: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    /// PENDING, PAID, CANCELLED or EXPIRED.
    pub status: String,
    pub items: Vec<OrderItem>,
    /// Minor units.
    pub total: i64,
    pub currency: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub paid_at: Option<OffsetDateTime>,
}

#[derive(sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: String,
    pub total: i64,
    pub currency: String,
    pub request_hash: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub paid_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "id, user_id, status, total, currency::text AS currency, request_hash, created_at, updated_at, expires_at, paid_at";

async fn items_of(
    db: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, OrderItem)>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid, String, i32, i64, String)> = sqlx::query_as(
        "SELECT order_id, product_id, name, quantity, unit_price, currency::text
         FROM order_items WHERE order_id = ANY($1) ORDER BY order_id, product_id",
    )
    .bind(ids)
    .fetch_all(&mut *db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(order_id, product_id, name, quantity, unit_price, currency)| {
                (
                    order_id,
                    OrderItem {
                        product_id,
                        name,
                        quantity,
                        unit_price,
                        currency,
                    },
                )
            },
        )
        .collect())
}

async fn with_items(db: &mut PgConnection, rows: Vec<OrderRow>) -> Result<Vec<Order>, sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let items = items_of(db, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let mine = items
                .iter()
                .filter(|(id, _)| *id == r.id)
                .map(|(_, i)| i.clone())
                .collect();
            Order {
                id: r.id,
                user_id: r.user_id,
                status: r.status,
                items: mine,
                total: r.total,
                currency: r.currency,
                created_at: r.created_at,
                updated_at: r.updated_at,
                expires_at: r.expires_at,
                paid_at: r.paid_at,
            }
        })
        .collect())
}

pub async fn row(
    db: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<OrderRow>, sqlx::Error> {
    let suffix = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM orders WHERE id = $1{suffix}"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

pub async fn get(db: &PgPool, id: Uuid) -> Result<Option<Order>, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let Some(r) = row(&mut conn, id, false).await? else {
        return Ok(None);
    };
    Ok(with_items(&mut conn, vec![r]).await?.pop())
}

/// Orders of one user (or of everyone), newest first.
pub async fn list(
    db: &PgPool,
    user: Option<Uuid>,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Order>, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM orders
         WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::text IS NULL OR status = $2)
         ORDER BY created_at DESC, id LIMIT $3 OFFSET $4"
    ))
    .bind(user)
    .bind(status)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    with_items(&mut conn, rows).await
}

/// Stores a PENDING order priced by its reservation. Returns `false` if an order with
/// this id already exists (a concurrent retry with the same idempotency key won).
pub async fn insert(
    db: &PgPool,
    id: Uuid,
    user: Uuid,
    idempotency_key: Option<&str>,
    request_hash: &str,
    reservation: &Reservation,
    ttl: std::time::Duration,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO orders (id, user_id, status, total, currency, idempotency_key, request_hash, expires_at)
         VALUES ($1, $2, 'PENDING', $3, $4, $5, $6, now() + make_interval(secs => $7))
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(user)
    .bind(reservation.total)
    .bind(&reservation.currency)
    .bind(idempotency_key)
    .bind(request_hash)
    .bind(ttl.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    for item in &reservation.items {
        sqlx::query(
            "INSERT INTO order_items (order_id, product_id, name, quantity, unit_price, currency)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(item.product_id)
        .bind(&item.name)
        .bind(item.quantity)
        .bind(item.unit_price)
        .bind(&item.currency)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

pub async fn set_status(db: &mut PgConnection, id: Uuid, status: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE orders SET status = $2, updated_at = now(),
                paid_at = CASE WHEN $2 = 'PAID' THEN now() ELSE paid_at END
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn payment_event_seen(
    db: &mut PgConnection,
    event_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM payment_events WHERE event_id = $1)")
        .bind(event_id)
        .fetch_one(db)
        .await
}

pub async fn record_payment_event(
    db: &mut PgConnection,
    event_id: Uuid,
    order_id: Uuid,
    payment_id: Uuid,
    outcome: &str,
    applied: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payment_events (event_id, order_id, payment_id, outcome, applied) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event_id)
    .bind(order_id)
    .bind(payment_id)
    .bind(outcome)
    .bind(applied)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn mark_released(db: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET released_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Returns a cancelled or expired order's stock; on failure the sweep retries later.
pub async fn release_stock(state: &AppState, id: Uuid) {
    match state.product.release(id).await {
        Ok(_) => {
            if let Err(e) = mark_released(&state.pool, id).await {
                tracing::warn!(order = %id, error = %e, "stock released but not recorded");
            }
        }
        Err(e) if e.status == reqwest::StatusCode::NOT_FOUND => {
            // Nothing was ever reserved (or it is long gone): nothing to return.
            let _ = mark_released(&state.pool, id).await;
        }
        Err(e) => tracing::warn!(order = %id, error = %e, "releasing stock failed; will retry"),
    }
}

/// Expires unpaid orders past their time, then returns the stock of every cancelled or
/// expired order whose release has not been confirmed yet. Returns how many expired.
pub async fn sweep(state: &AppState) -> Result<u64, sqlx::Error> {
    let expired: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE orders SET status = 'EXPIRED', updated_at = now()
         WHERE id IN (SELECT id FROM orders WHERE status = 'PENDING' AND expires_at < now()
                      ORDER BY expires_at LIMIT 200 FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .fetch_all(&state.pool)
    .await?;
    let unreleased: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM orders WHERE status IN ('CANCELLED', 'EXPIRED') AND released_at IS NULL
         ORDER BY updated_at LIMIT 200",
    )
    .fetch_all(&state.pool)
    .await?;
    for id in unreleased {
        release_stock(state, id).await;
    }
    Ok(expired.len() as u64)
}
