//! Signed cookies: the shopper's session, cart, one-shot notices and the browser id that
//! CSRF tokens are bound to. Each value is `base64url(payload).base64url(HMAC-SHA256)`
//! under the storefront's key, so a browser can keep them but not forge or edit them.

use std::fmt::Write as _;

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Shorter keys are refused: every cookie is only as strong as the key.
pub const KEY_MIN_LEN: usize = 32;

pub const SESSION: &str = "mercato_session";
pub const CART: &str = "mercato_cart";
pub const FLASH: &str = "mercato_flash";
pub const BROWSER: &str = "mercato_browser";

/// The key signing cookies and CSRF tokens.
#[derive(Clone)]
pub struct CookieKey(Vec<u8>);

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(<redacted>)")
    }
}

impl std::str::FromStr for CookieKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() < KEY_MIN_LEN {
            return Err(format!(
                "the cookie key must be at least {KEY_MIN_LEN} characters"
            ));
        }
        Ok(CookieKey(s.as_bytes().to_vec()))
    }
}

impl CookieKey {
    fn mac(&self, purpose: &str, payload: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        // The cookie's name is signed too, so a value cannot be moved to another cookie.
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }

    /// `payload` signed for the cookie (or token) called `purpose`.
    pub fn seal(&self, purpose: &str, payload: &[u8]) -> String {
        let tag = self.mac(purpose, payload).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The payload of `value` if this key sealed it for `purpose` (compared in constant time).
    pub fn open(&self, purpose: &str, value: &str) -> Option<Vec<u8>> {
        let (payload, tag) = value.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(purpose, &payload).verify_slice(&tag).ok()?;
        Some(payload)
    }

    /// The CSRF token of a browser: its id signed, so only pages this storefront rendered
    /// for that browser carry it.
    pub fn csrf_token(&self, browser: &str) -> String {
        let tag = self.mac("csrf", browser.as_bytes()).finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(tag)
    }

    pub fn csrf_ok(&self, browser: &str, token: &str) -> bool {
        URL_SAFE_NO_PAD.decode(token).ok().is_some_and(|tag| {
            self.mac("csrf", browser.as_bytes())
                .verify_slice(&tag)
                .is_ok()
        })
    }
}

/// The value of cookie `name` in the request, if any.
pub fn read<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// How long a cookie lives.
#[derive(Debug, Clone, Copy)]
pub enum Lifetime {
    /// Until the browser closes.
    Browser,
    Seconds(u64),
    /// Remove it now.
    Expired,
}

/// A `Set-Cookie` value: always `Path=/`, `HttpOnly` and `SameSite=Lax` (sent on top-level
/// links from elsewhere, never on another site's form posts), `Secure` when the shop is
/// served over HTTPS.
pub fn set(name: &str, value: &str, lifetime: Lifetime, secure: bool) -> String {
    let mut out = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    match lifetime {
        Lifetime::Browser => {}
        Lifetime::Seconds(s) => {
            let _ = write!(out, "; Max-Age={s}");
        }
        Lifetime::Expired => out.push_str("; Max-Age=0"),
    }
    if secure {
        out.push_str("; Secure");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CookieKey {
        "0123456789abcdef0123456789abcdef-test".parse().unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_under_its_own_name_and_key() {
        let sealed = key().seal(CART, b"x:1");
        assert_eq!(key().open(CART, &sealed).as_deref(), Some(&b"x:1"[..]));
        assert_eq!(
            key().open(SESSION, &sealed),
            None,
            "moved to another cookie"
        );
        let other: CookieKey = "another-key-another-key-another-key".parse().unwrap();
        assert_eq!(other.open(CART, &sealed), None);
        let (_, tag) = sealed.split_once('.').unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(b"x:1000"));
        assert_eq!(key().open(CART, &forged), None, "edited payload");
        assert_eq!(key().open(CART, "garbage"), None);
    }

    #[test]
    fn csrf_tokens_belong_to_one_browser() {
        let t = key().csrf_token("browser-a");
        assert!(key().csrf_ok("browser-a", &t));
        assert!(!key().csrf_ok("browser-b", &t));
        assert!(!key().csrf_ok("browser-a", ""));
    }

    #[test]
    fn short_keys_are_refused_and_debug_hides_the_key() {
        assert!("short".parse::<CookieKey>().is_err());
        assert!(!format!("{:?}", key()).contains("0123"));
    }

    #[test]
    fn cookies_are_http_only_lax_and_secure_over_https() {
        let c = set(CART, "v", Lifetime::Seconds(60), true);
        assert_eq!(
            c,
            "mercato_cart=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        assert!(!set(CART, "v", Lifetime::Browser, false).contains("Secure"));
        assert!(set(CART, "", Lifetime::Expired, false).contains("Max-Age=0"));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; mercato_cart=xyz; b=2".parse().unwrap());
        assert_eq!(read(&h, CART), Some("xyz"));
        assert_eq!(read(&h, SESSION), None);
    }
}
