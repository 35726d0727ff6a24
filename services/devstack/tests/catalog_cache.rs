//! The catalogue cache as a shopper meets it, through the gateway: the validators and the
//! 304 pass through it, a change is never hidden behind a 304, and an order is priced from
//! the database whatever a cache holds.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use mercato_devstack::dev::TestStore;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// An answer's status, `ETag`, `Cache-Control` and body text.
async fn get(
    http: &reqwest::Client,
    url: &str,
    if_none_match: Option<&str>,
) -> (StatusCode, String, String, String) {
    let mut request = http.get(url);
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    let r = request.send().await.unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (status, etag, cache_control) = (r.status(), header("etag"), header("cache-control"));
    (status, etag, cache_control, r.text().await.unwrap())
}

async fn send(
    http: &reqwest::Client,
    request: reqwest::RequestBuilder,
    expect: StatusCode,
) -> Value {
    let r = http.execute(request.build().unwrap()).await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, expect, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test]
async fn through_the_gateway_a_catalogue_read_is_304_until_it_changes_and_orders_take_the_new_price()
 {
    let store = TestStore::start(&[], false).await.unwrap();
    let gw = store.gateway_url();
    let url = |path: &str| format!("{gw}{path}");
    let http = reqwest::Client::new();
    let admin = store.dev.as_ref().unwrap().admin_token().await.unwrap();

    let created = send(
        &http,
        http.post(url("/products")).bearer_auth(&admin).json(
            &json!({"name": "Kettle", "category": "cache-e2e", "price": 2000, "currency": "EUR", "stock": 5}),
        ),
        StatusCode::CREATED,
    )
    .await;
    let item = url(&format!("/products/{}", created["id"].as_str().unwrap()));
    let list = url("/products?category=cache-e2e");

    // The validators reach the shopper, and so does a 304 without a body.
    let (status, tag, cache_control, _) = get(&http, &item, None).await;
    assert_eq!(
        (status, cache_control.as_str()),
        (StatusCode::OK, "public, max-age=1")
    );
    assert_eq!(tag, format!("\"{}\"", created["version"]));
    let (status, same, cache_control, body) = get(&http, &item, Some(&tag)).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(
        (same.as_str(), cache_control.as_str(), body.as_str()),
        (tag.as_str(), "public, max-age=1", "")
    );
    let (_, list_tag, _, _) = get(&http, &list, None).await;
    assert!(!list_tag.is_empty());
    assert_eq!(
        get(&http, &list, Some(&list_tag)).await.0,
        StatusCode::NOT_MODIFIED
    );

    // The admin reprices it: the old tags get the new product, never a 304.
    send(
        &http,
        http.patch(&item)
            .bearer_auth(&admin)
            .json(&json!({"price": 2400})),
        StatusCode::OK,
    )
    .await;
    let (status, new_tag, _, body) = get(&http, &item, Some(&tag)).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(new_tag, tag);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["price"], 2400);
    let (status, _, _, body) = get(&http, &list, Some(&list_tag)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["items"][0]["price"],
        2400
    );

    // A shopper's order is priced from the database: the new price.
    let shopper =
        json!({"username": "cachy", "email": "cachy@example.com", "password": "correct-horse"});
    send(
        &http,
        http.post(url("/auth/register")).json(&shopper),
        StatusCode::CREATED,
    )
    .await;
    let login = json!({"username": "cachy", "password": "correct-horse"});
    let token = send(
        &http,
        http.post(url("/auth/login")).json(&login),
        StatusCode::OK,
    )
    .await;
    let token = token["access_token"].as_str().unwrap();
    let order = send(
        &http,
        http.post(url("/orders"))
            .bearer_auth(token)
            .json(&json!({"product_id": created["id"], "quantity": 2})),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(order["total"], 4800);

    // And the stock it took shows at once on the (only) product replica that reserved it.
    let (_, _, _, body) = get(&http, &item, None).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["stock"], 3);
}
