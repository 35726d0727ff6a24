//! The revocation log and its feed: ended sessions and users whose earlier tokens are
//! void, with their SQL. Every service keeps the feed in memory (`kit::revocation`).

use std::time::Duration;

use mercato_kit::revocation::{PAGE_SIZE, Revocation, RevocationPage};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Seconds a token is still accepted after its `exp` (the verifier's leeway), plus a
/// margin for `iat`s in the same second as the revocation.
const SLACK_SECS: u64 = mercato_contract::TOKEN_LEEWAY_SECS + 2;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn to_db(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Holds the log's write lock until the transaction ends, so ids commit in order.
async fn lock_log(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mercato-auth-revocations'))")
        .execute(conn)
        .await?;
    Ok(())
}

/// Logs that session `sid` ended; its tokens live at most `access_ttl` from now.
pub async fn end_session(
    conn: &mut PgConnection,
    sid: Uuid,
    access_ttl: Duration,
) -> Result<(), sqlx::Error> {
    lock_log(conn).await?;
    sqlx::query("INSERT INTO revocations (sid, forget_after) VALUES ($1, $2)")
        .bind(sid)
        .bind(to_db(now_secs() + access_ttl.as_secs() + SLACK_SECS))
        .execute(conn)
        .await?;
    Ok(())
}

/// Voids every token of `user` issued until now (password change, disable, role change,
/// deletion): the next second is the earliest `iat` still good, and tokens issued from now
/// on carry at least that `iat` (see [`issued_at`]), so a login right after still works.
pub async fn void_user_tokens(
    conn: &mut PgConnection,
    user: Uuid,
    access_ttl: Duration,
) -> Result<u64, sqlx::Error> {
    let not_before = now_secs() + 1;
    lock_log(conn).await?;
    sqlx::query(
        "UPDATE users SET tokens_valid_from = GREATEST(tokens_valid_from, $2) WHERE id = $1",
    )
    .bind(user)
    .bind(to_db(not_before))
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO revocations (sub, not_before, forget_after) VALUES ($1, $2, $3)")
        .bind(user)
        .bind(to_db(not_before))
        .bind(to_db(not_before + access_ttl.as_secs() + SLACK_SECS))
        .execute(conn)
        .await?;
    Ok(not_before)
}

/// The `iat` of a token issued now for a user whose tokens are valid from `valid_from`.
pub fn issued_at(valid_from: i64) -> u64 {
    now_secs().max(u64::try_from(valid_from).unwrap_or(0))
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    sid: Option<Uuid>,
    sub: Option<Uuid>,
    not_before: Option<i64>,
    forget_after: i64,
}

/// The entries after `after` that can still matter, a page at a time.
pub async fn page(db: &PgPool, after: i64) -> Result<RevocationPage, sqlx::Error> {
    let mut rows: Vec<Row> = sqlx::query_as(
        "SELECT id, sid, sub, not_before, forget_after FROM revocations
         WHERE id > $1 AND forget_after >= $2 ORDER BY id LIMIT $3",
    )
    .bind(after)
    .bind(to_db(now_secs()))
    .bind(PAGE_SIZE + 1)
    .fetch_all(db)
    .await?;
    let more = rows.len() > usize::try_from(PAGE_SIZE).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(PAGE_SIZE).unwrap_or(usize::MAX));
    let cursor = match rows.last() {
        Some(last) => last.id,
        // Nothing new: the log's head (lower than `after` if the log started over).
        None => {
            sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM revocations")
                .fetch_one(db)
                .await?
        }
    };
    let forget = |secs: i64| u64::try_from(secs).unwrap_or(0);
    let entries = rows
        .into_iter()
        .filter_map(|r| match (r.sid, r.sub, r.not_before) {
            (Some(sid), _, _) => Some(Revocation::Session {
                sid: sid.to_string(),
                forget_after: forget(r.forget_after),
            }),
            (None, Some(sub), Some(not_before)) => Some(Revocation::User {
                sub: sub.to_string(),
                not_before: forget(not_before),
                forget_after: forget(r.forget_after),
            }),
            _ => None,
        })
        .collect();
    Ok(RevocationPage {
        entries,
        cursor,
        more,
    })
}

/// Deletes entries that can no longer void any token.
pub async fn purge(db: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM revocations WHERE forget_after < $1")
            .bind(to_db(now_secs()))
            .execute(db)
            .await?
            .rows_affected(),
    )
}
