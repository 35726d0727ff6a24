//! Test support for services' integration tests: a fresh PostgreSQL database per test
//! and a real HTTP server on a random port.

use std::time::Duration;

pub mod commits;
pub mod otlp;

use sqlx::{Connection, Executor, PgConnection};

/// Where tests find PostgreSQL: `DATABASE_URL` (set by `make test`, which finds or starts
/// a server), else the conventional local server.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database created for one test and dropped when the test ends.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    name: String,
    server: String,
}

impl TestDb {
    /// A fresh database with `migrator`'s migrations applied, and a pool on it (for tests
    /// of a service's repository and domain functions without its HTTP server).
    pub async fn migrated(migrator: &sqlx::migrate::Migrator) -> (Self, sqlx::PgPool) {
        let db = Self::new().await;
        let pool = sqlx::PgPool::connect(&db.url)
            .await
            .expect("connect to the test database");
        migrator.run(&pool).await.expect("apply the migrations");
        (db, pool)
    }

    pub async fn new() -> Self {
        let db = Self::not_created_yet();
        db.create().await;
        db
    }

    /// A name and URL for a database that does not exist until [`TestDb::create`] (a
    /// service started before its database); dropped at the end all the same.
    pub fn not_created_yet() -> Self {
        let server = server_url();
        let name = format!("mercato_test_{}", uuid::Uuid::new_v4().simple());
        let mut url = url::Url::parse(&server).expect("DATABASE_URL is a URL");
        url.set_path(&name);
        crate::db::plain_on_loopback(&mut url);
        Self {
            url: url.to_string(),
            name,
            server,
        }
    }

    /// Creates the database.
    pub async fn create(&self) {
        let (server, name) = (&self.server, &self.name);
        let mut conn = PgConnection::connect(server).await.unwrap_or_else(|e| {
            panic!("tests need PostgreSQL at {server} (run them with `make test`, which finds or starts one): {e}")
        });
        conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .expect("create test database");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs inside the test's runtime; a separate thread with its own runtime
        // can block on the async driver without starving it.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&server).await.ok()?;
                conn.execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// A JWT key pair on disk, so a service under test verifies tokens the test mints.
#[derive(Debug)]
pub struct TestKeys {
    pub dir: tempfile::TempDir,
    pub keys: mercato_contract::credentials::JwtKeyMaterial,
    pub signer: crate::jwt::Signer,
}

impl Default for TestKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl TestKeys {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = mercato_contract::credentials::generate_jwt_keys();
        std::fs::write(self_path(&dir, "jwks.json"), &keys.jwks_json).expect("write jwks");
        std::fs::write(self_path(&dir, "private.pem"), &keys.private_pem).expect("write key");
        let signer = crate::jwt::Signer::from_pem(
            &keys.private_pem,
            mercato_contract::DEFAULT_JWT_ISSUER,
            mercato_contract::DEFAULT_JWT_AUDIENCE,
        )
        .expect("signer");
        Self { dir, keys, signer }
    }

    pub fn jwks_path(&self) -> std::path::PathBuf {
        self_path(&self.dir, "jwks.json")
    }

    pub fn private_key_path(&self) -> std::path::PathBuf {
        self_path(&self.dir, "private.pem")
    }

    /// A user token for `user_id` with `role`.
    pub fn user(&self, user_id: &str, role: crate::jwt::Role) -> String {
        let claims = self
            .signer
            .claims(user_id, Some(role), None, Duration::from_secs(600));
        self.signer.sign(&claims).expect("sign")
    }

    /// A service token for `client` with `scopes`.
    pub fn service(&self, client: &str, scopes: &[&str]) -> String {
        let claims = self.signer.claims(
            client,
            None,
            Some(scopes.join(" ")),
            Duration::from_secs(600),
        );
        self.signer.sign(&claims).expect("sign")
    }
}

fn self_path(dir: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
    dir.path().join(name)
}

/// Polls `probe` every 100 ms, up to `tries` times, until `done` holds for its value;
/// returns the last value, for the caller to assert on (work that happens in the
/// background: outbox deliveries, sweeps, key reloads).
pub async fn poll<T, Fut>(
    tries: u32,
    mut probe: impl FnMut() -> Fut,
    done: impl Fn(&T) -> bool,
) -> T
where
    Fut: std::future::Future<Output = T>,
{
    let mut value = probe().await;
    for _ in 1..tries.max(1) {
        if done(&value) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        value = probe().await;
    }
    value
}

/// The value of one series (`mercato_orders{status="paid"}`, exactly as exposed) in the
/// `/metrics` of `server`'s ops port; `None` when it is not there.
pub async fn metric(server: &crate::server::Spawned, series: &str) -> Option<f64> {
    let text = reqwest::get(server.ops_url("/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics text");
    text.lines()
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, value)| value.parse().ok())
}

/// A service running on a random local port until dropped.
pub use crate::server::Spawned as TestServer;

/// The status and problem document of an error answer, checking it is problem+json.
pub async fn problem(r: reqwest::Response) -> (reqwest::StatusCode, serde_json::Value) {
    let status = r.status();
    assert_eq!(
        r.headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some(crate::error::PROBLEM_JSON)
    );
    (status, r.json().await.expect("a problem document"))
}

/// The fields a problem document names, in order.
pub fn fields(problem: &serde_json::Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default()
}

/// A stand-in for the auth service as other services use it: the client-credentials grant
/// (any client gets a service token signed with the test keys) and the revocation feed,
/// serving whatever the test [`TestAuth::revoke`]s.
#[derive(Debug)]
pub struct TestAuth {
    pub server: TestServer,
    entries: std::sync::Arc<std::sync::Mutex<Vec<crate::revocation::Revocation>>>,
}

impl TestAuth {
    pub async fn start(keys: &TestKeys) -> Self {
        let (router, entries) = Self::routes(keys);
        Self {
            server: TestServer::start(crate::server::Routers::public_only(router)).await,
            entries,
        }
    }

    /// The stand-in's routes (the token grant and the feed) and the feed's entries, for a
    /// test that serves them from a fake auth of its own.
    #[allow(clippy::type_complexity)]
    pub fn routes(
        keys: &TestKeys,
    ) -> (
        axum::Router,
        std::sync::Arc<std::sync::Mutex<Vec<crate::revocation::Revocation>>>,
    ) {
        use crate::revocation::{FEED_PATH, RevocationPage};
        use axum::routing::{get, post};
        let entries = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let token = keys.service("test-client", &[mercato_contract::scopes::AUTH_REVOCATIONS]);
        let feed = entries.clone();
        let router = axum::Router::new()
            .route(
                "/auth/token",
                post(move || {
                    let token = token.clone();
                    async move {
                        axum::Json(serde_json::json!({
                            "access_token": token, "token_type": "Bearer", "expires_in": 600,
                            "scope": mercato_contract::scopes::AUTH_REVOCATIONS,
                        }))
                    }
                }),
            )
            .route(
                FEED_PATH,
                get(
                    move |crate::Query(q): crate::Query<crate::revocation::FeedQuery>| {
                        let feed = feed.clone();
                        async move {
                            let all = feed.lock().map(|v| v.clone()).unwrap_or_default();
                            let after = usize::try_from(q.after.unwrap_or(0)).unwrap_or(0);
                            axum::Json(RevocationPage {
                                entries: all.iter().skip(after).cloned().collect(),
                                cursor: i64::try_from(all.len()).unwrap_or(i64::MAX),
                                more: false,
                            })
                        }
                    },
                ),
            );
        (router, entries)
    }

    /// Publishes an entry on the feed.
    pub fn revoke(&self, entry: crate::revocation::Revocation) {
        if let Ok(mut v) = self.entries.lock() {
            v.push(entry);
        }
    }

    /// The flags that point a service's client (and revocation feed) at this stand-in.
    pub fn flags(&self) -> Vec<String> {
        vec![
            format!("--auth-url={}", self.server.url("")),
            "--client-id=test-client".into(),
            "--client-secret=test-secret".into(),
        ]
    }
}

/// A service with a database on a random local port: a fresh database, test keys, a stand-in
/// auth service for its client and revocation feed, and the service built from `extra`
/// flags as its binary would be, background work started.
#[derive(Debug)]
pub struct TestService {
    pub server: TestServer,
    pub http: reqwest::Client,
    pub keys: TestKeys,
    pub auth: TestAuth,
    /// The service's own database, migrated.
    pub pool: sqlx::PgPool,
    pub db: TestDb,
}

impl TestService {
    pub async fn start<C: crate::server::ServiceConfig>(extra: &[&str]) -> Self {
        let db = TestDb::new().await;
        let keys = TestKeys::new();
        let auth = TestAuth::start(&keys).await;
        let mut args = vec![
            format!("mercato-{}", C::COMPONENT.name()),
            format!("--database-url={}", db.url),
            format!("--jwks-path={}", keys.jwks_path().display()),
            "--log-level=warn".into(),
        ];
        args.extend(auth.flags());
        args.extend(extra.iter().map(|s| s.to_string()));
        let config = C::try_parse_from(args).expect("test configuration");
        let app = config.build().await.expect("the service builds");
        let server = TestServer::start(app.start()).await;
        let pool = sqlx::PgPool::connect(&db.url)
            .await
            .expect("connect to the test database");
        Self {
            server,
            http: reqwest::Client::new(),
            keys,
            auth,
            pool,
            db,
        }
    }

    /// `GET path` with a bearer token.
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.server.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("the service answers")
    }

    /// `POST path` with a bearer token and a JSON body.
    pub async fn post(
        &self,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .post(self.server.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("the service answers")
    }

    /// A customer's token for user `id`.
    pub fn customer(&self, id: uuid::Uuid) -> String {
        self.keys.user(&id.to_string(), crate::jwt::Role::Customer)
    }

    /// An admin's token.
    pub fn admin(&self) -> String {
        self.keys
            .user(&uuid::Uuid::new_v4().to_string(), crate::jwt::Role::Admin)
    }
}
