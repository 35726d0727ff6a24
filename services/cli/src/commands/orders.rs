//! `order`, `orders [show|cancel]`: placing, listing and cancelling orders.

use reqwest::Method;
use serde_json::{Value, json};

use crate::args::OrdersCommand;
use crate::client::{Client, Failure};
use crate::table::{money, print_table};

const HEADER: [&str; 5] = ["ID", "STATUS", "TOTAL", "ITEMS", "CREATED"];

pub async fn place(
    client: &Client,
    lines: &[(String, u32)],
    idempotency_key: Option<&str>,
) -> Result<(), Failure> {
    let items: Vec<Value> = lines
        .iter()
        .map(|(id, q)| json!({"product_id": id, "quantity": q}))
        .collect();
    let value = client
        .call_with(
            Method::POST,
            "/orders",
            Some(json!({"items": items})),
            true,
            idempotency_key,
        )
        .await?;
    show_one(client, &value);
    Ok(())
}

pub async fn run(
    client: &Client,
    command: Option<OrdersCommand>,
    status: Option<String>,
) -> Result<(), Failure> {
    match command {
        None => {
            let path = match status {
                Some(s) => format!("/orders?status={s}&limit=100"),
                None => "/orders?limit=100".into(),
            };
            let page = client.call(Method::GET, &path, None, true).await?;
            client.show(&page, |p| {
                print_table(
                    &HEADER,
                    &rows(p["items"].as_array().map_or(&[][..], Vec::as_slice)),
                )
            });
        }
        Some(OrdersCommand::Show { id }) => {
            let o = client
                .call(Method::GET, &format!("/orders/{id}"), None, true)
                .await?;
            show_one(client, &o);
        }
        Some(OrdersCommand::Cancel { id }) => {
            let o = client
                .call(Method::POST, &format!("/orders/{id}/cancel"), None, true)
                .await?;
            show_one(client, &o);
        }
    }
    Ok(())
}

fn show_one(client: &Client, order: &Value) {
    client.show(order, |o| {
        print_table(&HEADER, &rows(std::slice::from_ref(o)))
    });
}

fn rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|o| {
            let lines = o["items"]
                .as_array()
                .map(|ls| {
                    ls.iter()
                        .map(|l| format!("{}×{}", l["quantity"], l["name"].as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            vec![
                o["id"].as_str().unwrap_or("").to_string(),
                o["status"].as_str().unwrap_or("").to_string(),
                money(
                    o["total"].as_i64().unwrap_or(0),
                    o["currency"].as_str().unwrap_or(""),
                ),
                lines,
                o["created_at"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect()
}
