//! Request extractors whose rejections are problem+json: JSON bodies, query strings, paths.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// A JSON body. Rejections: 415 wrong content type, 413 too large, 400 malformed,
/// 422 missing, unknown or wrong-typed fields (named in `errors`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            )
            .with_detail("expected Content-Type: application/json"));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub fn body_rejection(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Request body too large",
        )
    } else {
        ApiError::bad_request("unreadable_body", "Could not read request body")
    }
}

/// Parses JSON into `T`, naming the offending field on a data error. JSON has one kind of
/// number, and to JSON Schema `3.0` is the integer 3: integral numbers written with a
/// fraction are read as integers, as the documents promise.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("malformed_json", "Malformed JSON").with_detail(e.to_string())
    })?;
    if let Some(field) = nul_string(&value, String::new()) {
        return Err(ApiError::field(field, NO_NUL));
    }
    serde_path_to_error::deserialize(integral(value)).map_err(|e| {
        let inner = e.inner();
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::bad_request("malformed_json", "Malformed JSON")
                    .with_detail(inner.to_string())
            }
            _ => {
                let path = e.path().to_string();
                let message = inner.to_string();
                let mut error = ApiError::validation(vec![field_error(&path, &message)]);
                if message.starts_with("missing field") {
                    error.title = "Missing fields".into();
                }
                error
            }
        }
    })
}

/// Why a string with a NUL character is refused: PostgreSQL's text cannot hold one, so it
/// would otherwise fail deep down as a 500.
const NO_NUL: &str = "must not contain NUL characters";

/// The path (`items[0].name`) of the first string in `value`, key or value, that holds
/// a NUL character.
fn nul_string(value: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    let join = |key: &str| {
        if at.is_empty() {
            key.to_string()
        } else {
            format!("{at}.{key}")
        }
    };
    match value {
        Value::String(s) if s.contains('\0') => {
            Some(if at.is_empty() { "body".into() } else { at })
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_string(v, format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(join(&k.replace('\0', "\\0")))
            } else {
                nul_string(v, join(k))
            }
        }),
        _ => None,
    }
}

/// Refuses a query string or form body with a NUL character in a name or value (422
/// naming it), as [`parse_json`] refuses one in JSON.
pub fn refuse_nul_in_form(form: &[u8]) -> Result<(), ApiError> {
    match form_urlencoded::parse(form).find(|(k, v)| k.contains('\0') || v.contains('\0')) {
        Some((name, _)) => Err(ApiError::field(name.replace('\0', "\\0"), NO_NUL)),
        None => Ok(()),
    }
}

/// `value` with every number that has no fractional part, and fits, as an integer.
fn integral(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // `as` saturates: the range checks keep out values it would clamp.
            if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
                Value::from(f as i64)
            } else if f.fract() == 0.0 && f >= 0.0 && f < u64::MAX as f64 {
                Value::from(f as u64)
            } else {
                Value::Number(n)
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(integral).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, integral(v))).collect())
        }
        other => other,
    }
}

/// Builds a field error from serde's message, resolving `missing field `x``
/// and `unknown field `x`` to the field's full path.
fn field_error(path: &str, message: &str) -> FieldError {
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string();
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let field = match (named, path) {
        (Some(name), ".") | (Some(name), "") => name.to_string(),
        // serde_path_to_error already ends the path with an unknown field's name.
        (Some(name), path) if path == name || path.ends_with(&format!(".{name}")) => {
            path.to_string()
        }
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, path) => path.to_string(),
    };
    let message = if message.starts_with("missing field") {
        "is required".to_string()
    } else if message.starts_with("unknown field") {
        "is not allowed here".to_string()
    } else {
        message
    };
    FieldError::new(field, message)
}

/// A query string; a bad one is a 422 naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        refuse_nul_in_form(query.as_bytes())?;
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::validation(vec![field_error(&path, &e.inner().to_string())])
            })
    }
}

/// A path parameter; a malformed one (e.g. not a UUID) is a 404, since no such resource exists.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e: PathRejection| ApiError::not_found("Not found").with_detail(e.body_text()))
    }
}

/// The optional `Idempotency-Key` header of a creating request: 1–255 visible ASCII
/// characters, else 422 naming the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub Option<String>);

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY) else {
            return Ok(IdempotencyKey(None));
        };
        value
            .to_str()
            .ok()
            .filter(|v| (1..=255).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(|v| IdempotencyKey(Some(v.to_string())))
            .ok_or_else(|| {
                ApiError::field(
                    "Idempotency-Key",
                    "must be 1 to 255 visible ASCII characters",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        product_id: String,
        quantity: i64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Order {
        items: Vec<Item>,
    }

    fn err(body: &str) -> ApiError {
        parse_json::<Order>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn malformed_json_is_400() {
        let e = err("{\"items\": [");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.code, "malformed_json");
    }

    #[test]
    fn missing_nested_field_is_named_with_its_path() {
        let e = err(r#"{"items":[{"product_id":"a"}]}"#);
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.errors[0].field, "items[0].quantity");
        assert_eq!(e.errors[0].message, "is required");
    }

    #[test]
    fn an_integral_number_written_with_a_fraction_is_an_integer() {
        let order: Order = parse_json(br#"{"items":[{"product_id":"a","quantity":3.0}]}"#).unwrap();
        assert_eq!(order.items[0].quantity, 3);
        let e = err(r#"{"items":[{"product_id":"a","quantity":3.5}]}"#);
        assert_eq!(e.errors[0].field, "items[0].quantity");
        let e = err(r#"{"items":[{"product_id":"a","quantity":1e300}]}"#);
        assert_eq!(e.errors[0].field, "items[0].quantity");
    }

    #[test]
    fn a_string_with_a_nul_character_is_refused_naming_it() {
        let e = err("{\"items\":[{\"product_id\":\"a\\u0000b\",\"quantity\":1}]}");
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            e.errors,
            vec![FieldError::new("items[0].product_id", NO_NUL)]
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let e = err(r#"{"items":[{"product_id":"a","quantity":"two"}]}"#);
        assert_eq!(e.errors[0].field, "items[0].quantity");
        assert!(
            e.errors[0].message.contains("invalid type"),
            "{:?}",
            e.errors
        );
    }

    #[test]
    fn unknown_top_level_field_is_named() {
        let e = err(r#"{"items":[],"role":"admin"}"#);
        assert_eq!(e.errors[0].field, "role");
        let e = err(r#"{"items":[{"product_id":"a","quantity":1,"price":1}]}"#);
        assert_eq!(e.errors[0].field, "items[0].price");
    }
}
