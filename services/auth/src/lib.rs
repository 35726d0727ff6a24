//! The auth service: users, login with rate limits, refresh-token rotation,
//! client credentials for services, introspection and the public key set.

pub mod config;
pub mod domain;
pub mod openapi;
pub mod passwords;
pub mod revocations;
pub mod routes;
pub mod tokens;
pub mod users;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use mercato_contract::{Component, service_clients};
use mercato_kit::config::ServerConfig;
use mercato_kit::jwt::{Role, Signer, Verifier};
use mercato_kit::ratelimit::KeyedLimiter;
use mercato_kit::secret::Secret;
use mercato_kit::server::{self, App, Ops, ServiceConfig};
use sqlx::PgPool;

pub use config::Config;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Shared state of the auth service's handlers.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub pool: PgPool,
    pub signer: Arc<Signer>,
    pub verifier: Arc<Verifier>,
    pub hasher: passwords::Hasher,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Login attempts per (username, client address): the tight limit.
    pub login_by_username_and_client: KeyedLimiter,
    /// Login attempts per username from addresses it never logged in from: the loose cap.
    pub login_by_username: KeyedLimiter,
    pub login_by_client: KeyedLimiter,
    pub register_by_client: KeyedLimiter,
    /// Checks the client address the gateway signs; `None` believes no such header.
    pub edge_key: Option<mercato_kit::edge::EdgeKey>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// Everything the service runs, built so tests can drive it on a random port.
impl ServiceConfig for Config {
    const COMPONENT: Component = Component::Auth;

    fn server(&self) -> &ServerConfig {
        &self.server
    }

    /// Connects, migrates, loads keys, creates the first admin and syncs service clients.
    async fn build(&self) -> anyhow::Result<App> {
        let config = self;
        let verifier = Verifier::load(&config.jwt)?;
        let signer = Arc::new(Signer::from_pem_file(
            &config.jwt_private_key_path,
            &config.jwt.jwt_issuer,
            &config.jwt.jwt_audience,
        )?);
        let hasher = passwords::Hasher::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            config.argon2_parallelism,
            match config.argon2_max_concurrent {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
        )?;
        let clients = parse_service_clients(config.service_clients.expose())?;
        let pool = mercato_kit::db::connect_and_migrate(&config.database, &MIGRATOR).await;

        tokens::sync_service_clients(&pool, &clients).await?;
        bootstrap_admin(&pool, &hasher, config).await?;

        let state = AppState(Arc::new(Inner {
            pool: pool.clone(),
            signer,
            verifier: verifier.clone(),
            hasher,
            access_ttl: config.access_ttl(),
            refresh_ttl: config.refresh_ttl(),
            login_by_username_and_client: KeyedLimiter::new(
                config.login_attempts_per_username,
                config.login_window(),
            ),
            login_by_username: KeyedLimiter::new(
                config.login_attempts_per_username_from_new_addresses,
                config.login_window(),
            ),
            register_by_client: KeyedLimiter::new(
                config.registrations_per_client,
                config.login_window(),
            ),
            login_by_client: KeyedLimiter::new(
                config.login_attempts_per_client,
                config.login_window(),
            ),
            edge_key: config.edge_key.clone(),
        }));

        let signer = state.signer.clone();
        let keys = verifier.clone();
        let ops = Ops::new(Component::Auth, Some(pool), openapi::document()).with_check(Arc::new(
            move || {
                // Tokens signed with a key the JWKS lacks would fail everywhere else.
                if keys.knows(&signer.kid()) {
                    Ok(())
                } else {
                    Err("signing key is not in the JWKS".into())
                }
            },
        ));
        let router = server::build(routes::router(state.clone()), ops, &config.server);
        // Purges expired token rows every hour.
        let pool = state.pool.clone();
        let purge = move || {
            server::spawn_every(
                Duration::from_secs(3600),
                "purged expired tokens",
                move || {
                    let pool = pool.clone();
                    async move { tokens::purge_expired(&pool).await }
                },
            );
        };
        // A rotated signing key is picked up as the JWKS is: by polling the mounted file.
        let (signer, keys) = (state.signer.clone(), state.verifier.clone());
        let every = Duration::from_secs(config.jwt.jwks_reload_interval_secs.max(1));
        let reload_signer = move || {
            signer.spawn_reloader(&keys, every);
        };
        Ok(App::new(router, state.verifier.clone(), &config.jwt)
            .with_task(purge)
            .with_task(reload_signer))
    }
}

fn parse_service_clients(value: &str) -> anyhow::Result<Vec<(String, String, Vec<String>)>> {
    let pairs = service_clients::parse(value)
        .map_err(|e| anyhow::anyhow!("invalid SERVICE_CLIENTS: {e}"))?;
    pairs
        .into_iter()
        .map(|(id, secret)| {
            let scopes = Component::from_name(&id)
                .and_then(Component::service_client_scopes)
                .ok_or_else(|| {
                    anyhow::anyhow!("invalid SERVICE_CLIENTS: unknown service client {id:?}")
                })?;
            Ok((id, secret, scopes.iter().map(|s| s.to_string()).collect()))
        })
        .collect()
}

/// Creates the configured first admin unless that username exists (idempotent; an admin
/// whose password was changed later keeps it).
async fn bootstrap_admin(
    pool: &PgPool,
    hasher: &passwords::Hasher,
    config: &Config,
) -> anyhow::Result<()> {
    let Some(password) = config.admin_password.as_ref().map(Secret::expose) else {
        tracing::warn!("ADMIN_PASSWORD not set: no first admin created");
        return Ok(());
    };
    let invalid = |e: mercato_kit::FieldError| {
        anyhow::anyhow!("invalid first admin setting {}: {}", e.field, e.message)
    };
    let username =
        domain::Username::parse("ADMIN_USERNAME", &config.admin_username).map_err(invalid)?;
    let email = domain::Email::parse("ADMIN_EMAIL", &config.admin_email).map_err(invalid)?;
    let password = domain::Password::parse("ADMIN_PASSWORD", password).map_err(invalid)?;
    if users::by_username(pool, username.as_str()).await?.is_some() {
        return Ok(());
    }
    let hash = hasher.hash(password.expose().to_string()).await?;
    let created = users::insert_if_absent(
        pool,
        &users::NewUser {
            username: username.as_str(),
            email: email.as_str(),
            password_hash: &hash,
            role: Role::Admin,
        },
    )
    .await?;
    if created {
        tracing::info!(username = username.as_str(), "created first admin");
    }
    Ok(())
}
