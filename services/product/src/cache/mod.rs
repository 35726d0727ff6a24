//! The catalogue cache: public reads (`GET /products`, `GET /products/{id}`) answered from
//! memory, kept true by PostgreSQL's notifications.
//!
//! Every write to `products`, from any replica or statement, notifies every replica once
//! it commits (migration 0003); [`listener`] receives them and drops the product and every
//! page. So a replica serves a committed change as soon as the notification reaches it
//! (milliseconds), never later: the cache is only used while the listener is connected,
//! everything is dropped whenever it (re)connects or loses its connection, and a page read
//! from the database is kept only if no change arrived while it was being read (the
//! *generation* below), so a read racing a write cannot store the old value after the
//! write's notification went by.

pub mod listener;
pub mod reads;
mod store;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use mercato_kit::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use uuid::Uuid;

use store::Store;
pub use store::{Cached, Key, Limits, ListKey};

/// What a notification (or a write on this replica) says changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Product(Uuid),
    /// Anything may have changed (a `TRUNCATE`, a payload this version does not know).
    Everything,
}

/// The cache's counters and gauges on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct CacheMetrics {
    hits: Counter,
    misses: Counter,
    heard: Counter,
    connected: Gauge,
    entries: Gauge,
    bytes: Gauge,
}

impl CacheMetrics {
    /// Registers the cache's metrics next to the service's own.
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self::default();
        metrics.register(
            "catalog_cache_hits",
            "Public catalogue reads answered from the cache",
            m.hits.clone(),
        );
        metrics.register(
            "catalog_cache_misses",
            "Public catalogue reads answered from the database (not cached yet, or the cache is off while its listener is not connected)",
            m.misses.clone(),
        );
        metrics.register(
            "catalog_cache_changes_heard",
            "Changes to products this replica heard of from PostgreSQL's notifications, its own writes' included (each drops what it may have made stale)",
            m.heard.clone(),
        );
        metrics.register(
            "catalog_cache_listener_connected",
            "1 while the catalogue cache's change listener is connected (the cache is in use), else 0",
            m.connected.clone(),
        );
        metrics.register(
            "catalog_cache_entries",
            "Products and pages the catalogue cache holds",
            m.entries.clone(),
        );
        metrics.register(
            "catalog_cache_bytes",
            "Memory the catalogue cache's entries are counted as (bounded by CATALOG_CACHE_MIB)",
            m.bytes.clone(),
        );
        m
    }
}

#[derive(Debug)]
struct State {
    store: Store,
    /// The cache is used only while this holds.
    connected: bool,
    /// Bumped by every change and every (dis)connection: a read from the database is kept
    /// only if the generation is still the one it started at.
    generation: u64,
}

/// The catalogue cache of one replica; see the module's documentation.
#[derive(Debug)]
pub struct CatalogCache {
    state: Mutex<State>,
    metrics: CacheMetrics,
}

/// Where a read stands after looking in the cache.
enum Lookup {
    Hit(Arc<Cached>),
    /// Read the database; keep the answer if the generation is still this one (`None`:
    /// the cache is off, keep nothing).
    Miss(Option<u64>),
}

impl CatalogCache {
    /// An empty cache within `limits`, off until [`CatalogCache::connected`].
    pub fn new(limits: Limits, metrics: CacheMetrics) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                store: Store::new(limits),
                connected: false,
                generation: 0,
            }),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer under `key`: the cached one, or `load`'s (kept for the next read when it
    /// is safe to). `Ok(None)` when `load` found nothing (not cached: a product created
    /// later must not be hidden by it).
    pub async fn read_through<F, Fut, E>(&self, key: Key, load: F) -> Result<Option<Arc<Cached>>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Cached>, E>>,
    {
        let ticket = match self.lookup(&key) {
            Lookup::Hit(cached) => {
                self.metrics.hits.inc();
                return Ok(Some(cached));
            }
            Lookup::Miss(ticket) => ticket,
        };
        self.metrics.misses.inc();
        let loaded = load().await?.map(Arc::new);
        if let (Some(generation), Some(value)) = (ticket, &loaded) {
            self.keep(generation, key, value.clone());
        }
        Ok(loaded)
    }

    fn lookup(&self, key: &Key) -> Lookup {
        let state = self.lock();
        if !state.connected {
            return Lookup::Miss(None);
        }
        match state.store.get(key) {
            Some(cached) => Lookup::Hit(cached),
            None => Lookup::Miss(Some(state.generation)),
        }
    }

    /// Keeps what was read at `generation`, unless something changed since.
    fn keep(&self, generation: u64, key: Key, value: Arc<Cached>) {
        let mut state = self.lock();
        if state.connected && state.generation == generation {
            state.store.insert(key, value);
            self.count(&state);
        }
    }

    /// Drops what `change` may have made stale.
    pub fn apply(&self, change: Change) {
        let mut state = self.lock();
        state.generation += 1;
        match change {
            Change::Product(id) => state.store.forget_product(id),
            Change::Everything => state.store.clear(),
        }
        self.count(&state);
    }

    /// A change heard from a notification: counted, then dropped as [`CatalogCache::apply`]
    /// does.
    pub fn heard(&self, change: Change) {
        self.metrics.heard.inc();
        self.apply(change);
    }

    /// The listener is listening (again): start afresh, as changes may have been missed.
    pub fn connected(&self) {
        self.set_connected(true);
    }

    /// The listener lost its connection: changes may be missed from now on, so the cache
    /// is off and empty until it is back.
    pub fn disconnected(&self) {
        self.set_connected(false);
    }

    fn set_connected(&self, connected: bool) {
        let mut state = self.lock();
        state.generation += 1;
        state.connected = connected;
        state.store.clear();
        self.metrics.connected.set(i64::from(connected));
        self.count(&state);
    }

    /// Whether reads are answered from memory now.
    pub fn is_on(&self) -> bool {
        self.lock().connected
    }

    fn count(&self, state: &State) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.entries.set(gauge(state.store.entries()));
        self.metrics.bytes.set(gauge(state.store.bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use axum::http::HeaderValue;

    fn cache() -> Arc<CatalogCache> {
        CatalogCache::new(
            Limits {
                entries: 100,
                bytes: 1 << 20,
            },
            CacheMetrics::default(),
        )
    }

    fn answer(body: &'static str) -> Cached {
        Cached {
            body: Bytes::from_static(body.as_bytes()),
            etag: HeaderValue::from_static("\"1\""),
        }
    }

    /// Reads `key` through the cache with a loader that answers `body`; the body served.
    async fn read(cache: &CatalogCache, key: &Key, body: &'static str) -> Option<Bytes> {
        let got: Result<_, ()> = cache
            .read_through(key.clone(), || async move { Ok(Some(answer(body))) })
            .await;
        got.ok().flatten().map(|c| c.body.clone())
    }

    #[tokio::test]
    async fn nothing_is_served_from_memory_until_the_listener_is_connected() {
        let (cache, key) = (cache(), Key::Item(Uuid::new_v4()));
        assert_eq!(
            read(&cache, &key, "old").await.as_deref(),
            Some(&b"old"[..])
        );
        assert_eq!(
            read(&cache, &key, "new").await.as_deref(),
            Some(&b"new"[..])
        );
        cache.connected();
        assert_eq!(read(&cache, &key, "v1").await.as_deref(), Some(&b"v1"[..]));
        assert_eq!(
            read(&cache, &key, "v2").await.as_deref(),
            Some(&b"v1"[..]),
            "connected: the second read is a hit"
        );
    }

    #[tokio::test]
    async fn losing_or_regaining_the_listener_drops_everything() {
        let (cache, key) = (cache(), Key::Item(Uuid::new_v4()));
        cache.connected();
        read(&cache, &key, "v1").await;
        cache.disconnected();
        assert!(!cache.is_on());
        assert_eq!(read(&cache, &key, "v2").await.as_deref(), Some(&b"v2"[..]));
        cache.connected();
        assert_eq!(read(&cache, &key, "v3").await.as_deref(), Some(&b"v3"[..]));
    }

    #[tokio::test]
    async fn a_change_drops_its_product_and_every_page() {
        let cache = cache();
        cache.connected();
        let (changed, other) = (Uuid::new_v4(), Uuid::new_v4());
        let page = Key::List(ListKey {
            category: None,
            after: None,
            limit: 20,
        });
        for key in [Key::Item(changed), Key::Item(other), page.clone()] {
            read(&cache, &key, "old").await;
        }
        cache.apply(Change::Product(changed));
        assert_eq!(
            read(&cache, &Key::Item(changed), "new").await.as_deref(),
            Some(&b"new"[..])
        );
        assert_eq!(
            read(&cache, &page, "new").await.as_deref(),
            Some(&b"new"[..])
        );
        assert_eq!(
            read(&cache, &Key::Item(other), "new").await.as_deref(),
            Some(&b"old"[..])
        );
        cache.apply(Change::Everything);
        assert_eq!(
            read(&cache, &Key::Item(other), "newer").await.as_deref(),
            Some(&b"newer"[..])
        );
    }

    #[tokio::test]
    async fn a_read_that_a_change_overtook_is_not_kept() {
        let (cache, key) = (cache(), Key::Item(Uuid::new_v4()));
        cache.connected();
        // The change's notification arrives while the database read is under way: what
        // that read found may predate the change, so it is served once but not kept.
        let got: Result<_, ()> = cache
            .read_through(key.clone(), || async {
                cache.apply(Change::Everything);
                Ok(Some(answer("maybe stale")))
            })
            .await;
        assert!(got.ok().flatten().is_some());
        assert_eq!(
            read(&cache, &key, "fresh").await.as_deref(),
            Some(&b"fresh"[..])
        );
    }

    #[tokio::test]
    async fn what_the_database_does_not_have_is_not_cached() {
        let (cache, key) = (cache(), Key::Item(Uuid::new_v4()));
        cache.connected();
        let none: Result<Option<Arc<Cached>>, ()> =
            cache.read_through(key.clone(), || async { Ok(None) }).await;
        assert!(matches!(none, Ok(None)));
        assert_eq!(
            read(&cache, &key, "created").await.as_deref(),
            Some(&b"created"[..])
        );
    }
}
