//! PostgreSQL pool and embedded migrations, run at start-up.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseConfig;
use crate::startup::Startup;

/// The first wait between attempts, and the longest: a database that comes up is noticed
/// within this, and a missing one costs a log line this often.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LONGEST_RETRY: Duration = Duration::from_secs(10);

/// Connects, trying until the database answers (in a cluster the service often starts
/// before its PostgreSQL, or its PostgreSQL cannot be scheduled yet): each failure is
/// logged, with a growing wait between attempts, and reported as the reason the service
/// is not ready.
pub async fn connect(config: &DatabaseConfig) -> PgPool {
    let mut retry = Backoff::default();
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(Duration::from_secs(
                config.database_connect_timeout_secs.max(1),
            ))
            .connect(&config.database_url)
            .await;
        match attempt {
            Ok(pool) => return pool,
            Err(e) => {
                let reason = format!(
                    "database not reachable yet ({}): {e}",
                    redact(&config.database_url)
                );
                retry.wait(reason).await;
            }
        }
    }
}

/// Connects and applies the service's migrations, retrying both until they succeed (a
/// migration interrupted by the database going away is retried, and one that cannot
/// apply keeps the service not ready with the reason, where the operator and a human
/// see it). sqlx takes an advisory lock while migrating, so replicas starting together
/// apply each migration once.
pub async fn connect_and_migrate(config: &DatabaseConfig, migrator: &Migrator) -> PgPool {
    let pool = connect(config).await;
    let mut retry = Backoff::default();
    loop {
        match migrator.run(&pool).await {
            Ok(()) => {
                Startup::report("database connected and migrated");
                return pool;
            }
            Err(e) => retry.wait(format!("database migration failed: {e}")).await,
        }
    }
}

/// Waits between attempts, doubling up to [`LONGEST_RETRY`], logging and reporting why.
#[derive(Debug)]
struct Backoff {
    delay: Duration,
    attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            delay: FIRST_RETRY,
            attempts: 0,
        }
    }
}

impl Backoff {
    async fn wait(&mut self, reason: String) {
        self.attempts += 1;
        tracing::warn!(attempt = self.attempts, retry_in = ?self.delay, "{reason}");
        Startup::report(reason);
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(LONGEST_RETRY);
    }
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

/// `sslmode=disable` on a URL to this machine that names no `sslmode`: sqlx and libpq
/// would otherwise negotiate TLS whenever the server offers it (Debian's does), which on
/// loopback protects nothing and costs every query (about 0.4× the checkouts per second in
/// `make bench`): the devstack's services and the tests' databases. A remote server, or a URL that says otherwise, is left as it is.
pub fn plain_on_loopback(url: &mut url::Url) {
    // `postgres:` is not a special scheme, so its host is opaque text: parse it here.
    let host = url.host_str().unwrap_or("localhost");
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback && !url.query_pairs().any(|(k, _)| k == "sslmode") {
        url.query_pairs_mut().append_pair("sslmode", "disable");
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

/// TLS to PostgreSQL (`sslmode`/`PGSSLMODE`, as an external database is reached): with
/// `require`, a connection is encrypted or is not made; it never falls back to plain text.
#[cfg(all(test, feature = "testing"))]
mod tls {
    use sqlx::{Connection, PgConnection};

    #[tokio::test]
    async fn require_connects_over_tls_or_not_at_all() {
        let plain_url = crate::testing::server_url();
        let mut plain = PgConnection::connect(&plain_url)
            .await
            .expect("the test server answers");
        let ssl: String = sqlx::query_scalar("SHOW ssl")
            .fetch_one(&mut plain)
            .await
            .expect("SHOW ssl");
        let mut url = url::Url::parse(&plain_url).expect("a URL");
        url.query_pairs_mut().append_pair("sslmode", "require");
        match (ssl.as_str(), PgConnection::connect(url.as_str()).await) {
            ("on", Ok(mut conn)) => {
                let encrypted: bool =
                    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                        .fetch_one(&mut conn)
                        .await
                        .expect("pg_stat_ssl");
                assert!(encrypted, "sslmode=require connected without TLS");
            }
            ("on", Err(e)) => panic!("the server offers TLS, yet sslmode=require failed: {e}"),
            (_, Ok(_)) => panic!("sslmode=require connected to a server without TLS"),
            (_, Err(_)) => {} // A server without TLS: refused, as it must be.
        }
    }
}

#[cfg(test)]
mod loopback_tests {
    use super::plain_on_loopback;

    fn plain(url: &str) -> String {
        let mut url = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        plain_on_loopback(&mut url);
        url.to_string()
    }

    #[test]
    fn loopback_urls_go_without_tls_unless_they_say_otherwise() {
        assert_eq!(
            plain("postgres://u@127.0.0.1:5432/db"),
            "postgres://u@127.0.0.1:5432/db?sslmode=disable"
        );
        assert_eq!(
            plain("postgres://u@localhost/db"),
            "postgres://u@localhost/db?sslmode=disable"
        );
        assert_eq!(
            plain("postgres://u@[::1]:5432/db"),
            "postgres://u@[::1]:5432/db?sslmode=disable"
        );
        assert_eq!(
            plain("postgres://u@127.0.0.1/db?sslmode=require"),
            "postgres://u@127.0.0.1/db?sslmode=require",
            "the URL's own choice stands"
        );
        assert_eq!(
            plain("postgres://u@db.example.com/db"),
            "postgres://u@db.example.com/db",
            "a remote server negotiates as libpq would"
        );
    }
}
