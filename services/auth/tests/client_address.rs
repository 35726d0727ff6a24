//! Whose login attempts count against the per-client limit: the address the gateway signed
//! with the edge key, else the TCP peer. A client writing the header itself, or an
//! `X-Forwarded-For`, gains nothing.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use clap::Parser;
use mercato_auth::Config;
use mercato_contract::CLIENT_ADDRESS_HEADER;
use mercato_kit::edge::EdgeKey;
use mercato_kit::server::ServiceConfig;
use mercato_kit::testing::{TestDb, TestKeys, TestServer};
use reqwest::StatusCode;
use serde_json::json;

const EDGE_KEY: &str = "edge-key-for-the-auth-tests-0123456789abc";

struct Auth {
    server: TestServer,
    http: reqwest::Client,
    _keys: TestKeys,
    _db: TestDb,
}

impl Auth {
    /// Auth with the edge key and two login attempts per client.
    async fn start() -> Self {
        let db = TestDb::new().await;
        let keys = TestKeys::new();
        let config = Config::try_parse_from([
            "mercato-auth".to_string(),
            format!("--database-url={}", db.url),
            format!("--jwks-path={}", keys.jwks_path().display()),
            format!(
                "--jwt-private-key-path={}",
                keys.private_key_path().display()
            ),
            "--admin-password=admin-password-1".into(),
            "--argon2-memory-kib=64".into(),
            "--argon2-iterations=1".into(),
            "--log-level=warn".into(),
            "--login-attempts-per-client=2".into(),
            format!("--edge-key={EDGE_KEY}"),
        ])
        .unwrap();
        let app = config.build().await.expect("auth builds");
        Self {
            server: TestServer::start(app.start()).await,
            http: reqwest::Client::new(),
            _keys: keys,
            _db: db,
        }
    }

    /// A failed login (an unknown user, each time another, so only the per-client limit
    /// can refuse it) with `headers`.
    async fn bad_login(&self, attempt: usize, headers: &[(&str, String)]) -> StatusCode {
        let mut req = self
            .http
            .post(self.server.url("/auth/login"))
            .json(&json!({ "username": format!("nobody{attempt}"), "password": "wrong-password" }));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        req.send().await.unwrap().status()
    }
}

fn signed(addr: &str) -> String {
    EDGE_KEY
        .parse::<EdgeKey>()
        .unwrap()
        .sign(addr.parse().unwrap())
}

#[tokio::test]
async fn a_forged_client_address_sent_straight_to_auth_is_ignored() {
    let auth = Auth::start().await;
    let other_key: EdgeKey = "some-other-key-nobody-gave-the-gateway-0000"
        .parse()
        .unwrap();
    let forgeries = [
        vec![(CLIENT_ADDRESS_HEADER, "203.0.113.1".to_string())],
        vec![(CLIENT_ADDRESS_HEADER, "203.0.113.2;sig=AAAA".to_string())],
        vec![
            (
                CLIENT_ADDRESS_HEADER,
                other_key.sign("203.0.113.3".parse().unwrap()),
            ),
            ("x-forwarded-for", "203.0.113.3".to_string()),
        ],
    ];
    let mut statuses = Vec::new();
    for (i, headers) in forgeries.iter().enumerate() {
        statuses.push(auth.bad_login(i, headers).await);
    }
    // All three came from this test's address: its limit of two applies.
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test]
async fn clients_the_gateway_vouches_for_are_limited_each_by_its_own_address() {
    let auth = Auth::start().await;
    let alice = [(CLIENT_ADDRESS_HEADER, signed("203.0.113.1"))];
    assert_eq!(auth.bad_login(1, &alice).await, StatusCode::UNAUTHORIZED);
    assert_eq!(auth.bad_login(2, &alice).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        auth.bad_login(3, &alice).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Bob reaches auth through the same gateway, and is not locked out by Alice.
    let bob = [(CLIENT_ADDRESS_HEADER, signed("203.0.113.2"))];
    assert_eq!(auth.bad_login(4, &bob).await, StatusCode::UNAUTHORIZED);
}
