//! Keyed rate limits (per username, per client address) with bounded memory.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Allows `burst` requests per key, refilled evenly over `period`.
pub struct KeyedLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl std::fmt::Debug for KeyedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimiter").finish_non_exhaustive()
    }
}

impl KeyedLimiter {
    pub fn new(burst: u32, period: Duration) -> Self {
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let per_cell = period / burst.get();
        let quota = Quota::with_period(per_cell.max(Duration::from_millis(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// `Ok` if `key` may proceed, else how long until it may.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        // Forget idle keys now and then, so spraying keys cannot grow memory forever.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(&key.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// The address a rate limit should count: the peer, or, behind a trusted proxy, the last
/// `X-Forwarded-For` hop (the one that proxy appended; earlier hops are the client's word).
pub fn client_address(
    headers: &axum::http::HeaderMap,
    peer: std::net::SocketAddr,
    trust_forwarded_for: bool,
) -> String {
    if trust_forwarded_for
        && let Some(last) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    {
        return last.to_string();
    }
    peer.ip().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_with_a_wait_then_other_keys_unaffected() {
        let l = KeyedLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        let wait = l.check("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(20));
        assert!(l.check("b").is_ok());
    }

    #[test]
    fn forwarded_for_counts_only_when_trusted() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 10.0.0.7".parse().unwrap());
        let peer: std::net::SocketAddr = "10.0.0.1:5000".parse().unwrap();
        assert_eq!(client_address(&h, peer, false), "10.0.0.1");
        assert_eq!(client_address(&h, peer, true), "10.0.0.7");
        assert_eq!(
            client_address(&axum::http::HeaderMap::new(), peer, true),
            "10.0.0.1"
        );
    }
}
