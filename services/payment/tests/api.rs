//! The payment service's handlers over real HTTP against a fresh database: input errors
//! naming their fields, who may see which payment, and the order service being down. The
//! devstack's suites cover the flow across services.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use clap::Parser;
use mercato_contract::wire::PaymentStatus;
use mercato_kit::jwt::Role;
use mercato_kit::server::ServiceApp;
use mercato_kit::testing::{TestDb, TestKeys, TestServer};
use mercato_payment::payments::{self, NewPayment};
use mercato_payment::{App, Config};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

struct TestApp {
    server: TestServer,
    http: reqwest::Client,
    keys: TestKeys,
    pool: PgPool,
    _db: TestDb,
}

/// A port nothing listens on: the order and auth services are down.
const NOWHERE: &str = "http://127.0.0.1:9";

async fn spawn_app() -> TestApp {
    let (db, pool) = support::database().await;
    let keys = TestKeys::new();
    let config = Config::try_parse_from([
        "mercato-payment".to_string(),
        format!("--database-url={}", db.url),
        format!("--jwks-path={}", keys.jwks_path().display()),
        format!("--auth-url={NOWHERE}"),
        format!("--order-url={NOWHERE}"),
        "--client-id=payment".into(),
        "--client-secret=secret".into(),
        "--upstream-retries=0".into(),
        "--outbox-dispatch=false".into(),
        "--log-level=warn".into(),
    ])
    .unwrap();
    let app = App::build(&config).await.unwrap();
    let server = TestServer::start(app.router()).await;
    TestApp {
        server,
        http: reqwest::Client::new(),
        keys,
        pool,
        _db: db,
    }
}

impl TestApp {
    fn customer(&self, id: Uuid) -> String {
        self.keys.user(&id.to_string(), Role::Customer)
    }

    async fn stored_payment(&self, user: Uuid) -> Uuid {
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
        let mut conn = self.pool.acquire().await.unwrap();
        assert!(payments::insert(&mut conn, &new).await.unwrap());
        id
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.server.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn pay(&self, token: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.server.url("/payments"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn payments_stored(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM payments")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

async fn problem(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    (status, r.json().await.unwrap())
}

fn fields(p: &Value) -> Vec<&str> {
    p["errors"]
        .as_array()
        .map(|a| a.iter().map(|e| e["field"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_bad_amount_and_method_are_both_named_before_any_call() {
    let app = spawn_app().await;
    let body = json!({"order_id": Uuid::new_v4(), "amount": 0, "method": "visa"});
    let (status, p) = problem(app.pay(&app.customer(Uuid::new_v4()), body).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), vec!["amount", "method"]);
    assert_eq!(app.payments_stored().await, 0);
}

#[tokio::test]
async fn with_the_order_service_unreachable_a_payment_fails_with_503_and_stores_nothing() {
    let app = spawn_app().await;
    let body = json!({"order_id": Uuid::new_v4(), "amount": 2500, "method": "fake-card"});
    let (status, _) = problem(app.pay(&app.customer(Uuid::new_v4()), body).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.payments_stored().await, 0);
}

#[tokio::test]
async fn someone_elses_payment_is_answered_404_and_lists_hold_only_ones_own() {
    let app = spawn_app().await;
    let owner = Uuid::new_v4();
    let id = app.stored_payment(owner).await;
    app.stored_payment(Uuid::new_v4()).await;
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
