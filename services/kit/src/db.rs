//! PostgreSQL pool and embedded migrations, run at start-up.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseConfig;

/// Connects, waiting up to the configured time for the database to come up (in a
/// cluster the service often starts before its PostgreSQL is ready).
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let deadline = Instant::now() + Duration::from_secs(config.database_connect_timeout_secs);
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&config.database_url)
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(e) if Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, retry_in = ?delay, "database not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => anyhow::bail!(
                "cannot connect to the database ({}): {e}",
                redact(&config.database_url)
            ),
        }
    }
}

/// Connects and applies the service's migrations. sqlx takes an advisory lock while
/// migrating, so replicas starting together apply each migration once.
pub async fn connect_and_migrate(
    config: &DatabaseConfig,
    migrator: &Migrator,
) -> anyhow::Result<PgPool> {
    let pool = connect(config).await?;
    migrator
        .run(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("database migration failed: {e}"))?;
    Ok(pool)
}

/// The URL without its password, for error messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_the_password() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
        assert_eq!(super::redact("postgres://h/d"), "postgres://h/d");
    }
}
