//! The demo catalog, created through the gateway as an admin would.

use serde_json::{Value, json};

use super::Dev;

impl Dev {
    /// Logs in as the first admin through the gateway.
    pub async fn admin_token(&self) -> anyhow::Result<String> {
        let tokens: Value = reqwest::Client::new()
            .post(format!("{}/auth/login", self.gateway_url))
            .json(&json!({"username": self.admin_username, "password": self.admin_password}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        tokens["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("login answered without a token"))
    }

    /// Creates the demo catalog through the gateway, unless there are products already.
    pub async fn seed(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let page: Value = http
            .get(format!("{}/products?limit=1", self.gateway_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if page["items"].as_array().is_some_and(|a| !a.is_empty()) {
            return Ok(());
        }
        let token = self.admin_token().await?;
        for (name, description, category, price, stock) in DEMO_CATALOG {
            http.post(format!("{}/products", self.gateway_url))
                .bearer_auth(&token)
                .json(
                    &json!({"name": name, "description": description, "category": category,
                              "price": price, "currency": "EUR", "stock": stock}),
                )
                .send()
                .await?
                .error_for_status()?;
        }
        Ok(())
    }
}

/// name, description, category, price (cents), stock.
pub const DEMO_CATALOG: [(&str, &str, &str, i64, i64); 6] = [
    ("Espresso cup", "Porcelain, 80 ml", "kitchen", 900, 40),
    (
        "Pour-over kettle",
        "Stainless steel, 1 l",
        "kitchen",
        4_500,
        12,
    ),
    (
        "Linen apron",
        "Natural linen, one size",
        "kitchen",
        2_900,
        20,
    ),
    (
        "Field notebook",
        "Dot grid, 96 pages",
        "stationery",
        1_200,
        60,
    ),
    (
        "Brass pen",
        "Refillable, black ink",
        "stationery",
        3_500,
        15,
    ),
    ("Wool throw", "130 × 170 cm, grey", "home", 8_900, 8),
];
