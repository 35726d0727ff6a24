//! The payment repository against a real PostgreSQL: what each statement stores and finds.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::time::Duration;

use mercato_contract::wire::PaymentStatus;
use mercato_payment::outbox;
use mercato_payment::payments::{self, NewPayment};
use sqlx::PgPool;
use uuid::Uuid;

async fn insert(
    pool: &PgPool,
    user: Uuid,
    order: Uuid,
    status: PaymentStatus,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    let new = NewPayment {
        id,
        order_id: order,
        user_id: user,
        amount: 2500,
        currency: "EUR",
        method: "fake-card",
        status,
        idempotency_key: None,
        request_hash: "hash",
    };
    assert!(
        payments::insert(&mut *pool.acquire().await?, &new)
            .await?
            .is_some()
    );
    Ok(id)
}

#[tokio::test]
async fn a_payment_is_stored_and_read_back_as_it_was_written() {
    let (_db, pool) = support::database().await;
    let (user, order) = (Uuid::new_v4(), Uuid::new_v4());
    let id = insert(&pool, user, order, PaymentStatus::Declined)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let payment = payments::get(&mut conn, id).await.unwrap().unwrap();
    assert_eq!(payment.status, PaymentStatus::Declined);
    assert_eq!((payment.user_id, payment.order_id), (user, order));
    assert_eq!(payment.currency, "EUR");
    assert_eq!(payment.request_hash, "hash");
    assert!(
        payments::get(&mut conn, Uuid::new_v4())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_second_successful_payment_for_one_order_violates_the_one_success_index() {
    let (_db, pool) = support::database().await;
    let (user, order) = (Uuid::new_v4(), Uuid::new_v4());
    insert(&pool, user, order, PaymentStatus::Declined)
        .await
        .unwrap();
    insert(&pool, user, order, PaymentStatus::Succeeded)
        .await
        .unwrap();
    let second = insert(&pool, user, order, PaymentStatus::Succeeded)
        .await
        .unwrap_err();
    assert!(mercato_kit::error::is_unique_violation(
        &second,
        payments::ONE_SUCCESS_PER_ORDER
    ));
}

#[tokio::test]
async fn listing_filters_by_owner_and_order() {
    let (_db, pool) = support::database().await;
    let (alice, order) = (Uuid::new_v4(), Uuid::new_v4());
    insert(&pool, alice, order, PaymentStatus::Declined)
        .await
        .unwrap();
    insert(&pool, alice, Uuid::new_v4(), PaymentStatus::Declined)
        .await
        .unwrap();
    insert(
        &pool,
        Uuid::new_v4(),
        Uuid::new_v4(),
        PaymentStatus::Succeeded,
    )
    .await
    .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        payments::list(&mut conn, Some(alice), None, 50)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        payments::list(&mut conn, Some(alice), Some(order), 50)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        payments::list(&mut conn, None, None, 50)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        payments::list(&mut conn, None, None, 2)
            .await
            .unwrap()
            .len(),
        2
    );
}

const LEASE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn an_enqueued_event_is_due_until_delivered_and_a_claimed_one_is_skipped_elsewhere() {
    let (_db, pool) = support::database().await;
    let order = Uuid::new_v4();
    let payment = insert(&pool, Uuid::new_v4(), order, PaymentStatus::Succeeded)
        .await
        .unwrap();
    outbox::enqueue(
        &mut pool.acquire().await.unwrap(),
        payment,
        order,
        PaymentStatus::Succeeded,
        2500,
    )
    .await
    .unwrap();

    let mut conn = pool.acquire().await.unwrap();
    let due = outbox::claim_due(&mut conn, 20, LEASE).await.unwrap();
    assert_eq!(due.len(), 1);
    let event = due[0].event();
    assert_eq!(
        (event.payment_id, event.outcome, event.amount),
        (payment, PaymentStatus::Succeeded, 2500)
    );
    // Another replica claiming while the lease lasts finds nothing to do.
    let mut other = pool.acquire().await.unwrap();
    assert!(
        outbox::claim_due(&mut other, 20, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    outbox::mark_delivered(&mut conn, due[0].id).await.unwrap();
    assert!(
        outbox::claim_due(&mut other, 20, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_event_claimed_by_a_dispatcher_that_died_is_due_again_when_its_lease_ends() {
    let (_db, pool) = support::database().await;
    let order = Uuid::new_v4();
    let payment = insert(&pool, Uuid::new_v4(), order, PaymentStatus::Succeeded)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    outbox::enqueue(&mut conn, payment, order, PaymentStatus::Succeeded, 2500)
        .await
        .unwrap();
    // A claim whose lease has already run out: its dispatcher never came back.
    let claimed = outbox::claim_due(&mut conn, 20, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let again = outbox::claim_due(&mut conn, 20, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event_id, claimed[0].event_id);
}

#[tokio::test]
async fn a_failed_delivery_is_counted_and_put_off() {
    let (_db, pool) = support::database().await;
    let order = Uuid::new_v4();
    let payment = insert(&pool, Uuid::new_v4(), order, PaymentStatus::Declined)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    outbox::enqueue(&mut conn, payment, order, PaymentStatus::Declined, 2500)
        .await
        .unwrap();
    let due = outbox::claim_due(&mut conn, 20, LEASE).await.unwrap();
    outbox::mark_failed(
        &mut conn,
        due[0].id,
        "Order service unavailable",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(
        outbox::claim_due(&mut conn, 20, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    let (attempts, error): (i32, String) =
        sqlx::query_as("SELECT attempts, last_error FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((attempts, error.as_str()), (1, "Order service unavailable"));
}
