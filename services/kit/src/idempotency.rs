//! Idempotent creation (`POST /orders`, `POST /payments`): an `Idempotency-Key` names the
//! resource it creates, so a retry finds the first result instead of making a second one;
//! a fingerprint of what was asked catches a key reused for another request; a replay is
//! answered like the first time, with an `idempotent-replayed: true` header.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::Json;

/// The response header that marks a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";

/// The id of the resource a request creates: with a key, the same key from the same user
/// always names the same resource (so concurrent retries share one row); without one, a
/// new id.
pub fn resource_id(user: Uuid, key: Option<&str>) -> Uuid {
    match key {
        Some(key) => Uuid::new_v5(&user, key.as_bytes()),
        None => Uuid::new_v4(),
    }
}

/// A fixed-length fingerprint of a request's canonical form (lower-case hex SHA-256).
pub fn digest(canonical: &str) -> String {
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A retry whose key was used before for another request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyReused;

/// The answer to a retry that found the resource its key names: that resource, replayed,
/// if the retry asked for what the first request asked for (`asked` and `stored` are
/// their fingerprints); [`KeyReused`] if not.
pub fn replay<T>(resource: T, stored: &str, asked: &str) -> Result<Created<T>, KeyReused> {
    if stored == asked {
        Ok(Created::Replayed(resource))
    } else {
        Err(KeyReused)
    }
}

/// The answer to a key reused for another request: 422 naming the header.
pub fn key_reused(differs: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "Idempotency-Key already used for a different request",
    )
    .with_field("Idempotency-Key", differs)
}

/// What a creating request gets: the resource it made, or the one a retry with the same
/// key made first. Both answer 201 with the resource; a replay also carries [`REPLAYED`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created<T> {
    New(T),
    Replayed(T),
}

impl<T> Created<T> {
    pub fn is_replayed(&self) -> bool {
        matches!(self, Created::Replayed(_))
    }

    pub fn get(&self) -> &T {
        match self {
            Created::New(t) | Created::Replayed(t) => t,
        }
    }

    pub fn into_inner(self) -> T {
        match self {
            Created::New(t) | Created::Replayed(t) => t,
        }
    }
}

impl<T: Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        let replayed = self.is_replayed();
        let mut response = (StatusCode::CREATED, Json(self.into_inner())).into_response();
        if replayed {
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_the_same_resource_for_the_same_user_only() {
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(resource_id(alice, Some("k")), resource_id(alice, Some("k")));
        assert_ne!(resource_id(alice, Some("k")), resource_id(bob, Some("k")));
        assert_ne!(resource_id(alice, None), resource_id(alice, None));
    }

    #[test]
    fn a_retry_is_replayed_only_if_it_asked_the_same() {
        assert_eq!(replay(7, "a", "a"), Ok(Created::Replayed(7)));
        assert_eq!(replay(7, "a", "b"), Err(KeyReused));
        let e = key_reused("was used with other items");
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.code, "idempotency_key_reused");
        assert_eq!(e.errors[0].field, "Idempotency-Key");
        assert_eq!(e.errors[0].message, "was used with other items");
    }

    #[test]
    fn a_replay_answers_201_with_the_replayed_header() {
        let first = Created::New(1).into_response();
        assert_eq!(first.status(), StatusCode::CREATED);
        assert!(first.headers().get(REPLAYED).is_none());
        let again = Created::Replayed(1).into_response();
        assert_eq!(again.status(), StatusCode::CREATED);
        assert_eq!(again.headers()[REPLAYED], "true");
    }

    #[test]
    fn digests_are_hex_sha256() {
        assert_eq!(
            digest(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
