//! The order repository against a real PostgreSQL: what each statement stores and finds.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::time::Duration;

use mercato_contract::wire::{
    LineItem, OrderStatus, PaymentStatus, ReservationStatus, ReserveRequest,
};
use mercato_order::orders::{self, NewOrder};
use uuid::Uuid;

#[tokio::test]
async fn an_order_is_stored_pending_with_its_lines_and_reservation_total() {
    let (_db, pool) = support::database().await;
    let user = Uuid::new_v4();
    let id = support::store_order(&pool, user, &[2, 1], Duration::from_secs(60)).await;
    let mut conn = pool.acquire().await.unwrap();
    let order = orders::get(&mut conn, id).await.unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Pending);
    assert_eq!(order.user_id, user);
    assert_eq!(order.total, 3 * support::PRICE);
    assert_eq!(order.currency, "EUR");
    assert_eq!(order.items.len(), 2);
    assert!(order.paid_at.is_none());
    let row = orders::row(&mut conn, id, false).await.unwrap().unwrap();
    assert_eq!(row.request_hash, "hash");
    assert!(
        orders::get(&mut conn, Uuid::new_v4())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_stored_order_is_returned_exactly_as_it_is_read_back() {
    let (_db, pool) = support::database().await;
    let id = Uuid::new_v4();
    // Lines out of product order: the stored order lists them as a read does.
    let mut products = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    products.sort();
    products.reverse();
    let request = ReserveRequest {
        order_id: id,
        items: products
            .iter()
            .zip(1..)
            .map(|(product_id, quantity)| LineItem {
                product_id: *product_id,
                quantity,
            })
            .collect(),
    };
    let reservation = support::reservation(&request, ReservationStatus::Reserved);
    let new = NewOrder {
        id,
        user_id: Uuid::new_v4(),
        idempotency_key: Some("key"),
        request_hash: "hash",
        reservation: &reservation,
        ttl: Duration::from_secs(60),
    };
    let mut conn = pool.acquire().await.unwrap();
    let stored = orders::insert(&mut conn, &new).await.unwrap().unwrap();
    let (read, hash) = orders::placed(&mut conn, id).await.unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&stored).unwrap(),
        serde_json::to_value(&read).unwrap()
    );
    assert_eq!(hash, "hash");
    assert_eq!(read.items.len(), 3);
    assert!(
        read.items
            .windows(2)
            .all(|w| w[0].product_id < w[1].product_id)
    );
    assert_eq!(read.total, 6 * support::PRICE);
    let another_key_reuse = NewOrder {
        id: Uuid::new_v4(),
        ..new
    };
    assert!(
        orders::insert(&mut conn, &another_key_reuse)
            .await
            .unwrap()
            .is_none(),
        "the same user's key stores one order"
    );
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM order_items")
            .fetch_one(&pool)
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn storing_an_order_id_twice_writes_nothing_the_second_time() {
    let (_db, pool) = support::database().await;
    let id = support::store_order(&pool, Uuid::new_v4(), &[1], Duration::from_secs(60)).await;
    let request = ReserveRequest {
        order_id: id,
        items: vec![
            LineItem {
                product_id: Uuid::new_v4(),
                quantity: 5,
            };
            1
        ],
    };
    let reservation = support::reservation(&request, ReservationStatus::Reserved);
    let mut conn = pool.acquire().await.unwrap();
    let again = NewOrder {
        id,
        user_id: Uuid::new_v4(),
        idempotency_key: None,
        request_hash: "other",
        reservation: &reservation,
        ttl: Duration::from_secs(60),
    };
    assert!(orders::insert(&mut conn, &again).await.unwrap().is_none());
    let order = orders::get(&mut conn, id).await.unwrap().unwrap();
    assert_eq!(order.total, support::PRICE);
    assert_eq!(order.items.len(), 1);
}

#[tokio::test]
async fn becoming_paid_stamps_paid_at_and_other_statuses_do_not() {
    let (_db, pool) = support::database().await;
    let paid = support::store_order(&pool, Uuid::new_v4(), &[1], Duration::from_secs(60)).await;
    let cancelled =
        support::store_order(&pool, Uuid::new_v4(), &[1], Duration::from_secs(60)).await;
    let mut conn = pool.acquire().await.unwrap();
    orders::set_status(&mut conn, paid, OrderStatus::Paid)
        .await
        .unwrap();
    orders::set_status(&mut conn, cancelled, OrderStatus::Cancelled)
        .await
        .unwrap();
    let paid = orders::get(&mut conn, paid).await.unwrap().unwrap();
    assert_eq!(paid.status, OrderStatus::Paid);
    assert!(paid.paid_at.is_some());
    let cancelled = orders::get(&mut conn, cancelled).await.unwrap().unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert!(cancelled.paid_at.is_none());
}

#[tokio::test]
async fn listing_filters_by_owner_and_status_newest_first() {
    let (_db, pool) = support::database().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let first = support::store_order(&pool, alice, &[1], Duration::from_secs(60)).await;
    let second = support::store_order(&pool, alice, &[1], Duration::from_secs(60)).await;
    support::store_order(&pool, bob, &[1], Duration::from_secs(60)).await;
    let mut conn = pool.acquire().await.unwrap();
    orders::set_status(&mut conn, first, OrderStatus::Paid)
        .await
        .unwrap();

    let mine = orders::list(&mut conn, Some(alice), None, 20, 0)
        .await
        .unwrap();
    assert_eq!(
        mine.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![second, first]
    );
    let paid = orders::list(&mut conn, Some(alice), Some(OrderStatus::Paid), 20, 0)
        .await
        .unwrap();
    assert_eq!(paid.iter().map(|o| o.id).collect::<Vec<_>>(), vec![first]);
    assert_eq!(
        orders::list(&mut conn, None, None, 20, 0)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        orders::list(&mut conn, None, None, 2, 2)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_payment_event_is_recorded_once_and_a_second_recording_writes_nothing() {
    let (_db, pool) = support::database().await;
    let id = support::store_order(&pool, Uuid::new_v4(), &[1], Duration::from_secs(60)).await;
    let event = Uuid::new_v4();
    let mut conn = pool.acquire().await.unwrap();
    let record = |outcome, applied| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            orders::record_payment_event(&mut conn, event, id, Uuid::new_v4(), outcome, applied)
                .await
                .unwrap()
        }
    };
    assert!(record(PaymentStatus::Succeeded, true).await);
    assert!(!record(PaymentStatus::Declined, false).await);
    let stored: (String, bool) =
        sqlx::query_as("SELECT outcome, applied FROM payment_events WHERE event_id = $1")
            .bind(event)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(stored, ("SUCCEEDED".to_string(), true));
    orders::payment_event_not_applied(&mut conn, event)
        .await
        .unwrap();
    let applied: bool =
        sqlx::query_scalar("SELECT applied FROM payment_events WHERE event_id = $1")
            .bind(event)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert!(!applied);
}

#[tokio::test]
async fn only_pending_orders_past_their_time_expire() {
    let (_db, pool) = support::database().await;
    let overdue = support::store_order(&pool, Uuid::new_v4(), &[1], Duration::ZERO).await;
    let fresh = support::store_order(&pool, Uuid::new_v4(), &[1], Duration::from_secs(600)).await;
    let paid = support::store_order(&pool, Uuid::new_v4(), &[1], Duration::ZERO).await;
    let mut conn = pool.acquire().await.unwrap();
    orders::set_status(&mut conn, paid, OrderStatus::Paid)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let expired = orders::expire_overdue(
        &mut conn,
        OrderStatus::Pending,
        OrderStatus::Expired,
        orders::SWEEP_BATCH,
    )
    .await
    .unwrap();
    assert_eq!(expired, vec![overdue]);
    for (id, status) in [
        (overdue, OrderStatus::Expired),
        (fresh, OrderStatus::Pending),
        (paid, OrderStatus::Paid),
    ] {
        let order = orders::get(&mut conn, id).await.unwrap().unwrap();
        assert_eq!(order.status, status);
    }
}

#[tokio::test]
async fn cancelled_and_expired_orders_are_unreleased_until_marked() {
    let (_db, pool) = support::database().await;
    let cancelled =
        support::store_order(&pool, Uuid::new_v4(), &[1], Duration::from_secs(60)).await;
    let expired = support::store_order(&pool, Uuid::new_v4(), &[1], Duration::from_secs(60)).await;
    support::store_order(&pool, Uuid::new_v4(), &[1], Duration::from_secs(60)).await;
    let mut conn = pool.acquire().await.unwrap();
    orders::set_status(&mut conn, cancelled, OrderStatus::Cancelled)
        .await
        .unwrap();
    orders::set_status(&mut conn, expired, OrderStatus::Expired)
        .await
        .unwrap();
    let statuses = [OrderStatus::Cancelled, OrderStatus::Expired];
    let mut unreleased = orders::unreleased(&mut conn, statuses, 200).await.unwrap();
    unreleased.sort();
    let mut expected = vec![cancelled, expired];
    expected.sort();
    assert_eq!(unreleased, expected);

    orders::mark_released(&mut conn, cancelled).await.unwrap();
    assert_eq!(
        orders::unreleased(&mut conn, statuses, 200).await.unwrap(),
        vec![expired]
    );
}
