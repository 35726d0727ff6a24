//! The payment service's handlers over real HTTP against a fresh database: input errors
//! naming their fields, who may see which payment, and the order service being down. The
//! devstack's suites cover the flow across services.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use mercato_contract::wire::PaymentStatus;
use mercato_kit::jwt::Role;
use mercato_kit::testing::{TestService, fields, problem};
use mercato_payment::Config;
use mercato_payment::payments::{self, NewPayment};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// The order service is down (nothing listens on port 9); auth is `TestService`'s stand-in,
/// which serves the revocation feed.
async fn spawn_app() -> TestService {
    TestService::start::<Config>(&[
        "--order-url=http://127.0.0.1:9",
        "--upstream-retries=0",
        "--outbox-dispatch=false",
    ])
    .await
}

async fn stored_payment(app: &TestService, user: Uuid) -> Uuid {
    let id = Uuid::new_v4();
    let new = NewPayment {
        id,
        order_id: Uuid::new_v4(),
        user_id: user,
        amount: 2500,
        currency: "EUR",
        method: "fake-card",
        status: PaymentStatus::Succeeded,
        idempotency_key: None,
        request_hash: "hash",
    };
    let mut conn = app.pool.acquire().await.unwrap();
    assert!(payments::insert(&mut conn, &new).await.unwrap().is_some());
    id
}

async fn payments_stored(app: &TestService) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_bad_amount_and_method_are_both_named_before_any_call() {
    let app = spawn_app().await;
    let body = json!({"order_id": Uuid::new_v4(), "amount": 0, "method": "visa"});
    let (status, p) = problem(
        app.post("/payments", &app.customer(Uuid::new_v4()), body)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), vec!["amount", "method"]);
    assert_eq!(payments_stored(&app).await, 0);
}

#[tokio::test]
async fn with_the_order_service_unreachable_a_payment_fails_with_503_and_stores_nothing() {
    let app = spawn_app().await;
    let body = json!({"order_id": Uuid::new_v4(), "amount": 2500, "method": "fake-card"});
    let (status, _) = problem(
        app.post("/payments", &app.customer(Uuid::new_v4()), body)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(payments_stored(&app).await, 0);
}

#[tokio::test]
async fn someone_elses_payment_is_answered_404_and_lists_hold_only_ones_own() {
    let app = spawn_app().await;
    let owner = Uuid::new_v4();
    let id = stored_payment(&app, owner).await;
    stored_payment(&app, Uuid::new_v4()).await;
    let path = format!("/payments/{id}");

    let mine: Value = app
        .get(&path, &app.customer(owner))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["status"], "SUCCEEDED");
    assert!(mine.get("request_hash").is_none());
    let (status, _) = problem(app.get(&path, &app.customer(Uuid::new_v4())).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let list: Value = app
        .get("/payments", &app.customer(owner))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let admin = app.keys.user(&Uuid::new_v4().to_string(), Role::Admin);
    let all: Value = app.get("/payments", &admin).await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let (status, p) = problem(app.get("/payments?limit=101", &admin).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), vec!["limit"]);
}
