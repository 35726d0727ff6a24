//! What several of these suites share.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use reqwest::StatusCode;
use serde_json::Value;

/// Sends `request`, asserts its status is `expect` (the body says why not) and returns its
/// JSON body (`Null` when there is none).
pub async fn send(
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
