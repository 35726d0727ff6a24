//! Refresh-token families (one per login: the session an access token's `sid` names) and
//! service clients, with their SQL. Ending a session also logs it in the revocation feed.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use rand::rngs::OsRng;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::passwords::token_hash;
use crate::revocations;

/// A new opaque refresh token (256 random bits).
fn new_opaque_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn expiry(ttl: Duration) -> OffsetDateTime {
    OffsetDateTime::now_utc() + ttl
}

/// A new token in `family`; only its hash is stored.
async fn issue_in_family(
    tx: &mut sqlx::PgConnection,
    family: Uuid,
    ttl: Duration,
) -> Result<String, sqlx::Error> {
    let token = new_opaque_token();
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(token_hash(&token))
    .bind(family)
    .bind(expiry(ttl))
    .execute(tx)
    .await?;
    Ok(token)
}

/// Starts a new family (a login) and returns its id (the session id) and first token.
pub async fn start_family(
    db: &PgPool,
    user_id: Uuid,
    ttl: Duration,
) -> Result<(Uuid, String), sqlx::Error> {
    let mut tx = db.begin().await?;
    let family = Uuid::new_v4();
    sqlx::query("INSERT INTO refresh_families (id, user_id) VALUES ($1, $2)")
        .bind(family)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let token = issue_in_family(&mut tx, family, ttl).await?;
    tx.commit().await?;
    Ok((family, token))
}

/// The result of presenting a refresh token.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current: here is its successor, for this user and session.
    Rotated {
        user_id: Uuid,
        family: Uuid,
        token: String,
    },
    /// Unknown, expired, or its family was revoked.
    Invalid,
    /// A token that had already been rotated was presented again: the family is now revoked.
    Reused,
}

/// A presented refresh token with its family and user, locked for rotation.
#[derive(sqlx::FromRow)]
struct PresentedToken {
    family_id: Uuid,
    user_id: Uuid,
    expires_at: OffsetDateTime,
    rotated_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
    disabled: bool,
}

/// Rotates a refresh token. The row lock makes two concurrent uses of one token resolve
/// as one rotation and one reuse, never two successors. A reuse ends the session, and its
/// access tokens (at most `access_ttl` old) everywhere.
pub async fn rotate(
    db: &PgPool,
    presented: &str,
    ttl: Duration,
    access_ttl: Duration,
) -> Result<Rotation, sqlx::Error> {
    let mut tx = db.begin().await?;
    let row: Option<PresentedToken> = sqlx::query_as(
        "SELECT t.family_id, f.user_id, t.expires_at, t.rotated_at, f.revoked_at, u.disabled
         FROM refresh_tokens t
         JOIN refresh_families f ON f.id = t.family_id
         JOIN users u ON u.id = f.user_id
         WHERE t.token_hash = $1
         FOR UPDATE OF t, f",
    )
    .bind(token_hash(presented))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(PresentedToken {
        family_id: family,
        user_id,
        expires_at,
        rotated_at,
        revoked_at,
        disabled,
    }) = row
    else {
        return Ok(Rotation::Invalid);
    };
    if revoked_at.is_some() || disabled || expires_at <= OffsetDateTime::now_utc() {
        return Ok(Rotation::Invalid);
    }
    if rotated_at.is_some() {
        revoke_family_in(&mut tx, family, "reuse").await?;
        revocations::end_session(&mut tx, family, access_ttl).await?;
        tx.commit().await?;
        tracing::warn!(%family, %user_id, "refresh token reuse detected; family revoked");
        return Ok(Rotation::Reused);
    }
    sqlx::query("UPDATE refresh_tokens SET rotated_at = now() WHERE token_hash = $1")
        .bind(token_hash(presented))
        .execute(&mut *tx)
        .await?;
    let token = issue_in_family(&mut tx, family, ttl).await?;
    tx.commit().await?;
    Ok(Rotation::Rotated {
        user_id,
        family,
        token,
    })
}

async fn revoke_family_in(
    tx: &mut sqlx::PgConnection,
    family: Uuid,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_families SET revoked_at = now(), revoked_reason = $2
         WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(family)
    .bind(reason)
    .execute(tx)
    .await?;
    Ok(())
}

/// Logout: ends the session of `presented` (if it belongs to `user`; any user when
/// `None`) and the session `sid` of `user`'s access token, logging both in the feed.
pub async fn logout(
    db: &PgPool,
    presented: &str,
    user: Option<Uuid>,
    sid: Option<Uuid>,
    access_ttl: Duration,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut ended: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE refresh_families f SET revoked_at = now(), revoked_reason = 'logout'
         FROM refresh_tokens t
         WHERE t.family_id = f.id AND t.token_hash = $1 AND f.revoked_at IS NULL
           AND ($2::uuid IS NULL OR f.user_id = $2)
         RETURNING f.id",
    )
    .bind(token_hash(presented))
    .bind(user)
    .fetch_all(&mut *tx)
    .await?;
    if let (Some(sid), Some(user)) = (sid, user) {
        ended.extend(
            sqlx::query_scalar::<_, Uuid>(
                "UPDATE refresh_families SET revoked_at = now(), revoked_reason = 'logout'
                 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING id",
            )
            .bind(sid)
            .bind(user)
            .fetch_all(&mut *tx)
            .await?,
        );
    }
    for family in ended {
        revocations::end_session(&mut tx, family, access_ttl).await?;
    }
    tx.commit().await
}

/// Whether session `sid` of `user` is still open (not logged out, reused or revoked).
pub async fn session_open(db: &PgPool, sid: Uuid, user: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM refresh_families
                        WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL)",
    )
    .bind(sid)
    .bind(user)
    .fetch_one(db)
    .await
}

/// Revokes every family of a user (password change, disable).
pub async fn revoke_all_for_user(
    db: impl sqlx::PgExecutor<'_>,
    user: Uuid,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_families SET revoked_at = now(), revoked_reason = $2
         WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes what can no longer matter: expired refresh tokens, revocations no token can
/// still need, and login addresses unused for 90 days.
pub async fn purge_expired(db: &PgPool) -> Result<u64, sqlx::Error> {
    let a = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < now() - interval '1 day'")
        .execute(db)
        .await?
        .rows_affected();
    let b = revocations::purge(db).await?;
    let c = sqlx::query(
        "DELETE FROM login_addresses WHERE last_success_at < now() - interval '90 days'",
    )
    .execute(db)
    .await?
    .rows_affected();
    Ok(a + b + c)
}

/// Makes the service_clients table match configuration exactly.
pub async fn sync_service_clients(
    db: &PgPool,
    clients: &[(String, String, Vec<String>)],
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let ids: Vec<&str> = clients.iter().map(|(id, _, _)| id.as_str()).collect();
    sqlx::query("DELETE FROM service_clients WHERE client_id <> ALL($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    for (id, secret, scopes) in clients {
        sqlx::query(
            "INSERT INTO service_clients (client_id, secret_hash, scopes) VALUES ($1, $2, $3)
             ON CONFLICT (client_id) DO UPDATE
               SET secret_hash = EXCLUDED.secret_hash, scopes = EXCLUDED.scopes, updated_at = now()",
        )
        .bind(id)
        .bind(token_hash(secret))
        .bind(scopes)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// The scopes of a client whose secret matches, or `None`.
pub async fn authenticate_client(
    db: &PgPool,
    id: &str,
    secret: &str,
) -> Result<Option<Vec<String>>, sqlx::Error> {
    let row: Option<(Vec<u8>, Vec<String>)> =
        sqlx::query_as("SELECT secret_hash, scopes FROM service_clients WHERE client_id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
    let presented = token_hash(secret);
    Ok(row.and_then(|(hash, scopes)| constant_time_eq(&hash, &presented).then_some(scopes)))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
