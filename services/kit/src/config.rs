//! Typed configuration: every setting is an environment variable and a CLI flag at once,
//! and a missing or invalid one stops the process with a single line naming it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, Parser, ValueEnum};
use mercato_contract::{DEFAULT_JWT_AUDIENCE, DEFAULT_JWT_ISSUER, OPS_PORT, env};

/// Parses the process's configuration, or exits: `--help`/`--version` print and exit 0;
/// a bad setting prints one line naming it and exits 2.
pub fn parse<T: Parser>() -> T {
    match T::try_parse() {
        Ok(config) => config,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            eprintln!("{}", one_line(&e.render().to_string()));
            std::process::exit(2);
        }
    }
}

/// Folds clap's multi-line message (which names the flag) into one line, without usage.
fn one_line(rendered: &str) -> String {
    let body = rendered.split("\n\nUsage:").next().unwrap_or(rendered);
    let body = body
        .split("\n\nFor more information")
        .next()
        .unwrap_or(body);
    let line = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect::<Vec<_>>()
        .join(" ");
    format!("{line} (each flag can also be set by the environment variable shown in --help)")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON when stdout is not a terminal (a cluster), pretty otherwise.
    Auto,
    Json,
    Pretty,
}

/// HTTP server and process settings shared by every service.
#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// Address the HTTP server listens on.
    #[arg(long, env = env::HTTP_ADDR, default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Address of the operational endpoints (`/healthz`, `/readyz`, `/metrics`): a port
    /// of its own, which the Service for the public API does not expose.
    #[arg(long, env = env::OPS_ADDR, default_value_t = SocketAddr::from(([0, 0, 0, 0], OPS_PORT)))]
    pub ops_addr: SocketAddr,
    /// Log output format.
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value = "auto")]
    pub log_format: LogFormat,
    /// Log filter, in `tracing` EnvFilter syntax.
    #[arg(long, env = env::LOG_LEVEL, default_value = "info")]
    pub log_level: String,
    /// OTLP/HTTP collector to send traces to (`/v1/traces` is appended), e.g.
    /// `http://otel-collector:4318`. Unset: no exporter, nothing leaves the process.
    #[arg(long, env = env::OTEL_EXPORTER_OTLP_ENDPOINT)]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Longest a request may take before the server answers 503.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// How long in-flight requests may drain after SIGTERM before the process exits.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
}

impl ServerConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

/// PostgreSQL connection settings. `Debug` hides the password in the URL.
#[derive(Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL, e.g. postgres://user:pass@host:5432/db.
    #[arg(long, env = env::DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// Maximum connections in the pool.
    #[arg(long, env = env::DATABASE_MAX_CONNECTIONS, default_value_t = 10)]
    pub database_max_connections: u32,
    /// How long one attempt to reach the database may take. Start-up retries (with a
    /// growing wait, not ready meanwhile) until the database answers: it never gives up.
    #[arg(long, env = "DATABASE_CONNECT_TIMEOUT_SECS", default_value_t = 5)]
    pub database_connect_timeout_secs: u64,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field(
                "database_url",
                &crate::secret::redact_url(&self.database_url),
            )
            .field("database_max_connections", &self.database_max_connections)
            .field(
                "database_connect_timeout_secs",
                &self.database_connect_timeout_secs,
            )
            .finish()
    }
}

/// Token verification settings shared by every service.
#[derive(Debug, Clone, Args)]
pub struct JwtConfig {
    /// Expected `iss` of access tokens.
    #[arg(long, env = env::JWT_ISSUER, default_value = DEFAULT_JWT_ISSUER)]
    pub jwt_issuer: String,
    /// Expected `aud` of access tokens.
    #[arg(long, env = env::JWT_AUDIENCE, default_value = DEFAULT_JWT_AUDIENCE)]
    pub jwt_audience: String,
    /// Path of the JWKS file holding the public keys tokens are verified with.
    #[arg(long, env = env::JWKS_PATH)]
    pub jwks_path: PathBuf,
    /// How often the JWKS file is checked for changes.
    #[arg(long, env = env::JWKS_RELOAD_INTERVAL_SECS, default_value_t = 5)]
    pub jwks_reload_interval_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    // Its own variable, so a DATABASE_URL in the test's environment (make test sets one)
    // cannot satisfy it.
    #[derive(Debug, Parser)]
    struct T {
        /// A required setting.
        #[arg(long, env = "MERCATO_KIT_TEST_NEVER_SET")]
        some_setting: String,
    }

    #[test]
    fn database_settings_never_show_the_password() {
        let c = DatabaseConfig {
            database_url: "postgres://order:pa55word-xyz@db:5432/order".into(),
            database_max_connections: 5,
            database_connect_timeout_secs: 1,
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("pa55word-xyz"), "{shown}");
        assert!(
            shown.contains("postgres://order:***@db:5432/order"),
            "{shown}"
        );
    }

    #[test]
    fn missing_setting_is_one_line_naming_it() {
        let e = T::try_parse_from(["x"]).unwrap_err();
        let line = one_line(&e.render().to_string());
        assert!(!line.contains('\n'));
        assert!(line.contains("--some-setting"), "{line}");
    }
}
