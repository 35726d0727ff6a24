//! The auth service over real HTTP against a fresh PostgreSQL database per test.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mercato_auth::Config;
use mercato_contract::credentials::{JwtKeyMaterial, generate_jwt_keys};
use mercato_kit::jwt::{Claims, Role, Signer};
use mercato_kit::server::ServiceConfig;
use mercato_kit::testing::{TestDb, TestServer, poll};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct TestApp {
    server: TestServer,
    http: reqwest::Client,
    keys: JwtKeyMaterial,
    dir: tempfile::TempDir,
    db: TestDb,
}

const ADMIN_PASSWORD: &str = "admin-password-1";
/// The key the tests sign client addresses with, as the gateway would.
const EDGE_KEY: &str = "edge-key-for-the-auth-api-tests-0123456789";

fn config(db: &TestDb, dir: &std::path::Path, extra: &[&str]) -> Config {
    let mut args = vec![
        "mercato-auth".to_string(),
        format!("--database-url={}", db.url),
        format!("--jwks-path={}", dir.join("jwks.json").display()),
        format!(
            "--jwt-private-key-path={}",
            dir.join("private.pem").display()
        ),
        "--jwks-reload-interval-secs=1".into(),
        format!("--admin-password={ADMIN_PASSWORD}"),
        "--service-clients=order=order-secret,payment=payment-secret".into(),
        // Cheap hashing for tests; production defaults follow OWASP.
        "--argon2-memory-kib=64".into(),
        "--argon2-iterations=1".into(),
        "--log-format=pretty".into(),
        "--log-level=warn".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::try_parse_from(args).expect("test config parses")
}

async fn spawn_app_with(extra: &[&str]) -> TestApp {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = generate_jwt_keys();
    std::fs::write(dir.path().join("jwks.json"), &keys.jwks_json).unwrap();
    std::fs::write(dir.path().join("private.pem"), &keys.private_pem).unwrap();
    let config = config(&db, dir.path(), extra);
    let app = config.build().await.expect("auth app builds");
    let server = TestServer::start(app.start()).await;
    TestApp {
        server,
        http: reqwest::Client::new(),
        keys,
        dir,
        db,
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

impl TestApp {
    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn get_as(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn register(&self, username: &str) -> Value {
        let r = self
            .post(
                "/auth/register",
                json!({"username": username, "email": format!("{username}@example.com"), "password": "correct-horse"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.post(
            "/auth/login",
            json!({"username": username, "password": password}),
        )
        .await
    }

    async fn login_ok(&self, username: &str, password: &str) -> Value {
        let r = self.login(username, password).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    async fn customer_token(&self, username: &str) -> String {
        self.register(username).await;
        self.login_ok(username, "correct-horse").await["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn admin_token(&self) -> String {
        self.login_ok("admin", ADMIN_PASSWORD).await["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn signer(&self) -> Signer {
        Signer::from_pem(
            &self.keys.private_pem,
            mercato_contract::DEFAULT_JWT_ISSUER,
            mercato_contract::DEFAULT_JWT_AUDIENCE,
        )
        .unwrap()
    }

    async fn user_count(&self) -> i64 {
        let pool = sqlx::PgPool::connect(&self.db.url).await.unwrap();
        let n = sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    }
}

async fn problem(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "errors are problem+json"
    );
    (status, r.json().await.unwrap())
}

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["field"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn customer_registers_logs_in_reads_profile_refreshes_and_logs_out() {
    let app = spawn_app().await;
    let user = app.register("alice").await;
    assert_eq!(user["role"], "customer");
    assert!(user.get("password_hash").is_none());

    let tokens = app.login_ok("alice", "correct-horse").await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().unwrap();
    let me: Value = app.get_as("/users/me", access).await.json().await.unwrap();
    assert_eq!(me["username"], "alice");
    let profile: Value = app
        .get_as("/users/profile", access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(profile["id"], me["id"]);

    let refreshed: Value = app
        .post(
            "/auth/refresh",
            json!({"refresh_token": tokens["refresh_token"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let new_access = refreshed["access_token"].as_str().unwrap();
    assert_ne!(refreshed["refresh_token"], tokens["refresh_token"]);
    assert_eq!(
        app.get_as("/users/me", new_access).await.status(),
        StatusCode::OK
    );

    let r = app
        .http
        .post(app.url("/auth/logout"))
        .bearer_auth(new_access)
        .json(&json!({"refresh_token": refreshed["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, p) = problem(
        app.post(
            "/auth/refresh",
            json!({"refresh_token": refreshed["refresh_token"]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(p["code"], "invalid_refresh_token");
    let introspection: Value = app
        .post("/auth/verify", json!({"token": new_access}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(introspection["active"], false);
    assert_eq!(
        app.get_as("/users/me", new_access).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn registration_input_errors_name_the_fields_and_create_nothing() {
    let app = spawn_app().await;
    let before = app.user_count().await;

    let (s, p) = problem(
        app.post(
            "/auth/register",
            json!({"username": "Al", "email": "nope", "password": "short"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), ["username", "email", "password"]);

    let (s, p) = problem(
        app.post(
            "/auth/register",
            json!({"username": "bob", "password": "long-enough"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), ["email"]);

    let (s, p) = problem(
        app.post(
            "/auth/register",
            json!({"username": 42, "email": "b@example.com", "password": "long-enough"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), ["username"]);

    let long = "a".repeat(65);
    let (s, p) = problem(
        app.post(
            "/auth/register",
            json!({"username": long, "email": "b@example.com", "password": "x".repeat(129)}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), ["username", "password"]);

    let (s, p) = problem(
        app.post("/auth/register", json!({"username": "mallory", "email": "m@example.com", "password": "long-enough", "role": "admin"}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), ["role"]);

    let r = app
        .http
        .post(app.url("/auth/register"))
        .header("content-type", "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .unwrap();
    let (s, p) = problem(r).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_json"))
    );

    let r = app
        .http
        .post(app.url("/auth/register"))
        .body("username=x")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let huge =
        json!({"username": "big", "email": "b@example.com", "password": "p".repeat(100_000)});
    let (s, p) = problem(app.post("/auth/register", huge).await).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );

    assert_eq!(
        app.user_count().await,
        before,
        "no bad request created a user"
    );
}

#[tokio::test]
async fn duplicate_username_or_email_is_a_conflict() {
    let app = spawn_app().await;
    app.register("carol").await;
    let (s, p) = problem(
        app.post(
            "/auth/register",
            json!({"username": "carol", "email": "other@example.com", "password": "correct-horse"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::CONFLICT, Some("username_taken"))
    );
    let (s, p) = problem(app.post("/auth/register", json!({"username": "carol2", "email": "CAROL@example.com", "password": "correct-horse"})).await).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::CONFLICT, Some("email_taken"))
    );
}

#[tokio::test]
async fn unknown_user_and_wrong_password_look_the_same() {
    let app = spawn_app().await;
    app.register("dave").await;
    let (s1, mut p1) = problem(app.login("dave", "wrong-password").await).await;
    let (s2, mut p2) = problem(app.login("nobody", "wrong-password").await).await;
    assert_eq!(s1, StatusCode::UNAUTHORIZED);
    assert_eq!(s1, s2);
    p1.as_object_mut().unwrap().remove("request_id");
    p2.as_object_mut().unwrap().remove("request_id");
    assert_eq!(p1, p2);
}

#[tokio::test]
async fn login_is_rate_limited_per_username_and_per_client() {
    let app = spawn_app_with(&[
        "--login-attempts-per-username=3",
        "--login-attempts-per-client=5",
    ])
    .await;
    for _ in 0..3 {
        assert_eq!(
            app.login("erin", "wrong-password").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let r = app.login("erin", "wrong-password").await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let (s, p) = problem(r).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    // Another username from the same client still has its own budget, until the client's runs out.
    assert_eq!(
        app.login("frank", "wrong-password").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("frank", "wrong-password").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

fn sign_raw(header: &Header, claims: &Claims, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).unwrap()
}

#[tokio::test]
async fn forged_and_stale_tokens_are_refused() {
    let app = spawn_app().await;
    let user = app.register("grace").await;
    let signer = app.signer();
    let sub = user["id"].as_str().unwrap();
    let good = signer.claims(sub, Some(Role::Customer), None, Duration::from_secs(300));
    let valid = signer.sign(&good).unwrap();
    assert_eq!(
        app.get_as("/users/me", &valid).await.status(),
        StatusCode::OK
    );

    let mut cases: Vec<(&str, String)> = Vec::new();
    let mut expired = good.clone();
    expired.exp = jsonwebtoken::get_current_timestamp() - 3600;
    cases.push(("expired", signer.sign(&expired).unwrap()));

    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    let mut admin = good.clone();
    admin.role = Some(Role::Admin);
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&admin).unwrap());
    cases.push(("tampered", parts.join(".")));

    let other = generate_jwt_keys();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(signer.kid().to_string());
    cases.push((
        "other key",
        sign_raw(
            &header,
            &good,
            &EncodingKey::from_ed_pem(other.private_pem.as_bytes()).unwrap(),
        ),
    ));

    let none_header = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
        signer.kid()
    ));
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).unwrap());
    cases.push(("alg none", format!("{none_header}.{body}.")));

    let jwks: Value = serde_json::from_str(&app.keys.jwks_json).unwrap();
    let public_x = jwks["keys"][0]["x"].as_str().unwrap().to_string();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(signer.kid().to_string());
    cases.push((
        "HS256 with public key",
        sign_raw(&hs, &good, &EncodingKey::from_secret(public_x.as_bytes())),
    ));
    cases.push((
        "HS256 with raw public key",
        sign_raw(
            &hs,
            &good,
            &EncodingKey::from_secret(&URL_SAFE_NO_PAD.decode(&public_x).unwrap()),
        ),
    ));

    let wrong_aud = Signer::from_pem(
        &app.keys.private_pem,
        mercato_contract::DEFAULT_JWT_ISSUER,
        "someone-else",
    )
    .unwrap();
    cases.push((
        "wrong aud",
        wrong_aud
            .sign(&wrong_aud.claims(sub, Some(Role::Customer), None, Duration::from_secs(60)))
            .unwrap(),
    ));
    let wrong_iss = Signer::from_pem(
        &app.keys.private_pem,
        "evil-issuer",
        mercato_contract::DEFAULT_JWT_AUDIENCE,
    )
    .unwrap();
    cases.push((
        "wrong iss",
        wrong_iss
            .sign(&wrong_iss.claims(sub, Some(Role::Customer), None, Duration::from_secs(60)))
            .unwrap(),
    ));

    let mut unknown_kid = Header::new(Algorithm::EdDSA);
    unknown_kid.kid = Some("no-such-key".into());
    cases.push((
        "unknown kid",
        sign_raw(
            &unknown_kid,
            &good,
            &EncodingKey::from_ed_pem(app.keys.private_pem.as_bytes()).unwrap(),
        ),
    ));
    cases.push(("garbage", "not.a.jwt".into()));

    for (name, token) in cases {
        let r = app.get_as("/users/me", &token).await;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{name} must be refused"
        );
        assert!(r.headers().contains_key("www-authenticate"), "{name}");
        let introspection: Value = app
            .post("/auth/verify", json!({"token": token}))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(introspection["active"], false, "{name} is inactive");
    }
    assert_eq!(
        app.get_as("/users/me", "").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_family() {
    let app = spawn_app().await;
    app.register("heidi").await;
    let first = app.login_ok("heidi", "correct-horse").await;
    let second: Value = app
        .post(
            "/auth/refresh",
            json!({"refresh_token": first["refresh_token"]}),
        )
        .await
        .json()
        .await
        .unwrap();

    let (s, p) = problem(
        app.post(
            "/auth/refresh",
            json!({"refresh_token": first["refresh_token"]}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("refresh_token_reused"))
    );
    // The legitimate successor is dead too: the whole family is revoked.
    let (s, _) = problem(
        app.post(
            "/auth/refresh",
            json!({"refresh_token": second["refresh_token"]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Another login is a new family and works.
    let third = app.login_ok("heidi", "correct-horse").await;
    assert_eq!(
        app.post(
            "/auth/refresh",
            json!({"refresh_token": third["refresh_token"]})
        )
        .await
        .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_yield_at_most_one_successor() {
    let app = spawn_app().await;
    app.register("ivan").await;
    let first = app.login_ok("ivan", "correct-horse").await;
    let attempts = (0..8).map(|_| {
        app.post(
            "/auth/refresh",
            json!({"refresh_token": first["refresh_token"]}),
        )
    });
    let statuses: Vec<StatusCode> = futures::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn customers_cannot_reach_admin_endpoints_or_raise_their_role() {
    let app = spawn_app().await;
    let token = app.customer_token("judy").await;
    assert_eq!(
        problem(app.get_as("/users", &token).await).await.0,
        StatusCode::FORBIDDEN
    );
    let r = app
        .http
        .post(app.url("/users"))
        .bearer_auth(&token)
        .json(&json!({"username": "x1x", "email": "x@example.com", "password": "long-enough", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let r = app
        .http
        .put(app.url("/users/me"))
        .bearer_auth(&token)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap();
    let (s, p) = problem(r).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), ["role"]);
    let me: Value = app.get_as("/users/me", &token).await.json().await.unwrap();
    assert_eq!(me["role"], "customer");

    let r = app.http.get(app.url("/users")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn users_change_their_email_and_password_with_the_current_one() {
    let app = spawn_app().await;
    let token = app.customer_token("kim").await;
    let put = |body: Value| {
        app.http
            .put(app.url("/users/me"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };

    let (s, p) = problem(put(json!({"password": "new-password-1"})).await.unwrap()).await;
    assert_eq!(
        (s, fields(&p)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["current_password".to_string()]
        )
    );
    let (s, p) = problem(
        put(json!({"password": "new-password-1", "current_password": "wrong-one"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, fields(&p)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["current_password".to_string()]
        )
    );

    let r = put(json!({"email": "kim@new.example.com", "password": "new-password-1", "current_password": "correct-horse"})).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["email"], "kim@new.example.com");
    assert_eq!(
        app.login("kim", "correct-horse").await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.login_ok("kim", "new-password-1").await;
}

#[tokio::test]
async fn admin_manages_users() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let r = app
        .http
        .post(app.url("/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "staff", "email": "staff@example.com", "password": "long-enough", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let staff: Value = r.json().await.unwrap();
    assert_eq!(staff["role"], "admin");
    let id = staff["id"].as_str().unwrap();

    let page: Value = app
        .get_as("/users?limit=10", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 2);
    let page: Value = app
        .get_as("/users?role=admin&limit=1&offset=1", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (s, p) = problem(app.get_as("/users?limit=1000", &admin).await).await;
    assert_eq!(
        (s, fields(&p)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["limit".to_string()])
    );

    let one: Value = app
        .get_as(&format!("/users/{id}"), &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["username"], "staff");

    let r = app
        .http
        .put(app.url(&format!("/users/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"role": "customer", "disabled": true}))
        .send()
        .await
        .unwrap();
    let updated: Value = r.json().await.unwrap();
    assert_eq!(
        (updated["role"].as_str(), updated["disabled"].as_bool()),
        (Some("customer"), Some(true))
    );
    assert_eq!(
        app.login("staff", "long-enough").await.status(),
        StatusCode::UNAUTHORIZED,
        "disabled users cannot log in"
    );

    let r = app
        .http
        .delete(app.url(&format!("/users/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        problem(app.get_as(&format!("/users/{id}"), &admin).await)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        problem(app.get_as("/users/not-a-uuid", &admin).await)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let me: Value = app.get_as("/users/me", &admin).await.json().await.unwrap();
    let r = app
        .http
        .delete(app.url(&format!("/users/{}", me["id"].as_str().unwrap())))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, StatusCode::CONFLICT);
}

#[tokio::test]
async fn first_admin_is_created_once() {
    let app = spawn_app().await;
    let config = config(&app.db, app.dir.path(), &[]);
    config.build().await.expect("second start");
    config.build().await.expect("third start");
    let admin = app.admin_token().await;
    let page: Value = app
        .get_as("/users?role=admin", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 1);
}

#[tokio::test]
async fn services_get_scoped_tokens_with_client_credentials() {
    let app = spawn_app().await;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "order"),
        ("client_secret", "order-secret"),
    ];
    let r = app
        .http
        .post(app.url("/auth/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token: Value = r.json().await.unwrap();
    assert_eq!(
        token["scope"],
        format!(
            "{} {}",
            mercato_contract::scopes::PRODUCT_RESERVE,
            mercato_contract::scopes::AUTH_REVOCATIONS
        )
    );
    let introspection: Value = app
        .post("/auth/verify", json!({"token": token["access_token"]}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(introspection["active"], true);
    assert_eq!(introspection["sub"], "order");
    assert!(introspection.get("role").is_none());

    // A service token is not a user: user endpoints refuse it.
    let access = token["access_token"].as_str().unwrap();
    assert_eq!(
        app.get_as("/users/me", access).await.status(),
        StatusCode::FORBIDDEN
    );

    // HTTP Basic and JSON bodies work too.
    let r = app
        .http
        .post(app.url("/auth/token"))
        .basic_auth("payment", Some("payment-secret"))
        .json(&json!({"grant_type": "client_credentials", "scope": "order:read"}))
        .send()
        .await
        .unwrap();
    let token: Value = r.json().await.unwrap();
    assert_eq!(token["scope"], "order:read");

    let bad = [
        ("grant_type", "client_credentials"),
        ("client_id", "order"),
        ("client_secret", "guess"),
    ];
    let (s, p) = problem(
        app.http
            .post(app.url("/auth/token"))
            .form(&bad)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let greedy = [
        ("grant_type", "client_credentials"),
        ("client_id", "order"),
        ("client_secret", "order-secret"),
        ("scope", "order:read"),
    ];
    let (s, p) = problem(
        app.http
            .post(app.url("/auth/token"))
            .form(&greedy)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    let password_grant = [("grant_type", "password")];
    let (s, p) = problem(
        app.http
            .post(app.url("/auth/token"))
            .form(&password_grant)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
}

#[tokio::test]
async fn a_replaced_jwks_file_is_picked_up_without_restart() {
    let app = spawn_app().await;
    let user = app.register("leo").await;
    let sub = user["id"].as_str().unwrap();
    let old = app.signer();
    let old_token = old
        .sign(&old.claims(sub, Some(Role::Customer), None, Duration::from_secs(300)))
        .unwrap();
    assert_eq!(
        app.get_as("/users/me", &old_token).await.status(),
        StatusCode::OK
    );

    let rotated = generate_jwt_keys();
    let new = Signer::from_pem(
        &rotated.private_pem,
        mercato_contract::DEFAULT_JWT_ISSUER,
        mercato_contract::DEFAULT_JWT_AUDIENCE,
    )
    .unwrap();
    let new_token = new
        .sign(&new.claims(sub, Some(Role::Customer), None, Duration::from_secs(300)))
        .unwrap();
    assert_eq!(
        app.get_as("/users/me", &new_token).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Replace the file the way Kubernetes does: write aside, then rename over it.
    let path: PathBuf = app.dir.path().join("jwks.json");
    let tmp = app.dir.path().join("jwks.json.tmp");
    std::fs::write(&tmp, &rotated.jwks_json).unwrap();
    std::fs::rename(&tmp, &path).unwrap();

    let status = poll(
        50,
        || async { app.get_as("/users/me", &new_token).await.status() },
        |s| *s == StatusCode::OK,
    )
    .await;
    assert!(
        status == StatusCode::OK,
        "token signed by the new key is accepted"
    );
    assert_eq!(
        app.get_as("/users/me", &old_token).await.status(),
        StatusCode::UNAUTHORIZED,
        "the removed key no longer verifies"
    );
    let jwks: Value = app
        .http
        .get(app.url("/auth/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], new.kid());
}

#[tokio::test]
async fn operational_endpoints_report_health_metrics_and_the_api() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let public = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(
            public.status(),
            StatusCode::NOT_FOUND,
            "{path} is not public"
        );
    }
    assert_eq!(
        app.http
            .get(app.server.ops_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.http
            .get(app.server.ops_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    app.register("mia").await;
    app.http
        .get(app.url("/users/00000000-0000-0000-0000-000000000000"))
        .send()
        .await
        .unwrap();

    let metrics = app
        .http
        .get(app.server.ops_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"route="/auth/register",status="201""#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="/users/{id}",status="401""#),
        "route templates, not raw paths"
    );
    assert!(metrics.contains("mercato_http_request_duration_seconds_bucket"));
    assert!(metrics.contains("mercato_db_pool_connections"));

    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/auth/register",
        "/auth/login",
        "/auth/token",
        "/users/{id}",
        "/users/me",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }

    let (s, p) = problem(app.http.get(app.url("/nope")).send().await.unwrap()).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("route_not_found"))
    );
    let (s, _) = problem(
        app.http
            .delete(app.url("/auth/login"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(app.server.ops_url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
    let r = app.http.get(app.url("/nope")).send().await.unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        p["request_id"],
        generated.as_str(),
        "problems carry the request id"
    );
}

impl TestApp {
    /// A login as if from client address `from` (the service trusts X-Forwarded-For in
    /// these tests, as it does behind the gateway).
    /// A login from client address `from`, as the gateway vouches for it (signed with
    /// [`EDGE_KEY`]; the app must run with `--edge-key`).
    async fn login_from(&self, from: &str, username: &str, password: &str) -> StatusCode {
        let signed = EDGE_KEY
            .parse::<mercato_kit::edge::EdgeKey>()
            .unwrap()
            .sign(from.parse().unwrap());
        self.http
            .post(self.url("/auth/login"))
            .header(mercato_contract::CLIENT_ADDRESS_HEADER, signed)
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap()
            .status()
    }

    /// A service token for client `order` with exactly `scope`.
    async fn order_token(&self, scope: &str) -> String {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", "order"),
            ("client_secret", "order-secret"),
            ("scope", scope),
        ];
        let r = self
            .http
            .post(self.url("/auth/token"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn feed(&self, token: &str, query: &str) -> reqwest::Response {
        self.get_as(&format!("/internal/revocations{query}"), token)
            .await
    }
}

fn sid_of(access_token: &str) -> String {
    let payload = access_token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn registration_is_rate_limited_per_client_address_and_the_refused_create_nothing() {
    let app = spawn_app_with(&["--registrations-per-client=2"]).await;
    app.register("reg-one").await;
    app.register("reg-two").await;
    let before = app.user_count().await;
    let r = app
        .post(
            "/auth/register",
            json!({"username": "reg-three", "email": "reg-three@example.com", "password": "correct-horse"}),
        )
        .await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let (status, p) = problem(r).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    assert_eq!(app.user_count().await, before);
}

#[tokio::test]
async fn strangers_failing_as_admin_cannot_lock_the_admin_out() {
    let app = spawn_app_with(&[
        &format!("--edge-key={EDGE_KEY}"),
        "--login-attempts-per-username-from-new-addresses=10",
    ])
    .await;
    // The admin has logged in from their usual address before.
    assert_eq!(
        app.login_from("10.0.0.1", "admin", ADMIN_PASSWORD).await,
        StatusCode::OK
    );
    // 35 bad guesses from one address: refused, then limited.
    let mut statuses = Vec::new();
    for _ in 0..35 {
        statuses.push(
            app.login_from("203.0.113.9", "admin", "wrong-password")
                .await,
        );
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert_eq!(statuses[34], StatusCode::TOO_MANY_REQUESTS);
    // The admin logs in from another address, even one never used before.
    assert_eq!(
        app.login_from("10.0.0.2", "admin", ADMIN_PASSWORD).await,
        StatusCode::OK
    );
    // Guesses spread over many addresses use up the loose per-username cap...
    for i in 0..12 {
        app.login_from(&format!("198.51.100.{i}"), "admin", "wrong-password")
            .await;
    }
    assert_eq!(
        app.login_from("198.51.100.200", "admin", "wrong-password")
            .await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...which slows new addresses, but not one the admin has logged in from before.
    assert_eq!(
        app.login_from("10.0.0.1", "admin", ADMIN_PASSWORD).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_logout_ends_its_session_at_once_and_is_published_on_the_feed() {
    let app = spawn_app().await;
    app.register("sam").await;
    let first = app.login_ok("sam", "correct-horse").await;
    let second = app.login_ok("sam", "correct-horse").await;
    let ended = first["access_token"].as_str().unwrap();
    let other = second["access_token"].as_str().unwrap();
    assert_ne!(
        sid_of(ended),
        sid_of(other),
        "each login is its own session"
    );

    let feed_token = app
        .order_token(mercato_contract::scopes::AUTH_REVOCATIONS)
        .await;
    let page: Value = app.feed(&feed_token, "").await.json().await.unwrap();
    let cursor = page["cursor"].as_i64().unwrap();

    let r = app
        .http
        .post(app.url("/auth/logout"))
        .bearer_auth(ended)
        .json(&json!({"refresh_token": first["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let (status, p) = problem(app.get_as("/users/me", ended).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(p["detail"], "session has ended");
    assert_eq!(
        app.get_as("/users/me", other).await.status(),
        StatusCode::OK
    );

    let r = app.feed(&feed_token, &format!("?after={cursor}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page: Value = r.json().await.unwrap();
    assert_eq!(
        page["entries"],
        json!([{"kind": "session", "sid": sid_of(ended), "forget_after": page["entries"][0]["forget_after"]}])
    );
    assert!(page["cursor"].as_i64().unwrap() > cursor);
    let later: Value = app
        .feed(&feed_token, &format!("?after={}", page["cursor"]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(later["entries"], json!([]));
}

#[tokio::test]
async fn the_feed_needs_its_scope_and_a_valid_cursor() {
    let app = spawn_app().await;
    let (status, _) = problem(
        app.http
            .get(app.url("/internal/revocations"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let other_scope = app
        .order_token(mercato_contract::scopes::PRODUCT_RESERVE)
        .await;
    let (status, _) = problem(app.feed(&other_scope, "").await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = problem(app.feed(&app.admin_token().await, "").await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let token = app
        .order_token(mercato_contract::scopes::AUTH_REVOCATIONS)
        .await;
    for bad in ["?after=-1", "?after=x"] {
        let (status, p) = problem(app.feed(&token, bad).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(fields(&p), ["after"], "{bad}");
    }
}

#[tokio::test]
async fn a_demoted_admin_cannot_create_users_and_the_demotion_is_on_the_feed() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let r = app
        .http
        .post(app.url("/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "boss", "email": "boss@example.com", "password": "correct-horse", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let boss_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let boss = app.login_ok("boss", "correct-horse").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let r = app
        .http
        .put(app.url(&format!("/users/{boss_id}")))
        .bearer_auth(&admin)
        .json(&json!({"role": "customer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let before = app.user_count().await;
    let r = app
        .http
        .post(app.url("/users"))
        .bearer_auth(&boss)
        .json(&json!({"username": "minion", "email": "minion@example.com", "password": "correct-horse", "role": "admin"}))
        .send()
        .await
        .unwrap();
    let (status, p) = problem(r).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(p["detail"], "session has ended");
    assert_eq!(app.user_count().await, before, "no user was created");

    let token = app
        .order_token(mercato_contract::scopes::AUTH_REVOCATIONS)
        .await;
    let page: Value = app.feed(&token, "").await.json().await.unwrap();
    let voided: Vec<&Value> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "user" && e["sub"] == boss_id.as_str())
        .collect();
    assert_eq!(voided.len(), 1, "{page}");

    // A new login right away is a customer session that works.
    let fresh = app.login_ok("boss", "correct-horse").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let me: Value = app.get_as("/users/me", &fresh).await.json().await.unwrap();
    assert_eq!(me["role"], "customer");
}

#[test]
fn request_and_response_bodies_never_show_secrets_in_debug() {
    use mercato_auth::routes::auth::{
        LoginRequest, LogoutRequest, RefreshRequest, RegisterRequest, ServiceToken, TokenPair,
        TokenRequest, VerifyRequest,
    };
    use mercato_auth::routes::users::{CreateUser, UpdateMe, UpdateUser};
    let secret = "sup3r-s3cret-value";
    let shown = [
        format!(
            "{:?}",
            RegisterRequest {
                username: "u".into(),
                email: "e@x.io".into(),
                password: secret.into()
            }
        ),
        format!(
            "{:?}",
            LoginRequest {
                username: "u".into(),
                password: secret.into()
            }
        ),
        format!(
            "{:?}",
            RefreshRequest {
                refresh_token: secret.into()
            }
        ),
        format!(
            "{:?}",
            LogoutRequest {
                refresh_token: secret.into()
            }
        ),
        format!(
            "{:?}",
            VerifyRequest {
                token: secret.into()
            }
        ),
        format!(
            "{:?}",
            UpdateMe {
                email: None,
                password: Some(secret.into()),
                current_password: Some(secret.into())
            }
        ),
        format!(
            "{:?}",
            CreateUser {
                username: "u".into(),
                email: "e@x.io".into(),
                password: secret.into(),
                role: Role::Admin
            }
        ),
        format!(
            "{:?}",
            UpdateUser {
                email: None,
                password: Some(secret.into()),
                role: None,
                disabled: None
            }
        ),
        format!(
            "{:?}",
            TokenPair {
                access_token: secret.into(),
                token_type: "Bearer".into(),
                expires_in: 1,
                refresh_token: secret.into(),
                refresh_expires_in: 1
            }
        ),
        format!(
            "{:?}",
            ServiceToken {
                access_token: secret.into(),
                token_type: "Bearer".into(),
                expires_in: 1,
                scope: "s".into()
            }
        ),
        format!(
            "{:?}",
            TokenRequest {
                grant_type: None,
                client_id: Some("order".into()),
                client_secret: Some(secret.into()),
                scope: None
            }
        ),
    ];
    for s in &shown {
        assert!(!s.contains(secret), "{s}");
        assert!(s.contains("***"), "{s}");
    }
}

#[test]
fn the_configuration_never_shows_secrets_in_debug() {
    let db = "postgres://auth:db-pa55word@db:5432/auth";
    let config = Config::try_parse_from([
        "mercato-auth",
        &format!("--database-url={db}"),
        "--jwks-path=/keys/jwks.json",
        "--jwt-private-key-path=/keys/private.pem",
        "--admin-password=admin-pa55word",
        "--service-clients=order=client-pa55word",
    ])
    .unwrap();
    let shown = format!("{config:?}");
    for secret in ["db-pa55word", "admin-pa55word", "client-pa55word"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(
        shown.contains("/keys/private.pem"),
        "paths are not secret: {shown}"
    );
}

/// The schema the served `/openapi.json` gives a component.
async fn served_schema(app: &TestApp, name: &str) -> Value {
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    doc["components"]["schemas"][name].clone()
}

/// Every required property is there, and every property is one the schema names.
fn assert_fits(body: &Value, schema: &Value) {
    let properties = schema["properties"].as_object().unwrap();
    for required in schema["required"].as_array().unwrap() {
        assert!(
            body.get(required.as_str().unwrap()).is_some(),
            "{required} missing from {body}"
        );
    }
    for key in body.as_object().unwrap().keys() {
        assert!(properties.contains_key(key), "{key} is not in the schema");
    }
}

#[tokio::test]
async fn introspection_answers_fit_the_documented_schema() {
    let app = spawn_app().await;
    let schema = served_schema(&app, "Introspection").await;
    let r = app
        .post("/auth/verify", json!({"token": "not-a-token"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let inactive: Value = r.json().await.unwrap();
    assert_eq!(inactive, json!({"active": false}));
    assert_fits(&inactive, &schema);

    let token = app.admin_token().await;
    let r = app.post("/auth/verify", json!({"token": token})).await;
    let active: Value = r.json().await.unwrap();
    assert_eq!(active["active"], true);
    assert_eq!(active["role"], "admin");
    assert_fits(&active, &schema);
}

#[tokio::test]
async fn an_offset_above_its_documented_maximum_is_refused() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let offset = doc["paths"]["/users"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "offset")
        .unwrap()
        .clone();
    let maximum = offset["schema"]["maximum"]
        .as_i64()
        .expect("the document gives offset a maximum");

    let r = app
        .get_as(&format!("/users?offset={}", maximum + 1), &admin)
        .await;
    let (status, p) = problem(r).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&p), vec!["offset"]);

    let r = app
        .get_as(&format!("/users?offset={maximum}"), &admin)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}
