//! The transactional outbox: payment outcomes written with the payment, delivered to the
//! order service at least once, retried with exponential backoff, across restarts.

use std::time::Duration;

use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::AppState;

#[derive(Debug, sqlx::FromRow)]
struct Due {
    id: i64,
    event_id: Uuid,
    payment_id: Uuid,
    order_id: Uuid,
    outcome: String,
    amount: i64,
    attempts: i32,
}

#[derive(Serialize)]
struct Event<'a> {
    event_id: Uuid,
    payment_id: Uuid,
    outcome: &'a str,
    amount: i64,
}

/// Records an outcome to deliver, inside the caller's transaction.
pub async fn enqueue(
    tx: &mut PgConnection,
    payment_id: Uuid,
    order_id: Uuid,
    outcome: &str,
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

/// Delay before attempt `attempts + 1`: 0.5 s doubling, capped.
pub fn backoff(attempts: i32, max: Duration) -> Duration {
    let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    Duration::from_millis(500u64.saturating_mul(1u64 << exp)).min(max)
}

/// Delivers due events once; returns how many were delivered. Rows are claimed with
/// `SKIP LOCKED`, so replicas share the work without sending an event twice at once.
pub async fn deliver_due(state: &AppState, max_backoff: Duration) -> Result<usize, sqlx::Error> {
    let mut tx = state.pool.begin().await?;
    let due: Vec<Due> = sqlx::query_as(
        "SELECT id, event_id, payment_id, order_id, outcome, amount, attempts FROM outbox
         WHERE delivered_at IS NULL AND next_attempt_at <= now()
         ORDER BY id LIMIT 20 FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut delivered = 0;
    for event in due {
        let body = Event {
            event_id: event.event_id,
            payment_id: event.payment_id,
            outcome: &event.outcome,
            amount: event.amount,
        };
        let path = format!("/internal/orders/{}/payment-events", event.order_id);
        let sent: Result<serde_json::Value, _> = state.order.post(&path, &body, true).await;
        match sent {
            Ok(_) => {
                sqlx::query("UPDATE outbox SET delivered_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = $1")
                    .bind(event.id)
                    .execute(&mut *tx)
                    .await?;
                delivered += 1;
            }
            Err(e) => {
                let wait = backoff(event.attempts, max_backoff);
                tracing::warn!(event = %event.event_id, order = %event.order_id, attempts = event.attempts + 1,
                    retry_in = ?wait, error = %e, "payment event not delivered");
                sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                            next_attempt_at = now() + make_interval(secs => $3)
                     WHERE id = $1",
                )
                .bind(event.id)
                .bind(e.to_string())
                .bind(wait.as_secs_f64())
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(delivered)
}

/// Runs forever: delivers whatever is due, then sleeps until woken by a new payment or
/// until the poll interval passes.
pub async fn dispatch(state: AppState, poll: Duration, max_backoff: Duration) {
    loop {
        match deliver_due(&state, max_backoff).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox pass failed"),
        }
        tokio::select! {
            () = state.outbox_wake.notified() => {}
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
