//! The payment side of checkout against a real PostgreSQL, with the order service in
//! memory: the checks against the order, idempotency, and the outbox's delivery.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use axum::http::StatusCode;
use mercato_contract::wire::{Order, OrderStatus, PaymentStatus};
use mercato_kit::ApiError;
use mercato_kit::idempotency::Created;
use mercato_payment::checkout::{self, Method, Pay, PaymentError};
use mercato_payment::outbox;
use mercato_payment::payments::{self, Payment};
use sqlx::PgPool;
use support::FakeOrders;
use tokio::sync::Notify;
use uuid::Uuid;

const TOTAL: i64 = 2500;

/// Pays as the handler would, waking no one.
async fn try_pay(
    pool: &PgPool,
    orders: &FakeOrders,
    user: Uuid,
    order: Uuid,
    key: Option<&str>,
    amount: i64,
    method: Method,
) -> Result<Created<Payment>, PaymentError> {
    let request = Pay {
        user,
        idempotency_key: key.map(str::to_owned),
        order_id: order,
        amount,
        method,
    };
    checkout::pay(pool, orders, &Notify::new(), request).await
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn paying_a_pending_order_records_the_payment_and_its_event_then_delivers_it_once() {
    let (_db, pool) = support::database().await;
    let user = Uuid::new_v4();
    let order = support::order(user, OrderStatus::Pending, TOTAL);
    let orders = FakeOrders::with([order.clone()]);

    let paid = try_pay(
        &pool,
        &orders,
        user,
        order.id,
        None,
        TOTAL,
        Method::FakeCard,
    )
    .await
    .unwrap();
    assert!(!paid.is_replayed());
    let payment = paid.into_inner();
    assert_eq!(payment.status, PaymentStatus::Succeeded);
    assert_eq!((payment.amount, payment.currency.as_str()), (TOTAL, "EUR"));
    assert_eq!(payment.method, "fake-card");
    let stored = payments::get(&mut pool.acquire().await.unwrap(), payment.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::to_value(&payment).unwrap(),
        serde_json::to_value(&stored).unwrap(),
        "the payment answered is the one stored"
    );
    assert_eq!(payment.request_hash, stored.request_hash);
    assert_eq!(count(&pool, "outbox").await, 1);
    let pass = outbox::deliver_due(&pool, &orders, &outbox::Policy::default())
        .await
        .unwrap();
    assert_eq!(
        pass,
        outbox::Pass {
            delivered: 1,
            failed: 0,
            ..outbox::Pass::default()
        }
    );
    let delivered = orders.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].0, order.id);
    assert_eq!(delivered[0].1.payment_id, payment.id);
    assert_eq!(delivered[0].1.outcome, PaymentStatus::Succeeded);
    assert_eq!(delivered[0].1.amount, TOTAL);

    let again = outbox::deliver_due(&pool, &orders, &outbox::Policy::default())
        .await
        .unwrap();
    assert_eq!(
        again,
        outbox::Pass::default(),
        "a delivered event is not sent again"
    );
}

#[tokio::test]
async fn the_declined_card_records_a_declined_payment_and_event() {
    let (_db, pool) = support::database().await;
    let user = Uuid::new_v4();
    let order = support::order(user, OrderStatus::Pending, TOTAL);
    let orders = FakeOrders::with([order.clone()]);
    let payment = try_pay(
        &pool,
        &orders,
        user,
        order.id,
        None,
        TOTAL,
        Method::FakeCardDeclined,
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(payment.status, PaymentStatus::Declined);
    outbox::deliver_due(&pool, &orders, &outbox::Policy::default())
        .await
        .unwrap();
    assert_eq!(orders.delivered()[0].1.outcome, PaymentStatus::Declined);
}

#[tokio::test]
async fn payments_that_do_not_fit_the_order_are_refused_and_record_nothing() {
    let (_db, pool) = support::database().await;
    let user = Uuid::new_v4();
    let pending = support::order(user, OrderStatus::Pending, TOTAL);
    let paid = support::order(user, OrderStatus::Paid, TOTAL);
    let theirs = support::order(Uuid::new_v4(), OrderStatus::Pending, TOTAL);
    let orders = FakeOrders::with([pending.clone(), paid.clone(), theirs.clone()]);

    let unknown = try_pay(
        &pool,
        &orders,
        user,
        Uuid::new_v4(),
        None,
        TOTAL,
        Method::FakeCard,
    )
    .await;
    assert!(matches!(unknown, Err(PaymentError::OrderNotFound)));
    let someone_elses = try_pay(
        &pool,
        &orders,
        user,
        theirs.id,
        None,
        TOTAL,
        Method::FakeCard,
    )
    .await;
    assert!(matches!(someone_elses, Err(PaymentError::OrderNotFound)));
    let not_pending = try_pay(&pool, &orders, user, paid.id, None, TOTAL, Method::FakeCard).await;
    assert!(matches!(
        not_pending,
        Err(PaymentError::OrderUnavailable(OrderStatus::Paid))
    ));
    let wrong_amount = try_pay(
        &pool,
        &orders,
        user,
        pending.id,
        None,
        TOTAL - 1,
        Method::FakeCard,
    )
    .await;
    match wrong_amount {
        Err(PaymentError::WrongAmount { total, currency }) => {
            assert_eq!((total, currency.as_str()), (TOTAL, "EUR"));
        }
        other => panic!("expected a wrong amount, got {other:?}"),
    }
    assert_eq!(count(&pool, "payments").await, 0);
    assert_eq!(count(&pool, "outbox").await, 0);
}

#[tokio::test]
async fn a_retry_with_the_same_key_gets_the_first_payment_and_another_body_is_refused() {
    let (_db, pool) = support::database().await;
    let user = Uuid::new_v4();
    let order = support::order(user, OrderStatus::Pending, TOTAL);
    let orders = FakeOrders::with([order.clone()]);
    let first = try_pay(
        &pool,
        &orders,
        user,
        order.id,
        Some("k"),
        TOTAL,
        Method::FakeCardDeclined,
    )
    .await
    .unwrap();
    let again = try_pay(
        &pool,
        &orders,
        user,
        order.id,
        Some("k"),
        TOTAL,
        Method::FakeCardDeclined,
    )
    .await
    .unwrap();
    assert!(again.is_replayed());
    assert_eq!(first.get().id, again.get().id);
    let other = try_pay(
        &pool,
        &orders,
        user,
        order.id,
        Some("k"),
        TOTAL,
        Method::FakeCard,
    )
    .await;
    assert!(matches!(other, Err(PaymentError::KeyReused)));
    assert_eq!(count(&pool, "payments").await, 1);
    assert_eq!(count(&pool, "outbox").await, 1);
}

#[tokio::test]
async fn an_order_is_paid_successfully_once_whatever_the_keys() {
    let (_db, pool) = support::database().await;
    let user = Uuid::new_v4();
    let order = support::order(user, OrderStatus::Pending, TOTAL);
    let orders = FakeOrders::with([order.clone()]);
    try_pay(
        &pool,
        &orders,
        user,
        order.id,
        Some("a"),
        TOTAL,
        Method::FakeCard,
    )
    .await
    .unwrap();
    // The order service has not heard of the payment yet: the order still reads PENDING.
    let second = try_pay(
        &pool,
        &orders,
        user,
        order.id,
        Some("b"),
        TOTAL,
        Method::FakeCard,
    )
    .await;
    assert!(matches!(second, Err(PaymentError::AlreadyPaid)));
    assert_eq!(count(&pool, "payments").await, 1);
}

#[tokio::test]
async fn with_the_order_service_down_a_payment_is_refused_and_an_event_waits_with_backoff() {
    let (_db, pool) = support::database().await;
    let user = Uuid::new_v4();
    let order = support::order(user, OrderStatus::Pending, TOTAL);
    let orders = FakeOrders::with([order.clone()]);

    orders.set_down(Some(ApiError::unavailable("Order service")));
    match try_pay(
        &pool,
        &orders,
        user,
        order.id,
        None,
        TOTAL,
        Method::FakeCard,
    )
    .await
    {
        Err(PaymentError::Order(e)) => assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE),
        other => panic!("expected the order service's 503, got {other:?}"),
    }
    assert_eq!(count(&pool, "payments").await, 0);

    orders.set_down(None);
    try_pay(
        &pool,
        &orders,
        user,
        order.id,
        None,
        TOTAL,
        Method::FakeCard,
    )
    .await
    .unwrap();
    orders.set_down(Some(ApiError::unavailable("Order service")));
    let pass = outbox::deliver_due(&pool, &orders, &outbox::Policy::default())
        .await
        .unwrap();
    assert_eq!(
        pass,
        outbox::Pass {
            delivered: 0,
            failed: 1,
            ..outbox::Pass::default()
        }
    );
    let (attempts, waits, error): (i32, bool, Option<String>) =
        sqlx::query_as("SELECT attempts, next_attempt_at > now(), last_error FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, 1);
    assert!(waits, "the next attempt is put off");
    assert!(error.unwrap().contains("Order service"));
    assert!(orders.delivered().is_empty());
    // Not due yet: even with the order service back, nothing goes out before the backoff.
    orders.set_down(None);
    let early = outbox::deliver_due(&pool, &orders, &outbox::Policy::default())
        .await
        .unwrap();
    assert_eq!(early, outbox::Pass::default());
}

/// A pending order of a new customer, known to `orders`.
fn pending(orders: &FakeOrders) -> (Uuid, Order) {
    let user = Uuid::new_v4();
    let order = support::order(user, OrderStatus::Pending, TOTAL);
    orders
        .orders
        .lock()
        .unwrap()
        .insert(order.id, order.clone());
    (user, order)
}

#[tokio::test]
async fn one_checkout_commits_once_per_step_in_the_payment_database() {
    let (db, _pool) = support::database().await;
    let mut commits = mercato_kit::testing::commits::Commits::on(&db.url).await;
    let orders = FakeOrders::default();
    // What one checkout asks of the payment database: record the payment with its event,
    // then one outbox pass claims the event and records its delivery.
    let checkout = async |pool: &PgPool, method| {
        let (user, order) = pending(&orders);
        try_pay(pool, &orders, user, order.id, None, TOTAL, method)
            .await
            .unwrap();
        let pass = outbox::deliver_due(pool, &orders, &outbox::Policy::default())
            .await
            .unwrap();
        assert_eq!(pass.delivered, 1);
    };
    assert_eq!(
        commits
            .of(3, async |pool| checkout(pool, Method::FakeCard).await)
            .await,
        3,
        "record the payment, claim its event, record the delivery"
    );
    // A success the order refuses is refunded in the commit that records its delivery.
    let refused = async |pool: &PgPool| {
        let (user, order) = pending(&orders);
        let paid = try_pay(pool, &orders, user, order.id, None, TOTAL, Method::FakeCard)
            .await
            .unwrap()
            .into_inner();
        let cancelled = Order {
            status: OrderStatus::Cancelled,
            ..order
        };
        orders
            .orders
            .lock()
            .unwrap()
            .insert(cancelled.id, cancelled);
        let pass = outbox::deliver_due(pool, &orders, &outbox::Policy::default())
            .await
            .unwrap();
        assert_eq!((pass.delivered, pass.refunded), (1, 1));
        let refunded = payments::get(&mut pool.acquire().await.unwrap(), paid.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(refunded.status, PaymentStatus::Refunded);
    };
    assert_eq!(
        commits.of(3, refused).await,
        4,
        "and the read of the refunded payment"
    );
}
