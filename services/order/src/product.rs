//! The product service as the order service sees it: reserve, commit, release.

use std::sync::Arc;

use mercato_kit::ApiError;
use mercato_kit::client::{Dependency, TokenSource, UpstreamConfig};
use mercato_kit::items::LineItem;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Deserialize)]
pub struct ReservedItem {
    pub product_id: Uuid,
    pub name: String,
    pub quantity: i32,
    pub unit_price: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Reservation {
    pub status: String,
    pub items: Vec<ReservedItem>,
    pub total: i64,
    pub currency: String,
}

/// The product service, called with the order service's token.
#[derive(Debug)]
pub struct ProductClient(Dependency);

impl ProductClient {
    pub fn new(base_url: &str, config: &UpstreamConfig, tokens: Arc<TokenSource>) -> Self {
        Self(Dependency::new("Product service", base_url, config, tokens))
    }

    /// Every call here is idempotent on the product side, so all may be retried.
    pub async fn reserve(
        &self,
        order_id: Uuid,
        items: &[LineItem],
    ) -> Result<Reservation, ApiError> {
        #[derive(Serialize)]
        struct Body<'a> {
            order_id: Uuid,
            items: &'a [LineItem],
        }
        self.0
            .post("/internal/reservations", &Body { order_id, items }, true)
            .await
    }

    pub async fn commit(&self, order_id: Uuid) -> Result<Reservation, ApiError> {
        self.0
            .post(
                &format!("/internal/reservations/{order_id}/commit"),
                &(),
                true,
            )
            .await
    }

    pub async fn release(&self, order_id: Uuid) -> Result<Reservation, ApiError> {
        self.0
            .post(
                &format!("/internal/reservations/{order_id}/release"),
                &(),
                true,
            )
            .await
    }
}
