//! `pay`: pay an order, for its total unless told otherwise.

use reqwest::Method;
use serde_json::json;

use crate::client::{Client, Failure};
use crate::table::{money, print_table};

pub async fn run(
    client: &Client,
    order_id: &str,
    method: &str,
    amount: Option<i64>,
) -> Result<(), Failure> {
    let amount = match amount {
        Some(a) => a,
        None => client
            .call(Method::GET, &format!("/orders/{order_id}"), None, true)
            .await?["total"]
            .as_i64()
            .unwrap_or(0),
    };
    let body = json!({"order_id": order_id, "amount": amount, "method": method});
    let p = client
        .call(Method::POST, "/payments", Some(body), true)
        .await?;
    client.show(&p, |p| {
        print_table(
            &["PAYMENT", "ORDER", "AMOUNT", "STATUS"],
            &[vec![
                p["id"].as_str().unwrap_or("").to_string(),
                p["order_id"].as_str().unwrap_or("").to_string(),
                money(
                    p["amount"].as_i64().unwrap_or(0),
                    p["currency"].as_str().unwrap_or(""),
                ),
                p["status"].as_str().unwrap_or("").to_string(),
            ]],
        )
    });
    Ok(())
}
