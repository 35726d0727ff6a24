//! What the storefront's tests share: a store, an API client for arranging and checking
//! data behind the pages' backs, and (for the browser suite) headless Chromium.

#![allow(dead_code)]

pub mod browser;

use mercato_devstack::dev::TestStore;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A store with the demo catalogue.
pub async fn store() -> TestStore {
    TestStore::start(&[], true).await.expect("the store starts")
}

/// The public API, as a script or the CLI uses it.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn of(store: &TestStore) -> Self {
        Self {
            base: store.gateway_url(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self
            .http
            .post(format!("{}/auth/login", self.base))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "login of {username}");
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn admin(&self, store: &mut TestStore) -> String {
        let (user, password) = {
            let dev = store.dev();
            (dev.admin_username.clone(), dev.admin_password.clone())
        };
        self.login(&user, &password).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Value {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// A product created by the admin; its id.
    pub async fn product(&self, admin: &str, name: &str, price: i64, stock: i64) -> String {
        let r = self
            .http
            .post(format!("{}/products", self.base))
            .bearer_auth(admin)
            .json(
                &json!({"name": name, "description": "for a test", "category": "tests",
                          "price": price, "currency": "EUR", "stock": stock}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn stock(&self, product: &str) -> i64 {
        self.get(&format!("/products/{product}"), None).await["stock"]
            .as_i64()
            .unwrap()
    }

    /// Every order in the store (the admin sees all).
    pub async fn orders(&self, admin: &str) -> Vec<Value> {
        self.get("/orders?limit=100", Some(admin)).await["items"]
            .as_array()
            .unwrap()
            .clone()
    }
}
