//! A short shared cache of public reads (RFC 9111), so the catalogue's hottest requests
//! are answered without the hop to a service.
//!
//! Only what a service marks `Cache-Control: public, max-age=N` (or `s-maxage`) is kept,
//! and only for `N` seconds, capped by `PUBLIC_CACHE_MAX_SECS`: the product service marks
//! its catalogue reads so, with `N` = 1 by default. A copy is served with `Age` and its
//! `ETag`, and `If-None-Match` is answered here (`304`) as the service would.
//!
//! Freshness: a write that passes through this gateway to the product, order or payment
//! service (an admin's edit, an order taking stock, a cancellation) drops every copy once
//! the service has answered, and a read that was under way meanwhile is not kept, so a
//! client of one gateway reads its own writes at once. A change made anywhere else (another
//! gateway replica, a reservation expiring) is seen within `max-age` seconds, the bound the
//! service's `Cache-Control` grants every shared cache. A client that asks with
//! `Cache-Control: no-cache` (or `Pragma: no-cache`) always gets the service's answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::header::{AGE, CACHE_CONTROL, CONTENT_LENGTH, ETAG, PRAGMA, SET_COOKIE, VARY};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use mercato_kit::conditional::client_has;
use mercato_kit::metrics::Metrics;
use mercato_kit::telemetry::REQUEST_ID_HEADER;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// What an entry costs beyond its body and key: the map slot, the `Arc`, the headers.
const ENTRY_OVERHEAD: usize = 512;

/// The largest answer kept: bigger ones pass through, streamed.
const MAX_BODY: u64 = 256 * 1024;

/// How much the cache may hold and for how long at most.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Answers kept at most; 0 turns the cache off.
    pub entries: usize,
    /// Memory the entries are counted as, at most.
    pub bytes: usize,
    /// The longest an answer is kept, whatever its `max-age` says.
    pub max_age: Duration,
}

/// The cache's counters and gauges on `/metrics`.
#[derive(Debug, Clone, Default)]
struct CacheMetrics {
    hits: Counter,
    misses: Counter,
    entries: Gauge,
    bytes: Gauge,
}

impl CacheMetrics {
    fn register(metrics: &Metrics) -> Self {
        let m = Self::default();
        metrics.register(
            "public_cache_hits",
            "Public reads the gateway answered from its cache, without the hop",
            m.hits.clone(),
        );
        metrics.register(
            "public_cache_misses",
            "GET requests the gateway sent on to the service (nothing fresh was cached for them)",
            m.misses.clone(),
        );
        metrics.register(
            "public_cache_entries",
            "Answers the gateway's cache holds",
            m.entries.clone(),
        );
        metrics.register(
            "public_cache_bytes",
            "Memory the gateway's cached answers are counted as (bounded by PUBLIC_CACHE_MIB)",
            m.bytes.clone(),
        );
        m
    }
}

/// One kept answer (always a `200`).
#[derive(Debug)]
struct Entry {
    headers: HeaderMap,
    body: Bytes,
    etag: Option<HeaderValue>,
    stored: Instant,
    fresh_for: Duration,
}

impl Entry {
    fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.stored) < self.fresh_for
    }

    fn cost(&self, key: &str) -> usize {
        self.body.len() + key.len() + ENTRY_OVERHEAD
    }

    /// The answer to a request holding `asked`: `304` with the validators if the client
    /// has this copy already, else the copy; both with its `Age` (RFC 9111 §5.1).
    fn answer(&self, asked: &HeaderMap, now: Instant) -> Response {
        let age = HeaderValue::from(now.saturating_duration_since(self.stored).as_secs());
        if let Some(etag) = &self.etag
            && client_has(asked, etag)
        {
            let mut headers = HeaderMap::new();
            for name in [ETAG, CACHE_CONTROL] {
                if let Some(v) = self.headers.get(&name) {
                    headers.insert(name, v.clone());
                }
            }
            headers.insert(AGE, age);
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        let mut response = Response::new(Body::from(self.body.clone()));
        *response.headers_mut() = self.headers.clone();
        response.headers_mut().insert(AGE, age);
        response
    }
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Arc<Entry>>,
    bytes: usize,
    /// Bumped when a write starts and when it ends: an answer is kept only if the
    /// generation is still the one its request started at.
    generation: u64,
}

/// The gateway's cache of public reads; see the module's documentation.
#[derive(Debug)]
pub struct PublicCache {
    state: Mutex<State>,
    limits: Limits,
    metrics: CacheMetrics,
}

/// A fresh copy found by [`PublicCache::fresh`].
#[derive(Debug)]
pub struct Fresh(Arc<Entry>);

/// A read that missed: what to keep its answer under, and the generation it started at.
#[derive(Debug)]
pub struct Ticket {
    key: String,
    generation: u64,
}

/// A write under way; dropping it (once the service has answered, or failed to) drops
/// every copy.
#[derive(Debug)]
pub struct Writing<'a>(&'a PublicCache);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.forget_all();
    }
}

/// Whether a request says it wants the service's own answer, not a copy (RFC 9111 §5.2.1).
fn wants_origin(headers: &HeaderMap) -> bool {
    let says = |name, directives: &[&str]| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|d| directives.iter().any(|x| d.eq_ignore_ascii_case(x)))
    };
    says(CACHE_CONTROL, &["no-cache", "no-store", "max-age=0"]) || says(PRAGMA, &["no-cache"])
}

/// How long a shared cache may keep an answer with these headers: `s-maxage`, else
/// `max-age`, of a `public` answer; `None` when it may not be kept (`private`, `no-store`,
/// `no-cache`, no lifetime, a `Vary` this cache does not key on, or a cookie).
fn lifetime(headers: &HeaderMap) -> Option<Duration> {
    if headers.contains_key(SET_COOKIE) || headers.contains_key(VARY) {
        return None;
    }
    let (mut public, mut max_age, mut s_maxage) = (false, None, None);
    for value in headers.get_all(CACHE_CONTROL) {
        for directive in value.to_str().ok()?.split(',').map(str::trim) {
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive, None),
            };
            let seconds = || arg.and_then(|a| a.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "public" => public = true,
                "private" | "no-store" | "no-cache" => return None,
                "max-age" => max_age = Some(seconds()?),
                "s-maxage" => s_maxage = Some(seconds()?),
                _ => {}
            }
        }
    }
    let seconds = s_maxage.or(max_age).filter(|s| public && *s > 0)?;
    Some(Duration::from_secs(seconds))
}

impl PublicCache {
    /// An empty cache within `limits`, its metrics registered; `None` when `limits` turn it
    /// off.
    pub fn new(limits: Limits, metrics: &Metrics) -> Option<Arc<Self>> {
        (limits.entries > 0 && limits.bytes > 0 && !limits.max_age.is_zero()).then(|| {
            Arc::new(Self {
                state: Mutex::new(State::default()),
                limits,
                metrics: CacheMetrics::register(metrics),
            })
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks a `GET` up: the answer from a fresh copy (`Ok`), or a ticket to keep the
    /// service's answer with (`Err`). `None` for a request the cache leaves alone.
    pub fn lookup(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Option<Result<Response, Ticket>> {
        if method != Method::GET {
            return None;
        }
        // The generation before the look-up: a write that starts after it keeps the
        // service's answer out of the cache.
        let generation = self.lock().generation;
        if let Some(hit) = self.hit(path_and_query, headers) {
            return Some(Ok(hit));
        }
        self.metrics.misses.inc();
        Some(Err(Ticket {
            key: path_and_query.to_string(),
            generation,
        }))
    }

    /// The answer from a fresh copy of `GET path_and_query`, if there is one and the
    /// client does not insist on the service's answer (a miss is not counted here).
    pub fn hit(&self, path_and_query: &str, headers: &HeaderMap) -> Option<Response> {
        let fresh = self.fresh(path_and_query, headers)?;
        Some(self.answer(&fresh, headers))
    }

    /// A fresh copy of `GET path_and_query` the client accepts, not yet counted or
    /// answered: for a caller that has one more check to make first (the rate limit).
    pub fn fresh(&self, path_and_query: &str, headers: &HeaderMap) -> Option<Fresh> {
        if wants_origin(headers) {
            return None;
        }
        let now = Instant::now();
        self.lock()
            .entries
            .get(path_and_query)
            .filter(|e| e.is_fresh(now))
            .cloned()
            .map(Fresh)
    }

    /// The answer from `fresh`, counted as a hit.
    pub fn answer(&self, fresh: &Fresh, headers: &HeaderMap) -> Response {
        self.metrics.hits.inc();
        fresh.0.answer(headers, Instant::now())
    }

    /// A write is starting: copies are dropped once the returned guard is.
    pub fn writing(&self) -> Writing<'_> {
        self.lock().generation += 1;
        Writing(self)
    }

    fn forget_all(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.entries.clear();
        state.bytes = 0;
        self.count(&state);
    }

    /// The service's answer to the read `ticket` stands for, kept if it may be: read whole
    /// when it is small enough to keep, else passed on as it streams.
    pub async fn keep(&self, ticket: Ticket, response: Response, asked: &HeaderMap) -> Response {
        let small = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n <= MAX_BODY);
        let fresh_for = match lifetime(response.headers()) {
            Some(lifetime) if response.status() == StatusCode::OK && small => {
                lifetime.min(self.limits.max_age)
            }
            _ => return response,
        };
        let (mut parts, body) = response.into_parts();
        let Ok(collected) = http_body_util::BodyExt::collect(body).await else {
            // The service broke off mid-answer: so does this one.
            return (StatusCode::BAD_GATEWAY, "upstream answer broke off").into_response();
        };
        parts.headers.remove(REQUEST_ID_HEADER);
        let entry = Arc::new(Entry {
            etag: parts.headers.get(ETAG).cloned(),
            headers: parts.headers,
            body: collected.to_bytes(),
            stored: Instant::now(),
            fresh_for,
        });
        self.insert(ticket, entry.clone());
        entry.answer(asked, entry.stored)
    }

    fn insert(&self, ticket: Ticket, entry: Arc<Entry>) {
        let mut state = self.lock();
        if state.generation != ticket.generation {
            return;
        }
        let cost = entry.cost(&ticket.key);
        if let Some(old) = state.entries.remove(&ticket.key) {
            state.bytes -= old.cost(&ticket.key);
        }
        let full = |s: &State| {
            s.entries.len() >= self.limits.entries || s.bytes + cost > self.limits.bytes
        };
        if full(&state) {
            // Most of what is kept lives a second or so: what has gone stale makes room.
            let now = Instant::now();
            let State { entries, bytes, .. } = &mut *state;
            entries.retain(|key, e| {
                let keep = e.is_fresh(now);
                if !keep {
                    *bytes -= e.cost(key);
                }
                keep
            });
        }
        if !full(&state) {
            state.bytes += cost;
            state.entries.insert(ticket.key, entry);
        }
        self.count(&state);
    }

    fn count(&self, state: &State) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.entries.set(gauge(state.entries.len()));
        self.metrics.bytes.set(gauge(state.bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    fn cache(entries: usize, bytes: usize) -> Arc<PublicCache> {
        let limits = Limits {
            entries,
            bytes,
            max_age: Duration::from_secs(5),
        };
        PublicCache::new(limits, &Metrics::new("gateway", None)).unwrap()
    }

    fn upstream(body: &'static str, cache_control: &'static str) -> Response {
        let mut r = Response::new(Body::from(body));
        let h = r.headers_mut();
        h.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
        h.insert(ETAG, HeaderValue::from_static("\"7\""));
        h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        r
    }

    async fn text(r: Response) -> String {
        let bytes = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Reads `key`; on a miss the service answers `body` as `cache_control` says.
    async fn read(c: &PublicCache, key: &str, body: &'static str, cc: &'static str) -> String {
        let none = HeaderMap::new();
        match c.lookup(&Method::GET, key, &none).unwrap() {
            Ok(hit) => text(hit).await,
            Err(ticket) => text(c.keep(ticket, upstream(body, cc), &none).await).await,
        }
    }

    #[test]
    fn only_public_answers_with_a_lifetime_may_be_kept() {
        let second = Some(Duration::from_secs(1));
        assert_eq!(
            lifetime(&headers(&[("cache-control", "public, max-age=1")])),
            second
        );
        assert_eq!(
            lifetime(&headers(&[(
                "cache-control",
                "Public, S-MaxAge=3, max-age=1"
            )])),
            Some(Duration::from_secs(3)),
            "s-maxage is the shared caches' own"
        );
        for refused in [
            &[("cache-control", "max-age=60")][..],
            &[("cache-control", "public")],
            &[("cache-control", "public, max-age=0")],
            &[("cache-control", "public, max-age=soon")],
            &[("cache-control", "private, no-store")],
            &[
                ("cache-control", "public, max-age=5"),
                ("cache-control", "no-cache"),
            ],
            &[("cache-control", "public, max-age=5"), ("vary", "cookie")],
            &[
                ("cache-control", "public, max-age=5"),
                ("set-cookie", "a=b"),
            ],
            &[],
        ] {
            assert_eq!(lifetime(&headers(refused)), None, "{refused:?}");
        }
    }

    #[test]
    fn a_client_may_insist_on_the_services_answer() {
        assert!(!wants_origin(&headers(&[])));
        assert!(!wants_origin(&headers(&[("cache-control", "max-age=10")])));
        assert!(wants_origin(&headers(&[("cache-control", "no-cache")])));
        assert!(wants_origin(&headers(&[("cache-control", "max-age=0")])));
        assert!(wants_origin(&headers(&[("pragma", "no-cache")])));
    }

    #[tokio::test]
    async fn a_public_answer_is_served_again_until_a_write_goes_through() {
        let c = cache(10, 1 << 20);
        let cc = "public, max-age=1";
        assert_eq!(read(&c, "/products/1", "v1", cc).await, "v1");
        assert_eq!(read(&c, "/products/1", "v2", cc).await, "v1", "a hit");
        assert_eq!(
            read(&c, "/products/2", "other", cc).await,
            "other",
            "keyed by path and query"
        );
        drop(c.writing());
        assert_eq!(read(&c, "/products/1", "v3", cc).await, "v3");
        assert_eq!(
            read(&c, "/orders", "mine", "private, no-store").await,
            "mine"
        );
        assert_eq!(
            read(&c, "/orders", "yours", "private, no-store").await,
            "yours",
            "never kept"
        );
    }

    #[tokio::test]
    async fn a_read_a_write_overtook_is_served_but_not_kept() {
        let c = cache(10, 1 << 20);
        let none = HeaderMap::new();
        let Err(ticket) = c.lookup(&Method::GET, "/products/1", &none).unwrap() else {
            panic!("an empty cache misses");
        };
        let write = c.writing();
        let served = c.keep(ticket, upstream("old", "public, max-age=1"), &none);
        assert_eq!(text(served.await).await, "old");
        drop(write);
        assert_eq!(
            read(&c, "/products/1", "new", "public, max-age=1").await,
            "new"
        );
    }

    #[tokio::test]
    async fn copies_expire_with_their_max_age_and_answer_if_none_match() {
        let c = cache(10, 1 << 20);
        let none = HeaderMap::new();
        let Err(ticket) = c.lookup(&Method::GET, "/p", &none).unwrap() else {
            panic!("an empty cache misses");
        };
        c.keep(ticket, upstream("v1", "public, max-age=1"), &none)
            .await;
        let asked = headers(&[("if-none-match", "W/\"7\"")]);
        let Some(Ok(hit)) = c.lookup(&Method::GET, "/p", &asked) else {
            panic!("kept");
        };
        assert_eq!(hit.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(hit.headers().get(ETAG).unwrap(), "\"7\"");
        assert_eq!(hit.headers().get(AGE).unwrap(), "0");
        assert_eq!(
            hit.headers().get(CACHE_CONTROL).unwrap(),
            "public, max-age=1"
        );
        assert!(
            c.lookup(
                &Method::GET,
                "/p",
                &headers(&[("cache-control", "no-cache")])
            )
            .unwrap()
            .is_err(),
            "no-cache goes to the service"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(read(&c, "/p", "v2", "public, max-age=1").await, "v2");
        assert!(c.lookup(&Method::POST, "/p", &none).is_none());
    }

    #[tokio::test]
    async fn a_full_cache_keeps_no_more() {
        let c = cache(2, 1 << 20);
        let cc = "public, max-age=5";
        for key in ["/a", "/b", "/c"] {
            read(&c, key, "first", cc).await;
        }
        assert_eq!(read(&c, "/a", "again", cc).await, "first");
        assert_eq!(read(&c, "/c", "again", cc).await, "again", "not kept");
        let small = cache(10, ENTRY_OVERHEAD + 10);
        read(&small, "/a", "first", cc).await;
        read(&small, "/b", "first", cc).await;
        assert_eq!(
            read(&small, "/b", "again", cc).await,
            "again",
            "over the bytes"
        );
    }
}
