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
