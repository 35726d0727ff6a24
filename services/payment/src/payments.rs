//! The payment repository: payments in SQL over one connection. It knows no HTTP; the
//! checkout decides what to record and the outbox carries it on.

use mercato_contract::wire::PaymentStatus;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub user_id: Uuid,
    /// Minor units.
    pub amount: i64,
    pub currency: String,
    pub method: String,
    pub status: PaymentStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the money went back: the order refused the payment (status REFUNDED).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub refunded_at: Option<OffsetDateTime>,
    #[serde(skip)]
    pub request_hash: String,
}

const COLUMNS: &str = "id, order_id, user_id, amount, currency::text AS currency, method, status, created_at, refunded_at, request_hash";

pub async fn get(db: &mut PgConnection, id: Uuid) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM payments WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn list(
    db: &mut PgConnection,
    user: Option<Uuid>,
    order: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Payment>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM payments
         WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::uuid IS NULL OR order_id = $2)
         ORDER BY created_at DESC, id LIMIT $3"
    ))
    .bind(user)
    .bind(order)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A payment to record.
#[derive(Debug)]
pub struct NewPayment<'a> {
    pub id: Uuid,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    pub currency: &'a str,
    pub method: &'a str,
    pub status: PaymentStatus,
    pub idempotency_key: Option<&'a str>,
    pub request_hash: &'a str,
}

/// The unique index that lets an order be paid successfully once, whatever races.
pub const ONE_SUCCESS_PER_ORDER: &str = "payments_one_success_per_order";

/// Inserts the payment and returns it as stored; `None` when a payment with this id
/// exists already. A second successful payment for one order fails on
/// [`ONE_SUCCESS_PER_ORDER`].
pub async fn insert(
    db: &mut PgConnection,
    p: &NewPayment<'_>,
) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO payments (id, order_id, user_id, amount, currency, method, status, idempotency_key, request_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING
         RETURNING {COLUMNS}"
    ))
    .bind(p.id)
    .bind(p.order_id)
    .bind(p.user_id)
    .bind(p.amount)
    .bind(p.currency)
    .bind(p.method)
    .bind(p.status)
    .bind(p.idempotency_key)
    .bind(p.request_hash)
    .fetch_optional(db)
    .await
}

/// Refunds a successful payment the order refused; `false` if it was not SUCCEEDED
/// (already refunded, or declined), so a redelivery refunds nothing twice.
pub async fn refund(db: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE payments SET status = $2, refunded_at = now() WHERE id = $1 AND status = $3",
    )
    .bind(id)
    .bind(PaymentStatus::Refunded)
    .bind(PaymentStatus::Succeeded)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}
