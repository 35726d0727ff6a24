//! Who the client is, at the edge and behind it. The gateway settles the client address
//! from the TCP peer and `X-Forwarded-For`, believing the header only through proxies it
//! was told to trust ([`TrustedProxies`]); it passes that address on in
//! [`CLIENT_ADDRESS_HEADER`](mercato_contract::CLIENT_ADDRESS_HEADER), signed with the edge
//! key ([`EdgeKey`]), so a service believes the header only when the gateway wrote it.
//!
//! The storefront calls the API back through the gateway for the shopper whose page it
//! renders; it vouches for that shopper's address with a *relay*
//! ([`RELAYED_CLIENT_HEADER`](mercato_contract::RELAYED_CLIENT_HEADER)): the address and
//! the time, signed with the same key for that purpose only. The gateway believes a relay
//! for a minute, so a relay that leaked cannot be replayed for long, and it never believes
//! a client-address header a client sent, however it is signed.

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use sha2::Sha256;

/// The proxies in front of the gateway, as CIDRs (`10.0.0.0/8, 192.168.1.7/32`); a bare
/// address means that one host. Empty trusts none: the TCP peer is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is neither a CIDR nor an IP address"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }
}

impl TrustedProxies {
    pub fn contains(&self, addr: &IpAddr) -> bool {
        let addr = canonical(*addr);
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client behind `peer`: walks `X-Forwarded-For` from the right, through hops inside
    /// the trusted CIDRs, starting only if `peer` itself is trusted; the first untrusted
    /// address is the client. Entries left of it are the client's own word and never read.
    /// An entry that is not an address stops the walk at the last trusted hop.
    pub fn client(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let mut client = canonical(peer);
        if !self.contains(&client) {
            return client;
        }
        // Several X-Forwarded-For fields are one list, in order (RFC 9110 §5.3).
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.into_iter().rev() {
            let Ok(addr) = hop.parse::<IpAddr>() else {
                break;
            };
            client = canonical(addr);
            if !self.contains(&client) {
                break;
            }
        }
        client
    }
}

/// `::ffff:1.2.3.4` is `1.2.3.4`: one client, one key, whichever socket family saw it.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The key the gateway signs the client address with, and auth checks it with.
#[derive(Clone)]
pub struct EdgeKey(Vec<u8>);

impl std::fmt::Debug for EdgeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EdgeKey(<redacted>)")
    }
}

/// Shorter keys are refused: the signature is only as strong as the key.
pub const EDGE_KEY_MIN_LEN: usize = 32;

impl FromStr for EdgeKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() < EDGE_KEY_MIN_LEN {
            return Err(format!(
                "the edge key must be at least {EDGE_KEY_MIN_LEN} characters"
            ));
        }
        Ok(EdgeKey(s.as_bytes().to_vec()))
    }
}

const SIGNATURE: &str = ";sig=";
const RELAY_TIME: &str = ";at=";

/// How long a relay is believed after it was signed (either way, for clock skew).
pub const RELAY_VALID_SECS: i64 = 60;

impl EdgeKey {
    fn mac(&self, addr: &str) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(addr.as_bytes());
        mac
    }

    /// The header value for `addr`: `1.2.3.4;sig=<base64url HMAC-SHA256 of "1.2.3.4">`.
    pub fn sign(&self, addr: IpAddr) -> String {
        let addr = addr.to_string();
        let tag = self.mac(&addr).finalize().into_bytes();
        format!("{addr}{SIGNATURE}{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The address in `value` if this key signed it (compared in constant time), else `None`.
    pub fn verify(&self, value: &str) -> Option<IpAddr> {
        let (addr, sig) = value.split_once(SIGNATURE)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        self.mac(addr).verify_slice(&sig).ok()?;
        addr.parse().ok()
    }

    /// A relay of `addr` signed at `now` (unix seconds):
    /// `1.2.3.4;at=1700000000;sig=<HMAC of "relay 1.2.3.4;at=1700000000">`.
    pub fn sign_relay(&self, addr: IpAddr, now: i64) -> String {
        let body = format!("{addr}{RELAY_TIME}{now}");
        let tag = self.mac(&format!("relay {body}")).finalize().into_bytes();
        format!("{body}{SIGNATURE}{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The address of a relay this key signed less than [`RELAY_VALID_SECS`] from `now`.
    pub fn verify_relay(&self, value: &str, now: i64) -> Option<IpAddr> {
        let (body, sig) = value.split_once(SIGNATURE)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        self.mac(&format!("relay {body}")).verify_slice(&sig).ok()?;
        let (addr, at) = body.split_once(RELAY_TIME)?;
        let at: i64 = at.parse().ok()?;
        if (now - at).abs() > RELAY_VALID_SECS {
            return None;
        }
        addr.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_is_believed_for_a_minute_and_is_no_client_address() {
        let key: EdgeKey = "relay-test-key-0123456789abcdef0123456789".parse().unwrap();
        let addr: IpAddr = "203.0.113.7".parse().unwrap();
        let relay = key.sign_relay(addr, 1_000);
        assert_eq!(key.verify_relay(&relay, 1_000), Some(addr));
        assert_eq!(key.verify_relay(&relay, 1_059), Some(addr));
        assert_eq!(key.verify_relay(&relay, 1_061), None, "too old");
        assert_eq!(key.verify_relay(&relay, 930), None, "from the future");
        let forged = relay.replace("203.0.113.7", "203.0.113.8");
        assert_eq!(key.verify_relay(&forged, 1_000), None);
        let later = relay.replace(";at=1000", ";at=1050");
        assert_eq!(key.verify_relay(&later, 1_050), None, "its time is signed");
        // Neither kind of value passes for the other.
        assert_eq!(key.verify(&relay), None);
        assert_eq!(key.verify_relay(&key.sign(addr), 1_000), None);
        let other: EdgeKey = "another-key-another-key-another-key-x".parse().unwrap();
        assert_eq!(other.verify_relay(&relay, 1_000), None);
    }

    fn xff(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", value.parse().unwrap());
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_it_forwards() {
        let none = TrustedProxies::default();
        assert_eq!(none.client(&xff("6.6.6.6"), ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn an_untrusted_peer_cannot_forge_its_address() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            trusted.client(&xff("10.0.0.9, 6.6.6.6"), ip("203.0.113.5")),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_hop_from_the_right() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.168.1.7".parse().unwrap();
        // The client claims 1.1.1.1; 203.0.113.9 reached the trusted 192.168.1.7, which
        // reached the trusted 10.0.0.3, which reached us.
        let h = xff("1.1.1.1, 203.0.113.9, 192.168.1.7");
        assert_eq!(trusted.client(&h, ip("10.0.0.3")), ip("203.0.113.9"));
    }

    #[test]
    fn several_forwarded_for_fields_are_one_list() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "203.0.113.9".parse().unwrap());
        h.append("x-forwarded-for", "10.1.1.1".parse().unwrap());
        assert_eq!(trusted.client(&h, ip("10.0.0.3")), ip("203.0.113.9"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            trusted.client(&xff("1.1.1.1, not-an-ip"), ip("10.0.0.3")),
            ip("10.0.0.3")
        );
        assert_eq!(
            trusted.client(&HeaderMap::new(), ip("10.0.0.3")),
            ip("10.0.0.3")
        );
    }

    #[test]
    fn mapped_ipv6_peers_count_as_their_ipv4_address() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            trusted.client(&xff("203.0.113.9"), ip("::ffff:10.0.0.3")),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_bad_cidr_is_named() {
        let e = "10.0.0.0/8, 10.0.0.0/99"
            .parse::<TrustedProxies>()
            .unwrap_err();
        assert!(e.contains("10.0.0.0/99"), "{e}");
        assert_eq!(
            "".parse::<TrustedProxies>().unwrap(),
            TrustedProxies::default()
        );
    }

    fn key(c: char) -> EdgeKey {
        std::iter::repeat_n(c, 40)
            .collect::<String>()
            .parse()
            .unwrap()
    }

    #[test]
    fn a_signed_address_verifies_and_a_forged_one_does_not() {
        let k = key('k');
        let signed = k.sign(ip("203.0.113.9"));
        assert_eq!(k.verify(&signed), Some(ip("203.0.113.9")));
        // Another key, another address under the same signature, no signature, junk.
        assert_eq!(key('x').verify(&signed), None);
        let sig = signed.split_once(SIGNATURE).unwrap().1;
        assert_eq!(k.verify(&format!("6.6.6.6{SIGNATURE}{sig}")), None);
        assert_eq!(k.verify("203.0.113.9"), None);
        assert_eq!(k.verify("203.0.113.9;sig=%%%"), None);
    }

    #[test]
    fn short_edge_keys_are_refused_and_keys_never_print() {
        assert!("short".parse::<EdgeKey>().is_err());
        assert_eq!(format!("{:?}", key('s')), "EdgeKey(<redacted>)");
    }
}
