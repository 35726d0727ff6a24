//! The public catalogue reads as they are sent: from the cache while it is on, else from
//! the database; serialized once, each with its strong entity tag.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::HeaderValue;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mercato_kit::ApiError;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::{Cached, CatalogCache, Key, ListKey};
use crate::catalog;
use crate::routes::products::etag;

/// A product as `GET /products/{id}` sends it, tagged with its version; `None` if there is
/// no such product (in the catalogue).
pub async fn product(
    cache: &CatalogCache,
    db: &PgPool,
    id: Uuid,
) -> Result<Option<Arc<Cached>>, ApiError> {
    cache
        .read_through(Key::Item(id), || async move {
            let Some(product) = catalog::get(db, id).await? else {
                return Ok(None);
            };
            Ok(Some(Cached {
                etag: etag(&product),
                body: json(&product)?,
            }))
        })
        .await
}

/// A page of `GET /products` as it is sent, tagged with a digest of its body.
pub async fn page(
    cache: &CatalogCache,
    db: &PgPool,
    key: ListKey,
) -> Result<Arc<Cached>, ApiError> {
    let load = |key: ListKey| async move {
        let body = json(&catalog::page(db, &key).await?)?;
        Ok::<_, ApiError>(Some(Cached {
            etag: digest_tag(&body)?,
            body,
        }))
    };
    let cached = if worth_keeping(&key) {
        cache
            .read_through(Key::List(key.clone()), || load(key))
            .await?
    } else {
        load(key).await?.map(Arc::new)
    };
    cached.ok_or_else(|| ApiError::internal("a page always exists"))
}

/// Whether a page may take a place in the cache: not for a category no product can have
/// (anyone may ask for any string, and those pages would only push out useful ones).
fn worth_keeping(key: &ListKey) -> bool {
    key.category.as_deref().is_none_or(|c| {
        (1..=64).contains(&c.len())
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

fn json(value: &impl Serialize) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(format!("serializing a catalogue answer: {e}")))
}

/// A strong entity tag for `body`: 128 bits of its SHA-256, so any change to a page (a
/// product's version, one more or fewer product, another cursor) changes it, and every
/// replica computes the same tag for the same page.
pub fn digest_tag(body: &[u8]) -> Result<HeaderValue, ApiError> {
    let digest = Sha256::digest(body);
    HeaderValue::from_str(&format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest[..16])))
        .map_err(|_| ApiError::internal("an entity tag is ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(category: Option<&str>) -> ListKey {
        ListKey {
            category: category.map(str::to_string),
            after: None,
            limit: 20,
        }
    }

    #[test]
    fn pages_of_categories_that_cannot_exist_are_not_kept() {
        assert!(worth_keeping(&page(None)));
        assert!(worth_keeping(&page(Some("kitchen-2"))));
        assert!(!worth_keeping(&page(Some("Kitchen"))));
        assert!(!worth_keeping(&page(Some(&"a".repeat(65)))));
        assert!(!worth_keeping(&page(Some(""))));
    }

    #[test]
    fn a_page_tag_is_strong_and_changes_with_any_byte() {
        let a = digest_tag(br#"{"items":[]}"#).ok();
        let b = digest_tag(br#"{"items":[ ]}"#).ok();
        assert_eq!(
            a,
            digest_tag(br#"{"items":[]}"#).ok(),
            "the same on every replica"
        );
        assert_ne!(a, b);
        let tag = a
            .and_then(|t| t.to_str().ok().map(str::to_string))
            .unwrap_or_default();
        assert!(
            tag.starts_with('"') && tag.ends_with('"') && !tag.starts_with("W/"),
            "{tag}"
        );
    }
}
