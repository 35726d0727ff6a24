//! The product service over real HTTP against a fresh database: catalog and reservations.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use clap::Parser;
use mercato_contract::scopes;
use mercato_kit::jwt::Role;
use mercato_kit::server::ServiceConfig;
use mercato_kit::testing::{TestAuth, TestDb, TestKeys, TestServer, fields, metric, poll};
use mercato_product::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct TestApp {
    server: TestServer,
    http: reqwest::Client,
    keys: TestKeys,
    /// The revocation feed this service reads.
    _auth: TestAuth,
    db: TestDb,
    admin: String,
    service: String,
}

async fn spawn_app_with(extra: &[&str]) -> TestApp {
    let db = TestDb::new().await;
    let keys = TestKeys::new();
    let auth = TestAuth::start(&keys).await;
    let mut args = vec![
        "mercato-product".to_string(),
        format!("--database-url={}", db.url),
        format!("--jwks-path={}", keys.jwks_path().display()),
        "--log-level=warn".into(),
    ];
    args.extend(auth.flags());
    args.extend(extra.iter().map(|s| s.to_string()));
    let config = Config::try_parse_from(args).unwrap();
    let app = config.build().await.unwrap();
    let server = TestServer::start(app.start()).await;
    let admin = keys.user(&uuid::Uuid::new_v4().to_string(), Role::Admin);
    let service = keys.service("order", &[scopes::PRODUCT_RESERVE]);
    TestApp {
        server,
        http: reqwest::Client::new(),
        keys,
        _auth: auth,
        db,
        admin,
        service,
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

impl TestApp {
    async fn create(&self, name: &str, category: &str, price: i64, stock: i64) -> Value {
        let r = self
            .http
            .post(self.server.url("/products"))
            .bearer_auth(&self.admin)
            .json(&json!({"name": name, "category": category, "price": price, "currency": "EUR", "stock": stock}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    async fn product(&self, id: &str) -> Value {
        self.http
            .get(self.server.url(&format!("/products/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn reserve(&self, order_id: &str, items: Value) -> reqwest::Response {
        self.http
            .post(self.server.url("/internal/reservations"))
            .bearer_auth(&self.service)
            .json(&json!({"order_id": order_id, "items": items}))
            .send()
            .await
            .unwrap()
    }

    async fn internal(&self, path: &str) -> reqwest::Response {
        self.http
            .post(self.server.url(path))
            .bearer_auth(&self.service)
            .send()
            .await
            .unwrap()
    }

    async fn count(&self, sql: &str) -> i64 {
        let pool = sqlx::PgPool::connect(&self.db.url).await.unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn admin_creates_updates_patches_and_deletes_products() {
    let app = spawn_app().await;
    let p = app.create("Kettle", "kitchen", 2599, 5).await;
    let id = p["id"].as_str().unwrap();
    assert_eq!(
        (
            p["price"].as_i64(),
            p["currency"].as_str(),
            p["stock"].as_i64()
        ),
        (Some(2599), Some("EUR"), Some(5))
    );

    let r = app
        .http
        .put(app.server.url(&format!("/products/{id}")))
        .bearer_auth(&app.admin)
        .json(&json!({"name": "Steel kettle", "description": "1.7 l", "category": "kitchen", "price": 2999, "currency": "EUR", "stock": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .http
        .patch(app.server.url(&format!("/products/{id}")))
        .bearer_auth(&app.admin)
        .json(&json!({"price": 1999}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let p = app.product(id).await;
    assert_eq!(
        (
            p["name"].as_str(),
            p["description"].as_str(),
            p["price"].as_i64(),
            p["stock"].as_i64()
        ),
        (Some("Steel kettle"), Some("1.7 l"), Some(1999), Some(7))
    );

    let r = app
        .http
        .delete(app.server.url(&format!("/products/{id}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .http
        .get(app.server.url(&format!("/products/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["title"], "Product not found");
}

#[tokio::test]
async fn bad_product_input_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let p = app.create("Mug", "kitchen", 800, 3).await;
    let id = p["id"].as_str().unwrap();
    let post = |body: Value| {
        app.http
            .post(app.server.url("/products"))
            .bearer_auth(&app.admin)
            .json(&body)
            .send()
    };

    let r = post(
        json!({"name": "", "category": "Bad Cat", "price": -1, "currency": "eur", "stock": -5}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        fields(&p),
        ["name", "category", "price", "currency", "stock"]
    );
    let r =
        post(json!({"name": "x", "category": "a", "price": 10.5, "currency": "EUR", "stock": 1}))
            .await
            .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "floats are not money"
    );
    let r = post(json!({"name": "x"})).await.unwrap();
    let p: Value = r.json().await.unwrap();
    assert_eq!(fields(&p), ["category", "price", "currency", "stock"]);

    let r = app
        .http
        .put(app.server.url(&format!("/products/{id}")))
        .bearer_auth(&app.admin)
        .json(&json!({"price": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "PUT is a full update"
    );
    let r = app
        .http
        .patch(app.server.url(&format!("/products/{id}")))
        .bearer_auth(&app.admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .http
        .patch(app.server.url(&format!("/products/{}", new_id())))
        .bearer_auth(&app.admin)
        .json(&json!({"price": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let customer = app.keys.user(&new_id(), Role::Customer);
    let r = app
        .http
        .patch(app.server.url(&format!("/products/{id}")))
        .bearer_auth(&customer)
        .json(&json!({"price": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = app
        .http
        .post(app.server.url("/products"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(app.count("SELECT count(*) FROM products").await, 1);
    assert_eq!(app.product(id).await["price"], 800);
}

#[tokio::test]
async fn catalog_filters_by_category_and_pages_with_a_capped_limit() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.create(&format!("Book {i}"), "books", 1000 + i, 1).await;
    }
    app.create("Lamp", "home", 4000, 1).await;

    let page: Value = app
        .http
        .get(app.server.url("/products?category=books&limit=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let mut names: Vec<String> = Vec::new();
    let mut cursor = None::<String>;
    loop {
        let url = match &cursor {
            Some(c) => format!("/products?category=books&limit=2&cursor={c}"),
            None => "/products?category=books&limit=2".into(),
        };
        let page: Value = app
            .http
            .get(app.server.url(&url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(names, ["Book 0", "Book 1", "Book 2", "Book 3", "Book 4"]);

    let all: Value = app
        .http
        .get(app.server.url("/products?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        6,
        "limit is capped, not refused"
    );
    for bad in [
        "/products?limit=0",
        "/products?limit=abc",
        "/products?cursor=garbage",
    ] {
        let r = app.http.get(app.server.url(bad)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

#[tokio::test]
async fn reservation_is_all_or_nothing_and_idempotent_per_order() {
    let app = spawn_app().await;
    let a = app.create("A", "x", 500, 5).await;
    let b = app.create("B", "x", 250, 1).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());

    let order = new_id();
    let r = app
        .reserve(
            &order,
            json!([{"product_id": a_id, "quantity": 2}, {"product_id": b_id, "quantity": 2}]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        (p["title"].as_str(), fields(&p)),
        (Some("Not enough stock"), vec!["items[1].quantity"])
    );
    assert_eq!(
        app.product(a_id).await["stock"],
        5,
        "nothing taken when one item fails"
    );
    assert_eq!(app.count("SELECT count(*) FROM reservations").await, 0);

    let r = app
        .reserve(
            &order,
            json!([{"product_id": a_id, "quantity": 2}, {"product_id": b_id, "quantity": 1}]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let first: Value = r.json().await.unwrap();
    assert_eq!(
        (first["total"].as_i64(), first["status"].as_str()),
        (Some(1250), Some("RESERVED"))
    );
    let r = app
        .reserve(
            &order,
            json!([{"product_id": b_id, "quantity": 1}, {"product_id": a_id, "quantity": 2}]),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "a retry returns the first reservation"
    );
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["total"], first["total"]);
    assert_eq!(app.product(a_id).await["stock"], 3, "reserved once");
    let r = app
        .reserve(&order, json!([{"product_id": a_id, "quantity": 1}]))
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "same order, different items"
    );

    let r = app
        .reserve(&new_id(), json!([{"product_id": new_id(), "quantity": 1}]))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.json::<Value>().await.unwrap()["title"],
        "Product not found"
    );
}

#[tokio::test]
async fn malformed_reservations_are_refused() {
    let app = spawn_app().await;
    let a = app.create("A", "x", 500, 5).await;
    let a_id = a["id"].as_str().unwrap();
    for (items, field) in [
        (json!([]), "items"),
        (
            json!([{"product_id": a_id, "quantity": 0}]),
            "items[0].quantity",
        ),
        (
            json!([{"product_id": a_id, "quantity": -3}]),
            "items[0].quantity",
        ),
        (
            json!([{"product_id": a_id, "quantity": 1}, {"product_id": a_id, "quantity": 1}]),
            "items[1].product_id",
        ),
        (
            json!([{"product_id": "nope", "quantity": 1}]),
            "items[0].product_id",
        ),
    ] {
        let r = app.reserve(&new_id(), items).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let p: Value = r.json().await.unwrap();
        assert_eq!(fields(&p), [field]);
    }
    assert_eq!(app.product(a_id).await["stock"], 5);
}

#[tokio::test]
async fn commit_keeps_stock_release_returns_it() {
    let app = spawn_app().await;
    let a = app.create("A", "x", 100, 10).await;
    let a_id = a["id"].as_str().unwrap();
    let (paid, cancelled) = (new_id(), new_id());
    app.reserve(&paid, json!([{"product_id": a_id, "quantity": 3}]))
        .await;
    app.reserve(&cancelled, json!([{"product_id": a_id, "quantity": 4}]))
        .await;
    assert_eq!(app.product(a_id).await["stock"], 3);

    assert_eq!(
        app.internal(&format!("/internal/reservations/{paid}/commit"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.internal(&format!("/internal/reservations/{paid}/commit"))
            .await
            .status(),
        StatusCode::OK,
        "idempotent"
    );
    assert_eq!(
        app.internal(&format!("/internal/reservations/{paid}/release"))
            .await
            .status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.internal(&format!("/internal/reservations/{cancelled}/release"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.internal(&format!("/internal/reservations/{cancelled}/release"))
            .await
            .status(),
        StatusCode::OK,
        "idempotent"
    );
    assert_eq!(
        app.internal(&format!("/internal/reservations/{cancelled}/commit"))
            .await
            .status(),
        StatusCode::CONFLICT
    );
    assert_eq!(app.product(a_id).await["stock"], 7, "3 sold, 4 returned");
}

#[tokio::test]
async fn concurrent_reservations_never_oversell() {
    let app = spawn_app().await;
    let a = app.create("Hot item", "x", 100, 10).await;
    let a_id = a["id"].as_str().unwrap();
    let attempts = (0..50).map(|_| app.reserve_owned(a_id));
    let statuses: Vec<StatusCode> = futures::future::join_all(attempts).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        10
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        40
    );
    assert_eq!(app.product(a_id).await["stock"], 0);
}

impl TestApp {
    async fn reserve_owned(&self, product: &str) -> StatusCode {
        self.reserve(&new_id(), json!([{"product_id": product, "quantity": 1}]))
            .await
            .status()
    }
}

#[tokio::test]
async fn expired_reservations_return_their_stock() {
    let app = spawn_app_with(&["--reservation-ttl-secs=1", "--reservation-sweep-secs=1"]).await;
    let a = app.create("A", "x", 100, 4).await;
    let a_id = a["id"].as_str().unwrap();
    let order = new_id();
    app.reserve(&order, json!([{"product_id": a_id, "quantity": 4}]))
        .await;
    assert_eq!(app.product(a_id).await["stock"], 0);
    let stock = poll(
        50,
        || async { app.product(a_id).await["stock"].clone() },
        |s| *s == 4,
    )
    .await;
    assert_eq!(stock, 4);
    assert_eq!(
        app.internal(&format!("/internal/reservations/{order}/commit"))
            .await
            .status(),
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn reservations_by_status_and_their_expiries_show_in_metrics() {
    let app = spawn_app_with(&["--reservation-ttl-secs=1", "--reservation-sweep-secs=1"]).await;
    let series = |status: &str| format!("mercato_stock_reservations{{status=\"{status}\"}}");
    let expiries = "mercato_stock_reservation_expiries_total";
    for status in ["reserved", "committed", "released"] {
        assert_eq!(
            metric(&app.server, &series(status)).await,
            Some(0.0),
            "{status}"
        );
    }
    assert_eq!(metric(&app.server, expiries).await, Some(0.0));

    let a = app.create("A", "x", 100, 10).await;
    let a_id = a["id"].as_str().unwrap();
    let (paid, cancelled, abandoned) = (new_id(), new_id(), new_id());
    for order in [&paid, &cancelled, &abandoned] {
        let r = app
            .reserve(order, json!([{"product_id": a_id, "quantity": 1}]))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let committed = app
        .internal(&format!("/internal/reservations/{paid}/commit"))
        .await;
    assert_eq!(committed.status(), StatusCode::OK);
    let released = app
        .internal(&format!("/internal/reservations/{cancelled}/release"))
        .await;
    assert_eq!(released.status(), StatusCode::OK);
    assert_eq!(metric(&app.server, &series("committed")).await, Some(1.0));

    // The abandoned one runs out and the sweeper returns it.
    let swept = poll(50, || metric(&app.server, expiries), |n| *n == Some(1.0)).await;
    assert_eq!(swept, Some(1.0));
    assert_eq!(metric(&app.server, &series("reserved")).await, Some(0.0));
    assert_eq!(metric(&app.server, &series("committed")).await, Some(1.0));
    assert_eq!(metric(&app.server, &series("released")).await, Some(2.0));
}

#[tokio::test]
async fn internal_endpoints_need_a_service_token_with_the_reserve_scope() {
    let app = spawn_app().await;
    let a = app.create("A", "x", 100, 4).await;
    let body = json!({"order_id": new_id(), "items": [{"product_id": a["id"], "quantity": 1}]});
    let customer = app.keys.user(&new_id(), Role::Customer);
    let admin = app.admin.clone();
    let wrong_scope = app.keys.service("payment", &[scopes::ORDER_READ]);
    for (token, expected) in [
        (Some(customer), StatusCode::FORBIDDEN),
        (Some(admin), StatusCode::FORBIDDEN),
        (Some(wrong_scope), StatusCode::FORBIDDEN),
        (None, StatusCode::UNAUTHORIZED),
    ] {
        let mut req = app
            .http
            .post(app.server.url("/internal/reservations"))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().await.unwrap().status(), expected);
    }
    assert_eq!(app.product(a["id"].as_str().unwrap()).await["stock"], 4);
}

#[tokio::test]
async fn made_up_methods_are_refused_and_add_no_metric_series() {
    let app = spawn_app().await;
    let metrics = || async {
        app.http
            .get(app.server.ops_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    let send = |method: String, path: &'static str| {
        let request = app.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            app.server.url(path),
        );
        async move { request.send().await.unwrap() }
    };
    // Warm up: one made-up method on a route and off one, and `/metrics` itself, so that
    // every series these requests can touch exists before counting.
    send("WARMUP".into(), "/products").await;
    send("WARMUP".into(), "/no/such/route").await;
    metrics().await;
    let before = series(&metrics().await);

    for i in 0..50 {
        let path = if i % 2 == 0 {
            "/products"
        } else {
            "/no/such/route"
        };
        let response = send(format!("FOO{i}"), path).await;
        assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "method_not_implemented");
    }
    let after = metrics().await;
    assert!(!after.contains("FOO"), "no method becomes a label");
    assert!(after.contains(r#"method="OTHER""#), "{after}");
    assert_eq!(series(&after), before, "50 made-up methods added no series");

    // Known methods still route as before: a wrong one on a real route is 405.
    let response = app
        .http
        .request(reqwest::Method::PUT, app.server.url("/products"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

impl TestApp {
    /// `PATCH /products/{id}` as the admin, with `If-Match` when given.
    async fn patch_if(&self, id: &str, if_match: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = self
            .http
            .patch(self.server.url(&format!("/products/{id}")))
            .bearer_auth(&self.admin)
            .json(&body);
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        request.send().await.unwrap()
    }

    /// The product and its ETag.
    async fn read_tagged(&self, id: &str) -> (Value, String) {
        let r = self
            .http
            .get(self.server.url(&format!("/products/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let tag = r.headers()["etag"].to_str().unwrap().to_string();
        (r.json().await.unwrap(), tag)
    }
}

#[tokio::test]
async fn an_admins_stock_edit_made_stale_by_racing_orders_is_refused_and_loses_no_reservation() {
    let app = spawn_app().await;
    let p = app.create("Lamp", "x", 100, 10).await;
    let id = p["id"].as_str().unwrap();
    let (read, tag) = app.read_tagged(id).await;
    assert_eq!(read["stock"], 10);
    assert_eq!(tag, format!("\"{}\"", read["version"]));

    // Orders reserve between the admin's read and write.
    let orders = (0..4).map(|_| app.reserve_owned(id));
    let reserved = futures::future::join_all(orders).await;
    assert!(reserved.iter().all(|s| *s == StatusCode::CREATED));

    // The admin meant "10 more than I saw": 20. That would wipe out the 4 reserved.
    let r = app
        .patch_if(id, Some(&tag), json!({"stock": 20, "name": "Lamp 2"}))
        .await;
    let (status, problem) = mercato_kit::testing::problem(r).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(fields(&problem), vec!["If-Match"]);
    let (now, fresh) = app.read_tagged(id).await;
    assert_eq!(now["stock"], 6, "the reservations stand");
    assert_eq!(now["name"], "Lamp", "a refused write changes nothing");
    assert_ne!(fresh, tag);

    // Read again, decide again: the write with the fresh tag goes through.
    let r = app.patch_if(id, Some(&fresh), json!({"stock": 16})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let newest = r.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(newest, fresh);
    assert_eq!(r.json::<Value>().await.unwrap()["stock"], 16);
    assert_eq!(
        app.count("SELECT count(*) FROM reservations WHERE status = 'RESERVED'")
            .await,
        4
    );

    // Strong comparison: a weak tag of the current version does not match; `*` does.
    let weak = format!("W/{newest}");
    let r = app.patch_if(id, Some(&weak), json!({"price": 90})).await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = app.patch_if(id, Some("*"), json!({"price": 90})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (status, problem) =
        mercato_kit::testing::problem(app.patch_if(id, Some("16"), json!({"price": 1})).await)
            .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&problem), vec!["If-Match"]);
    assert_eq!(app.product(id).await["price"], 90);
}

/// Reads one HTTP/1.1 response (head and a `content-length` body) from `stream`, or `None`
/// when the server closed the connection instead.
async fn read_response(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return Some(head.to_string());
            }
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_request_refused_without_its_body_leaves_the_connection_open() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    let mut stream = tokio::net::TcpStream::connect(app.server.addr)
        .await
        .unwrap();
    let body = r#"{"price": 100}"#;
    // A request without a token is refused before its body is needed; the body comes a
    // moment later, as a proxy streaming it sends it. Then a second request on the same
    // connection.
    let head = format!(
        "PATCH /products/00000000-0000-0000-0000-000000000000 HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    stream.write_all(body.as_bytes()).await.unwrap();
    let first = read_response(&mut stream).await.expect("a first answer");
    assert!(first.starts_with("HTTP/1.1 401"), "{first}");
    stream
        .write_all(b"GET /products HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let second = read_response(&mut stream)
        .await
        .expect("the connection stays open for a second request");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
}

#[tokio::test]
async fn trace_is_a_method_no_route_allows_not_an_unknown_one() {
    let app = spawn_app().await;
    let r = app
        .http
        .request(reqwest::Method::TRACE, app.server.url("/products"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers().contains_key("allow"), "{:?}", r.headers());
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn a_nul_character_in_a_field_or_a_parameter_is_refused_naming_it() {
    let app = spawn_app().await;
    let r = app
        .http
        .post(app.server.url("/products"))
        .bearer_auth(&app.admin)
        .json(&json!({"name": "tea\u{0}", "category": "tea", "price": 100, "currency": "EUR", "stock": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(fields(&problem), vec!["name"]);
    let r = app
        .http
        .get(app.server.url("/products?category=t%00a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(fields(&problem), vec!["category"]);
    let r = app
        .http
        .get(app.server.url("/products"))
        .send()
        .await
        .unwrap();
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["items"], json!([]), "nothing was created");
}
