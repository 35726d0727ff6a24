//! The order repository: orders, their lines and the payment events applied to them, in
//! SQL over one connection (the caller decides what is one transaction). It knows no HTTP
//! and calls no other service; `checkout` does that.

use mercato_contract::wire::{Order, OrderStatus, PaymentStatus, PricedItem, Reservation};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

/// An order's own row, without its lines: what the checkout decides on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: OrderStatus,
    pub total: i64,
    pub currency: String,
    pub request_hash: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub paid_at: Option<OffsetDateTime>,
}

// Qualified, so the same list reads an order joined to its lines and names the columns an
// insert returns.
const COLUMNS: &str = "orders.id, orders.user_id, orders.status, orders.total, orders.currency::text AS currency, orders.request_hash, orders.created_at, orders.updated_at, orders.expires_at, orders.paid_at";

/// How many orders one sweep expires, and how many releases it retries, at most.
pub const SWEEP_BATCH: i64 = 200;

/// How long a sweep's claim on a release keeps other replicas off it: longer than a call.
pub const RELEASE_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

async fn items_of(
    db: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, PricedItem)>, sqlx::Error> {
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
                    PricedItem {
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

/// The order a row and its lines make.
fn assemble(r: OrderRow, items: Vec<PricedItem>) -> Order {
    Order {
        id: r.id,
        user_id: r.user_id,
        status: r.status,
        items,
        total: r.total,
        currency: r.currency,
        created_at: r.created_at,
        updated_at: r.updated_at,
        expires_at: r.expires_at,
        paid_at: r.paid_at,
    }
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
            assemble(r, mine)
        })
        .collect())
}

/// One row of an order joined to its lines: the line's columns are NULL for an order
/// without lines.
#[derive(sqlx::FromRow)]
struct OrderLine {
    #[sqlx(flatten)]
    order: OrderRow,
    product_id: Option<Uuid>,
    name: Option<String>,
    quantity: Option<i32>,
    unit_price: Option<i64>,
    item_currency: Option<String>,
}

/// One order with its lines and the fingerprint of the request that placed it, in one
/// statement (so one round trip, and one commit when run on its own).
pub async fn placed(
    db: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(Order, String)>, sqlx::Error> {
    let rows: Vec<OrderLine> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, order_items.product_id, order_items.name, order_items.quantity,
                order_items.unit_price, order_items.currency::text AS item_currency
         FROM orders LEFT JOIN order_items ON order_items.order_id = orders.id
         WHERE orders.id = $1 ORDER BY order_items.product_id"
    ))
    .bind(id)
    .fetch_all(db)
    .await?;
    let mut rows = rows.into_iter();
    let Some(first) = rows.next() else {
        return Ok(None);
    };
    let head = first.order.clone();
    let items = std::iter::once(first)
        .chain(rows)
        .filter_map(|line| {
            Some(PricedItem {
                product_id: line.product_id?,
                name: line.name?,
                quantity: line.quantity?,
                unit_price: line.unit_price?,
                currency: line.item_currency?,
            })
        })
        .collect();
    let hash = head.request_hash.clone();
    Ok(Some((assemble(head, items), hash)))
}

/// One order's row; `lock` takes it `FOR UPDATE` for the rest of the transaction.
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

/// One order with its lines, in one statement.
pub async fn get(db: &mut PgConnection, id: Uuid) -> Result<Option<Order>, sqlx::Error> {
    Ok(placed(db, id).await?.map(|(order, _)| order))
}

/// Orders of one user (or of everyone), newest first.
pub async fn list(
    db: &mut PgConnection,
    user: Option<Uuid>,
    status: Option<OrderStatus>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Order>, sqlx::Error> {
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM orders
         WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::text IS NULL OR status = $2)
         ORDER BY created_at DESC, id LIMIT $3 OFFSET $4"
    ))
    .bind(user)
    .bind(status)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *db)
    .await?;
    with_items(db, rows).await
}

/// A new order, priced by its reservation.
#[derive(Debug)]
pub struct NewOrder<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub idempotency_key: Option<&'a str>,
    pub request_hash: &'a str,
    pub reservation: &'a Reservation,
    /// How long it may stay unpaid.
    pub ttl: std::time::Duration,
}

/// Stores a PENDING order and its lines and returns it as stored, or `None`, having
/// written nothing, if an order with this id (or this user's idempotency key) exists
/// already: a concurrent retry with the same key won. One statement, so the lines are
/// stored with the order or not at all, in one round trip and, on its own, one commit.
pub async fn insert(
    db: &mut PgConnection,
    order: &NewOrder<'_>,
) -> Result<Option<Order>, sqlx::Error> {
    let reservation = order.reservation;
    let mut items = reservation.items.clone();
    // As `get` reads them back.
    items.sort_by_key(|i| i.product_id);
    let row: Option<OrderRow> = sqlx::query_as(&format!(
        "WITH stored AS (
             INSERT INTO orders (id, user_id, status, total, currency, idempotency_key, request_hash, expires_at)
             VALUES ($1, $2, $8, $3, $4, $5, $6, now() + make_interval(secs => $7))
             ON CONFLICT DO NOTHING
             RETURNING *
         ), lines AS (
             INSERT INTO order_items (order_id, product_id, name, quantity, unit_price, currency)
             SELECT stored.id, line.product_id, line.name, line.quantity, line.unit_price, line.currency
             FROM stored, unnest($9::uuid[], $10::text[], $11::int4[], $12::int8[], $13::text[])
                          AS line (product_id, name, quantity, unit_price, currency)
         )
         SELECT {COLUMNS} FROM stored AS orders"
    ))
    .bind(order.id)
    .bind(order.user_id)
    .bind(reservation.total)
    .bind(&reservation.currency)
    .bind(order.idempotency_key)
    .bind(order.request_hash)
    .bind(order.ttl.as_secs_f64())
    .bind(OrderStatus::Pending)
    .bind(items.iter().map(|i| i.product_id).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.name.clone()).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.quantity).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.unit_price).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.currency.clone()).collect::<Vec<_>>())
    .fetch_optional(&mut *db)
    .await?;
    Ok(row.map(|r| assemble(r, items)))
}

/// Moves an order to `status`; becoming PAID also stamps `paid_at`.
pub async fn set_status(
    db: &mut PgConnection,
    id: Uuid,
    status: OrderStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE orders SET status = $2, updated_at = now(),
                paid_at = CASE WHEN $3 THEN now() ELSE paid_at END
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(status == OrderStatus::Paid)
    .execute(db)
    .await?;
    Ok(())
}

/// Records a payment event as received (`applied` says whether it moves the order);
/// `false`, having written nothing, if it was recorded before: a redelivery. Run it with
/// the order's row locked, before acting on the event, so the event is acted on once.
pub async fn record_payment_event(
    db: &mut PgConnection,
    event_id: Uuid,
    order_id: Uuid,
    payment_id: Uuid,
    outcome: PaymentStatus,
    applied: bool,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO payment_events (event_id, order_id, payment_id, outcome, applied)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(order_id)
    .bind(payment_id)
    .bind(outcome)
    .bind(applied)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Records that a payment event recorded as applying did not apply after all.
pub async fn payment_event_not_applied(
    db: &mut PgConnection,
    event_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE payment_events SET applied = false WHERE event_id = $1")
        .bind(event_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Records that the product service has taken a cancelled or expired order's stock back.
pub async fn mark_released(db: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET released_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Moves up to `limit` orders that are `from` past their expiry to `to`, skipping rows
/// another replica holds; returns their ids.
pub async fn expire_overdue(
    db: &mut PgConnection,
    from: OrderStatus,
    to: OrderStatus,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE orders SET status = $2, updated_at = now()
         WHERE id IN (SELECT id FROM orders WHERE status = $1 AND expires_at < now()
                      ORDER BY expires_at LIMIT $3 FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Up to `limit` orders in one of the two `statuses` whose stock has not been confirmed
/// returned yet, soonest due first (a read; the sweep claims with [`claim_releases`]).
pub async fn unreleased(
    db: &mut PgConnection,
    statuses: [OrderStatus; 2],
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM orders WHERE status IN ($1, $2) AND released_at IS NULL
         ORDER BY release_next_at, id LIMIT $3",
    )
    .bind(statuses[0])
    .bind(statuses[1])
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Claims up to `limit` orders in one of the two `statuses` whose stock has not been
/// confirmed returned and whose next attempt is due, soonest due first, for `lease`: one
/// statement, rows another replica is claiming are skipped, and nothing stays locked
/// while the product service is called.
pub async fn claim_releases(
    db: &mut PgConnection,
    statuses: [OrderStatus; 2],
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<(Uuid, i32)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE orders SET release_next_at = now() + make_interval(secs => $4)
         WHERE id IN (SELECT id FROM orders
                      WHERE status IN ($1, $2) AND released_at IS NULL AND release_next_at <= now()
                      ORDER BY release_next_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
         RETURNING id, release_attempts",
    )
    .bind(statuses[0])
    .bind(statuses[1])
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(db)
    .await
}

/// Counts a failed release and puts the next attempt `wait` away.
pub async fn release_failed(
    db: &mut PgConnection,
    id: Uuid,
    wait: std::time::Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE orders SET release_attempts = release_attempts + 1,
                release_next_at = now() + make_interval(secs => $2)
         WHERE id = $1",
    )
    .bind(id)
    .bind(wait.as_secs_f64())
    .execute(db)
    .await?;
    Ok(())
}
