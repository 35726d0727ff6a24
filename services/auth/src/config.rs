//! The auth service's settings (environment variables and flags; `--help` lists them).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use mercato_contract::{
    DEFAULT_ACCESS_TOKEN_TTL_SECS, DEFAULT_ADMIN_EMAIL, DEFAULT_ADMIN_USERNAME,
    DEFAULT_REFRESH_TOKEN_TTL_SECS, env,
};
use mercato_kit::config::{DatabaseConfig, JwtConfig, ServerConfig};
use mercato_kit::secret::Secret;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "mercato-auth",
    version,
    about = "Mercato auth service: users, login, tokens"
)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub jwt: JwtConfig,
    /// PKCS#8 PEM file of the Ed25519 key access tokens are signed with.
    #[arg(long, env = env::JWT_PRIVATE_KEY_PATH)]
    pub jwt_private_key_path: PathBuf,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = env::ACCESS_TOKEN_TTL_SECS, default_value_t = DEFAULT_ACCESS_TOKEN_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(30..=86_400))]
    pub access_token_ttl_secs: u64,
    /// Lifetime of refresh tokens, in seconds.
    #[arg(long, env = env::REFRESH_TOKEN_TTL_SECS, default_value_t = DEFAULT_REFRESH_TOKEN_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    pub refresh_token_ttl_secs: u64,
    /// Username of the first admin, created at start-up if no user has it.
    #[arg(long, env = env::ADMIN_USERNAME, default_value = DEFAULT_ADMIN_USERNAME)]
    pub admin_username: String,
    /// Email of the first admin.
    #[arg(long, env = env::ADMIN_EMAIL, default_value = DEFAULT_ADMIN_EMAIL)]
    pub admin_email: String,
    /// Password of the first admin; without it no admin is created.
    #[arg(long, env = env::ADMIN_PASSWORD, hide_env_values = true)]
    pub admin_password: Option<Secret<String>>,
    /// Service clients as `id=secret` pairs, comma separated; their scopes come from the
    /// contract. Clients not listed are removed.
    #[arg(long, env = env::SERVICE_CLIENTS, hide_env_values = true, default_value = "")]
    pub service_clients: Secret<String>,
    /// Argon2id memory cost in KiB (OWASP: 19456 with 2 iterations).
    #[arg(long, env = "ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    #[arg(long, env = "ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,
    /// Argon2id parallelism.
    #[arg(long, env = "ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,
    /// Password hashes computed at once (each holds the Argon2 memory cost); 0 means one
    /// per CPU core.
    #[arg(long, env = "ARGON2_MAX_CONCURRENT", default_value_t = 0)]
    pub argon2_max_concurrent: usize,
    /// Login attempts allowed per username from one client address within the login
    /// window (the tight limit; strangers elsewhere do not use it up).
    #[arg(long, env = "LOGIN_ATTEMPTS_PER_USERNAME", default_value_t = 5)]
    pub login_attempts_per_username: u32,
    /// Login attempts allowed per username, summed over the addresses it has never logged
    /// in from successfully, within the login window: slows a guess spread over many
    /// addresses without locking the owner out of an address they used before.
    #[arg(
        long,
        env = "LOGIN_ATTEMPTS_PER_USERNAME_FROM_NEW_ADDRESSES",
        default_value_t = 100
    )]
    pub login_attempts_per_username_from_new_addresses: u32,
    /// Registrations allowed per client address within the login window (each runs Argon2).
    #[arg(long, env = "REGISTRATIONS_PER_CLIENT", default_value_t = 10)]
    pub registrations_per_client: u32,
    /// Login attempts allowed per client address within the login window.
    #[arg(long, env = "LOGIN_ATTEMPTS_PER_CLIENT", default_value_t = 30)]
    pub login_attempts_per_client: u32,
    /// The login rate-limit window, in seconds.
    #[arg(long, env = "LOGIN_WINDOW_SECS", default_value_t = 60)]
    pub login_window_secs: u64,
    /// The gateway's edge key: with it, the client address the gateway signs counts for
    /// the per-client login limit; without it (or unsigned), the TCP peer does.
    #[arg(long, env = env::EDGE_KEY, hide_env_values = true)]
    pub edge_key: Option<mercato_kit::edge::EdgeKey>,
}

impl Config {
    pub fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_ttl_secs)
    }
    pub fn refresh_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_token_ttl_secs)
    }
    pub fn login_window(&self) -> Duration {
        Duration::from_secs(self.login_window_secs)
    }
}
