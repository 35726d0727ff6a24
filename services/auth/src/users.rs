//! Users and their SQL.

use mercato_kit::jwt::Role;
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// A user as stored. `Debug` leaves the password hash out.
#[derive(Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    /// Unix seconds: this user's tokens issued earlier are void.
    pub tokens_valid_from: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A user as shown to clients: never the password hash.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub role: Role,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<UserRow> for UserView {
    fn from(u: UserRow) -> Self {
        Self {
            id: u.id,
            username: u.username,
            email: u.email,
            role: u.role,
            disabled: u.disabled,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

const COLUMNS: &str =
    "id, username, email, password_hash, role, disabled, tokens_valid_from, created_at, updated_at";

/// A user to insert.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub role: Role,
}

pub async fn insert(db: impl PgExecutor<'_>, new: &NewUser<'_>) -> Result<UserRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO users (id, username, email, password_hash, role)
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(new.username)
    .bind(new.email)
    .bind(new.password_hash)
    .bind(new.role)
    .fetch_one(db)
    .await
}

/// Inserts unless the username exists; returns whether a row was created.
pub async fn insert_if_absent(db: &PgPool, new: &NewUser<'_>) -> Result<bool, sqlx::Error> {
    let created = sqlx::query(
        "INSERT INTO users (id, username, email, password_hash, role)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(Uuid::new_v4())
    .bind(new.username)
    .bind(new.email)
    .bind(new.password_hash)
    .bind(new.role)
    .execute(db)
    .await?;
    Ok(created.rows_affected() == 1)
}

pub async fn by_id(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn by_username(db: &PgPool, username: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE username = $1"))
        .bind(username)
        .fetch_optional(db)
        .await
}

pub async fn list(
    db: &PgPool,
    role: Option<Role>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<UserRow>, i64), sqlx::Error> {
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users WHERE ($1::text IS NULL OR role = $1)
         ORDER BY created_at, id LIMIT $2 OFFSET $3"
    ))
    .bind(role)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let total =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE ($1::text IS NULL OR role = $1)")
            .bind(role)
            .fetch_one(db)
            .await?;
    Ok((rows, total))
}

/// Changes to a user; `None` leaves a column as it is.
#[derive(Debug, Default)]
pub struct Changes {
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

pub async fn update(
    db: impl PgExecutor<'_>,
    id: Uuid,
    c: &Changes,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE users SET
            email = COALESCE($2, email),
            password_hash = COALESCE($3, password_hash),
            role = COALESCE($4, role),
            disabled = COALESCE($5, disabled),
            updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&c.email)
    .bind(&c.password_hash)
    .bind(c.role)
    .bind(c.disabled)
    .fetch_optional(db)
    .await
}

/// Whether `username` has logged in successfully from `address` before.
pub async fn is_known_address(
    db: &PgPool,
    username: &str,
    address: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM login_addresses a JOIN users u ON u.id = a.user_id
                        WHERE u.username = $1 AND a.address = $2)",
    )
    .bind(username)
    .bind(address)
    .fetch_one(db)
    .await
}

/// Remembers a successful login of `user` from `address`.
pub async fn remember_address(db: &PgPool, user: Uuid, address: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO login_addresses (user_id, address) VALUES ($1, $2)
         ON CONFLICT (user_id, address) DO UPDATE SET last_success_at = now()",
    )
    .bind(user)
    .bind(address)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn delete(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() == 1)
}
