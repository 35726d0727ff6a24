//! The order side of checkout against a real PostgreSQL, with the product service in
//! memory: idempotency, undo, the state machine's side effects and the sweep.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use mercato_contract::wire::{
    LineItem, OrderStatus, PaymentEvent, PaymentStatus, ReservationStatus,
};
use mercato_kit::ApiError;
use mercato_kit::idempotency::Created;
use mercato_order::checkout::{self, CheckoutError, PlaceOrder, Viewer};
use mercato_order::orders;
use sqlx::PgPool;
use support::FakeStock;
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(600);

fn lines(quantities: &[(Uuid, i64)]) -> Vec<LineItem> {
    quantities
        .iter()
        .map(|(product_id, quantity)| LineItem {
            product_id: *product_id,
            quantity: *quantity,
        })
        .collect()
}

fn request(user: Uuid, key: Option<&str>, items: Vec<LineItem>) -> PlaceOrder {
    PlaceOrder {
        user,
        idempotency_key: key.map(str::to_owned),
        items,
    }
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn status(pool: &PgPool, id: Uuid) -> OrderStatus {
    let mut conn = pool.acquire().await.unwrap();
    orders::get(&mut conn, id).await.unwrap().unwrap().status
}

async fn place(pool: &PgPool, stock: &FakeStock, user: Uuid) -> Uuid {
    let placed = checkout::place_order(
        pool,
        stock,
        TTL,
        request(user, None, lines(&[(Uuid::new_v4(), 2)])),
    )
    .await
    .unwrap();
    placed.into_inner().id
}

fn event(outcome: PaymentStatus, amount: i64) -> PaymentEvent {
    PaymentEvent {
        event_id: Uuid::new_v4(),
        payment_id: Uuid::new_v4(),
        outcome,
        amount,
    }
}

#[tokio::test]
async fn an_order_is_placed_pending_priced_by_its_reservation() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock::default();
    let user = Uuid::new_v4();
    let placed = checkout::place_order(
        &pool,
        &stock,
        TTL,
        request(
            user,
            None,
            lines(&[(Uuid::new_v4(), 2), (Uuid::new_v4(), 1)]),
        ),
    )
    .await
    .unwrap();
    let Created::New(order) = placed else {
        panic!("a first order is new")
    };
    assert_eq!(order.status, OrderStatus::Pending);
    assert_eq!(order.user_id, user);
    assert_eq!(order.total, 3 * support::PRICE);
    assert_eq!(stock.calls(), vec![("reserve", order.id)]);
}

#[tokio::test]
async fn a_retry_with_the_same_key_gets_the_first_order_without_reserving_again() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock::default();
    let user = Uuid::new_v4();
    let items = lines(&[(Uuid::new_v4(), 2)]);
    let first = checkout::place_order(&pool, &stock, TTL, request(user, Some("k1"), items.clone()))
        .await
        .unwrap();
    let again = checkout::place_order(&pool, &stock, TTL, request(user, Some("k1"), items))
        .await
        .unwrap();
    assert!(!first.is_replayed());
    assert!(again.is_replayed());
    assert_eq!(first.get().id, again.get().id);
    assert_eq!(stock.count("reserve"), 1);
    assert_eq!(count(&pool, "orders").await, 1);
}

#[tokio::test]
async fn a_key_reused_with_other_items_is_refused_and_changes_nothing() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock::default();
    let user = Uuid::new_v4();
    checkout::place_order(
        &pool,
        &stock,
        TTL,
        request(user, Some("k"), lines(&[(Uuid::new_v4(), 1)])),
    )
    .await
    .unwrap();
    let other = checkout::place_order(
        &pool,
        &stock,
        TTL,
        request(user, Some("k"), lines(&[(Uuid::new_v4(), 1)])),
    )
    .await;
    assert!(matches!(other, Err(CheckoutError::KeyReused)));
    assert_eq!(stock.count("reserve"), 1);
    assert_eq!(count(&pool, "orders").await, 1);
}

#[tokio::test]
async fn the_same_key_from_another_user_is_another_order() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock::default();
    let items = lines(&[(Uuid::new_v4(), 1)]);
    let a = checkout::place_order(
        &pool,
        &stock,
        TTL,
        request(Uuid::new_v4(), Some("k"), items.clone()),
    )
    .await
    .unwrap();
    let b = checkout::place_order(
        &pool,
        &stock,
        TTL,
        request(Uuid::new_v4(), Some("k"), items),
    )
    .await
    .unwrap();
    assert_ne!(a.get().id, b.get().id);
    assert!(!b.is_replayed());
}

#[tokio::test]
async fn a_refused_reservation_is_passed_on_and_stores_nothing() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock {
        refuse_reserve: Some(
            ApiError::conflict("insufficient_stock", "Not enough stock")
                .with_field("items[0].quantity", "only 1 in stock"),
        ),
        ..FakeStock::default()
    };
    let refused = checkout::place_order(
        &pool,
        &stock,
        TTL,
        request(Uuid::new_v4(), None, lines(&[(Uuid::new_v4(), 5)])),
    )
    .await;
    match refused {
        Err(CheckoutError::Product(e)) => assert_eq!(e.code, "insufficient_stock"),
        other => panic!("expected the product service's answer, got {other:?}"),
    }
    assert_eq!(count(&pool, "orders").await, 0);
}

#[tokio::test]
async fn a_retry_whose_reservation_expired_is_refused_and_stores_nothing() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock {
        reserve_status: Some(ReservationStatus::Released),
        ..FakeStock::default()
    };
    let retry = checkout::place_order(
        &pool,
        &stock,
        TTL,
        request(Uuid::new_v4(), Some("k"), lines(&[(Uuid::new_v4(), 1)])),
    )
    .await;
    assert!(matches!(retry, Err(CheckoutError::ReservationExpired)));
    assert_eq!(count(&pool, "orders").await, 0);
}

#[tokio::test]
async fn an_order_that_cannot_be_stored_gives_its_stock_back() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock::default();
    // A quantity the order_items CHECK refuses makes the insert fail after reserving.
    let failed = checkout::place_order(
        &pool,
        &stock,
        TTL,
        request(Uuid::new_v4(), None, lines(&[(Uuid::new_v4(), 0)])),
    )
    .await;
    assert!(matches!(failed, Err(CheckoutError::Database(_))));
    let calls = stock.calls();
    assert_eq!(
        calls.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
        vec!["reserve", "release"]
    );
    assert_eq!(calls[0].1, calls[1].1);
    assert_eq!(count(&pool, "orders").await, 0);
}

#[tokio::test]
async fn a_successful_payment_marks_the_order_paid_and_commits_its_stock_once() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock::default();
    let id = place(&pool, &stock, Uuid::new_v4()).await;
    let paid = event(PaymentStatus::Succeeded, 2 * support::PRICE);

    let first = checkout::apply_payment(&pool, &stock, id, &paid)
        .await
        .unwrap();
    assert!(first.applied);
    assert_eq!(first.status, OrderStatus::Paid);
    let again = checkout::apply_payment(&pool, &stock, id, &paid)
        .await
        .unwrap();
    assert!(!again.applied, "a redelivery changes nothing");
    assert_eq!(again.status, OrderStatus::Paid);
    assert_eq!(stock.count("commit"), 1);
    assert_eq!(status(&pool, id).await, OrderStatus::Paid);
    assert_eq!(count(&pool, "payment_events").await, 1);
}

#[tokio::test]
async fn two_deliveries_of_one_event_at_once_apply_it_once() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock::default();
    let id = place(&pool, &stock, Uuid::new_v4()).await;
    let paid = event(PaymentStatus::Succeeded, 2 * support::PRICE);
    let (one, two) = tokio::join!(
        checkout::apply_payment(&pool, &stock, id, &paid),
        checkout::apply_payment(&pool, &stock, id, &paid)
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(
        [one.applied, two.applied].iter().filter(|a| **a).count(),
        1,
        "exactly one delivery applies it"
    );
    assert_eq!(
        (one.status, two.status),
        (OrderStatus::Paid, OrderStatus::Paid)
    );
    assert_eq!(stock.count("commit"), 1);
    assert_eq!(count(&pool, "payment_events").await, 1);
}

#[tokio::test]
async fn one_checkout_commits_once_per_step_in_the_order_database() {
    let (db, _pool) = support::database().await;
    let mut commits = mercato_kit::testing::commits::Commits::on(&db.url).await;
    let stock = FakeStock::default();
    // What one checkout asks of the order database: place the order, the payment
    // service's read of it, and the payment event's delivery.
    let checkout = async |pool: &PgPool, key: Option<&str>| {
        let user = Uuid::new_v4();
        let placed = checkout::place_order(
            pool,
            &stock,
            TTL,
            request(
                user,
                key,
                lines(&[(Uuid::new_v4(), 2), (Uuid::new_v4(), 1)]),
            ),
        )
        .await
        .unwrap()
        .into_inner();
        let read = orders::get(&mut pool.acquire().await.unwrap(), placed.id)
            .await
            .unwrap()
            .unwrap();
        let paid = event(PaymentStatus::Succeeded, read.total);
        let applied = checkout::apply_payment(pool, &stock, read.id, &paid)
            .await
            .unwrap();
        assert!(applied.applied);
    };
    assert_eq!(
        commits.of(3, async |pool| checkout(pool, None).await).await,
        3,
        "store the order, read it, apply the payment"
    );
    assert_eq!(
        commits
            .of(3, async |pool| checkout(pool, Some("key")).await)
            .await,
        4,
        "with an idempotency key, first look for the order it names"
    );
}

#[tokio::test]
async fn a_declined_payment_leaves_the_order_pending_and_is_recorded() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock::default();
    let id = place(&pool, &stock, Uuid::new_v4()).await;
    let declined = event(PaymentStatus::Declined, 2 * support::PRICE);
    let result = checkout::apply_payment(&pool, &stock, id, &declined)
        .await
        .unwrap();
    assert!(!result.applied);
    assert_eq!(result.status, OrderStatus::Pending);
    assert_eq!(stock.count("commit"), 0);
    assert_eq!(count(&pool, "payment_events").await, 1);
}

#[tokio::test]
async fn with_the_product_service_down_a_payment_records_nothing_so_it_is_delivered_again() {
    let (_db, pool) = support::database().await;
    let mut stock = FakeStock::default();
    let id = place(&pool, &stock, Uuid::new_v4()).await;
    stock.refuse_settle = Some(ApiError::unavailable("Product service"));
    let paid = event(PaymentStatus::Succeeded, 2 * support::PRICE);
    match checkout::apply_payment(&pool, &stock, id, &paid).await {
        Err(CheckoutError::Product(e)) => assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE),
        other => panic!("expected 503 from the product service, got {other:?}"),
    }
    assert_eq!(status(&pool, id).await, OrderStatus::Pending);
    assert_eq!(count(&pool, "payment_events").await, 0);

    stock.refuse_settle = None;
    let later = checkout::apply_payment(&pool, &stock, id, &paid)
        .await
        .unwrap();
    assert!(later.applied);
}

#[tokio::test]
async fn a_payment_for_a_cancelled_order_is_recorded_but_changes_nothing() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock::default();
    let user = Uuid::new_v4();
    let id = place(&pool, &stock, user).await;
    checkout::cancel(&pool, &stock, Viewer::Customer(user), id)
        .await
        .unwrap();
    let paid = event(PaymentStatus::Succeeded, 2 * support::PRICE);
    let result = checkout::apply_payment(&pool, &stock, id, &paid)
        .await
        .unwrap();
    assert!(!result.applied);
    assert_eq!(result.status, OrderStatus::Cancelled);
    assert_eq!(stock.count("commit"), 0);
    assert_eq!(count(&pool, "payment_events").await, 1);
}

#[tokio::test]
async fn a_payment_event_for_an_unknown_order_is_not_found() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock::default();
    let paid = event(PaymentStatus::Succeeded, 1);
    let missing = checkout::apply_payment(&pool, &stock, Uuid::new_v4(), &paid).await;
    assert!(matches!(missing, Err(CheckoutError::NotFound)));
}

#[tokio::test]
async fn cancelling_a_pending_order_returns_its_stock_and_only_once() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock::default();
    let user = Uuid::new_v4();
    let id = place(&pool, &stock, user).await;
    let order = checkout::cancel(&pool, &stock, Viewer::Customer(user), id)
        .await
        .unwrap();
    assert_eq!(order.status, OrderStatus::Cancelled);
    assert_eq!(stock.count("release"), 1);
    let again = checkout::cancel(&pool, &stock, Viewer::Customer(user), id).await;
    assert!(matches!(
        again,
        Err(CheckoutError::NotPending(OrderStatus::Cancelled))
    ));
    assert_eq!(stock.count("release"), 1);
    let released: bool =
        sqlx::query_scalar("SELECT released_at IS NOT NULL FROM orders WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(released);
}

#[tokio::test]
async fn someone_elses_order_cannot_be_cancelled_and_looks_missing() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock::default();
    let id = place(&pool, &stock, Uuid::new_v4()).await;
    let stranger = checkout::cancel(&pool, &stock, Viewer::Customer(Uuid::new_v4()), id).await;
    assert!(matches!(stranger, Err(CheckoutError::NotFound)));
    assert_eq!(status(&pool, id).await, OrderStatus::Pending);
    let admin = checkout::cancel(&pool, &stock, Viewer::Admin, id)
        .await
        .unwrap();
    assert_eq!(admin.status, OrderStatus::Cancelled);
}

#[tokio::test]
async fn a_cancellation_stands_while_the_product_service_is_down_and_the_sweep_releases_later() {
    let (_db, pool) = support::database().await;
    let mut stock = FakeStock::default();
    let user = Uuid::new_v4();
    let id = place(&pool, &stock, user).await;
    stock.refuse_settle = Some(ApiError::unavailable("Product service"));
    let order = checkout::cancel(&pool, &stock, Viewer::Customer(user), id)
        .await
        .unwrap();
    assert_eq!(order.status, OrderStatus::Cancelled);
    let mut conn = pool.acquire().await.unwrap();
    let statuses = [OrderStatus::Cancelled, OrderStatus::Expired];
    assert_eq!(
        orders::unreleased(&mut conn, statuses, 10).await.unwrap(),
        vec![id]
    );

    stock.refuse_settle = None;
    // Not due before its backoff; then the sweep releases it.
    checkout::sweep(&pool, &stock, orders::SWEEP_BATCH)
        .await
        .unwrap();
    assert_eq!(stock.count("release"), 1);
    sqlx::query("UPDATE orders SET release_next_at = now() WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    checkout::sweep(&pool, &stock, orders::SWEEP_BATCH)
        .await
        .unwrap();
    assert_eq!(stock.count("release"), 2);
    assert!(
        orders::unreleased(&mut conn, statuses, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_sweep_expires_unpaid_orders_and_returns_their_stock() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock::default();
    let placed = checkout::place_order(
        &pool,
        &stock,
        Duration::ZERO,
        request(Uuid::new_v4(), None, lines(&[(Uuid::new_v4(), 1)])),
    )
    .await
    .unwrap();
    let id = placed.into_inner().id;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        checkout::sweep(&pool, &stock, orders::SWEEP_BATCH)
            .await
            .unwrap(),
        1
    );
    assert_eq!(status(&pool, id).await, OrderStatus::Expired);
    assert_eq!(stock.calls().last(), Some(&("release", id)));
    assert_eq!(
        checkout::sweep(&pool, &stock, orders::SWEEP_BATCH)
            .await
            .unwrap(),
        0
    );
    assert_eq!(stock.count("release"), 1);
}

#[tokio::test]
async fn an_event_whose_amount_is_not_the_order_total_is_refused_and_changes_nothing() {
    let (_db, pool) = support::database().await;
    let stock = FakeStock::default();
    let id = place(&pool, &stock, Uuid::new_v4()).await;
    let short = event(PaymentStatus::Succeeded, 2 * support::PRICE - 1);
    match checkout::apply_payment(&pool, &stock, id, &short).await {
        Err(CheckoutError::BadEvent(e)) => assert_eq!(e.field, "amount"),
        other => panic!("expected the amount refused, got {other:?}"),
    }
    assert_eq!(status(&pool, id).await, OrderStatus::Pending);
    assert_eq!(stock.count("commit"), 0);
    assert_eq!(count(&pool, "payment_events").await, 0);
}

#[tokio::test]
async fn a_conflict_from_the_product_service_on_commit_is_final_the_order_expires_and_the_payment_is_refused()
 {
    let (_db, pool) = support::database().await;
    let mut stock = FakeStock::default();
    let id = place(&pool, &stock, Uuid::new_v4()).await;
    stock.refuse_settle = Some(ApiError::conflict(
        "reservation_released",
        "Reservation already released",
    ));
    let paid = event(PaymentStatus::Succeeded, 2 * support::PRICE);

    let result = checkout::apply_payment(&pool, &stock, id, &paid)
        .await
        .unwrap();
    assert!(!result.applied);
    assert_eq!(result.status, OrderStatus::Expired);
    assert_eq!(status(&pool, id).await, OrderStatus::Expired);
    // Redelivered: answered from what was recorded, the product service is not asked again.
    let again = checkout::apply_payment(&pool, &stock, id, &paid)
        .await
        .unwrap();
    assert_eq!(again.status, OrderStatus::Expired);
    assert_eq!(stock.count("commit"), 1, "a 409 is not retried");
    let applied: bool =
        sqlx::query_scalar("SELECT applied FROM payment_events WHERE event_id = $1")
            .bind(paid.event_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!applied, "the event is recorded as not applied");
    // The product service gave the stock back itself: nothing for the sweep to release.
    checkout::sweep(&pool, &stock, orders::SWEEP_BATCH)
        .await
        .unwrap();
    assert_eq!(stock.count("release"), 0);
}

#[tokio::test]
async fn a_conflict_from_the_product_service_on_release_is_final() {
    let (_db, pool) = support::database().await;
    let mut stock = FakeStock::default();
    let user = Uuid::new_v4();
    let id = place(&pool, &stock, user).await;
    stock.refuse_settle = Some(ApiError::conflict(
        "reservation_committed",
        "Reservation already committed",
    ));
    checkout::cancel(&pool, &stock, Viewer::Customer(user), id)
        .await
        .unwrap();
    checkout::sweep(&pool, &stock, orders::SWEEP_BATCH)
        .await
        .unwrap();
    assert_eq!(stock.count("release"), 1, "a 409 is not retried");
}

#[tokio::test]
async fn an_order_whose_release_keeps_failing_does_not_starve_the_sweep() {
    let (_db, pool) = support::database().await;
    let ttl = Duration::from_secs(600);
    let stuck = support::store_order(&pool, Uuid::new_v4(), &[1], ttl).await;
    let other = support::store_order(&pool, Uuid::new_v4(), &[1], ttl).await;
    let mut conn = pool.acquire().await.unwrap();
    for id in [stuck, other] {
        orders::set_status(&mut conn, id, OrderStatus::Cancelled)
            .await
            .unwrap();
    }
    let stock = FakeStock {
        stuck_release: Some(stuck),
        ..FakeStock::default()
    };

    // One release per sweep: the stuck order goes first, fails, and waits its turn.
    checkout::sweep(&pool, &stock, 1).await.unwrap();
    checkout::sweep(&pool, &stock, 1).await.unwrap();
    assert_eq!(stock.calls(), vec![("release", stuck), ("release", other)]);
    let statuses = [OrderStatus::Cancelled, OrderStatus::Expired];
    assert_eq!(
        orders::unreleased(&mut conn, statuses, 10).await.unwrap(),
        vec![stuck]
    );
    let attempts: i32 = sqlx::query_scalar("SELECT release_attempts FROM orders WHERE id = $1")
        .bind(stuck)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 1);
}
