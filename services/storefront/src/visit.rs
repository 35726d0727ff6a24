//! One request from a shopper's browser: who is signed in, what is in the cart, the notice
//! left by the previous page, the CSRF token, and the cookies to set on the answer.

use std::collections::BTreeMap;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use mercato_contract::CLIENT_ADDRESS_HEADER;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cookies::{self, CookieKey, Lifetime};
use crate::{SecureCookies, Shop};

/// The signed-in shopper: the API's tokens (the cookie is `HttpOnly`, so no script sees
/// them) and who they belong to.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    pub user_id: Uuid,
    pub username: String,
    pub role: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("username", &self.username)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

/// Most lines a cart holds (an order takes at most 50).
pub const MAX_LINES: usize = 50;
/// Most of one product a line holds (an order line takes at most 1000).
pub const MAX_QUANTITY: i64 = 1000;

/// Product id → quantity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cart(pub BTreeMap<Uuid, i64>);

impl Cart {
    fn encode(&self) -> String {
        self.0
            .iter()
            .map(|(id, q)| format!("{}:{q}", id.simple()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn decode(text: &str) -> Cart {
        Cart(
            text.split(',')
                .filter_map(|line| {
                    let (id, q) = line.split_once(':')?;
                    let q: i64 = q.parse().ok()?;
                    Some((id.parse().ok()?, q.clamp(1, MAX_QUANTITY)))
                })
                .take(MAX_LINES)
                .collect(),
        )
    }

    pub fn count(&self) -> i64 {
        self.0.values().sum()
    }
}

/// A one-shot notice shown on the next page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flash {
    /// `ok` or `error`.
    pub kind: String,
    pub text: String,
}

impl Flash {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            kind: "ok".into(),
            text: text.into(),
        }
    }

    pub fn error(text: impl Into<String>) -> Self {
        Self {
            kind: "error".into(),
            text: text.into(),
        }
    }
}

pub struct Visit {
    key: CookieKey,
    pub browser: String,
    pub session: Option<Session>,
    pub cart: Cart,
    pub flash: Option<Flash>,
    /// The shopper's address vouched for on API calls (a relay signed with the edge key),
    /// when the gateway said who the shopper is.
    pub relay: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
    /// The page asked for (path and query), to come back to after logging in.
    pub path: String,
    secure: bool,
    set_cookies: Vec<String>,
    refresh_ttl: u64,
}

impl std::fmt::Debug for Visit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Visit")
            .field("session", &self.session)
            .field("cart", &self.cart)
            .finish_non_exhaustive()
    }
}

impl<S> FromRequestParts<S> for Visit
where
    Shop: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let shop = Shop::from_ref(state);
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let mut visit = Visit::read(&shop, &parts.headers);
        visit.path = path;
        Ok(visit)
    }
}

impl Visit {
    pub fn read(shop: &Shop, headers: &HeaderMap) -> Visit {
        let key = shop.key.clone();
        let secure = match shop.secure_cookies {
            SecureCookies::Always => true,
            SecureCookies::Auto => headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.eq_ignore_ascii_case("https")),
        };
        let open = |name: &str| cookies::read(headers, name).and_then(|v| key.open(name, v));
        let session = open(cookies::SESSION).and_then(|b| serde_json::from_slice(&b).ok());
        let cart = open(cookies::CART)
            .and_then(|b| String::from_utf8(b).ok())
            .map(|t| Cart::decode(&t))
            .unwrap_or_default();
        let flash = open(cookies::FLASH).and_then(|b| serde_json::from_slice(&b).ok());
        let mut set_cookies = Vec::new();
        let browser = match open(cookies::BROWSER).and_then(|b| String::from_utf8(b).ok()) {
            Some(id) => id,
            None => {
                let id = Uuid::new_v4().simple().to_string();
                set_cookies.push(cookies::set(
                    cookies::BROWSER,
                    &key.seal(cookies::BROWSER, id.as_bytes()),
                    Lifetime::Seconds(BROWSER_TTL),
                    secure,
                ));
                id
            }
        };
        if flash.is_some() {
            set_cookies.push(cookies::set(cookies::FLASH, "", Lifetime::Expired, secure));
        }
        Visit {
            key,
            browser,
            session,
            cart,
            flash,
            relay: shop.edge_key.as_ref().and_then(|key| {
                let addr = key.verify(headers.get(CLIENT_ADDRESS_HEADER)?.to_str().ok()?)?;
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                HeaderValue::from_str(&key.sign_relay(addr, now)).ok()
            }),
            request_id: headers.get("x-request-id").cloned(),
            path: "/".into(),
            secure,
            set_cookies,
            refresh_ttl: shop.session_ttl_secs,
        }
    }

    pub fn csrf(&self) -> String {
        self.key.csrf_token(&self.browser)
    }

    pub fn csrf_ok(&self, token: &str) -> bool {
        self.key.csrf_ok(&self.browser, token)
    }

    /// Signs the shopper in (or keeps refreshed tokens).
    pub fn set_session(&mut self, session: Session) {
        let sealed = self.seal_json(cookies::SESSION, &session);
        self.push(
            cookies::SESSION,
            &sealed,
            Lifetime::Seconds(self.refresh_ttl),
        );
        self.session = Some(session);
    }

    pub fn end_session(&mut self) {
        self.session = None;
        self.push(cookies::SESSION, "", Lifetime::Expired);
    }

    pub fn save_cart(&mut self) {
        if self.cart.0.is_empty() {
            self.push(cookies::CART, "", Lifetime::Expired);
        } else {
            let sealed = self.key.seal(cookies::CART, self.cart.encode().as_bytes());
            self.push(cookies::CART, &sealed, Lifetime::Seconds(CART_TTL));
        }
    }

    /// Leaves a notice for the next page.
    pub fn notice(&mut self, flash: Flash) {
        // The one being shown now is replaced, not cleared.
        self.set_cookies
            .retain(|c| !c.starts_with(&format!("{}=", cookies::FLASH)));
        let sealed = self.seal_json(cookies::FLASH, &flash);
        self.push(cookies::FLASH, &sealed, Lifetime::Browser);
    }

    fn seal_json<T: Serialize>(&self, name: &str, value: &T) -> String {
        let json = serde_json::to_vec(value).unwrap_or_default();
        self.key.seal(name, &json)
    }

    fn push(&mut self, name: &str, value: &str, lifetime: Lifetime) {
        self.set_cookies
            .retain(|c| !c.starts_with(&format!("{name}=")));
        self.set_cookies
            .push(cookies::set(name, value, lifetime, self.secure));
    }

    /// `response` with this visit's cookies set.
    pub fn finish(self, response: impl IntoResponse) -> Response {
        let mut response = response.into_response();
        for c in self.set_cookies {
            if let Ok(v) = HeaderValue::from_str(&c) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        response
    }

    /// A redirect after a form (303: the browser follows with GET).
    pub fn redirect(self, to: &str) -> Response {
        self.finish(Redirect::to(to))
    }
}

/// A browser id lives a year; it only binds CSRF tokens.
const BROWSER_TTL: u64 = 365 * 24 * 60 * 60;
/// A cart is kept for 30 days.
const CART_TTL: u64 = 30 * 24 * 60 * 60;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carts_round_trip_and_bad_lines_are_dropped() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let cart = Cart([(a, 2), (b, 1)].into());
        assert_eq!(Cart::decode(&cart.encode()), cart);
        let odd = format!("{}:5000,nonsense,{}:x", a.simple(), b.simple());
        assert_eq!(Cart::decode(&odd), Cart([(a, MAX_QUANTITY)].into()));
    }
}
