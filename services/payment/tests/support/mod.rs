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
