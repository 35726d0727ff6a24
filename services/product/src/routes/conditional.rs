//! Conditional public reads (RFC 9110 §13): `If-None-Match` against an answer's strong
//! `ETag`, `304 Not Modified` when the client's copy is still current, and how long
//! shared caches (the gateway, a CDN) may reuse an answer without asking (`Cache-Control`).

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use mercato_kit::conditional::client_has;

use crate::cache::Cached;

/// `Cache-Control` for public reads: shared caches may reuse an answer for `max_age_secs`.
pub fn public_for(max_age_secs: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("public, max-age={max_age_secs}"))
        .unwrap_or_else(|_| HeaderValue::from_static("no-cache"))
}

/// The answer to a public read of `cached`: 304 with no body if the client holds it
/// already, else 200 with the body; both with its `ETag` and `cache_control` (§15.4.5).
pub fn answer(headers: &HeaderMap, cached: &Cached, cache_control: &HeaderValue) -> Response {
    let validators = [
        (ETAG, cached.etag.clone()),
        (CACHE_CONTROL, cache_control.clone()),
    ];
    if client_has(headers, &cached.etag) {
        return (StatusCode::NOT_MODIFIED, validators).into_response();
    }
    let json = [(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    (validators, json, cached.body.clone()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::http::header::IF_NONE_MATCH;

    fn asking(tag: &'static str) -> HeaderMap {
        HeaderMap::from_iter([(IF_NONE_MATCH, HeaderValue::from_static(tag))])
    }

    #[test]
    fn not_modified_has_no_body_but_the_validators() {
        let cached = Cached {
            body: axum::body::Bytes::from_static(b"{}"),
            etag: HeaderValue::from_static("\"abc\""),
        };
        let cc = public_for(2);
        let r = answer(&asking("\"abc\""), &cached, &cc);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers().get(ETAG), Some(&cached.etag));
        assert_eq!(r.headers().get(CACHE_CONTROL), Some(&cc));
        assert_eq!(r.headers().get(CONTENT_TYPE), None);
        let r = answer(&asking("\"abd\""), &cached, &cc);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers().get(CACHE_CONTROL).and_then(|v| v.to_str().ok()),
            Some("public, max-age=2")
        );
    }
}
