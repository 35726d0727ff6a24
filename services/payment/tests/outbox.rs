//! The outbox against a real PostgreSQL: nothing is held while the order service is
//! called, a stuck event holds up no other, refusals are final (a refused success is
//! refunded), and a poison event ends as a dead letter that `/metrics` counts.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::sync::Mutex;

use axum::http::StatusCode;
use mercato_contract::wire::{EventResult, Order, OrderStatus, PaymentEvent, PaymentStatus};
use mercato_kit::ApiError;
use mercato_kit::testing::{TestService, metric, poll};
use mercato_payment::checkout::Orders;
use mercato_payment::outbox::{self, Pass, Policy};
use mercato_payment::payments::{self, NewPayment};
use sqlx::PgPool;
use support::FakeOrders;
use tokio::sync::Notify;
use uuid::Uuid;

/// Stores a payment of `status` and its event, as checkout does; returns the payment id.
async fn paid(pool: &PgPool, order: Uuid, status: PaymentStatus) -> Uuid {
    let id = Uuid::new_v4();
    let new = NewPayment {
        id,
        order_id: order,
        user_id: Uuid::new_v4(),
        amount: 2500,
        currency: "EUR",
        method: "fake-card",
        status,
        idempotency_key: None,
        request_hash: "hash",
    };
    let mut tx = pool.begin().await.unwrap();
    assert!(payments::insert(&mut tx, &new).await.unwrap().is_some());
    outbox::enqueue(&mut tx, id, order, status, 2500)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

async fn payment_status(pool: &PgPool, id: Uuid) -> PaymentStatus {
    let mut conn = pool.acquire().await.unwrap();
    payments::get(&mut conn, id).await.unwrap().unwrap().status
}

/// What the payment database shows other sessions doing while a call is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    idle_in_transaction: i64,
    outbox_locks: i64,
}

/// An order service whose answer for one order hangs until the test lets it go, and
/// which looks at the payment database while it hangs.
struct Gated {
    stuck: Uuid,
    entered: Notify,
    release: Notify,
    observer: PgPool,
    held: Mutex<Option<Held>>,
    delivered: Mutex<Vec<Uuid>>,
}

impl Gated {
    fn new(stuck: Uuid, observer: PgPool) -> Self {
        Self {
            stuck,
            entered: Notify::new(),
            release: Notify::new(),
            observer,
            held: Mutex::new(None),
            delivered: Mutex::new(Vec::new()),
        }
    }

    async fn look(&self) -> Held {
        let idle_in_transaction = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(&self.observer)
        .await
        .unwrap();
        let outbox_locks = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
             WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND c.relname = 'outbox' AND l.pid <> pg_backend_pid()",
        )
        .fetch_one(&self.observer)
        .await
        .unwrap();
        Held {
            idle_in_transaction,
            outbox_locks,
        }
    }
}

impl Orders for Gated {
    async fn order(&self, _id: Uuid) -> Result<Order, ApiError> {
        Err(ApiError::not_found("Order not found"))
    }

    async fn deliver(
        &self,
        order_id: Uuid,
        _event: &PaymentEvent,
    ) -> Result<EventResult, ApiError> {
        if order_id == self.stuck {
            let held = self.look().await;
            *self.held.lock().unwrap() = Some(held);
            self.entered.notify_one();
            self.release.notified().await;
        }
        self.delivered.lock().unwrap().push(order_id);
        Ok(EventResult {
            applied: true,
            status: OrderStatus::Paid,
        })
    }
}

#[tokio::test]
async fn no_transaction_or_outbox_lock_is_held_while_the_order_service_is_called() {
    let (_db, pool) = support::database().await;
    let order = Uuid::new_v4();
    paid(&pool, order, PaymentStatus::Succeeded).await;
    let orders = std::sync::Arc::new(Gated::new(order, pool.clone()));

    let pass = {
        let (pool, orders) = (pool.clone(), orders.clone());
        tokio::spawn(async move { outbox::deliver_due(&pool, &*orders, &Policy::default()).await })
    };
    orders.entered.notified().await;
    orders.release.notify_one();
    assert_eq!(pass.await.unwrap().unwrap().delivered, 1);
    assert_eq!(
        *orders.held.lock().unwrap(),
        Some(Held {
            idle_in_transaction: 0,
            outbox_locks: 0
        }),
        "the call happened inside a transaction holding the outbox"
    );
}

#[tokio::test]
async fn an_event_stuck_in_flight_does_not_hold_up_the_others() {
    let (_db, pool) = support::database().await;
    let (stuck, other) = (Uuid::new_v4(), Uuid::new_v4());
    paid(&pool, stuck, PaymentStatus::Succeeded).await;
    paid(&pool, other, PaymentStatus::Succeeded).await;
    let orders = std::sync::Arc::new(Gated::new(stuck, pool.clone()));
    let one = Policy {
        batch: 1,
        ..Policy::default()
    };

    // One dispatcher is stuck on the first event; a second one (another replica, or the
    // next pass) still delivers the other.
    let first = {
        let (pool, orders) = (pool.clone(), orders.clone());
        tokio::spawn(async move { outbox::deliver_due(&pool, &*orders, &one).await })
    };
    orders.entered.notified().await;
    let second = outbox::deliver_due(&pool, &*orders, &one).await.unwrap();
    assert_eq!(second.delivered, 1);
    assert_eq!(*orders.delivered.lock().unwrap(), vec![other]);

    orders.release.notify_one();
    assert_eq!(first.await.unwrap().unwrap().delivered, 1);
    assert_eq!(*orders.delivered.lock().unwrap(), vec![other, stuck]);
}

#[tokio::test]
async fn a_success_the_order_refuses_for_good_is_refunded_and_kept_as_a_dead_letter() {
    let (_db, pool) = support::database().await;
    let order = Uuid::new_v4();
    let payment = paid(&pool, order, PaymentStatus::Succeeded).await;
    let orders = FakeOrders::default();
    orders.set_down(Some(
        ApiError::field("amount", "is not the order total of 2000").with_detail("refused"),
    ));

    let pass = outbox::deliver_due(&pool, &orders, &Policy::default())
        .await
        .unwrap();
    assert_eq!(
        pass,
        Pass {
            dead: 1,
            refunded: 1,
            ..Pass::default()
        },
        "a 422 is not retried"
    );
    assert_eq!(
        payment_status(&pool, payment).await,
        PaymentStatus::Refunded
    );
    let (attempts, dead): (i32, bool) =
        sqlx::query_as("SELECT attempts, dead_at IS NOT NULL FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((attempts, dead), (1, true));

    orders.set_down(None);
    let later = outbox::deliver_due(&pool, &orders, &Policy::default())
        .await
        .unwrap();
    assert_eq!(later, Pass::default(), "a dead letter is never sent again");
    assert!(orders.delivered().is_empty());
}

#[tokio::test]
async fn a_success_for_an_order_cancelled_first_is_refunded() {
    let (_db, pool) = support::database().await;
    let order = support::order(Uuid::new_v4(), OrderStatus::Cancelled, 2500);
    let payment = paid(&pool, order.id, PaymentStatus::Succeeded).await;
    let orders = FakeOrders::with([order]);

    let pass = outbox::deliver_due(&pool, &orders, &Policy::default())
        .await
        .unwrap();
    assert_eq!(
        pass,
        Pass {
            delivered: 1,
            refunded: 1,
            ..Pass::default()
        }
    );
    assert_eq!(
        payment_status(&pool, payment).await,
        PaymentStatus::Refunded
    );
    // A redelivery (the lease ran out before the outcome was written) refunds nothing twice.
    let mut conn = pool.acquire().await.unwrap();
    assert!(!payments::refund(&mut conn, payment).await.unwrap());
}

/// The payment service with its dispatcher on and the order service unreachable: every
/// delivery fails with 503, which is retried, until the attempts run out. (Its client and
/// revocation feed use the test's stand-in auth.)
#[tokio::test]
async fn a_poison_event_becomes_a_dead_letter_after_its_attempts_and_metrics_count_it() {
    let app = TestService::start::<mercato_payment::Config>(&[
        "--order-url=http://127.0.0.1:9",
        "--upstream-retries=0",
        "--outbox-poll-ms=20",
        "--outbox-max-backoff-secs=1",
        "--outbox-max-attempts=3",
    ])
    .await;
    let payment = paid(&app.pool, Uuid::new_v4(), PaymentStatus::Succeeded).await;

    let metrics = || async {
        let r = app
            .http
            .get(app.server.ops_url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.unwrap()
    };
    let dead = "mercato_payment_outbox_dead_letters 1";
    let text = poll(100, metrics, |t: &String| t.contains(dead)).await;
    assert!(text.contains(dead), "{text}");
    assert!(
        text.contains("mercato_payment_outbox_events_total{result=\"dead_lettered\"} 1"),
        "{text}"
    );
    let (attempts, dead_at): (i32, bool) =
        sqlx::query_as("SELECT attempts, dead_at IS NOT NULL FROM outbox")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((attempts, dead_at), (3, true));
    // Out of attempts is not a refusal: the order service may have it, so no refund.
    assert_eq!(
        payment_status(&app.pool, payment).await,
        PaymentStatus::Succeeded
    );
}

#[tokio::test]
async fn payments_by_outcome_and_the_waiting_backlog_show_in_metrics() {
    // No dispatcher here: the events stay waiting, as they would with it stopped.
    let app = TestService::start::<mercato_payment::Config>(&[
        "--order-url=http://127.0.0.1:9",
        "--outbox-dispatch=false",
    ])
    .await;
    let (backlog, age) = (
        "mercato_payment_outbox_backlog",
        "mercato_payment_outbox_oldest_age_seconds",
    );
    let payments = |status: &str| format!("mercato_payments{{status=\"{status}\"}}");
    assert_eq!(metric(&app.server, backlog).await, Some(0.0));
    assert_eq!(metric(&app.server, age).await, Some(0.0));
    for status in ["succeeded", "declined", "refunded"] {
        assert_eq!(
            metric(&app.server, &payments(status)).await,
            Some(0.0),
            "{status}"
        );
    }

    paid(&app.pool, Uuid::new_v4(), PaymentStatus::Succeeded).await;
    paid(&app.pool, Uuid::new_v4(), PaymentStatus::Declined).await;
    paid(&app.pool, Uuid::new_v4(), PaymentStatus::Declined).await;
    assert_eq!(metric(&app.server, &payments("succeeded")).await, Some(1.0));
    assert_eq!(metric(&app.server, &payments("declined")).await, Some(2.0));
    assert_eq!(metric(&app.server, backlog).await, Some(3.0));
    let oldest = metric(&app.server, age).await.unwrap();
    assert!(oldest > 0.0, "{oldest}");
    assert!(oldest < 3600.0, "{oldest}");

    // Dead letters are read at the scrape too, whoever gave them up.
    let dead = "mercato_payment_outbox_dead_letters";
    assert_eq!(metric(&app.server, dead).await, Some(0.0));
    sqlx::query("UPDATE outbox SET dead_at = now() WHERE outcome = 'SUCCEEDED'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(metric(&app.server, dead).await, Some(1.0));
    assert_eq!(metric(&app.server, backlog).await, Some(2.0));

    sqlx::query("UPDATE outbox SET delivered_at = now() WHERE dead_at IS NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(metric(&app.server, backlog).await, Some(0.0));
    assert_eq!(metric(&app.server, age).await, Some(0.0));
    assert_eq!(metric(&app.server, dead).await, Some(1.0));
}
