//! Authentication extractors: a handler's signature says who may call it.
//!
//! - [`User`]: any signed-in user (customer or admin);
//! - [`Admin`]: a user with the admin role (403 for customers);
//! - [`Service<S>`]: a service token carrying scope `S` (403 otherwise).

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use mercato_contract::scopes;

use crate::error::ApiError;
use crate::jwt::{Claims, Role, Verifier};

/// The bearer token of a request, verified.
fn verified_claims(parts: &Parts, verifier: &Verifier) -> Result<Claims, ApiError> {
    let token = bearer_token(&parts.headers)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    verifier.verify(token).map_err(ApiError::from)
}

/// The raw bearer token of a request, if it has one.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A signed-in user: the token is valid and carries a role.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub role: Role,
    pub claims: Claims,
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

impl<S> FromRequestParts<S> for User
where
    Arc<Verifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Arc::<Verifier>::from_ref(state);
        let claims = verified_claims(parts, &verifier)?;
        let role = claims
            .role
            .ok_or_else(|| ApiError::forbidden("a user token is required"))?;
        Ok(User {
            id: claims.sub.clone(),
            role,
            claims,
        })
    }
}

/// A signed-in admin.
#[derive(Debug, Clone)]
pub struct Admin(pub User);

impl<S> FromRequestParts<S> for Admin
where
    Arc<Verifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = User::from_request_parts(parts, state).await?;
        if !user.is_admin() {
            return Err(ApiError::forbidden("admin role required"));
        }
        Ok(Admin(user))
    }
}

/// A scope an internal endpoint requires, as a type.
pub trait Scope: Send + Sync + 'static {
    const NAME: &'static str;
}

macro_rules! scope {
    ($(#[$doc:meta])* $ty:ident = $name:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $ty;
        impl Scope for $ty {
            const NAME: &'static str = $name;
        }
    };
}

scope!(
    /// Reserve, commit and release product stock.
    ProductReserve = scopes::PRODUCT_RESERVE
);
scope!(
    /// Read any order.
    OrderRead = scopes::ORDER_READ
);
scope!(
    /// Deliver payment outcomes to the order service.
    OrderPaymentEvents = scopes::ORDER_PAYMENT_EVENTS
);
scope!(
    /// Read auth's revocation feed.
    AuthRevocations = scopes::AUTH_REVOCATIONS
);

/// A service token with scope `S`; the `client` is the calling service's client id.
#[derive(Debug, Clone)]
pub struct Service<S: Scope> {
    pub client: String,
    pub claims: Claims,
    _scope: PhantomData<S>,
}

impl<St, S> FromRequestParts<St> for Service<S>
where
    Arc<Verifier>: FromRef<St>,
    St: Send + Sync,
    S: Scope,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        let verifier = Arc::<Verifier>::from_ref(state);
        let claims = verified_claims(parts, &verifier)?;
        if !claims.is_service() || !claims.has_scope(S::NAME) {
            return Err(ApiError::forbidden(format!(
                "a service token with scope {} is required",
                S::NAME
            )));
        }
        Ok(Service {
            client: claims.sub.clone(),
            claims,
            _scope: PhantomData,
        })
    }
}

impl From<crate::jwt::TokenError> for ApiError {
    /// A refused token is 401 (a revoked one says its session has ended); a stale
    /// revocation list refuses admin tokens with 503, since a retry later will do.
    fn from(e: crate::jwt::TokenError) -> Self {
        use crate::jwt::TokenError;
        match e {
            TokenError::Revoked => ApiError {
                code: "session_ended".into(),
                title: "Session has ended".into(),
                ..ApiError::unauthorized(e.to_string())
            },
            TokenError::RevocationsStale => ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "revocations_stale",
                "Admin access temporarily unavailable",
            )
            .with_detail(e.to_string())
            .with_retry_after(5),
            other => ApiError::unauthorized(other.to_string()),
        }
    }
}
