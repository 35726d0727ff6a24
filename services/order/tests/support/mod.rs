//! What the order service's tests share: a migrated database of their own, and a product
//! service in memory that records what checkout asked of it.
#![allow(dead_code, clippy::unwrap_used)] // Each test file uses its own part.

use std::sync::Mutex;

use std::time::Duration;

use mercato_contract::wire::{
    LineItem, PricedItem, Reservation, ReservationStatus, ReserveRequest,
};
use mercato_kit::ApiError;
use mercato_kit::testing::TestDb;
use mercato_order::checkout::Stock;
use mercato_order::orders::{self, NewOrder};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// Every product costs this much (minor units, EUR) in the fake catalog.
pub const PRICE: i64 = 1250;

/// A fresh database with the order service's migrations.
pub async fn database() -> (TestDb, PgPool) {
    TestDb::migrated(&mercato_order::MIGRATOR).await
}

/// Stores a PENDING order of one line per quantity, as checkout would, and returns its id.
pub async fn store_order(pool: &PgPool, user: Uuid, quantities: &[i64], ttl: Duration) -> Uuid {
    let id = Uuid::new_v4();
    let request = ReserveRequest {
        order_id: id,
        items: quantities
            .iter()
            .map(|q| LineItem {
                product_id: Uuid::new_v4(),
                quantity: *q,
            })
            .collect(),
    };
    let reservation = reservation(&request, ReservationStatus::Reserved);
    let mut conn = pool.acquire().await.unwrap();
    let new = NewOrder {
        id,
        user_id: user,
        idempotency_key: None,
        request_hash: "hash",
        reservation: &reservation,
        ttl,
    };
    assert!(orders::insert(&mut conn, &new).await.unwrap().is_some());
    id
}

/// A reservation of `request` at [`PRICE`] each, in `status`.
pub fn reservation(request: &ReserveRequest, status: ReservationStatus) -> Reservation {
    let items: Vec<PricedItem> = request
        .items
        .iter()
        .map(|i| PricedItem {
            product_id: i.product_id,
            name: format!("product {}", i.product_id),
            quantity: i32::try_from(i.quantity).unwrap(),
            unit_price: PRICE,
            currency: "EUR".into(),
        })
        .collect();
    Reservation {
        order_id: request.order_id,
        status,
        expires_at: OffsetDateTime::now_utc(),
        total: items
            .iter()
            .map(|i| i.unit_price * i64::from(i.quantity))
            .sum(),
        currency: "EUR".into(),
        items,
    }
}

/// The product service in memory: answers as told and keeps a log of the calls.
#[derive(Debug, Default)]
pub struct FakeStock {
    pub calls: Mutex<Vec<(&'static str, Uuid)>>,
    /// Answer every reservation with this error.
    pub refuse_reserve: Option<ApiError>,
    /// Answer reservations in this status (default RESERVED).
    pub reserve_status: Option<ReservationStatus>,
    /// Answer commits and releases with this error.
    pub refuse_settle: Option<ApiError>,
    /// Answer releases of this order with 503, whatever else happens.
    pub stuck_release: Option<Uuid>,
}

impl FakeStock {
    pub fn calls(&self) -> Vec<(&'static str, Uuid)> {
        self.calls.lock().unwrap().clone()
    }

    pub fn count(&self, what: &str) -> usize {
        self.calls().iter().filter(|(w, _)| *w == what).count()
    }

    fn log(&self, what: &'static str, id: Uuid) {
        self.calls.lock().unwrap().push((what, id));
    }

    fn settled(&self, id: Uuid, status: ReservationStatus) -> Result<Reservation, ApiError> {
        if let Some(e) = &self.refuse_settle {
            return Err(e.clone());
        }
        Ok(reservation(
            &ReserveRequest {
                order_id: id,
                items: Vec::new(),
            },
            status,
        ))
    }
}

impl Stock for FakeStock {
    async fn reserve(&self, request: &ReserveRequest) -> Result<Reservation, ApiError> {
        self.log("reserve", request.order_id);
        if let Some(e) = &self.refuse_reserve {
            return Err(e.clone());
        }
        Ok(reservation(
            request,
            self.reserve_status.unwrap_or(ReservationStatus::Reserved),
        ))
    }

    async fn commit(&self, order_id: Uuid) -> Result<Reservation, ApiError> {
        self.log("commit", order_id);
        self.settled(order_id, ReservationStatus::Committed)
    }

    async fn release(&self, order_id: Uuid) -> Result<Reservation, ApiError> {
        self.log("release", order_id);
        if self.stuck_release == Some(order_id) {
            return Err(ApiError::unavailable("Product service"));
        }
        self.settled(order_id, ReservationStatus::Released)
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
