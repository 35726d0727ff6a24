//! The checkout flow across auth, product, order and payment, all started in the test
//! over real HTTP and real PostgreSQL.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use mercato_contract::Component::{self, Auth, Order, Payment, Product};
use mercato_devstack::dev::TestStore;
use mercato_kit::testing::{fields, poll, problem};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Shop {
    store: TestStore,
    http: reqwest::Client,
    admin: String,
}

/// A store of the test's own, started the way `make dev` starts one (in-process).
async fn shop_with(extra: &[(Component, &[&str])]) -> Shop {
    let store = TestStore::start(extra, false)
        .await
        .expect("the store starts");
    let http = reqwest::Client::new();
    let admin = store.dev.as_ref().unwrap().admin_token().await.unwrap();
    Shop { store, http, admin }
}

async fn shop() -> Shop {
    shop_with(&[]).await
}

impl Shop {
    fn topology(&self) -> &mercato_devstack::env::Topology {
        &self.store.dev.as_ref().unwrap().topology
    }

    fn url(&self, c: Component, path: &str) -> String {
        format!("{}{path}", self.topology().url(c))
    }

    fn addr(&self, c: Component) -> std::net::SocketAddr {
        self.topology().listen[&c]
    }

    async fn stop(&mut self, c: Component) {
        self.store.dev().stop_component(c).await;
    }

    async fn restart(&mut self, c: Component, more: &[&str]) {
        self.store.dev().restart_component(c, more).await.unwrap();
    }
}

impl Shop {
    async fn product(&self, name: &str, price: i64, stock: i64) -> String {
        let r = self
            .http
            .post(self.url(Product, "/products"))
            .bearer_auth(&self.admin)
            .json(&json!({"name": name, "category": "test", "price": price, "currency": "EUR", "stock": stock}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn stock(&self, id: &str) -> i64 {
        let p: Value = self
            .http
            .get(self.url(Product, &format!("/products/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        p["stock"].as_i64().unwrap()
    }

    async fn customer(&self, name: &str) -> String {
        let r = self
            .http
            .post(self.url(Auth, "/auth/register"))
            .json(&json!({"username": name, "email": format!("{name}@example.com"), "password": "correct-horse"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let tokens: Value = self
            .http
            .post(self.url(Auth, "/auth/login"))
            .json(&json!({"username": name, "password": "correct-horse"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens["access_token"].as_str().unwrap().to_string()
    }

    async fn order(&self, token: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(Order, "/orders"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn order_ok(&self, token: &str, body: Value) -> Value {
        let r = self.order(token, body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    async fn get_order(&self, token: &str, id: &str) -> reqwest::Response {
        self.http
            .get(self.url(Order, &format!("/orders/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn pay(&self, token: &str, order: &str, amount: i64, method: &str) -> reqwest::Response {
        self.http
            .post(self.url(Payment, "/payments"))
            .bearer_auth(token)
            .json(&json!({"order_id": order, "amount": amount, "method": method}))
            .send()
            .await
            .unwrap()
    }

    /// Waits until the order has `status` (the outbox delivers asynchronously).
    async fn wait_for_status(&self, token: &str, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..100 {
            last = self.get_order(token, id).await.json().await.unwrap();
            if last["status"] == status {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("order {id} never became {status}: {last}");
    }

    async fn count(&self, component: Component, sql: &str) -> i64 {
        let pool = sqlx::PgPool::connect(&self.topology().database_urls[&component])
            .await
            .unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    }

    /// A service token as `client` would get it from auth.
    async fn service_token(&self, client: Component) -> String {
        let secret = &self.topology().client_secrets[&client];
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", client.name()),
            ("client_secret", secret.as_str()),
        ];
        let r: Value = self
            .http
            .post(self.url(Auth, "/auth/token"))
            .form(&form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["access_token"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn customer_orders_pays_and_the_order_becomes_paid() {
    let shop = shop().await;
    let kettle = shop.product("Kettle", 1250, 5).await;
    let mug = shop.product("Mug", 400, 10).await;
    let alice = shop.customer("alice").await;

    let order = shop
        .order_ok(&alice, json!({"items": [{"product_id": kettle, "quantity": 2}, {"product_id": mug, "quantity": 1}]}))
        .await;
    assert_eq!(
        (
            order["status"].as_str(),
            order["total"].as_i64(),
            order["currency"].as_str()
        ),
        (Some("PENDING"), Some(2900), Some("EUR"))
    );
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    assert_eq!((shop.stock(&kettle).await, shop.stock(&mug).await), (3, 9));

    let r = shop
        .pay(&alice, order["id"].as_str().unwrap(), 2900, "fake-card")
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let payment: Value = r.json().await.unwrap();
    assert_eq!(payment["status"], "SUCCEEDED");

    let paid = shop
        .wait_for_status(&alice, order["id"].as_str().unwrap(), "PAID")
        .await;
    assert!(paid["paid_at"].is_string());
    assert_eq!(shop.stock(&kettle).await, 3, "paid stock stays sold");

    let listed: Value = shop
        .http
        .get(shop.url(
            Payment,
            &format!("/payments?order_id={}", order["id"].as_str().unwrap()),
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["id"], payment["id"]);
    let mine: Value = shop
        .http
        .get(shop.url(Order, "/orders?status=PAID"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_declined_payment_leaves_the_order_pending_until_a_good_one() {
    let shop = shop().await;
    let lamp = shop.product("Lamp", 3000, 2).await;
    let bob = shop.customer("bob").await;
    let order = shop
        .order_ok(&bob, json!({"product_id": lamp, "quantity": 1}))
        .await;
    let id = order["id"].as_str().unwrap();

    let r = shop.pay(&bob, id, 3000, "fake-card-declined").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "DECLINED");
    // The decline is delivered and applied (recorded), and the order stays pending.
    poll(
        50,
        || shop.count(Order, "SELECT count(*) FROM payment_events"),
        |n| *n == 1,
    )
    .await;
    assert_eq!(
        shop.count(
            Order,
            "SELECT count(*) FROM payment_events WHERE outcome = 'DECLINED'"
        )
        .await,
        1
    );
    assert_eq!(
        shop.get_order(&bob, id)
            .await
            .json::<Value>()
            .await
            .unwrap()["status"],
        "PENDING"
    );

    assert_eq!(
        shop.pay(&bob, id, 3000, "fake-card").await.status(),
        StatusCode::CREATED
    );
    shop.wait_for_status(&bob, id, "PAID").await;
    assert_eq!(shop.stock(&lamp).await, 1);
}

#[tokio::test]
async fn bad_orders_are_refused_and_change_nothing() {
    let shop = shop().await;
    let p = shop.product("Pen", 100, 5).await;
    let carol = shop.customer("carol").await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let cases = [
        (
            json!({"items": [{"product_id": p, "quantity": 0}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request",
            vec!["items[0].quantity"],
        ),
        (
            json!({"items": [{"product_id": p, "quantity": -2}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request",
            vec!["items[0].quantity"],
        ),
        (
            json!({"product_id": p, "quantity": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request",
            vec!["items[0].quantity"],
        ),
        (
            json!({"items": [{"product_id": p, "quantity": 1}, {"product_id": p, "quantity": 2}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request",
            vec!["items[1].product_id"],
        ),
        (
            json!({"items": [{"product_id": unknown, "quantity": 1}]}),
            StatusCode::NOT_FOUND,
            "Product not found",
            vec!["items[0].product_id"],
        ),
        (
            json!({"items": [{"product_id": p, "quantity": 6}]}),
            StatusCode::CONFLICT,
            "Not enough stock",
            vec!["items[0].quantity"],
        ),
        (
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Missing fields",
            vec!["items"],
        ),
        (
            json!({"product_id": p}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Missing fields",
            vec!["quantity"],
        ),
        (
            json!({"items": [{"product_id": p}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Missing fields",
            vec!["items[0].quantity"],
        ),
        (
            json!({"items": [{"product_id": p, "quantity": "1"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request",
            vec!["items[0].quantity"],
        ),
        (
            json!({"items": [], "price": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request",
            vec!["price"],
        ),
    ];
    for (body, status, title, named) in cases {
        let (s, p) = problem(shop.order(&carol, body.clone()).await).await;
        assert_eq!((s, p["title"].as_str().unwrap()), (status, title), "{body}");
        assert_eq!(fields(&p), named, "{body}");
    }
    assert_eq!(shop.count(Order, "SELECT count(*) FROM orders").await, 0);
    assert_eq!(shop.stock(&p).await, 5);
    assert_eq!(
        shop.count(Product, "SELECT count(*) FROM reservations")
            .await,
        0
    );
}

#[tokio::test]
async fn bad_payments_are_refused_and_change_nothing() {
    let shop = shop().await;
    let p = shop.product("Book", 1500, 5).await;
    let dave = shop.customer("dave").await;
    let erin = shop.customer("erin").await;
    let order = shop
        .order_ok(&dave, json!({"product_id": p, "quantity": 1}))
        .await;
    let id = order["id"].as_str().unwrap();

    let (s, pr) = problem(shop.pay(&dave, id, 1499, "fake-card").await).await;
    assert_eq!(
        (s, fields(&pr)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["amount"])
    );
    let (s, pr) = problem(shop.pay(&dave, id, 1500, "bitcoin").await).await;
    assert_eq!(
        (s, fields(&pr)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["method"])
    );
    let (s, pr) = problem(shop.pay(&dave, id, 0, "fake-card").await).await;
    assert_eq!(
        (s, fields(&pr)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["amount"])
    );
    let (s, pr) = problem(shop.pay(&erin, id, 1500, "fake-card").await).await;
    assert_eq!(
        (s, pr["title"].as_str()),
        (StatusCode::NOT_FOUND, Some("Order not found")),
        "someone else's order"
    );
    let (s, pr) = problem(
        shop.pay(&dave, &uuid::Uuid::new_v4().to_string(), 1500, "fake-card")
            .await,
    )
    .await;
    assert_eq!(
        (s, pr["title"].as_str()),
        (StatusCode::NOT_FOUND, Some("Order not found"))
    );
    let r = shop
        .http
        .post(shop.url(Payment, "/payments"))
        .bearer_auth(&dave)
        .json(&json!({"order_id": id}))
        .send()
        .await
        .unwrap();
    let (s, pr) = problem(r).await;
    assert_eq!(
        (s, pr["title"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("Missing fields"))
    );
    assert_eq!(
        shop.count(Payment, "SELECT count(*) FROM payments").await,
        0
    );

    assert_eq!(
        shop.pay(&dave, id, 1500, "fake-card").await.status(),
        StatusCode::CREATED
    );
    shop.wait_for_status(&dave, id, "PAID").await;
    let (s, pr) = problem(shop.pay(&dave, id, 1500, "fake-card").await).await;
    assert_eq!(
        (s, pr["title"].as_str()),
        (StatusCode::CONFLICT, Some("Order not found or unavailable")),
        "already paid"
    );

    let cancelled = shop
        .order_ok(&dave, json!({"product_id": p, "quantity": 1}))
        .await;
    let cid = cancelled["id"].as_str().unwrap();
    let r = shop
        .http
        .post(shop.url(Order, &format!("/orders/{cid}/cancel")))
        .bearer_auth(&dave)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (s, pr) = problem(shop.pay(&dave, cid, 1500, "fake-card").await).await;
    assert_eq!(
        (s, pr["title"].as_str()),
        (StatusCode::CONFLICT, Some("Order not found or unavailable")),
        "cancelled"
    );
    assert_eq!(
        shop.count(Payment, "SELECT count(*) FROM payments").await,
        1
    );
}

#[tokio::test]
async fn cancelling_returns_the_stock_once() {
    let shop = shop().await;
    let p = shop.product("Chair", 5000, 3).await;
    let frank = shop.customer("frank").await;
    let grace = shop.customer("grace").await;
    let order = shop
        .order_ok(&frank, json!({"product_id": p, "quantity": 2}))
        .await;
    let id = order["id"].as_str().unwrap();
    assert_eq!(shop.stock(&p).await, 1);

    let cancel = |token: &str| {
        shop.http
            .post(shop.url(Order, &format!("/orders/{id}/cancel")))
            .bearer_auth(token.to_string())
            .send()
    };
    assert_eq!(
        problem(cancel(&grace).await.unwrap()).await.0,
        StatusCode::NOT_FOUND,
        "someone else's order"
    );
    let r = cancel(&frank).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "CANCELLED");
    assert_eq!(shop.stock(&p).await, 3);
    let (s, pr) = problem(cancel(&frank).await.unwrap()).await;
    assert_eq!(
        (s, pr["title"].as_str()),
        (StatusCode::CONFLICT, Some("Order cannot be cancelled"))
    );
    assert_eq!(shop.stock(&p).await, 3);
}

#[tokio::test]
async fn fifty_concurrent_orders_for_ten_in_stock_leave_exactly_ten_pending() {
    let shop = shop().await;
    let p = shop.product("Console", 49_900, 10).await;
    let mut tokens = Vec::new();
    for i in 0..5 {
        tokens.push(shop.customer(&format!("buyer{i}")).await);
    }
    let attempts =
        (0..50).map(|i| shop.order(&tokens[i % 5], json!({"product_id": p, "quantity": 1})));
    let statuses: Vec<StatusCode> = futures::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status())
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        10,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    assert_eq!(
        shop.count(
            Order,
            "SELECT count(*) FROM orders WHERE status = 'PENDING'"
        )
        .await,
        10
    );
    assert_eq!(shop.stock(&p).await, 0);
}

#[tokio::test]
async fn twenty_concurrent_payments_with_one_key_make_one_payment() {
    let shop = shop().await;
    let p = shop.product("Bike", 20_000, 1).await;
    let heidi = shop.customer("heidi").await;
    let order = shop
        .order_ok(&heidi, json!({"product_id": p, "quantity": 1}))
        .await;
    let id = order["id"].as_str().unwrap();
    let attempts = (0..20).map(|_| {
        shop.http
            .post(shop.url(Payment, "/payments"))
            .bearer_auth(&heidi)
            .header("Idempotency-Key", "pay-bike-once")
            .json(&json!({"order_id": id, "amount": 20_000, "method": "fake-card"}))
            .send()
    });
    let answers = futures::future::join_all(attempts).await;
    let mut ids = Vec::new();
    for r in answers {
        let r = r.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every answer names the same payment");
    assert_eq!(
        shop.count(Payment, "SELECT count(*) FROM payments").await,
        1
    );
    assert_eq!(shop.count(Payment, "SELECT count(*) FROM outbox").await, 1);
    shop.wait_for_status(&heidi, id, "PAID").await;
}

#[tokio::test]
async fn an_order_retried_with_its_idempotency_key_is_placed_once() {
    let shop = shop().await;
    let p = shop.product("Tent", 9_900, 4).await;
    let ivan = shop.customer("ivan").await;
    let send = |body: Value| {
        shop.http
            .post(shop.url(Order, "/orders"))
            .bearer_auth(&ivan)
            .header("Idempotency-Key", "tent-1")
            .json(&body)
            .send()
    };
    let first = send(json!({"product_id": p, "quantity": 2})).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again = send(json!({"product_id": p, "quantity": 2})).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap()["id"], first["id"]);
    assert_eq!(shop.stock(&p).await, 2, "reserved once");
    let (s, pr) = problem(send(json!({"product_id": p, "quantity": 1})).await.unwrap()).await;
    assert_eq!(
        (s, fields(&pr)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["Idempotency-Key"])
    );
    assert_eq!(shop.count(Order, "SELECT count(*) FROM orders").await, 1);
}

#[tokio::test]
async fn customers_see_only_their_own_orders_and_payments() {
    let shop = shop().await;
    let p = shop.product("Hat", 1000, 5).await;
    let judy = shop.customer("judy").await;
    let kim = shop.customer("kim").await;
    let order = shop
        .order_ok(&judy, json!({"product_id": p, "quantity": 1}))
        .await;
    let id = order["id"].as_str().unwrap();
    let payment: Value = shop
        .pay(&judy, id, 1000, "fake-card")
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(
        problem(shop.get_order(&kim, id).await).await.0,
        StatusCode::NOT_FOUND
    );
    let r = shop
        .http
        .get(shop.url(
            Payment,
            &format!("/payments/{}", payment["id"].as_str().unwrap()),
        ))
        .bearer_auth(&kim)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, StatusCode::NOT_FOUND);
    let theirs: Value = shop
        .http
        .get(shop.url(Order, "/orders"))
        .bearer_auth(&kim)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(theirs["items"].as_array().unwrap().is_empty());
    let theirs: Value = shop
        .http
        .get(shop.url(Payment, &format!("/payments?order_id={id}")))
        .bearer_auth(&kim)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(theirs["items"].as_array().unwrap().is_empty());
    let all: Value = shop
        .http
        .get(shop.url(Order, "/orders"))
        .bearer_auth(&shop.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        1,
        "admins see every order"
    );

    // Internal endpoints: not for customers, nor for a service token without the scope.
    let internal = shop.url(Order, &format!("/internal/orders/{id}"));
    assert_eq!(
        shop.http
            .get(&internal)
            .bearer_auth(&kim)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    let order_client = shop.service_token(Order).await;
    assert_eq!(
        shop.http
            .get(&internal)
            .bearer_auth(&order_client)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    let payment_client = shop.service_token(Payment).await;
    assert_eq!(
        shop.http
            .get(&internal)
            .bearer_auth(&payment_client)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let reserve = shop.url(Product, "/internal/reservations");
    let body =
        json!({"order_id": uuid::Uuid::new_v4(), "items": [{"product_id": p, "quantity": 1}]});
    for token in [&kim, &shop.admin, &payment_client] {
        assert_eq!(
            shop.http
                .post(&reserve)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::FORBIDDEN
        );
    }
    let event = json!({"event_id": uuid::Uuid::new_v4(), "payment_id": uuid::Uuid::new_v4(), "outcome": "SUCCEEDED", "amount": 1000});
    let r = shop
        .http
        .post(shop.url(Order, &format!("/internal/orders/{id}/payment-events")))
        .bearer_auth(&kim)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "a customer cannot mark an order paid"
    );
}

#[tokio::test]
async fn with_the_product_service_down_ordering_fails_fast_with_503_and_stores_nothing() {
    let mut shop = shop_with(&[(
        Order,
        &["--upstream-timeout-ms=500", "--upstream-retries=1"],
    )])
    .await;
    let p = shop.product("Desk", 20_000, 3).await;
    let leo = shop.customer("leo").await;
    shop.stop(Product).await;

    let started = Instant::now();
    let (s, pr) = problem(
        shop.order(&leo, json!({"product_id": p, "quantity": 1}))
            .await,
    )
    .await;
    assert_eq!(
        (s, pr["title"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("Product service unavailable")
        )
    );
    // Bounded, not hanging: far below any client's patience (not a speed measurement).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(shop.count(Order, "SELECT count(*) FROM orders").await, 0);

    // A product service that accepts connections but never answers: 504, naming it.
    let hung = tokio::net::TcpListener::bind(shop.addr(Product))
        .await
        .unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    });
    let (s, pr) = problem(
        shop.order(&leo, json!({"product_id": p, "quantity": 1}))
            .await,
    )
    .await;
    assert_eq!(
        (s, pr["title"].as_str()),
        (
            StatusCode::GATEWAY_TIMEOUT,
            Some("Product service timed out")
        )
    );
    holder.abort();
    let _ = holder.await;
    assert_eq!(shop.count(Order, "SELECT count(*) FROM orders").await, 0);

    shop.restart(Product, &[]).await;
    assert_eq!(
        shop.order(&leo, json!({"product_id": p, "quantity": 1}))
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_payment_made_while_the_order_service_is_down_settles_when_it_returns() {
    // The payment is recorded by a process whose dispatcher is off; then the order
    // service goes down and the payment service restarts with its dispatcher on.
    let mut shop = shop_with(&[(
        Payment,
        &[
            "--outbox-dispatch=false",
            "--outbox-poll-ms=100",
            "--outbox-max-backoff-secs=1",
            // Attempts are capped; with 1 s between them, allow an outage this long.
            "--outbox-max-attempts=100",
            "--upstream-timeout-ms=500",
        ],
    )])
    .await;
    let p = shop.product("Sofa", 80_000, 2).await;
    let mia = shop.customer("mia").await;
    let order = shop
        .order_ok(&mia, json!({"product_id": p, "quantity": 1}))
        .await;
    let id = order["id"].as_str().unwrap();
    assert_eq!(
        shop.pay(&mia, id, 80_000, "fake-card").await.status(),
        StatusCode::CREATED
    );

    shop.stop(Order).await;
    shop.restart(Payment, &["--outbox-dispatch=true"]).await;
    let undelivered =
        "SELECT coalesce(max(attempts), 0)::bigint FROM outbox WHERE delivered_at IS NULL";
    let attempts = poll(100, || shop.count(Payment, undelivered), |n| *n >= 2).await;
    assert!(
        attempts >= 2,
        "delivery was retried while the order service was down"
    );
    assert_eq!(
        shop.count(Order, "SELECT count(*) FROM orders WHERE status = 'PAID'")
            .await,
        0
    );

    shop.restart(Order, &[]).await;
    shop.wait_for_status(&mia, id, "PAID").await;
    assert_eq!(
        shop.count(
            Payment,
            "SELECT count(*) FROM outbox WHERE delivered_at IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(shop.stock(&p).await, 1);
}

#[tokio::test]
async fn stock_reserved_by_an_order_service_that_died_before_storing_returns_on_expiry() {
    let shop = shop_with(&[(
        Product,
        &["--reservation-ttl-secs=1", "--reservation-sweep-secs=1"],
    )])
    .await;
    let p = shop.product("Drone", 30_000, 2).await;
    // Exactly what the order service does before it stores an order, and then nothing.
    let token = shop.service_token(Order).await;
    let r = shop
        .http
        .post(shop.url(Product, "/internal/reservations"))
        .bearer_auth(&token)
        .json(
            &json!({"order_id": uuid::Uuid::new_v4(), "items": [{"product_id": p, "quantity": 2}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(shop.stock(&p).await, 0);
    let stock = poll(50, || shop.stock(&p), |s| *s == 2).await;
    assert_eq!(stock, 2, "the stock came back");
    assert_eq!(shop.count(Order, "SELECT count(*) FROM orders").await, 0);
}

#[tokio::test]
async fn unpaid_orders_expire_and_return_their_stock() {
    let shop = shop_with(&[(Order, &["--order-ttl-secs=1", "--order-sweep-secs=1"])]).await;
    let p = shop.product("Clock", 2_000, 3).await;
    let nina = shop.customer("nina").await;
    let order = shop
        .order_ok(&nina, json!({"product_id": p, "quantity": 3}))
        .await;
    let id = order["id"].as_str().unwrap();
    shop.wait_for_status(&nina, id, "EXPIRED").await;
    let stock = poll(50, || shop.stock(&p), |s| *s == 3).await;
    assert_eq!(stock, 3);
    let (s, _) = problem(shop.pay(&nina, id, 6_000, "fake-card").await).await;
    assert_eq!(s, StatusCode::CONFLICT);
}
