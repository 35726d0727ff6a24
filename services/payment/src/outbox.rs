//! The transactional outbox: payment outcomes written with the payment, delivered to the
//! order service at least once, retried with exponential backoff up to a cap, across
//! restarts. A success the order refuses is refunded; an event that cannot be delivered
//! becomes a dead letter, counted on `/metrics`.
//!
//! No transaction or row lock is held while the order service is called: a pass claims a
//! bounded batch of due rows with a lease (`locked_until`) in one short statement
//! (`SKIP LOCKED`, so replicas share the work), calls, then records each outcome on its
//! own: one statement, or a short transaction when a refund goes with it. A dispatcher
//! that dies mid-call leaves only a lease, which expires; the event is delivered again,
//! which the order service's dedup makes harmless.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::http::StatusCode;
use mercato_contract::wire::{EventResult, PaymentEvent, PaymentStatus};
use mercato_kit::ApiError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::checkout::Orders;
use crate::payments;

/// How the dispatcher works through the outbox.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// How many due events one pass claims, at most.
    pub batch: i64,
    /// How long a claim keeps other dispatchers off an event; longer than one call.
    pub lease: Duration,
    /// Attempts before an event becomes a dead letter.
    pub max_attempts: i32,
    /// Longest wait between two attempts of one event.
    pub max_backoff: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            batch: 20,
            lease: Duration::from_secs(60),
            max_attempts: 10,
            max_backoff: Duration::from_secs(60),
        }
    }
}

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

/// Claims up to `limit` due events for `lease`, soonest due first, in one statement: rows
/// another dispatcher is claiming at this instant are skipped, and rows it has claimed
/// are not due until their lease runs out. Nothing stays locked once this returns.
pub async fn claim_due(
    db: &mut PgConnection,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Due>, sqlx::Error> {
    let mut due: Vec<Due> = sqlx::query_as(
        "UPDATE outbox SET locked_until = now() + make_interval(secs => $2)
         WHERE id IN (SELECT id FROM outbox
                      WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= now()
                        AND (locked_until IS NULL OR locked_until <= now())
                      ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING id, event_id, payment_id, order_id, outcome, amount, attempts",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(db)
    .await?;
    due.sort_by_key(|d| d.id);
    Ok(due)
}

pub async fn mark_delivered(db: &mut PgConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET delivered_at = now(), attempts = attempts + 1, last_error = NULL,
                locked_until = NULL
         WHERE id = $1",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Counts a failed attempt and puts the next one `wait` away.
pub async fn mark_failed(
    db: &mut PgConnection,
    id: i64,
    error: &str,
    wait: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2, locked_until = NULL,
                next_attempt_at = now() + make_interval(secs => $3)
         WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(wait.as_secs_f64())
    .execute(db)
    .await?;
    Ok(())
}

/// Counts a last failed attempt and gives the event up: a dead letter, never claimed again.
pub async fn mark_dead(db: &mut PgConnection, id: i64, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2, locked_until = NULL,
                dead_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}

/// What waits in the outbox, read for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct Backlog {
    /// Events waiting for delivery (neither delivered nor dead).
    pub waiting: i64,
    /// The age in seconds of the oldest of them (0 when none waits).
    pub oldest_age: f64,
    /// Events given up as dead letters.
    pub dead: i64,
}

/// The backlog and the dead letters, in one statement (each count uses its own partial
/// index).
pub async fn backlog(db: &mut PgConnection) -> Result<Backlog, sqlx::Error> {
    sqlx::query_as(
        "SELECT waiting.n AS waiting, waiting.oldest_age, dead.n AS dead
         FROM (SELECT count(*) AS n,
                      COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) AS oldest_age
               FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL) AS waiting,
              (SELECT count(*) AS n FROM outbox WHERE dead_at IS NOT NULL) AS dead",
    )
    .fetch_one(db)
    .await
}

/// Delay before attempt `attempts + 1`: 0.5 s doubling, capped.
pub fn backoff(attempts: i32, max: Duration) -> Duration {
    let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    Duration::from_millis(500u64.saturating_mul(1u64 << exp)).min(max)
}

/// Whether the order service's answer is final: it will say the same to every retry
/// (malformed, no such order, a conflict with the order's state, a refused amount).
/// Unavailability, timeouts, rate limits and token trouble pass, so they are retried.
pub fn is_final(e: &ApiError) -> bool {
    matches!(
        e.status,
        StatusCode::BAD_REQUEST
            | StatusCode::NOT_FOUND
            | StatusCode::CONFLICT
            | StatusCode::UNPROCESSABLE_ENTITY
    )
}

/// What becomes of one attempt to deliver an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The order took it (paid, declined, or a redelivery).
    Delivered,
    /// The order answered, but will never be paid by this success: refund it.
    DeliveredRefund,
    /// Try again after the backoff.
    Retry,
    /// Give it up as a dead letter; refund it if it was a success.
    Dead,
}

/// The verdict on one attempt (`attempts` made before it), given the order's answer.
pub fn verdict(
    outcome: PaymentStatus,
    answer: &Result<EventResult, ApiError>,
    attempts: i32,
    max_attempts: i32,
) -> Verdict {
    match answer {
        Ok(result) if result.refuses(outcome) => Verdict::DeliveredRefund,
        Ok(_) => Verdict::Delivered,
        Err(e) if is_final(e) => Verdict::Dead,
        Err(_) if attempts.saturating_add(1) >= max_attempts => Verdict::Dead,
        Err(_) => Verdict::Retry,
    }
}

/// What one delivery pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub delivered: usize,
    /// Events the order service did not take; each is tried again after [`backoff`].
    pub failed: usize,
    /// Events given up as dead letters in this pass.
    pub dead: usize,
    /// Successful payments refunded because the order refused them.
    pub refunded: usize,
}

impl Pass {
    /// Whether it claimed as many events as a pass may: then more may be due.
    pub fn filled(&self, policy: &Policy) -> bool {
        let attempted = self.delivered + self.failed + self.dead;
        i64::try_from(attempted).unwrap_or(i64::MAX) >= policy.batch
    }
}

/// Records what one attempt came to: the event's state and, if the order refused a
/// success, the payment's refund with it in one short transaction. Without a refund it is
/// one statement, which needs no transaction around it.
async fn record(
    db: &PgPool,
    event: &Due,
    answer: &Result<EventResult, ApiError>,
    policy: &Policy,
    pass: &mut Pass,
) -> Result<(), sqlx::Error> {
    let verdict = verdict(event.outcome, answer, event.attempts, policy.max_attempts);
    let error = answer.as_ref().err().map(ToString::to_string);
    let error = error.as_deref().unwrap_or_default();
    let refund = match verdict {
        Verdict::Delivered => false,
        Verdict::DeliveredRefund => true,
        Verdict::Retry => false,
        // Refused for good: the order will never be paid by it. Out of attempts: the
        // order service may yet have it, so the money stays until someone looks.
        Verdict::Dead => {
            matches!(answer, Err(e) if is_final(e)) && event.outcome == PaymentStatus::Succeeded
        }
    };
    let mut conn = db.acquire().await?;
    if refund {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        mark(&mut tx, event, verdict, error, policy).await?;
        let refunded = payments::refund(&mut tx, event.payment_id).await?;
        tx.commit().await?;
        if refunded {
            tracing::warn!(payment = %event.payment_id, order = %event.order_id, "order refused the payment: refunded");
            pass.refunded += 1;
        }
    } else {
        mark(&mut conn, event, verdict, error, policy).await?;
    }
    match verdict {
        Verdict::Delivered | Verdict::DeliveredRefund => pass.delivered += 1,
        Verdict::Retry => pass.failed += 1,
        Verdict::Dead => pass.dead += 1,
    }
    Ok(())
}

/// Writes an attempt's verdict on the event's row.
async fn mark(
    db: &mut PgConnection,
    event: &Due,
    verdict: Verdict,
    error: &str,
    policy: &Policy,
) -> Result<(), sqlx::Error> {
    match verdict {
        Verdict::Delivered | Verdict::DeliveredRefund => mark_delivered(db, event.id).await,
        Verdict::Retry => {
            let wait = backoff(event.attempts, policy.max_backoff);
            tracing::warn!(event = %event.event_id, order = %event.order_id, attempts = event.attempts + 1,
                retry_in = ?wait, error, "payment event not delivered");
            mark_failed(db, event.id, error, wait).await
        }
        Verdict::Dead => {
            tracing::error!(event = %event.event_id, order = %event.order_id, attempts = event.attempts + 1,
                error, "payment event given up: dead letter");
            mark_dead(db, event.id, error).await
        }
    }
}

/// Delivers the due events once: claim, call, record, with nothing held during the calls.
pub async fn deliver_due(
    db: &PgPool,
    orders: &impl Orders,
    policy: &Policy,
) -> Result<Pass, sqlx::Error> {
    let due = claim_due(&mut *db.acquire().await?, policy.batch, policy.lease).await?;
    let mut pass = Pass::default();
    for event in due {
        let answer = orders.deliver(event.order_id, &event.event()).await;
        record(db, &event, &answer, policy, &mut pass).await?;
    }
    Ok(pass)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    /// delivered, retried, dead_lettered or refunded: a fixed set.
    result: &'static str,
}

/// The outbox's metrics: events by what became of them, the dead letters now stored, and
/// the backlog with the age of its oldest event.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    events: Family<ResultLabel, Counter>,
    dead_letters: Gauge,
    backlog: Gauge,
    oldest_age: Gauge<f64, AtomicU64>,
}

impl Metrics {
    /// Registers them with the service's `/metrics`. The backlog and the dead letters are
    /// read from `db` at each scrape, not by the dispatcher, so a dispatcher that stopped
    /// shows as a growing backlog rather than a frozen one, and delivering costs no
    /// counting.
    pub fn register(&self, metrics: &mercato_kit::metrics::Metrics, db: PgPool) {
        metrics.register(
            "payment_outbox_backlog",
            "Payment events waiting for delivery",
            self.backlog.clone(),
        );
        metrics.register(
            "payment_outbox_oldest_age_seconds",
            "Age of the oldest payment event waiting for delivery (0 when none waits)",
            self.oldest_age.clone(),
        );
        let gauges = (
            self.backlog.clone(),
            self.oldest_age.clone(),
            self.dead_letters.clone(),
        );
        metrics.on_scrape(move || {
            let (db, (backlog, oldest_age, dead_letters)) = (db.clone(), gauges.clone());
            async move {
                let read = match db.acquire().await {
                    Ok(mut conn) => self::backlog(&mut conn).await,
                    Err(e) => Err(e),
                };
                match read {
                    Ok(now) => {
                        backlog.set(now.waiting);
                        oldest_age.set(now.oldest_age);
                        dead_letters.set(now.dead);
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the outbox backlog failed"),
                }
            }
        });
        metrics.register(
            "payment_outbox_events",
            "Payment event delivery attempts by result (delivered, retried, dead_lettered, refunded)",
            self.events.clone(),
        );
        metrics.register(
            "payment_outbox_dead_letters",
            "Payment events given up (refused for good or out of attempts) and kept for an operator",
            self.dead_letters.clone(),
        );
    }

    fn count(&self, pass: &Pass) {
        for (result, n) in [
            ("delivered", pass.delivered),
            ("retried", pass.failed),
            ("dead_lettered", pass.dead),
            ("refunded", pass.refunded),
        ] {
            self.events
                .get_or_create(&ResultLabel { result })
                .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
        }
    }
}

/// Runs forever: delivers whatever is due, then sleeps until woken by a new payment or
/// until the poll interval passes. Only a full batch is followed by another pass at once
/// (more may be due); a payment recorded during a pass has woken it already (`Notify`
/// keeps the wake-up), so an event never waits for the poll.
pub async fn dispatch(
    db: PgPool,
    orders: impl Orders,
    wake: std::sync::Arc<Notify>,
    poll: Duration,
    policy: Policy,
    metrics: Metrics,
) {
    loop {
        let pass = deliver_due(&db, &orders, &policy).await;
        match &pass {
            Ok(pass) => metrics.count(pass),
            Err(e) => tracing::warn!(error = %e, "outbox pass failed"),
        }
        if matches!(pass, Ok(p) if p.filled(&policy)) {
            continue;
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use mercato_contract::wire::OrderStatus;

    use super::*;

    #[test]
    fn only_a_full_pass_calls_for_another_at_once() {
        let policy = Policy {
            batch: 3,
            ..Policy::default()
        };
        let pass = |delivered, failed, dead| Pass {
            delivered,
            failed,
            dead,
            refunded: delivered,
        };
        assert!(!pass(0, 0, 0).filled(&policy));
        assert!(!pass(1, 1, 0).filled(&policy));
        assert!(pass(1, 1, 1).filled(&policy));
        assert!(pass(3, 0, 0).filled(&policy));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let max = Duration::from_secs(60);
        assert_eq!(backoff(0, max), Duration::from_millis(500));
        assert_eq!(backoff(1, max), Duration::from_secs(1));
        assert_eq!(backoff(3, max), Duration::from_secs(4));
        assert_eq!(backoff(30, max), max);
    }

    #[test]
    fn refusals_are_final_and_outages_are_retried_until_the_cap() {
        use PaymentStatus::{Declined, Succeeded};
        let answer = |status| {
            Ok(EventResult {
                applied: false,
                status,
            })
        };
        assert_eq!(
            verdict(Succeeded, &answer(OrderStatus::Paid), 0, 10),
            Verdict::Delivered
        );
        assert_eq!(
            verdict(Succeeded, &answer(OrderStatus::Cancelled), 0, 10),
            Verdict::DeliveredRefund
        );
        assert_eq!(
            verdict(Declined, &answer(OrderStatus::Cancelled), 0, 10),
            Verdict::Delivered
        );
        let refused = Err(ApiError::field("amount", "is not the order total"));
        assert_eq!(verdict(Succeeded, &refused, 0, 10), Verdict::Dead);
        let conflict = Err(ApiError::conflict("x", "x"));
        assert_eq!(verdict(Succeeded, &conflict, 0, 10), Verdict::Dead);
        let down = Err(ApiError::unavailable("order"));
        assert_eq!(verdict(Succeeded, &down, 8, 10), Verdict::Retry);
        assert_eq!(verdict(Succeeded, &down, 9, 10), Verdict::Dead);
        let forbidden = Err(ApiError::forbidden("scope"));
        assert_eq!(verdict(Succeeded, &forbidden, 0, 10), Verdict::Retry);
    }
}
