//! Keyed rate limits (per username, per client address) with bounded memory.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use mercato_contract::CLIENT_ADDRESS_HEADER;

use crate::edge::EdgeKey;

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

/// The address a rate limit should count: the one the gateway settled on, when
/// [`CLIENT_ADDRESS_HEADER`] carries it signed with `edge_key`; else the TCP peer. Never a
/// raw `X-Forwarded-For`: anyone can write one.
pub fn client_address(
    headers: &axum::http::HeaderMap,
    peer: std::net::SocketAddr,
    edge_key: Option<&EdgeKey>,
) -> String {
    edge_key
        .and_then(|key| {
            let value = headers.get(CLIENT_ADDRESS_HEADER)?.to_str().ok()?;
            key.verify(value)
        })
        .unwrap_or_else(|| peer.ip())
        .to_string()
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
    fn only_a_client_address_signed_with_the_edge_key_counts() {
        let key: EdgeKey = "an-edge-key-of-at-least-32-characters".parse().unwrap();
        let peer: std::net::SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        assert_eq!(client_address(&h, peer, Some(&key)), "10.0.0.1");
        h.insert(CLIENT_ADDRESS_HEADER, "7.7.7.7".parse().unwrap());
        assert_eq!(client_address(&h, peer, Some(&key)), "10.0.0.1");
        let signed = key.sign("203.0.113.9".parse().unwrap());
        h.insert(CLIENT_ADDRESS_HEADER, signed.parse().unwrap());
        assert_eq!(client_address(&h, peer, Some(&key)), "203.0.113.9");
        // A service without the key believes no header at all.
        assert_eq!(client_address(&h, peer, None), "10.0.0.1");
    }
}
