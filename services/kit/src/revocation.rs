//! The revocation feed: sessions that ended and users whose earlier tokens are void, as
//! auth publishes them at `GET /internal/revocations`, kept in memory by every service so
//! an ended session stops working everywhere within about a second, without a database
//! round trip per request.
//!
//! Each service polls the feed every [`POLL_EVERY`] with its own service client, from a
//! cursor; a fresh process first loads everything still relevant (entries live only as
//! long as the longest access token they could void). [`crate::jwt::Verifier::verify`]
//! consults the list, so the `User`/`Admin` extractors and the gateway's pre-check all
//! refuse a revoked token.
//!
//! When the feed cannot be fetched, the service keeps serving with the last list it
//! loaded, logs every failure and reports the list's age in `/metrics`; once the list is
//! older than [`STALE_AFTER`] (or was never loaded), admin tokens are refused with 503,
//! because admin power is what a stolen token would be used for. Customers and services
//! keep working: refusing everyone would turn an auth outage into a store outage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use mercato_contract::Component;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::client::{Dependency, ServiceClientConfig, TokenSource, UpstreamConfig};
use crate::jwt::{Claims, Role, TokenError, Verifier};
use crate::server::{App, Ops};

/// Where auth serves the feed.
pub const FEED_PATH: &str = "/internal/revocations";
/// How often every service asks for new entries.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How old the list may grow (no successful fetch) before admin tokens are refused.
pub const STALE_AFTER: Duration = Duration::from_secs(30);
/// Entries per page of the feed.
pub const PAGE_SIZE: i64 = 1000;

/// One entry of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Revocation {
    /// A session ended (logout, refresh-token reuse, password change): every token
    /// carrying this `sid` is void.
    Session {
        sid: String,
        /// Unix seconds after which no token of the session can still be valid.
        forget_after: u64,
    },
    /// Every user token of `sub` issued (`iat`) before `not_before` is void (password
    /// change, disable, role change, deletion).
    User {
        sub: String,
        not_before: u64,
        /// Unix seconds after which no token it voids can still be valid.
        forget_after: u64,
    },
}

/// A page of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevocationPage {
    pub entries: Vec<Revocation>,
    /// Pass as `after` to get what follows. Lower than the `after` asked for when auth's
    /// log started over; the caller then reloads from the start.
    pub cursor: i64,
    /// Whether more entries follow at once.
    pub more: bool,
}

/// The query of the feed.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// The `cursor` of the previous page; absent or 0 for everything still relevant.
    #[param(minimum = 0)]
    pub after: Option<i64>,
}

#[derive(Debug, Default)]
struct Known {
    sessions: HashMap<String, u64>,
    users: HashMap<String, (u64, u64)>,
    cursor: i64,
}

#[derive(Debug, Default, Clone)]
struct FeedMetrics {
    age_seconds: Gauge,
    entries: Gauge,
    failures: Counter,
}

/// The revoked sessions and users a service knows of, in memory.
#[derive(Debug, Default)]
pub struct RevocationList {
    known: RwLock<Known>,
    /// `Some` once a feed is attached: when the list was last brought up to date.
    feed: Mutex<Option<Option<Instant>>>,
    metrics: FeedMetrics,
}

fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

impl RevocationList {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Known> {
        self.known.write().unwrap_or_else(|p| p.into_inner())
    }

    fn feed_state(&self) -> std::sync::MutexGuard<'_, Option<Option<Instant>>> {
        self.feed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses claims the list voids, and admin claims while the list is stale.
    pub fn check(&self, claims: &Claims) -> Result<(), TokenError> {
        {
            let known = self.read();
            if claims
                .sid
                .as_ref()
                .is_some_and(|sid| known.sessions.contains_key(sid))
            {
                return Err(TokenError::Revoked);
            }
            if claims.role.is_some()
                && known
                    .users
                    .get(&claims.sub)
                    .is_some_and(|(not_before, _)| claims.iat < *not_before)
            {
                return Err(TokenError::Revoked);
            }
        }
        if claims.role == Some(Role::Admin) && self.is_stale() {
            return Err(TokenError::RevocationsStale);
        }
        Ok(())
    }

    /// Whether a feed is attached and the list is older than [`STALE_AFTER`] or was never
    /// loaded. Without a feed (auth itself, which checks its own log) it is never stale.
    pub fn is_stale(&self) -> bool {
        match *self.feed_state() {
            None => false,
            Some(None) => true,
            Some(Some(at)) => at.elapsed() > STALE_AFTER,
        }
    }

    /// Whether the list has been loaded at least once (or needs no feed).
    pub fn is_loaded(&self) -> bool {
        !matches!(*self.feed_state(), Some(None))
    }

    /// The cursor to ask the feed from.
    pub fn cursor(&self) -> i64 {
        self.read().cursor
    }

    /// Adds a page of entries, forgetting those that can no longer matter.
    pub fn apply(&self, page: &RevocationPage) {
        let now = now_secs();
        let mut known = self.write();
        if page.cursor < known.cursor {
            // Auth's log started over (a new database): so does ours.
            *known = Known::default();
        }
        for entry in &page.entries {
            match entry {
                Revocation::Session { sid, forget_after } => {
                    known.sessions.insert(sid.clone(), *forget_after);
                }
                Revocation::User {
                    sub,
                    not_before,
                    forget_after,
                } => {
                    let slot = known.users.entry(sub.clone()).or_insert((0, 0));
                    *slot = ((*not_before).max(slot.0), (*forget_after).max(slot.1));
                }
            }
        }
        known.cursor = page.cursor;
        known.sessions.retain(|_, forget| *forget >= now);
        known.users.retain(|_, (_, forget)| *forget >= now);
        let size = known.sessions.len() + known.users.len();
        self.metrics
            .entries
            .set(i64::try_from(size).unwrap_or(i64::MAX));
    }

    fn attach_feed(&self) {
        let mut feed = self.feed_state();
        if feed.is_none() {
            *feed = Some(None);
        }
    }

    fn synced(&self) {
        *self.feed_state() = Some(Some(Instant::now()));
        self.metrics.age_seconds.set(0);
    }

    fn failed(&self, error: &crate::ApiError) {
        self.metrics.failures.inc();
        let age = match *self.feed_state() {
            Some(Some(at)) => Some(at.elapsed().as_secs()),
            _ => None,
        };
        if let Some(age) = age {
            self.metrics
                .age_seconds
                .set(i64::try_from(age).unwrap_or(i64::MAX));
        }
        let stale = self.is_stale();
        tracing::warn!(
            error = %error.title,
            age_secs = ?age,
            admin_tokens_refused = stale,
            "revocation feed: fetch failed; serving with the last known list"
        );
    }

    /// For tests: whether any entry voids tokens of `sid`.
    pub fn has_session(&self, sid: &str) -> bool {
        self.read().sessions.contains_key(sid)
    }
}

/// Auth's revocation feed, read with this service's client credentials.
#[derive(Debug)]
pub struct Feed {
    auth: Dependency,
}

impl Feed {
    pub fn new(client: &ServiceClientConfig) -> Self {
        // The feed's own settings, so services that tune their other calls differently
        // (the gateway has its own timeout flag) need not flatten UpstreamConfig.
        let upstream = UpstreamConfig {
            upstream_timeout_ms: 2000,
            upstream_retries: 0,
            breaker_failures: 5,
            breaker_open_secs: 5,
        };
        let tokens = Arc::new(TokenSource::new(client, &upstream));
        Self {
            auth: Dependency::new(Component::Auth, &client.auth_url, &upstream, tokens),
        }
    }

    /// Fetches every page after the list's cursor into `list`.
    pub async fn sync(&self, list: &RevocationList) -> Result<(), crate::ApiError> {
        loop {
            let after = list.cursor();
            let page: RevocationPage = self.auth.get(&format!("{FEED_PATH}?after={after}")).await?;
            list.apply(&page);
            if page.cursor < after {
                continue; // Started over: load everything from the beginning.
            }
            if !page.more {
                break;
            }
        }
        list.synced();
        Ok(())
    }

    /// Polls the feed every [`POLL_EVERY`] for as long as the verifier lives.
    pub fn spawn_poller(self, verifier: &Arc<Verifier>) -> tokio::task::JoinHandle<()> {
        let verifier = Arc::downgrade(verifier);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(v) = verifier.upgrade() else { break };
                let list = v.revocations();
                if let Err(e) = self.sync(list).await {
                    list.failed(&e);
                }
            }
        })
    }
}

impl App {
    /// Keeps this service's revocation list up to date from auth's feed: loads it once now
    /// (a failure is logged; the poller keeps trying, and admin tokens wait for it), then
    /// polls it once the service starts.
    pub async fn with_revocation_feed(self, client: &ServiceClientConfig) -> Self {
        let Some(verifier) = self.verifier().cloned() else {
            return self;
        };
        let list = verifier.revocations();
        list.attach_feed();
        let feed = Feed::new(client);
        match feed.sync(list).await {
            Ok(()) => tracing::debug!("revocation list loaded"),
            Err(e) => list.failed(&e),
        }
        self.with_task(move || {
            feed.spawn_poller(&verifier);
        })
    }
}

impl Ops {
    /// Reports the revocation list: not ready until it is first loaded, and its age,
    /// size and fetch failures in `/metrics`.
    pub fn with_revocations(self, verifier: &Arc<Verifier>) -> Self {
        let list = verifier.revocations();
        list.attach_feed();
        let m = list.metrics.clone();
        self.metrics.register(
            "revocation_list_age_seconds",
            "Seconds since the revocation list was last fetched (0 while fresh)",
            m.age_seconds,
        );
        self.metrics.register(
            "revocation_list_entries",
            "Revoked sessions and users held in memory",
            m.entries,
        );
        self.metrics.register(
            "revocation_feed_failures",
            "Failed fetches of the revocation feed",
            m.failures,
        );
        let v = verifier.clone();
        self.with_check(Arc::new(move || {
            if v.revocations().is_loaded() {
                Ok(())
            } else {
                Err("revocation list not loaded yet".into())
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, sid: Option<&str>, role: Role, iat: u64) -> Claims {
        Claims {
            iss: "i".into(),
            aud: "a".into(),
            sub: sub.into(),
            exp: iat + 600,
            iat,
            jti: "j".into(),
            sid: sid.map(str::to_owned),
            role: Some(role),
            scope: None,
        }
    }

    fn page(entries: Vec<Revocation>, cursor: i64) -> RevocationPage {
        RevocationPage {
            entries,
            cursor,
            more: false,
        }
    }

    #[test]
    fn an_ended_session_and_earlier_tokens_of_a_voided_user_are_refused() {
        let list = RevocationList::default();
        let now = now_secs();
        let forget_after = now + 600;
        list.apply(&page(
            vec![
                Revocation::Session {
                    sid: "s1".into(),
                    forget_after,
                },
                Revocation::User {
                    sub: "u2".into(),
                    not_before: now,
                    forget_after,
                },
            ],
            2,
        ));
        let ended = claims("u1", Some("s1"), Role::Customer, now);
        let other_session = claims("u1", Some("s2"), Role::Customer, now);
        let before = claims("u2", Some("s3"), Role::Admin, now - 1);
        let after = claims("u2", Some("s4"), Role::Admin, now);
        assert_eq!(list.check(&ended), Err(TokenError::Revoked));
        assert_eq!(list.check(&other_session), Ok(()));
        assert_eq!(list.check(&before), Err(TokenError::Revoked));
        assert_eq!(list.check(&after), Ok(()));
        assert_eq!(list.cursor(), 2);
    }

    #[test]
    fn entries_past_their_relevance_are_forgotten_and_a_restarted_log_starts_over() {
        let list = RevocationList::default();
        let now = now_secs();
        list.apply(&page(
            vec![
                Revocation::Session {
                    sid: "old".into(),
                    forget_after: now - 1,
                },
                Revocation::Session {
                    sid: "new".into(),
                    forget_after: now + 60,
                },
            ],
            7,
        ));
        assert!(!list.has_session("old"));
        assert!(list.has_session("new"));
        list.apply(&page(vec![], 1));
        assert!(!list.has_session("new"), "a lower cursor means a new log");
        assert_eq!(list.cursor(), 1);
    }

    #[test]
    fn admin_tokens_wait_for_a_feed_to_load_but_customers_do_not() {
        let list = RevocationList::default();
        let now = now_secs();
        let admin = claims("a", Some("s"), Role::Admin, now);
        let customer = claims("c", Some("s"), Role::Customer, now);
        assert_eq!(list.check(&admin), Ok(()), "no feed: never stale");
        list.attach_feed();
        assert!(!list.is_loaded());
        assert_eq!(list.check(&admin), Err(TokenError::RevocationsStale));
        assert_eq!(list.check(&customer), Ok(()));
        list.synced();
        assert_eq!(list.check(&admin), Ok(()));
        let long_ago = Instant::now()
            .checked_sub(STALE_AFTER + Duration::from_secs(1))
            .expect("the clock runs longer than the bound");
        *list.feed_state() = Some(Some(long_ago));
        assert_eq!(list.check(&admin), Err(TokenError::RevocationsStale));
        assert_eq!(list.check(&customer), Ok(()));
    }

    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn a_service_picks_up_the_feed_and_reports_it_in_metrics_and_readiness() {
        use crate::testing::{TestAuth, TestKeys, poll};
        let keys = TestKeys::new();
        let auth = TestAuth::start(&keys).await;
        let config = crate::config::JwtConfig {
            jwt_issuer: mercato_contract::DEFAULT_JWT_ISSUER.into(),
            jwt_audience: mercato_contract::DEFAULT_JWT_AUDIENCE.into(),
            jwks_path: keys.jwks_path(),
            jwks_reload_interval_secs: 1,
        };
        let verifier = Verifier::load(&config).unwrap();
        let ops = Ops::new(
            Component::Product,
            None,
            utoipa::openapi::OpenApi::default(),
        )
        .with_revocations(&verifier);
        assert!(
            (ops.checks[0])().is_err(),
            "not ready before the list is loaded"
        );
        let client = ServiceClientConfig {
            auth_url: auth.server.url(""),
            client_id: "test-client".into(),
            client_secret: crate::secret::Secret::new("test-secret".into()),
        };
        let app = App::new(
            crate::server::Routers::public_only(axum::Router::new()),
            verifier.clone(),
            &config,
        )
        .with_revocation_feed(&client)
        .await;
        assert!((ops.checks[0])().is_ok(), "ready once loaded");

        let mut claims =
            keys.signer
                .claims("u1", Some(Role::Admin), None, Duration::from_secs(600));
        claims.sid = Some("session-1".into());
        let token = keys.signer.sign(&claims).unwrap();
        assert!(verifier.verify(&token).is_ok());

        let _router = app.start();
        auth.revoke(Revocation::Session {
            sid: "session-1".into(),
            forget_after: now_secs() + 600,
        });
        let refused = poll(100, || async { verifier.verify(&token) }, Result::is_err).await;
        assert_eq!(refused, Err(TokenError::Revoked));

        auth.server.stop().await;
        let failures = poll(
            100,
            || async { ops.metrics.render().unwrap() },
            |text| !text.contains("mercato_revocation_feed_failures_total 0"),
        )
        .await;
        assert!(
            failures.contains("mercato_revocation_feed_failures_total")
                && !failures.contains("mercato_revocation_feed_failures_total 0"),
            "a failed fetch is counted: {failures}"
        );
        assert!(
            failures.contains("mercato_revocation_list_age_seconds"),
            "{failures}"
        );
        assert!(
            failures.contains("mercato_revocation_list_entries 1"),
            "{failures}"
        );
        assert_eq!(
            verifier.verify(&token),
            Err(TokenError::Revoked),
            "the last known list still holds"
        );
    }
}
