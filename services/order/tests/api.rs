//! The order service's handlers over real HTTP against a fresh database: who may see
//! what, input errors naming their fields, and checkout's refusals as status codes. The
//! product service is unreachable here and auth is a stand-in; the devstack's suites cover the
//! flow across services.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::time::Duration;

use mercato_contract::scopes;
use mercato_contract::wire::OrderStatus;
use mercato_kit::testing::{TestService, fields, metric, problem};
use mercato_order::Config;
use mercato_order::orders;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// The product service is down (nothing listens on port 9); auth is `TestService`'s stand-in,
/// which serves the revocation feed.
async fn spawn_app() -> TestService {
    TestService::start::<Config>(&["--product-url=http://127.0.0.1:9", "--upstream-retries=0"])
        .await
}

/// An order stored as checkout would store it, then moved to `status`.
async fn stored_order(app: &TestService, user: Uuid, status: OrderStatus) -> Uuid {
    let id = support::store_order(&app.pool, user, &[1], Duration::from_secs(600)).await;
    let mut conn = app.pool.acquire().await.unwrap();
    orders::set_status(&mut conn, id, status).await.unwrap();
    id
}

async fn orders_stored(app: &TestService) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn someone_elses_order_is_answered_404_like_a_missing_one_and_admins_see_it() {
    let app = spawn_app().await;
    let owner = Uuid::new_v4();
    let id = stored_order(&app, owner, OrderStatus::Pending).await;
    let path = format!("/orders/{id}");

    let mine = app.get(&path, &app.customer(owner)).await;
    assert_eq!(mine.status(), StatusCode::OK);
    let order: Value = mine.json().await.unwrap();
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["total"], support::PRICE);

    let (status, p) = problem(app.get(&path, &app.customer(Uuid::new_v4())).await).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (missing, _) = problem(
        app.get(&format!("/orders/{}", Uuid::new_v4()), &app.customer(owner))
            .await,
    )
    .await;
    assert_eq!(missing, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&path, &app.admin()).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn customers_list_their_own_orders_and_admins_filter_everyones_by_status() {
    let app = spawn_app().await;
    let alice = Uuid::new_v4();
    stored_order(&app, alice, OrderStatus::Pending).await;
    stored_order(&app, Uuid::new_v4(), OrderStatus::Paid).await;

    let page: Value = app
        .get("/orders", &app.customer(alice))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["limit"], 20);
    let paid: Value = app
        .get("/orders?status=paid", &app.admin())
        .await
        .json()
        .await
        .unwrap();
    let items = paid["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"], "PAID");
}

#[tokio::test]
async fn bad_list_queries_name_every_offending_parameter() {
    let app = spawn_app().await;
    let r = app
        .get("/orders?status=lost&limit=0&offset=-1", &app.admin())
        .await;
    let (status, p) = problem(r).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), vec!["status", "limit", "offset"]);
}

#[tokio::test]
async fn malformed_orders_are_refused_naming_the_fields_before_any_call() {
    let app = spawn_app().await;
    let token = app.customer(Uuid::new_v4());
    let product = Uuid::new_v4();
    let cases = [
        (json!({}), vec!["items"]),
        (json!({"product_id": product}), vec!["quantity"]),
        (
            json!({"items": [{"product_id": product, "quantity": 1}], "product_id": product}),
            vec!["items"],
        ),
        (
            json!({"items": [{"product_id": product, "quantity": 0}]}),
            vec!["items[0].quantity"],
        ),
    ];
    for (body, expected) in cases {
        let (status, p) = problem(app.post("/orders", &token, body.clone()).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(fields(&p), expected, "{body}");
    }
    assert_eq!(orders_stored(&app).await, 0);
}

#[tokio::test]
async fn with_the_product_service_unreachable_an_order_fails_fast_with_503_and_stores_nothing() {
    let app = spawn_app().await;
    let body = json!({"items": [{"product_id": Uuid::new_v4(), "quantity": 1}]});
    let started = std::time::Instant::now();
    let (status, p) = problem(
        app.post("/orders", &app.customer(Uuid::new_v4()), body)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(p["title"].as_str().unwrap().contains("service"), "{p}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(orders_stored(&app).await, 0);
}

#[tokio::test]
async fn only_a_pending_order_can_be_cancelled() {
    let app = spawn_app().await;
    let owner = Uuid::new_v4();
    let id = stored_order(&app, owner, OrderStatus::Paid).await;
    let r = app
        .post(
            &format!("/orders/{id}/cancel"),
            &app.customer(owner),
            json!({}),
        )
        .await;
    let (status, p) = problem(r).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(p["code"], "order_not_pending");
    assert_eq!(p["detail"], "the order is PAID");
}

#[tokio::test]
async fn orders_by_status_show_in_metrics_as_they_move() {
    let app = spawn_app().await;
    let series = |status: &str| format!("mercato_orders{{status=\"{status}\"}}");
    for status in ["pending", "paid", "cancelled", "expired"] {
        assert_eq!(
            metric(&app.server, &series(status)).await,
            Some(0.0),
            "{status}"
        );
    }
    let owner = Uuid::new_v4();
    let id = stored_order(&app, owner, OrderStatus::Pending).await;
    assert_eq!(metric(&app.server, &series("pending")).await, Some(1.0));

    let r = app
        .post(
            &format!("/orders/{id}/cancel"),
            &app.customer(owner),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(metric(&app.server, &series("pending")).await, Some(0.0));
    assert_eq!(metric(&app.server, &series("cancelled")).await, Some(1.0));
}

#[tokio::test]
async fn internal_endpoints_take_only_service_tokens_with_their_scope() {
    let app = spawn_app().await;
    let owner = Uuid::new_v4();
    let id = stored_order(&app, owner, OrderStatus::Pending).await;
    let path = format!("/internal/orders/{id}");

    let user = app.get(&path, &app.customer(owner)).await;
    assert_eq!(user.status(), StatusCode::FORBIDDEN);
    let wrong_scope = app.keys.service("order", &[scopes::PRODUCT_RESERVE]);
    assert_eq!(
        app.get(&path, &wrong_scope).await.status(),
        StatusCode::FORBIDDEN
    );
    let payment = app.keys.service("payment", &[scopes::ORDER_READ]);
    let order: Value = app.get(&path, &payment).await.json().await.unwrap();
    assert_eq!(order["id"], id.to_string());
    assert_eq!(order["user_id"], owner.to_string());
}

#[tokio::test]
async fn payment_events_are_applied_once_and_malformed_ones_are_refused() {
    let app = spawn_app().await;
    let id = stored_order(&app, Uuid::new_v4(), OrderStatus::Pending).await;
    let events = app.keys.service("payment", &[scopes::ORDER_PAYMENT_EVENTS]);
    let path = format!("/internal/orders/{id}/payment-events");
    let declined = json!({"event_id": Uuid::new_v4(), "payment_id": Uuid::new_v4(),
                          "outcome": "DECLINED", "amount": support::PRICE});

    let r = app.post(&path, &events, declined.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"applied": false, "status": "PENDING"})
    );

    let mut wrong_amount = declined.clone();
    wrong_amount["amount"] = json!(support::PRICE + 1);
    wrong_amount["outcome"] = json!("SUCCEEDED");
    let (status, p) = problem(app.post(&path, &events, wrong_amount).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), vec!["amount"]);
    let order: Value = app
        .get(
            &format!("/internal/orders/{id}"),
            &app.keys.service("payment", &[scopes::ORDER_READ]),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        order["status"], "PENDING",
        "a refused event changes nothing"
    );

    let mut unknown = declined.clone();
    unknown["outcome"] = json!("REFUNDED");
    let (status, p) = problem(app.post(&path, &events, unknown).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), vec!["outcome"]);

    let missing = format!("/internal/orders/{}/payment-events", Uuid::new_v4());
    let (status, _) = problem(app.post(&missing, &events, declined).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_offset_above_its_documented_maximum_is_refused() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(app.server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let maximum = doc["paths"]["/orders"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "offset")
        .and_then(|p| p["schema"]["maximum"].as_i64())
        .expect("the document gives offset a maximum");

    let r = app
        .get(&format!("/orders?offset={}", maximum + 1), &app.admin())
        .await;
    let (status, p) = problem(r).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), vec!["offset"]);

    let r = app
        .get(&format!("/orders?offset={maximum}"), &app.admin())
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_integral_quantity_written_with_a_fraction_is_read_as_an_integer() {
    let app = spawn_app().await;
    // `2.0` is the integer 2 to JSON Schema: the order passes validation and goes on to the
    // product service, which is down here.
    let r = app
        .post(
            "/orders",
            &app.customer(Uuid::new_v4()),
            json!({"product_id": Uuid::new_v4(), "quantity": 2.0}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}
