//! Sessions that end everywhere: after a logout, a disable, a demotion or a password
//! change, the access token already handed out stops working on every service (auth,
//! product, order, payment, and through the gateway) within seconds, through auth's
//! revocation feed. Real services, in-process, over real HTTP and PostgreSQL.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use mercato_contract::Component::{self, Auth, Gateway, Order, Payment, Product};
use mercato_devstack::dev::TestStore;
use mercato_kit::testing::poll;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Store {
    inner: TestStore,
    http: reqwest::Client,
    admin: String,
}

async fn store() -> Store {
    let inner = TestStore::start(&[], false)
        .await
        .expect("the store starts");
    let admin = inner.dev.as_ref().unwrap().admin_token().await.unwrap();
    Store {
        inner,
        http: reqwest::Client::new(),
        admin,
    }
}

/// One request per service that a signed-in admin may make, with no side effect: the
/// product probe's empty body is refused (422) only after the token was accepted.
const PROBES: [(Component, Method, &str); 5] = [
    (Auth, Method::GET, "/users/me"),
    (Product, Method::POST, "/products"),
    (Order, Method::GET, "/orders"),
    (Payment, Method::GET, "/payments"),
    (Gateway, Method::GET, "/orders"),
];

impl Store {
    fn url(&self, c: Component, path: &str) -> String {
        let topology = &self.inner.dev.as_ref().unwrap().topology;
        format!("{}{path}", topology.url(c))
    }

    async fn send(
        &self,
        c: Component,
        method: Method,
        path: &str,
        token: &str,
        body: Value,
    ) -> reqwest::Response {
        self.http
            .request(method, self.url(c, path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// How each service answers `token` now.
    async fn answers(&self, token: &str) -> Vec<(Component, StatusCode)> {
        let mut out = Vec::new();
        for (c, method, path) in PROBES {
            let status = self.send(c, method, path, token, json!({})).await.status();
            out.push((c, status));
        }
        out
    }

    /// Asserts that every service accepts `token`.
    async fn accepted_everywhere(&self, token: &str) {
        for (c, status) in self.answers(token).await {
            let expected = if c == Product {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            };
            assert_eq!(status, expected, "{c} should accept the token");
        }
    }

    /// Polls until every service refuses `token` with 401 "session has ended", and
    /// asserts it did.
    async fn refused_everywhere(&self, token: &str) {
        let answers = poll(
            100,
            || self.answers(token),
            |a| a.iter().all(|(_, s)| *s == StatusCode::UNAUTHORIZED),
        )
        .await;
        for (c, status) in &answers {
            assert_eq!(
                *status,
                StatusCode::UNAUTHORIZED,
                "{c} still accepts the token: {answers:?}"
            );
        }
        for (c, method, path) in PROBES {
            let r = self.send(c, method, path, token, json!({})).await;
            assert_eq!(
                r.headers()["content-type"],
                "application/problem+json",
                "{c}"
            );
            let p: Value = r.json().await.unwrap();
            assert_eq!(p["detail"], "session has ended", "{c}: {p}");
        }
    }

    async fn login(&self, username: &str, password: &str) -> Value {
        let r = self
            .http
            .post(self.url(Gateway, "/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    /// A new admin `name` created by the first admin, and a token of theirs.
    async fn new_admin(&self, name: &str) -> (String, String) {
        let r = self
            .send(
                Auth,
                Method::POST,
                "/users",
                &self.admin,
                json!({"username": name, "email": format!("{name}@example.com"), "password": "correct-horse", "role": "admin"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let token = self.login(name, "correct-horse").await["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        self.accepted_everywhere(&token).await;
        (id, token)
    }

    async fn user_count(&self) -> i64 {
        let r = self
            .send(Auth, Method::GET, "/users?limit=1", &self.admin, json!({}))
            .await;
        r.json::<Value>().await.unwrap()["total"].as_i64().unwrap()
    }
}

#[tokio::test]
async fn a_logout_ends_that_session_everywhere_and_only_that_one() {
    let store = store().await;
    store.new_admin("ada").await;
    let first = store.login("ada", "correct-horse").await;
    let second = store.login("ada", "correct-horse").await;
    let ended = first["access_token"].as_str().unwrap();
    let other = second["access_token"].as_str().unwrap();

    let r = store
        .send(
            Gateway,
            Method::POST,
            "/auth/logout",
            ended,
            json!({"refresh_token": first["refresh_token"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    store.refused_everywhere(ended).await;
    store.accepted_everywhere(other).await;
}

#[tokio::test]
async fn disabling_a_user_ends_their_tokens_everywhere() {
    let store = store().await;
    let (id, token) = store.new_admin("bea").await;
    let r = store
        .send(
            Auth,
            Method::PUT,
            &format!("/users/{id}"),
            &store.admin,
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    store.refused_everywhere(&token).await;
}

#[tokio::test]
async fn a_demoted_admin_loses_admin_power_everywhere_and_cannot_create_users() {
    let store = store().await;
    let (id, token) = store.new_admin("cai").await;
    let r = store
        .send(
            Auth,
            Method::PUT,
            &format!("/users/{id}"),
            &store.admin,
            json!({"role": "customer"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    store.refused_everywhere(&token).await;

    let before = store.user_count().await;
    for c in [Auth, Gateway] {
        let r = store
            .send(
                c,
                Method::POST,
                "/users",
                &token,
                json!({"username": format!("minion-{c}"), "email": format!("minion-{c}@example.com"), "password": "correct-horse", "role": "admin"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{c}");
    }
    assert_eq!(store.user_count().await, before, "no user was created");

    // Logging in again gives a customer token, which works at once.
    let fresh = store.login("cai", "correct-horse").await;
    let r = store
        .send(
            Auth,
            Method::GET,
            "/users/me",
            fresh["access_token"].as_str().unwrap(),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["role"], "customer");
}

#[tokio::test]
async fn a_password_change_ends_earlier_tokens_everywhere_and_a_new_login_works() {
    let store = store().await;
    let (_, token) = store.new_admin("dan").await;
    let r = store
        .send(
            Auth,
            Method::PUT,
            "/users/me",
            &token,
            json!({"password": "battery-staple", "current_password": "correct-horse"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    store.refused_everywhere(&token).await;

    let fresh = store.login("dan", "battery-staple").await;
    store
        .accepted_everywhere(fresh["access_token"].as_str().unwrap())
        .await;
}
