//! The product service as the order service sees it: the [`Stock`] checkout reserves,
//! commits and releases, over HTTP with this service's token.

use std::sync::Arc;

use mercato_contract::Component;
use mercato_contract::wire::{Reservation, ReserveRequest, paths};
use mercato_kit::ApiError;
use mercato_kit::client::{Dependency, TokenSource, UpstreamConfig};
use uuid::Uuid;

use crate::checkout::Stock;

/// The product service, called with the order service's token.
#[derive(Debug)]
pub struct ProductClient(Dependency);

impl ProductClient {
    pub fn new(base_url: &str, config: &UpstreamConfig, tokens: Arc<TokenSource>) -> Self {
        Self(Dependency::new(
            Component::Product,
            base_url,
            config,
            tokens,
        ))
    }
}

/// Every call here is idempotent on the product side, so all may be retried.
impl Stock for ProductClient {
    async fn reserve(&self, request: &ReserveRequest) -> Result<Reservation, ApiError> {
        self.0.post(paths::RESERVATIONS, request, true).await
    }

    async fn commit(&self, order_id: Uuid) -> Result<Reservation, ApiError> {
        self.0
            .post(&paths::reservation_commit(order_id), &(), true)
            .await
    }

    async fn release(&self, order_id: Uuid) -> Result<Reservation, ApiError> {
        self.0
            .post(&paths::reservation_release(order_id), &(), true)
            .await
    }
}
