//! `products list|show|create`: the catalog.

use reqwest::Method;
use serde_json::{Value, json};

use crate::args::ProductsCommand;
use crate::client::{Client, Failure};
use crate::table::{money, print_table};

const HEADER: [&str; 5] = ["ID", "NAME", "CATEGORY", "PRICE", "STOCK"];

pub async fn run(client: &Client, command: ProductsCommand) -> Result<(), Failure> {
    match command {
        ProductsCommand::List { category, limit } => {
            let mut path = format!("/products?limit={limit}");
            if let Some(c) = category {
                path.push_str(&format!("&category={c}"));
            }
            let page = client.call(Method::GET, &path, None, false).await?;
            client.show(&page, |p| {
                print_table(
                    &HEADER,
                    &rows(p["items"].as_array().map_or(&[][..], Vec::as_slice)),
                )
            });
        }
        ProductsCommand::Show { id } => {
            let p = client
                .call(Method::GET, &format!("/products/{id}"), None, false)
                .await?;
            show_one(client, &p);
        }
        ProductsCommand::Create {
            name,
            category,
            price,
            currency,
            stock,
            description,
        } => {
            let body = json!({"name": name, "category": category, "price": price, "currency": currency, "stock": stock, "description": description});
            let p = client
                .call(Method::POST, "/products", Some(body), true)
                .await?;
            show_one(client, &p);
        }
    }
    Ok(())
}

fn show_one(client: &Client, product: &Value) {
    client.show(product, |p| {
        print_table(&HEADER, &rows(std::slice::from_ref(p)))
    });
}

fn rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|p| {
            vec![
                p["id"].as_str().unwrap_or("").to_string(),
                p["name"].as_str().unwrap_or("").to_string(),
                p["category"].as_str().unwrap_or("").to_string(),
                money(
                    p["price"].as_i64().unwrap_or(0),
                    p["currency"].as_str().unwrap_or(""),
                ),
                p["stock"].to_string(),
            ]
        })
        .collect()
}
