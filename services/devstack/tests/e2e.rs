//! End to end through the gateway only, with the store started the way `make dev`
//! starts it: one role and database per service, generated credentials, every service
//! configured from the operator's environment contract.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::time::Duration;

use mercato_contract::Component;
use mercato_devstack::dev::{DEMO_CATALOG, Dev, TestStore};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A store of its own, reached through its gateway.
struct Store {
    inner: TestStore,
    http: reqwest::Client,
    gw: String,
}

async fn store_with(extra: &[(Component, &[&str])], seed: bool) -> Store {
    let inner = TestStore::start(extra, seed)
        .await
        .expect("the store starts");
    let gw = inner.gateway_url();
    Store {
        inner,
        http: reqwest::Client::new(),
        gw,
    }
}

async fn store() -> Store {
    store_with(&[], true).await
}

impl Store {
    fn dev(&mut self) -> &mut Dev {
        self.inner.dev()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        expect: StatusCode,
    ) -> Value {
        let r = self.send(method.clone(), path, token, body).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, expect, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn login(&self, username: &str, password: &str) -> Value {
        self.json(
            reqwest::Method::POST,
            "/auth/login",
            None,
            Some(json!({"username": username, "password": password})),
            StatusCode::OK,
        )
        .await
    }

    async fn admin(&self) -> String {
        let password = self.inner.dev.as_ref().unwrap().admin_password.clone();
        self.login("admin", &password).await["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn customer(&self, name: &str) -> String {
        self.json(
            reqwest::Method::POST,
            "/auth/register",
            None,
            Some(json!({"username": name, "email": format!("{name}@example.com"), "password": "correct-horse"})),
            StatusCode::CREATED,
        )
        .await;
        self.login(name, "correct-horse").await["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn wait_status(&self, token: &str, id: &str, status: &str) {
        for _ in 0..100 {
            let o = self
                .json(
                    reqwest::Method::GET,
                    &format!("/orders/{id}"),
                    Some(token),
                    None,
                    StatusCode::OK,
                )
                .await;
            if o["status"] == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("order {id} never became {status}");
    }
}

use reqwest::Method as M;

#[tokio::test]
async fn accounts_register_log_in_refresh_and_log_out_through_the_gateway() {
    let s = store().await;
    s.customer("olga").await;
    let tokens = s.login("olga", "correct-horse").await;
    let me = s
        .json(
            M::GET,
            "/users/me",
            tokens["access_token"].as_str(),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(me["username"], "olga");
    let renewed = s
        .json(
            M::POST,
            "/auth/refresh",
            None,
            Some(json!({"refresh_token": tokens["refresh_token"]})),
            StatusCode::OK,
        )
        .await;
    let r = s
        .send(
            M::POST,
            "/auth/logout",
            renewed["access_token"].as_str(),
            Some(json!({"refresh_token": renewed["refresh_token"]})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    s.json(
        M::POST,
        "/auth/refresh",
        None,
        Some(json!({"refresh_token": renewed["refresh_token"]})),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let jwks = s
        .json(M::GET, "/auth/jwks", None, None, StatusCode::OK)
        .await;
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
}

#[tokio::test]
async fn the_whole_shop_works_through_the_gateway() {
    let s = store().await;
    let admin = s.admin().await;

    // The demo catalog is there; the admin adds, replaces and reprices a product.
    let all = s
        .json(M::GET, "/products?limit=100", None, None, StatusCode::OK)
        .await;
    assert_eq!(all["items"].as_array().unwrap().len(), DEMO_CATALOG.len());
    let p = s
        .json(M::POST, "/products", Some(&admin), Some(json!({"name": "Teapot", "category": "tea", "price": 3000, "currency": "EUR", "stock": 5})), StatusCode::CREATED)
        .await;
    let id = p["id"].as_str().unwrap().to_string();
    s.json(M::PUT, &format!("/products/{id}"), Some(&admin),
        Some(json!({"name": "Cast-iron teapot", "description": "0.8 l", "category": "tea", "price": 3200, "currency": "EUR", "stock": 6})), StatusCode::OK).await;
    s.json(
        M::PATCH,
        &format!("/products/{id}"),
        Some(&admin),
        Some(json!({"price": 2800})),
        StatusCode::OK,
    )
    .await;
    let tea = s
        .json(M::GET, "/products?category=tea", None, None, StatusCode::OK)
        .await;
    assert_eq!(tea["items"][0]["name"], "Cast-iron teapot");
    assert_eq!(tea["items"][0]["price"], 2800);

    // A customer orders with items and with the shorthand, pays both ways, cancels one.
    let pia = s.customer("pia").await;
    let o1 = s
        .json(
            M::POST,
            "/orders",
            Some(&pia),
            Some(json!({"items": [{"product_id": id, "quantity": 2}]})),
            StatusCode::CREATED,
        )
        .await;
    let o2 = s
        .json(
            M::POST,
            "/orders",
            Some(&pia),
            Some(json!({"product_id": id, "quantity": 1})),
            StatusCode::CREATED,
        )
        .await;
    let o3 = s
        .json(
            M::POST,
            "/orders",
            Some(&pia),
            Some(json!({"product_id": id, "quantity": 1})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(o1["total"], 5600);
    let (id1, id2, id3) = (
        o1["id"].as_str().unwrap(),
        o2["id"].as_str().unwrap(),
        o3["id"].as_str().unwrap(),
    );
    let declined = s
        .json(
            M::POST,
            "/payments",
            Some(&pia),
            Some(json!({"order_id": id2, "amount": 2800, "method": "fake-card-declined"})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(declined["status"], "DECLINED");
    let paid = s
        .json(
            M::POST,
            "/payments",
            Some(&pia),
            Some(json!({"order_id": id1, "amount": 5600, "method": "fake-card"})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(paid["status"], "SUCCEEDED");
    s.wait_status(&pia, id1, "PAID").await;
    let cancelled = s
        .json(
            M::POST,
            &format!("/orders/{id3}/cancel"),
            Some(&pia),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(cancelled["status"], "CANCELLED");
    let o2_now = s
        .json(
            M::GET,
            &format!("/orders/{id2}"),
            Some(&pia),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        o2_now["status"], "PENDING",
        "a declined payment leaves the order pending"
    );
    let stock = s
        .json(
            M::GET,
            &format!("/products/{id}"),
            None,
            None,
            StatusCode::OK,
        )
        .await["stock"]
        .clone();
    assert_eq!(
        stock, 3,
        "6 - 2 paid - 1 pending; the cancelled one came back"
    );

    // History and payments.
    let history = s
        .json(M::GET, "/orders", Some(&pia), None, StatusCode::OK)
        .await;
    assert_eq!(history["items"].as_array().unwrap().len(), 3);
    let paid_only = s
        .json(
            M::GET,
            "/orders?status=PAID",
            Some(&pia),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(paid_only["items"].as_array().unwrap().len(), 1);
    let payments = s
        .json(
            M::GET,
            &format!("/payments?order_id={id1}"),
            Some(&pia),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(payments["items"][0]["id"], paid["id"]);
    s.json(
        M::GET,
        &format!("/payments/{}", paid["id"].as_str().unwrap()),
        Some(&pia),
        None,
        StatusCode::OK,
    )
    .await;

    // Authorization, as a stranger would meet it.
    let quinn = s.customer("quinn").await;
    s.json(
        M::GET,
        &format!("/orders/{id1}"),
        Some(&quinn),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    s.json(
        M::POST,
        &format!("/orders/{id2}/cancel"),
        Some(&quinn),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    s.json(
        M::GET,
        &format!("/payments/{}", paid["id"].as_str().unwrap()),
        Some(&quinn),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    s.json(
        M::POST,
        "/products",
        Some(&quinn),
        Some(json!({"name": "x"})),
        StatusCode::FORBIDDEN,
    )
    .await;
    s.json(M::GET, "/users", Some(&quinn), None, StatusCode::FORBIDDEN)
        .await;
    let anonymous = s
        .json(M::GET, "/orders", None, None, StatusCode::UNAUTHORIZED)
        .await;
    assert_eq!(anonymous["code"], "unauthorized");
    s.json(
        M::POST,
        "/orders",
        Some("not-a-token"),
        Some(json!({})),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    s.json(
        M::GET,
        &format!("/internal/orders/{id1}"),
        Some(&admin),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn request_ids_cross_the_gateway_to_the_services() {
    let s = store().await;
    let r = s
        .http
        .get(s.url(&format!("/products/{}", uuid::Uuid::new_v4())))
        .header("x-request-id", "e2e-trace-7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "e2e-trace-7");
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["title"], "Product not found");
    assert_eq!(
        problem["request_id"], "e2e-trace-7",
        "the product service saw the gateway's id"
    );
    let r = s.http.get(s.url("/products")).send().await.unwrap();
    assert_eq!(
        r.headers()["x-request-id"].len(),
        36,
        "the gateway assigns one"
    );
}

#[tokio::test]
async fn the_gateway_answers_503_and_504_naming_the_service_and_health_tells() {
    let mut s = store_with(
        &[(Component::Gateway, &["--upstream-timeout-ms=800"])],
        true,
    )
    .await;
    let health = s.json(M::GET, "/health", None, None, StatusCode::OK).await;
    assert_eq!(health["status"], "ok");

    s.dev().stop_component(Component::Product).await;
    let p = s
        .json(
            M::GET,
            "/products",
            None,
            None,
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    assert_eq!(p["title"], "Product service unavailable");
    // Readiness is probed in the background: the outage shows within the probe interval.
    let health = |s: &Store| {
        let request = s.http.get(s.url("/health"));
        async move {
            let r = request.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, health) = mercato_kit::testing::poll(
        100,
        || health(&s),
        |(_, h)| h["upstreams"]["product"] == "unreachable",
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["upstreams"]["product"], "unreachable");
    assert_eq!(health["upstreams"]["auth"], "ready");

    // Something on the product port that accepts and never answers.
    let addr = s.dev().topology.listen[&Component::Product];
    let hung = tokio::net::TcpListener::bind(addr).await.unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    });
    let p = s
        .json(M::GET, "/products", None, None, StatusCode::GATEWAY_TIMEOUT)
        .await;
    assert_eq!(p["title"], "Product service timed out");
    holder.abort();
    let _ = holder.await;

    s.dev().start_component(Component::Product).await.unwrap();
    s.json(M::GET, "/products", None, None, StatusCode::OK)
        .await;
}

#[tokio::test]
async fn the_gateway_limits_each_client_and_answers_cors_preflights() {
    // Unseeded, so the limit is all the test's own.
    let s = store_with(
        &[(
            Component::Gateway,
            &[
                "--rate-limit-per-minute=5",
                "--cors-origins=http://shop.example",
            ],
        )],
        false,
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(s.http.get(s.url("/products")).send().await.unwrap());
    }
    let limited = statuses.pop().unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        statuses
            .iter()
            .filter(|r| r.status() == StatusCode::OK)
            .count(),
        5
    );

    let preflight = s
        .http
        .request(M::OPTIONS, s.url("/orders"))
        .header("origin", "http://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, idempotency-key",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://shop.example"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_one_clients_bad_logins_do_not_lock_out_another() {
    // The proxy is this machine; auth allows two login attempts per client.
    let mut s = store_with(
        &[(Component::Gateway, &["--trusted-proxies=127.0.0.0/8"])],
        false,
    )
    .await;
    s.dev()
        .restart_component(Component::Auth, &["--login-attempts-per-client=2"])
        .await
        .unwrap();
    let bad_login = |s: &Store, attempt: u32, client: &'static str| {
        let request = s
            .http
            .post(s.url("/auth/login"))
            .header("x-forwarded-for", client)
            .json(&json!({"username": format!("stranger{attempt}"), "password": "wrong-password"}));
        async move { request.send().await.unwrap().status() }
    };
    let first = mercato_kit::testing::poll(
        100,
        || bad_login(&s, 0, "203.0.113.1"),
        |status| *status != StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(first, StatusCode::UNAUTHORIZED);
    assert_eq!(
        bad_login(&s, 1, "203.0.113.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        bad_login(&s, 2, "203.0.113.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy still may try.
    assert_eq!(
        bad_login(&s, 3, "203.0.113.2").await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_second_start_keeps_the_data() {
    let mut s = store().await;
    let admin = s.admin().await;
    s.json(M::POST, "/products", Some(&admin), Some(json!({"name": "Keeper", "category": "keep", "price": 1, "currency": "EUR", "stock": 1})), StatusCode::CREATED).await;
    let password = s.dev().admin_password.clone();
    s.inner.dev.take().unwrap().stop().await;

    let again = Dev::start(&s.inner.options).await.unwrap();
    assert_eq!(again.admin_password, password, "credentials are kept");
    s.gw = again.gateway_url.clone();
    s.inner.dev = Some(again);
    let kept = s
        .json(
            M::GET,
            "/products?category=keep",
            None,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(kept["items"].as_array().unwrap().len(), 1);
    let all = s
        .json(M::GET, "/products?limit=100", None, None, StatusCode::OK)
        .await;
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        DEMO_CATALOG.len() + 1,
        "not seeded twice"
    );
}

#[tokio::test]
async fn the_readme_walkthrough_works_as_printed() {
    let s = store().await;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let block = readme
        .split("<!-- walkthrough:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- walkthrough:end -->").next())
        .expect("README has a walkthrough block");
    let script = block
        .trim()
        .strip_prefix("```sh")
        .and_then(|b| b.strip_suffix("```"))
        .expect("the walkthrough is one sh block");
    let password = s.inner.dev.as_ref().unwrap().admin_password.clone();
    let gw = s.gw.clone();
    let script = script.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg("-euo")
            .arg("pipefail")
            .arg("-c")
            .arg(script)
            .env("GW", gw)
            .env("ADMIN_PASSWORD", password)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "walkthrough failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PENDING, total 2500"), "{stdout}");
    assert!(stdout.contains("SUCCEEDED"), "{stdout}");
    assert!(stdout.contains("order is PAID"), "{stdout}");
    assert!(stdout.contains("stock left: 8"), "{stdout}");
}

#[tokio::test]
async fn a_port_in_use_is_named_in_a_clear_error() {
    // The port of auth, the first component bound (at the base port + 1): the one the
    // start-up tries first, so no port another test holds at the moment can come before it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let state = tempfile::tempdir().unwrap();
    let options = mercato_devstack::dev::DevOptions {
        postgres_url: mercato_kit::testing::server_url(),
        state_dir: state.path().to_path_buf(),
        port_base: port - 1,
        db_prefix: format!("e2e_{}_", uuid::Uuid::new_v4().simple()),
        reset: false,
        seed: false,
        log_format: "pretty".into(),
        log_level: "warn".into(),
        extra: Default::default(),
        runner: mercato_devstack::dev::Runner::InProcess,
    };
    let error = Dev::start(&options).await.unwrap_err().to_string();
    assert!(
        error.contains(&format!("port {port} (auth) is not available")),
        "{error}"
    );
    assert!(error.contains("PORT_BASE="), "says how to move: {error}");
}
