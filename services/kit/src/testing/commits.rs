//! Counting the commits some work makes in one database, for tests that hold a code path
//! to the transactions it needs.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};

/// The commits PostgreSQL counts in one database (`pg_stat_database.xact_commit`) while
/// some work runs on [`Commits::pool`], a pool of one connection. That backend's counts
/// are flushed on demand (`pg_stat_force_next_flush`, PostgreSQL 15) rather than whenever
/// it likes, and read over a connection to another database, so that reading adds none.
pub struct Commits {
    pub pool: PgPool,
    observer: PgConnection,
    database: String,
}

impl Commits {
    /// A pool of one connection to the database at `url`, watched from the server's own
    /// database.
    pub async fn on(url: &str) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .expect("the test database answers");
        let database = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&pool)
            .await
            .expect("the test database answers");
        let observer = PgConnection::connect(&super::server_url())
            .await
            .expect("the test database answers");
        Self {
            pool,
            observer,
            database,
        }
    }

    /// Flushes the connection's counts (the flushing statement is one commit) and reads
    /// the database's total.
    async fn flushed(&mut self) -> i64 {
        let mut conn = self
            .pool
            .acquire()
            .await
            .expect("the test database answers");
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&mut *conn)
            .await
            .expect("the test database answers");
        // Answered once the backend is idle again, which is when it has flushed.
        conn.ping().await.expect("the test database answers");
        drop(conn);
        sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
            .bind(&self.database)
            .fetch_one(&mut self.observer)
            .await
            .expect("the test database answers")
    }

    /// How many commits one run of `work` makes: the fewest of `tries` runs (anything
    /// else in the database, autovacuum say, can only add), after a first run uncounted,
    /// so every statement is prepared on the connection already (preparing one outside a
    /// transaction is a commit of its own, which a warm pool does not pay).
    pub async fn of(&mut self, tries: usize, work: impl AsyncFn(&PgPool)) -> i64 {
        work(&self.pool).await;
        let mut fewest = i64::MAX;
        for _ in 0..tries {
            let before = self.flushed().await;
            work(&self.pool).await;
            fewest = fewest.min(self.flushed().await - before - 1);
        }
        fewest
    }
}
