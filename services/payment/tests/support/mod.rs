//! What the payment service's tests share: a migrated database of their own, and an
//! order service in memory that holds orders and records the events delivered to it.
#![allow(dead_code, clippy::unwrap_used)] // Each test file uses its own part.

use std::collections::HashMap;
use std::sync::Mutex;

use mercato_contract::wire::{EventResult, Order, OrderStatus, PaymentEvent};
use mercato_kit::ApiError;
use mercato_kit::testing::TestDb;
use mercato_payment::checkout::Orders;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// A fresh database with the payment service's migrations.
pub async fn database() -> (TestDb, PgPool) {
    TestDb::migrated(&mercato_payment::MIGRATOR).await
}

pub fn order(user: Uuid, status: OrderStatus, total: i64) -> Order {
    let now = OffsetDateTime::now_utc();
    Order {
        id: Uuid::new_v4(),
        user_id: user,
        status,
        items: Vec::new(),
        total,
        currency: "EUR".into(),
        created_at: now,
        updated_at: now,
        expires_at: now,
        paid_at: None,
    }
}

/// The order service in memory.
#[derive(Debug, Default)]
pub struct FakeOrders {
    pub orders: Mutex<HashMap<Uuid, Order>>,
    pub delivered: Mutex<Vec<(Uuid, PaymentEvent)>>,
    /// Answer every call with this error (the service is down).
    pub down: Mutex<Option<ApiError>>,
}

impl FakeOrders {
    pub fn with(orders: impl IntoIterator<Item = Order>) -> Self {
        let fake = FakeOrders::default();
        fake.orders
            .lock()
            .unwrap()
            .extend(orders.into_iter().map(|o| (o.id, o)));
        fake
    }

    pub fn delivered(&self) -> Vec<(Uuid, PaymentEvent)> {
        self.delivered.lock().unwrap().clone()
    }

    pub fn set_down(&self, error: Option<ApiError>) {
        *self.down.lock().unwrap() = error;
    }

    fn check_up(&self) -> Result<(), ApiError> {
        match self.down.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Orders for FakeOrders {
    async fn order(&self, id: Uuid) -> Result<Order, ApiError> {
        self.check_up()?;
        self.orders
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("Order not found"))
    }

    async fn deliver(&self, order_id: Uuid, event: &PaymentEvent) -> Result<EventResult, ApiError> {
        self.check_up()?;
        self.delivered
            .lock()
            .unwrap()
            .push((order_id, event.clone()));
        // A cancelled or expired order refuses the payment, as the order service does.
        let known = self.orders.lock().unwrap().get(&order_id).map(|o| o.status);
        Ok(match known {
            Some(status @ (OrderStatus::Cancelled | OrderStatus::Expired)) => EventResult {
                applied: false,
                status,
            },
            _ => EventResult {
                applied: true,
                status: OrderStatus::Paid,
            },
        })
    }
}

/// The commits PostgreSQL counts in one database (`pg_stat_database.xact_commit`) while
/// some work runs on [`Commits::pool`], a pool of one connection. That backend's counts
/// are flushed on demand (`pg_stat_force_next_flush`, PostgreSQL 15) rather than whenever
/// it likes, and read over a connection to another database, so that reading adds none.
pub struct Commits {
    pub pool: PgPool,
    observer: sqlx::PgConnection,
    database: String,
}

impl Commits {
    pub async fn on(url: &str) -> Self {
        use sqlx::Connection;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .unwrap();
        let database = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&pool)
            .await
            .unwrap();
        let observer = sqlx::PgConnection::connect(&mercato_kit::testing::server_url())
            .await
            .unwrap();
        Self {
            pool,
            observer,
            database,
        }
    }

    /// Flushes the connection's counts (the flushing statement is one commit) and reads
    /// the database's total.
    async fn flushed(&mut self) -> i64 {
        use sqlx::Connection;
        let mut conn = self.pool.acquire().await.unwrap();
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&mut *conn)
            .await
            .unwrap();
        // Answered once the backend is idle again, which is when it has flushed.
        conn.ping().await.unwrap();
        drop(conn);
        sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
            .bind(&self.database)
            .fetch_one(&mut self.observer)
            .await
            .unwrap()
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
