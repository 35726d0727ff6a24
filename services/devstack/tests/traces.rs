//! Traces across the store: one checkout through the gateway, exported over OTLP to a
//! collector in the test, is one trace holding spans of every service it touched, and
//! the request id the gateway answers with is that trace's id.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::collections::BTreeSet;

use mercato_devstack::dev::TestStore;
use mercato_kit::config::LogFormat;
use mercato_kit::testing::otlp::OtlpReceiver;
use mercato_kit::testing::poll;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_checkout_through_the_gateway_is_one_trace_across_every_service_it_touched() {
    let collector = OtlpReceiver::start().await;
    mercato_kit::telemetry::init(
        LogFormat::Pretty,
        "warn",
        Some(&collector.endpoint()),
        "mercato-test",
    );
    let store = TestStore::start(&[], true).await.expect("the store starts");
    let gw = store.gateway_url();
    let http = reqwest::Client::new();

    let products: Value = http
        .get(format!("{gw}/products"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product = products["items"][0]["id"].as_str().unwrap().to_string();
    let price = products["items"][0]["price"].as_i64().unwrap();
    let r = http
        .post(format!("{gw}/auth/register"))
        .json(
            &json!({"username": "tess", "email": "tess@example.com", "password": "correct-horse"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let login: Value = http
        .post(format!("{gw}/auth/login"))
        .json(&json!({"username": "tess", "password": "correct-horse"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_string();

    // The order, sent with no request id and no trace: the gateway starts the trace,
    // and answers with its id as the request id.
    let placed = http
        .post(format!("{gw}/orders"))
        .bearer_auth(&token)
        .json(&json!({"product_id": product, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), StatusCode::CREATED);
    let trace = placed.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()),
        "the request id is a trace id: {trace}"
    );
    let order: Value = placed.json().await.unwrap();

    // The payment, sent in the same trace as the client's own (W3C traceparent).
    let paid = http
        .post(format!("{gw}/payments"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"order_id": order["id"], "amount": price, "method": "fake-card"}))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), StatusCode::CREATED);
    assert_eq!(paid.headers()["x-request-id"].to_str().unwrap(), trace);

    let expected: BTreeSet<String> = ["gateway", "order", "product", "payment"]
        .map(String::from)
        .into();
    let services_in_trace = || async {
        tokio::task::spawn_blocking(mercato_kit::telemetry::flush_traces)
            .await
            .unwrap();
        collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace)
            .filter_map(|s| s.service)
            .collect::<BTreeSet<String>>()
    };
    let seen = poll(50, services_in_trace, |seen| seen.is_superset(&expected)).await;
    assert!(
        seen.is_superset(&expected),
        "services in the trace: {seen:?}"
    );
}
