//! Test support for services' integration tests: a fresh PostgreSQL database per test
//! and a real HTTP server on a random port.

use std::time::Duration;

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
    pub async fn new() -> Self {
        let server = server_url();
        let name = format!("mercato_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&server).await.unwrap_or_else(|e| {
            panic!("tests need PostgreSQL at {server} (run them with `make test`, which finds or starts one): {e}")
        });
        conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .expect("create test database");
        let mut url = url::Url::parse(&server).expect("DATABASE_URL is a URL");
        url.set_path(&name);
        Self {
            url: url.to_string(),
            name,
            server,
        }
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

/// A service running on a random local port until dropped.
pub use crate::server::Spawned as TestServer;
