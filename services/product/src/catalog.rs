//! Products: the validated input types, the view, and their SQL.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mercato_kit::{ApiError, FieldError};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::cache::ListKey;

/// 100 million currency units, in minor units.
pub const MAX_PRICE: i64 = 10_000_000_000;
pub const MAX_STOCK: i64 = 10_000_000;

/// A product as clients see it. `price` is in minor units of `currency` (cents).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price: i64,
    pub currency: String,
    pub stock: i32,
    /// Changes whenever the product does, stock taken or returned by orders included: the
    /// `ETag` is this number in quotes, and an admin's `If-Match` must still carry it.
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Fields as sent by an admin; every one optional so PUT and PATCH share the parser.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductFields {
    /// 1 to 200 characters once surrounding spaces are trimmed.
    #[schema(max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    #[schema(pattern = r"^[a-z0-9-]{1,64}$")]
    pub category: Option<String>,
    /// Minor units (cents); an integer, never a float.
    #[schema(minimum = 0, maximum = 10_000_000_000_i64)]
    pub price: Option<i64>,
    /// ISO 4217 code, e.g. EUR.
    #[schema(pattern = r"^[A-Z]{3}$")]
    pub currency: Option<String>,
    #[schema(minimum = 0, maximum = 10_000_000)]
    pub stock: Option<i64>,
}

/// Validated changes: `None` leaves a column as it is.
#[derive(Debug, Default)]
pub struct Changes {
    pub name: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub price: Option<i64>,
    pub currency: Option<String>,
    pub stock: Option<i32>,
}

impl ProductFields {
    /// Parses for a create or full update (`complete`: every field but description is
    /// required) or for a partial update (at least one field).
    pub fn parse(self, complete: bool) -> Result<Changes, ApiError> {
        let mut errors = Vec::new();
        let mut need = |field: &str, present: bool| {
            if complete && !present {
                errors.push(FieldError::new(field, "is required"));
            }
        };
        need("name", self.name.is_some());
        need("category", self.category.is_some());
        need("price", self.price.is_some());
        need("currency", self.currency.is_some());
        need("stock", self.stock.is_some());
        let mut check = |ok: bool, field: &str, message: &str| {
            if !ok {
                errors.push(FieldError::new(field, message));
            }
        };
        if let Some(name) = &self.name {
            check(
                (1..=200).contains(&name.trim().chars().count()),
                "name",
                "must be 1 to 200 characters",
            );
        }
        if let Some(d) = &self.description {
            check(
                d.chars().count() <= 2000,
                "description",
                "must be at most 2000 characters",
            );
        }
        if let Some(c) = &self.category {
            let ok = (1..=64).contains(&c.len())
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            check(
                ok,
                "category",
                "must be 1 to 64 of lowercase letters, digits and '-'",
            );
        }
        if let Some(p) = self.price {
            check(
                (0..=MAX_PRICE).contains(&p),
                "price",
                "must be an integer number of minor units from 0",
            );
        }
        if let Some(c) = &self.currency {
            check(
                c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()),
                "currency",
                "must be a 3-letter ISO 4217 code, e.g. EUR",
            );
        }
        if let Some(s) = self.stock {
            check(
                (0..=MAX_STOCK).contains(&s),
                "stock",
                "must be from 0 to 10000000",
            );
        }
        let all_empty = self.name.is_none()
            && self.description.is_none()
            && self.category.is_none()
            && self.price.is_none()
            && self.currency.is_none()
            && self.stock.is_none();
        if !complete && all_empty {
            errors.push(FieldError::new("body", "must change at least one field"));
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(Changes {
            name: self.name.map(|n| n.trim().to_string()),
            description: self.description.or_else(|| complete.then(String::new)),
            category: self.category,
            price: self.price,
            currency: self.currency,
            stock: self.stock.and_then(|s| i32::try_from(s).ok()),
        })
    }
}

/// The columns of a [`Product`], in every statement that returns one.
macro_rules! columns {
    () => {
        "id, name, description, category, price, currency::text AS currency, stock, version, created_at, updated_at"
    };
}

const COLUMNS: &str = columns!();

/// The statement behind `GET /products/{id}` (`$1`: the id). Public so that `make bench`
/// can hold the service against PostgreSQL running exactly this.
pub const ITEM_QUERY: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM products WHERE id = $1 AND active"
);

/// The statement behind `GET /products` (`$1` category or NULL, `$2`/`$3` the cursor's
/// creation time and id or NULL, `$4` the page size): keyset pagination on creation time
/// and id, so pages stay stable while products are added.
pub const LIST_QUERY: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM products
     WHERE active AND ($1::text IS NULL OR category = $1)
       AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
     ORDER BY created_at, id LIMIT $4"
);

pub async fn insert(db: &PgPool, c: &Changes) -> Result<Product, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO products (id, name, description, category, price, currency, stock)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(&c.name)
    .bind(c.description.as_deref().unwrap_or(""))
    .bind(&c.category)
    .bind(c.price)
    .bind(&c.currency)
    .bind(c.stock)
    .fetch_one(db)
    .await
}

/// What an update came to.
#[derive(Debug)]
pub enum Updated {
    Done(Product),
    /// The product is not at any of the versions the admin read: it is as it is now.
    Stale(Product),
    Missing,
}

/// Applies `c` to a product, only if it is still at one of `versions` when given (the
/// admin's `If-Match`): checked in the same statement that writes, so a reservation that
/// lands between the admin's read and write makes the write stale instead of lost.
pub async fn update(
    db: &PgPool,
    id: Uuid,
    c: &Changes,
    versions: Option<&[i64]>,
) -> Result<Updated, sqlx::Error> {
    let done: Option<Product> = sqlx::query_as(&format!(
        "UPDATE products SET
            name = COALESCE($2, name),
            description = COALESCE($3, description),
            category = COALESCE($4, category),
            price = COALESCE($5, price),
            currency = COALESCE($6, currency),
            stock = COALESCE($7, stock),
            updated_at = now()
         WHERE id = $1 AND active AND ($8::bigint[] IS NULL OR version = ANY($8))
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&c.name)
    .bind(&c.description)
    .bind(&c.category)
    .bind(c.price)
    .bind(&c.currency)
    .bind(c.stock)
    .bind(versions)
    .fetch_optional(db)
    .await?;
    Ok(match (done, versions) {
        (Some(product), _) => Updated::Done(product),
        (None, None) => Updated::Missing,
        (None, Some(_)) => get(db, id).await?.map_or(Updated::Missing, Updated::Stale),
    })
}

pub async fn get(db: &PgPool, id: Uuid) -> Result<Option<Product>, sqlx::Error> {
    sqlx::query_as(ITEM_QUERY).bind(id).fetch_optional(db).await
}

/// Hides a product from the catalog; orders that reference it keep their snapshot.
pub async fn deactivate(db: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE products SET active = false, updated_at = now() WHERE id = $1 AND active",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// A page of the catalog, and where the next one starts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<Product>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn encode_cursor(p: &Product) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", p.created_at.unix_timestamp_nanos(), p.id))
}

/// Where a `next_cursor` this API returned points; `None` for anything else.
pub fn decode_cursor(cursor: &str) -> Option<(OffsetDateTime, Uuid)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (nanos, id) = raw.split_once(':')?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos.parse().ok()?).ok()?;
    Some((at, id.parse().ok()?))
}

/// The page `key` names (its `limit` at least 1).
pub async fn page(db: &PgPool, key: &ListKey) -> Result<ProductPage, sqlx::Error> {
    // One extra row tells whether another page exists.
    let mut items = list(db, key.category.as_deref(), key.after, key.limit + 1).await?;
    let next_cursor = if items.len() as i64 > key.limit {
        items.truncate(usize::try_from(key.limit).unwrap_or(usize::MAX));
        items.last().map(encode_cursor)
    } else {
        None
    };
    Ok(ProductPage { items, next_cursor })
}

/// A page of the catalog after `after` (keyset on creation time and id, so pages stay
/// stable while products are added).
pub async fn list(
    db: &PgPool,
    category: Option<&str>,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<Vec<Product>, sqlx::Error> {
    let (after_at, after_id) = after.map_or((None, None), |(t, id)| (Some(t), Some(id)));
    sqlx::query_as(LIST_QUERY)
        .bind(category)
        .bind(after_at)
        .bind(after_id)
        .bind(limit)
        .fetch_all(db)
        .await
}
