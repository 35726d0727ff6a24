//! Hears every committed product change (the `products_notify_change` trigger of migration
//! 0003) and drops what the catalogue cache holds of it; says when it cannot hear.
//!
//! The listener has a connection of its own, outside the service's pool (so a busy pool
//! never delays a notification or starves the listener), named [`APPLICATION_NAME`] in
//! `pg_stat_activity`. A connection can die without a word (a node gone, a firewall
//! forgetting it), so every replica also sends a heartbeat on the channel each
//! [`HEARTBEAT_EVERY`], from a second connection of its own: a listener that hears nothing
//! at all, not even a heartbeat, for [`SILENCE_LIMIT`] counts its connection as lost. A
//! silently dead connection thus turns the cache off within that limit.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use super::{CatalogCache, Change};

/// The channel migration 0003's triggers notify, with a product's id as payload (an empty
/// payload: anything may have changed).
pub const CHANNEL: &str = "product_changes";
/// The listener's connection, as `pg_stat_activity` shows it.
pub const APPLICATION_NAME: &str = "mercato-product-catalog-listener";
/// The heartbeat's connection.
pub const HEARTBEAT_APPLICATION_NAME: &str = "mercato-product-catalog-heartbeat";
/// The payload of a heartbeat: nothing changed.
const HEARTBEAT: &str = "heartbeat";
/// How often each replica sends a heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a listener may hear nothing before it counts its connection as lost.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(5);
/// The first wait before connecting again, and the longest.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(5);

/// What a notification's payload says changed; `None` for a heartbeat.
pub fn change_of(payload: &str) -> Option<Change> {
    if payload == HEARTBEAT {
        return None;
    }
    Some(payload.parse().map_or(Change::Everything, Change::Product))
}

/// Starts the listener and the heartbeat for `cache`, on connections like `pool`'s.
pub fn spawn(pool: &PgPool, cache: Arc<CatalogCache>) {
    let options = (*pool.connect_options()).clone();
    tokio::spawn(listen_forever(
        options.clone().application_name(APPLICATION_NAME),
        cache,
    ));
    tokio::spawn(heartbeat_forever(
        options.application_name(HEARTBEAT_APPLICATION_NAME),
    ));
}

/// Why a listening session ended without an error.
#[derive(Debug)]
enum Ended {
    /// The connection closed (the server went away or terminated it).
    Lost,
    /// Nothing arrived for [`SILENCE_LIMIT`].
    Silent,
}

/// Listens, reconnecting with a growing wait, for as long as the service runs.
async fn listen_forever(options: PgConnectOptions, cache: Arc<CatalogCache>) {
    let mut retry = FIRST_RETRY;
    loop {
        let mut listened = false;
        let ended = session(&options, &cache, &mut listened).await;
        cache.disconnected();
        match ended {
            Ok(why) => tracing::warn!(
                ?why,
                "catalogue cache off: its listener lost the database; reconnecting"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "catalogue cache off: its listener cannot listen; retrying")
            }
        }
        retry = if listened {
            FIRST_RETRY
        } else {
            (retry * 2).min(LONGEST_RETRY)
        };
        tokio::time::sleep(retry).await;
    }
}

/// One connection's life: listen, turn the cache on, apply changes until the connection is
/// lost or silent. The connection is closed at the end, never reused.
async fn session(
    options: &PgConnectOptions,
    cache: &CatalogCache,
    listened: &mut bool,
) -> Result<Ended, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(SILENCE_LIMIT)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options.clone())
        .await?;
    let ended = receive(&pool, cache, listened).await;
    // Closing sends a goodbye over a connection that may be dead: bounded.
    let _ = tokio::time::timeout(Duration::from_secs(1), pool.close()).await;
    ended
}

async fn receive(
    pool: &PgPool,
    cache: &CatalogCache,
    listened: &mut bool,
) -> Result<Ended, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection ends the session (and empties the cache) rather than being
    // replaced behind our back, which would lose the changes made in between.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    cache.connected();
    *listened = true;
    tracing::info!("catalogue cache on: listening for product changes");
    loop {
        match tokio::time::timeout(SILENCE_LIMIT, listener.try_recv()).await {
            Err(_) => return Ok(Ended::Silent),
            Ok(Ok(None)) => return Ok(Ended::Lost),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Some(notification))) => {
                if let Some(change) = change_of(notification.payload()) {
                    cache.heard(change);
                }
            }
        }
    }
}

/// Sends a heartbeat on the channel every [`HEARTBEAT_EVERY`], for every replica's listener
/// to hear. A failure only means listeners may fall silent and reconnect.
async fn heartbeat_forever(options: PgConnectOptions) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(SILENCE_LIMIT)
        .connect_lazy_with(options);
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(HEARTBEAT)
            .execute(&pool);
        match tokio::time::timeout(SILENCE_LIMIT, sent).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "catalogue cache heartbeat not sent"),
            Err(_) => tracing::debug!("catalogue cache heartbeat timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_payload_names_a_product_a_heartbeat_nothing_and_anything_else_everything() {
        let id = Uuid::new_v4();
        assert_eq!(change_of(&id.to_string()), Some(Change::Product(id)));
        assert_eq!(change_of(HEARTBEAT), None);
        assert_eq!(change_of(""), Some(Change::Everything));
        assert_eq!(change_of("something new"), Some(Change::Everything));
    }

    #[test]
    fn the_migration_notifies_the_channel_the_listener_listens_on() {
        let sql = include_str!("../../migrations/0003_product_change_notifications.sql");
        let notify = format!("pg_notify('{CHANNEL}', ");
        assert_eq!(sql.matches("pg_notify(").count(), 3, "{sql}");
        assert_eq!(sql.matches(&notify).count(), 3, "every one on {CHANNEL}");
    }
}
