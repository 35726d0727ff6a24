//! The product service as the order service sees it: reserve, commit, release.

use mercato_kit::ApiError;
use mercato_kit::client::{TokenSource, Upstream, UpstreamConfig, UpstreamError};
use mercato_kit::items::LineItem;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
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

#[derive(Debug)]
pub struct ProductClient {
    upstream: Upstream,
    tokens: TokenSource,
}

impl ProductClient {
    pub fn new(base_url: &str, config: &UpstreamConfig, tokens: TokenSource) -> Self {
        Self {
            upstream: Upstream::new("Product service", base_url, config),
            tokens,
        }
    }

    /// POSTs with a service token; a 401 (say, after a key rotation) gets one retry with
    /// a fresh token. Every call here is idempotent on the product side.
    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        let mut retried = false;
        loop {
            let token = self.tokens.token().await?;
            match self.upstream.post_json(path, &token, body, true).await {
                Err(UpstreamError::Rejected(StatusCode::UNAUTHORIZED, _)) if !retried => {
                    self.tokens.invalidate().await;
                    retried = true;
                }
                Err(UpstreamError::Rejected(status, Some(problem))) => {
                    // Pass the product service's own answer through: "Product not found",
                    // "Not enough stock", with the offending item named.
                    let mut e = ApiError::new(status, "rejected", problem.title);
                    e.code = match problem.code.as_str() {
                        "not_found" => "not_found",
                        "insufficient_stock" => "insufficient_stock",
                        "validation_failed" => "validation_failed",
                        _ => "upstream_rejected",
                    };
                    e.detail = problem.detail;
                    e.errors = problem.errors;
                    return Err(e);
                }
                Err(e) => return Err(self.upstream.error(&e)),
                Ok(answer) => return Ok(answer),
            }
        }
    }

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
        self.post("/internal/reservations", &Body { order_id, items })
            .await
    }

    pub async fn commit(&self, order_id: Uuid) -> Result<Reservation, ApiError> {
        self.post(&format!("/internal/reservations/{order_id}/commit"), &())
            .await
    }

    pub async fn release(&self, order_id: Uuid) -> Result<Reservation, ApiError> {
        self.post(&format!("/internal/reservations/{order_id}/release"), &())
            .await
    }
}
