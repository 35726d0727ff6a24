//! The transactional outbox: payment outcomes written with the payment, delivered to the
//! order service at least once, retried with exponential backoff, across restarts.

use std::time::Duration;

use mercato_contract::wire::{PaymentEvent, PaymentStatus};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::checkout::Orders;

/// How many due events one pass claims.
const BATCH: i64 = 20;

/// An event waiting to be delivered, claimed for this pass.
#[derive(Debug, sqlx::FromRow)]
pub struct Due {
    pub id: i64,
    pub event_id: Uuid,
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub outcome: PaymentStatus,
    pub amount: i64,
    pub attempts: i32,
}

impl Due {
    /// The event as the order service receives it.
    pub fn event(&self) -> PaymentEvent {
        PaymentEvent {
            event_id: self.event_id,
            payment_id: self.payment_id,
            outcome: self.outcome,
            amount: self.amount,
        }
    }
}

/// Records an outcome to deliver, inside the caller's transaction.
pub async fn enqueue(
    tx: &mut PgConnection,
    payment_id: Uuid,
    order_id: Uuid,
    outcome: PaymentStatus,
    amount: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (event_id, payment_id, order_id, outcome, amount) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::new_v4())
    .bind(payment_id)
    .bind(order_id)
    .bind(outcome)
    .bind(amount)
    .execute(tx)
    .await?;
    Ok(())
}

/// Claims up to `limit` due events until the transaction ends. `SKIP LOCKED`, so
/// replicas share the work without sending an event twice at once.
pub async fn claim_due(tx: &mut PgConnection, limit: i64) -> Result<Vec<Due>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_id, payment_id, order_id, outcome, amount, attempts FROM outbox
         WHERE delivered_at IS NULL AND next_attempt_at <= now()
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(tx)
    .await
}

pub async fn mark_delivered(tx: &mut PgConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET delivered_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = $1")
        .bind(id)
        .execute(tx)
        .await?;
    Ok(())
}

/// Counts a failed attempt and puts the next one `wait` away.
pub async fn mark_failed(
    tx: &mut PgConnection,
    id: i64,
    error: &str,
    wait: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                next_attempt_at = now() + make_interval(secs => $3)
         WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(wait.as_secs_f64())
    .execute(tx)
    .await?;
    Ok(())
}

/// Delay before attempt `attempts + 1`: 0.5 s doubling, capped.
pub fn backoff(attempts: i32, max: Duration) -> Duration {
    let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    Duration::from_millis(500u64.saturating_mul(1u64 << exp)).min(max)
}

/// What one delivery pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub delivered: usize,
    /// Events the order service did not take; each is tried again after [`backoff`].
    pub failed: usize,
}

/// Delivers the due events once.
pub async fn deliver_due(
    db: &PgPool,
    orders: &impl Orders,
    max_backoff: Duration,
) -> Result<Pass, sqlx::Error> {
    let mut tx = db.begin().await?;
    let due = claim_due(&mut tx, BATCH).await?;
    let mut pass = Pass::default();
    for event in due {
        match orders.deliver(event.order_id, &event.event()).await {
            Ok(_) => {
                mark_delivered(&mut tx, event.id).await?;
                pass.delivered += 1;
            }
            Err(e) => {
                pass.failed += 1;
                let wait = backoff(event.attempts, max_backoff);
                tracing::warn!(event = %event.event_id, order = %event.order_id, attempts = event.attempts + 1,
                    retry_in = ?wait, error = %e, "payment event not delivered");
                mark_failed(&mut tx, event.id, &e.to_string(), wait).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(pass)
}

/// Runs forever: delivers whatever is due, then sleeps until woken by a new payment or
/// until the poll interval passes.
pub async fn dispatch(
    db: PgPool,
    orders: impl Orders,
    wake: std::sync::Arc<Notify>,
    poll: Duration,
    max_backoff: Duration,
) {
    loop {
        match deliver_due(&db, &orders, max_backoff).await {
            Ok(pass) if pass.delivered > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox pass failed"),
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let max = Duration::from_secs(60);
        assert_eq!(backoff(0, max), Duration::from_millis(500));
        assert_eq!(backoff(1, max), Duration::from_secs(1));
        assert_eq!(backoff(3, max), Duration::from_secs(4));
        assert_eq!(backoff(30, max), max);
    }
}
