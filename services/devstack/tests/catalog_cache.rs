//! The catalogue cache as a shopper meets it, through the gateway: the validators and the
//! 304 pass through it, a change is never hidden behind a 304, and an order is priced from
//! the database whatever a cache holds.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod support;

use mercato_contract::Component;
use mercato_devstack::dev::TestStore;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::send;

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

/// The gateway's `/metrics`, as Prometheus reads it.
async fn gateway_metrics(store: &TestStore) -> String {
    let ops = store
        .dev
        .as_ref()
        .unwrap()
        .topology
        .ops_url(Component::Gateway);
    reqwest::get(format!("{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A gauge or counter of the gateway's `/metrics`.
async fn gateway_metric(store: &TestStore, series: &str) -> f64 {
    gateway_metrics(store)
        .await
        .lines()
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0.0)
}

/// The gateway's count of `GET`s of `route` answered 200 (`mercato_http_requests_total`).
async fn gateway_reads(store: &TestStore, route: &str) -> f64 {
    let text = gateway_metrics(store).await;
    let labels = [
        "method=\"GET\"".to_string(),
        format!("route=\"{route}\""),
        "status=\"200\"".to_string(),
    ];
    text.lines()
        .filter(|line| line.starts_with("mercato_http_requests_total{"))
        .filter(|line| labels.iter().all(|l| line.contains(l.as_str())))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_gateway_answers_public_reads_itself_for_no_longer_than_their_max_age() {
    let store = TestStore::start(&[], false).await.unwrap();
    let gw = store.gateway_url();
    let http = reqwest::Client::new();
    let admin = store.dev.as_ref().unwrap().admin_token().await.unwrap();
    let created = send(
        &http,
        http.post(format!("{gw}/products")).bearer_auth(&admin).json(
            &json!({"name": "Toaster", "category": "edge-cache", "price": 3000, "currency": "EUR", "stock": 4}),
        ),
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let item = format!("{gw}/products/{id}");
    let hits = "mercato_public_cache_hits_total";

    // The second read is the gateway's own copy: the service's validators, and its age.
    let (_, tag, _, _) = get(&http, &item, None).await;
    let before = gateway_metric(&store, hits).await;
    let r = http.get(&item).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), tag);
    assert_eq!(r.headers()["cache-control"], "public, max-age=1");
    assert!(
        r.headers().contains_key("age"),
        "a shared cache says how old"
    );
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.json::<Value>().await.unwrap()["price"], 3000);
    assert_eq!(gateway_metric(&store, hits).await, before + 1.0);

    // A copy is answered like any request: the caller's request id comes back, and it is
    // counted under the route that matched it, the catalogue page under its own.
    let item_reads = gateway_reads(&store, "/products/{*rest}").await;
    let r = http
        .get(&item)
        .header("x-request-id", "shopper-42")
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("age"), "a copy");
    assert_eq!(r.headers()["x-request-id"], "shopper-42");
    assert_eq!(
        gateway_reads(&store, "/products/{*rest}").await,
        item_reads + 1.0
    );
    let page = format!("{gw}/products?category=edge-cache");
    let (_, _, _, first) = get(&http, &page, None).await;
    let (hits_before, page_reads) = (
        gateway_metric(&store, hits).await,
        gateway_reads(&store, "/products").await,
    );
    let (status, _, _, again) = get(&http, &page, None).await;
    assert_eq!((status, &again), (StatusCode::OK, &first));
    assert_eq!(gateway_metric(&store, hits).await, hits_before + 1.0);
    assert_eq!(gateway_reads(&store, "/products").await, page_reads + 1.0);
    let (status, _, _, body) = get(&http, &item, Some(&tag)).await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));

    // A change the gateway does not see go by (made at the service itself, as another
    // gateway replica would): a client insisting gets it at once, everyone within max-age.
    let product = store.dev.as_ref().unwrap().topology.url(Component::Product);
    send(
        &http,
        http.patch(format!("{product}/products/{id}"))
            .bearer_auth(&admin)
            .json(&json!({"price": 3100})),
        StatusCode::OK,
    )
    .await;
    let insisting = http
        .get(&item)
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(insisting.json::<Value>().await.unwrap()["price"], 3100);
    let changed = mercato_kit::testing::poll(
        30,
        || async { get(&http, &item, None).await.3 },
        |body| serde_json::from_str::<Value>(body).unwrap()["price"] == 3100,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&changed).unwrap()["price"],
        3100
    );

    // What a caller's own token reads is never kept: each read reaches the order service.
    let before = gateway_metric(&store, hits).await;
    for _ in 0..2 {
        send(
            &http,
            http.get(format!("{gw}/orders")).bearer_auth(&admin),
            StatusCode::OK,
        )
        .await;
    }
    assert_eq!(gateway_metric(&store, hits).await, before);
}
