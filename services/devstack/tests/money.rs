//! Money that cannot slip, across real services over real HTTP and PostgreSQL: a payment
//! racing a cancellation or an expiry ends either PAID with the payment SUCCEEDED, or
//! CANCELLED/EXPIRED with the payment REFUNDED and the stock back, whichever comes first.
//! The race is forced with a hook in the payment's own check of the order, not with sleeps.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use mercato_contract::Component::{self, Auth, Order, Payment, Product};
use mercato_contract::wire::{EventResult, PaymentEvent, PaymentStatus};
use mercato_devstack::dev::TestStore;
use mercato_kit::ApiError;
use mercato_kit::testing::poll;
use mercato_payment::checkout::{self, Method, Orders, Pay};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Notify;
use uuid::Uuid;

struct Shop {
    store: TestStore,
    http: reqwest::Client,
    admin: String,
}

struct Customer {
    id: Uuid,
    token: String,
}

impl Shop {
    async fn start(extra: &[(Component, &[&str])]) -> Shop {
        let store = TestStore::start(extra, false)
            .await
            .expect("the store starts");
        let admin = store.dev.as_ref().unwrap().admin_token().await.unwrap();
        Shop {
            store,
            http: reqwest::Client::new(),
            admin,
        }
    }

    fn topology(&self) -> &mercato_devstack::env::Topology {
        &self.store.dev.as_ref().unwrap().topology
    }

    fn url(&self, c: Component, path: &str) -> String {
        format!("{}{path}", self.topology().url(c))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: String,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn product(&self, stock: i64) -> String {
        let body = json!({"name": "Kettle", "category": "test", "price": 4_000, "currency": "EUR", "stock": stock});
        let (status, p) = self
            .send(
                reqwest::Method::POST,
                self.url(Product, "/products"),
                &self.admin,
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        p["id"].as_str().unwrap().to_string()
    }

    async fn stock(&self, id: &str) -> i64 {
        let (_, p) = self
            .send(
                reqwest::Method::GET,
                self.url(Product, &format!("/products/{id}")),
                "",
                None,
            )
            .await;
        p["stock"].as_i64().unwrap()
    }

    async fn customer(&self, name: &str) -> Customer {
        let r = self
            .http
            .post(self.url(Auth, "/auth/register"))
            .json(&json!({"username": name, "email": format!("{name}@example.com"), "password": "correct-horse"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
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
        let token = tokens["access_token"].as_str().unwrap().to_string();
        Customer { id, token }
    }

    /// Places an order for two of `product`; returns its id and total.
    async fn order(&self, who: &Customer, product: &str) -> (Uuid, i64) {
        let (status, order) = self
            .send(
                reqwest::Method::POST,
                self.url(Order, "/orders"),
                &who.token,
                Some(json!({"product_id": product, "quantity": 2})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        (
            order["id"].as_str().unwrap().parse().unwrap(),
            order["total"].as_i64().unwrap(),
        )
    }

    async fn order_status(&self, who: &Customer, id: Uuid) -> Value {
        let (_, order) = self
            .send(
                reqwest::Method::GET,
                self.url(Order, &format!("/orders/{id}")),
                &who.token,
                None,
            )
            .await;
        order["status"].clone()
    }

    async fn cancel(&self, who: &Customer, id: Uuid) -> (StatusCode, Value) {
        self.send(
            reqwest::Method::POST,
            self.url(Order, &format!("/orders/{id}/cancel")),
            &who.token,
            None,
        )
        .await
    }

    /// The payment as its customer reads it at `GET /payments/{id}`.
    async fn payment(&self, who: &Customer, id: &str) -> Value {
        let (status, payment) = self
            .send(
                reqwest::Method::GET,
                self.url(Payment, &format!("/payments/{id}")),
                &who.token,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        payment
    }

    /// Waits for the outbox to carry the payment's outcome to the order and back.
    async fn settled_payment(&self, who: &Customer, id: &str) -> Value {
        poll(
            100,
            || self.payment(who, id),
            |p| p["status"] != "SUCCEEDED",
        )
        .await
    }

    /// A service token as `client` gets it from auth.
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

    async fn payment_pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.topology().database_urls[&Payment])
            .await
            .unwrap()
    }
}

/// What happens to the order right after the payment service has checked it.
enum Meanwhile {
    /// Its owner cancels it.
    Cancel,
    /// Its time runs out and the order service's sweep expires it.
    Expire,
}

/// The order service as the payment service reads it (over HTTP, with payment's token),
/// with a hook: once the order has been read and found PENDING, something happens to it
/// before the payment is recorded.
struct RaceAfterCheck<'a> {
    shop: &'a Shop,
    customer: &'a Customer,
    token: String,
    meanwhile: Meanwhile,
}

impl Orders for RaceAfterCheck<'_> {
    async fn order(&self, id: Uuid) -> Result<mercato_contract::wire::Order, ApiError> {
        let shop = self.shop;
        let order: mercato_contract::wire::Order = shop
            .http
            .get(shop.url(Order, &format!("/internal/orders/{id}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match self.meanwhile {
            Meanwhile::Cancel => {
                let (status, _) = shop.cancel(self.customer, id).await;
                assert_eq!(status, StatusCode::OK);
            }
            Meanwhile::Expire => {
                let orders = sqlx::PgPool::connect(&shop.topology().database_urls[&Order])
                    .await
                    .unwrap();
                sqlx::query("UPDATE orders SET expires_at = now() WHERE id = $1")
                    .bind(id)
                    .execute(&orders)
                    .await
                    .unwrap();
                orders.close().await;
                let status = poll(
                    100,
                    || shop.order_status(self.customer, id),
                    |s| *s == "EXPIRED",
                )
                .await;
                assert_eq!(status, "EXPIRED");
            }
        }
        Ok(order)
    }

    async fn deliver(&self, _: Uuid, _: &PaymentEvent) -> Result<EventResult, ApiError> {
        Err(ApiError::internal(
            "the store's own payment service delivers events",
        ))
    }
}

/// Pays `order` as the payment service's handler would, with the race in its check.
async fn pay_racing(
    shop: &Shop,
    who: &Customer,
    order: Uuid,
    total: i64,
    meanwhile: Meanwhile,
) -> String {
    let hook = RaceAfterCheck {
        shop,
        customer: who,
        token: shop.service_token(Payment).await,
        meanwhile,
    };
    let request = Pay {
        user: who.id,
        idempotency_key: None,
        order_id: order,
        amount: total,
        method: Method::FakeCard,
    };
    let pool = shop.payment_pool().await;
    let paid = checkout::pay(&pool, &hook, &Notify::new(), request)
        .await
        .unwrap()
        .into_inner();
    pool.close().await;
    assert_eq!(paid.status, PaymentStatus::Succeeded);
    paid.id.to_string()
}

#[tokio::test]
async fn a_payment_taken_while_the_order_is_cancelled_is_refunded_and_the_stock_is_back() {
    let shop = Shop::start(&[(Payment, &["--outbox-poll-ms=100"])]).await;
    let p = shop.product(5).await;
    let ada = shop.customer("adaline").await;
    let (order, total) = shop.order(&ada, &p).await;
    assert_eq!(shop.stock(&p).await, 3);

    let payment = pay_racing(&shop, &ada, order, total, Meanwhile::Cancel).await;

    let settled = shop.settled_payment(&ada, &payment).await;
    assert_eq!(settled["status"], "REFUNDED", "{settled}");
    assert!(settled["refunded_at"].is_string());
    assert_eq!(shop.order_status(&ada, order).await, "CANCELLED");
    assert_eq!(shop.stock(&p).await, 5);
}

#[tokio::test]
async fn a_payment_taken_while_the_order_expires_is_refunded_and_the_stock_is_back() {
    let shop = Shop::start(&[
        (Payment, &["--outbox-poll-ms=100"]),
        (Order, &["--order-sweep-secs=1"]),
    ])
    .await;
    let p = shop.product(5).await;
    let bo = shop.customer("bodil").await;
    let (order, total) = shop.order(&bo, &p).await;

    let payment = pay_racing(&shop, &bo, order, total, Meanwhile::Expire).await;

    let settled = shop.settled_payment(&bo, &payment).await;
    assert_eq!(settled["status"], "REFUNDED", "{settled}");
    assert_eq!(shop.order_status(&bo, order).await, "EXPIRED");
    let stock = poll(50, || shop.stock(&p), |s| *s == 5).await;
    assert_eq!(stock, 5);
}

#[tokio::test]
async fn an_order_cancelled_after_its_payment_was_recorded_but_before_it_was_told_is_refunded() {
    let mut shop = Shop::start(&[(
        Payment,
        &["--outbox-dispatch=false", "--outbox-poll-ms=100"],
    )])
    .await;
    let p = shop.product(5).await;
    let cy = shop.customer("cyril").await;
    let (order, total) = shop.order(&cy, &p).await;
    let (status, payment) = shop
        .send(
            reqwest::Method::POST,
            shop.url(Payment, "/payments"),
            &cy.token,
            Some(json!({"order_id": order, "amount": total, "method": "fake-card"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(payment["status"], "SUCCEEDED");
    let payment = payment["id"].as_str().unwrap().to_string();

    // The order has not heard of the payment yet: the cancellation stands.
    let (status, cancelled) = shop.cancel(&cy, order).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["status"], "CANCELLED");
    shop.store
        .dev()
        .restart_component(Payment, &["--outbox-dispatch=true"])
        .await
        .unwrap();

    let settled = shop.settled_payment(&cy, &payment).await;
    assert_eq!(settled["status"], "REFUNDED", "{settled}");
    assert_eq!(shop.order_status(&cy, order).await, "CANCELLED");
    assert_eq!(shop.stock(&p).await, 5);
}

#[tokio::test]
async fn once_the_order_is_paid_a_cancellation_is_refused_and_the_money_and_goods_stay() {
    let shop = Shop::start(&[(Payment, &["--outbox-poll-ms=100"])]).await;
    let p = shop.product(5).await;
    let di = shop.customer("dinah").await;
    let (order, total) = shop.order(&di, &p).await;
    let (status, payment) = shop
        .send(
            reqwest::Method::POST,
            shop.url(Payment, "/payments"),
            &di.token,
            Some(json!({"order_id": order, "amount": total, "method": "fake-card"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let status = poll(100, || shop.order_status(&di, order), |s| *s == "PAID").await;
    assert_eq!(status, "PAID");

    let (status, _) = shop.cancel(&di, order).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let payment = shop.payment(&di, payment["id"].as_str().unwrap()).await;
    assert_eq!(payment["status"], "SUCCEEDED");
    assert_eq!(shop.stock(&p).await, 3);
}

#[tokio::test]
async fn a_payment_for_an_order_whose_reservation_ran_out_is_refunded_once_and_the_order_expires() {
    let shop = Shop::start(&[
        (Payment, &["--outbox-poll-ms=100"]),
        (
            Product,
            &["--reservation-ttl-secs=1", "--reservation-sweep-secs=1"],
        ),
    ])
    .await;
    let p = shop.product(5).await;
    let eve = shop.customer("evelyn").await;
    let (order, total) = shop.order(&eve, &p).await;
    // The product service gives the stock back on its own; the order is still PENDING.
    let stock = poll(50, || shop.stock(&p), |s| *s == 5).await;
    assert_eq!(stock, 5);
    assert_eq!(shop.order_status(&eve, order).await, "PENDING");

    let (status, payment) = shop
        .send(
            reqwest::Method::POST,
            shop.url(Payment, "/payments"),
            &eve.token,
            Some(json!({"order_id": order, "amount": total, "method": "fake-card"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let settled = shop
        .settled_payment(&eve, payment["id"].as_str().unwrap())
        .await;
    assert_eq!(settled["status"], "REFUNDED", "{settled}");
    assert_eq!(shop.order_status(&eve, order).await, "EXPIRED");
    assert_eq!(shop.stock(&p).await, 5);
    let pool = shop.payment_pool().await;
    let delivered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        delivered, 1,
        "the product service's 409 was final, not retried"
    );
}
