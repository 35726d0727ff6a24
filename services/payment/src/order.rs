//! The order service as the payment service sees it: the [`Orders`] checkout reads and
//! the outbox delivers to, over HTTP with this service's token.

use std::sync::Arc;

use mercato_contract::Component;
use mercato_contract::wire::{EventResult, Order, PaymentEvent, paths};
use mercato_kit::ApiError;
use mercato_kit::client::{Dependency, TokenSource, UpstreamConfig};
use uuid::Uuid;

use crate::checkout::Orders;

/// The order service, called with the payment service's token.
#[derive(Debug)]
pub struct OrderClient(Dependency);

impl OrderClient {
    pub fn new(base_url: &str, config: &UpstreamConfig, tokens: Arc<TokenSource>) -> Self {
        Self(Dependency::new(Component::Order, base_url, config, tokens))
    }
}

impl Orders for OrderClient {
    async fn order(&self, id: Uuid) -> Result<Order, ApiError> {
        self.0.get(&paths::order(id)).await
    }

    /// Events carry their id, and the order service applies each once: safe to retry.
    async fn deliver(&self, order_id: Uuid, event: &PaymentEvent) -> Result<EventResult, ApiError> {
        self.0
            .post(&paths::payment_events(order_id), event, true)
            .await
    }
}

/// The shared client behind the state's `Arc`, so the handlers and the outbox use one.
impl Orders for Arc<OrderClient> {
    async fn order(&self, id: Uuid) -> Result<Order, ApiError> {
        self.as_ref().order(id).await
    }

    async fn deliver(&self, order_id: Uuid, event: &PaymentEvent) -> Result<EventResult, ApiError> {
        self.as_ref().deliver(order_id, event).await
    }
}
