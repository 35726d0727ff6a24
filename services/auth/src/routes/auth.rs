//! `/auth/*`: register, login, refresh, logout, introspection, client credentials, JWKS.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mercato_kit::auth::{AuthRevocations, Service};
use mercato_kit::jwt::{Claims, Role, TokenError};
use mercato_kit::revocation::{FeedQuery, RevocationPage};
use mercato_kit::{ApiError, ApiResult, Json, Query};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::domain::{Email, Fields, Password, Username};
use crate::revocations;
use crate::tokens::{self, Rotation};
use crate::users::{self, UserRow, UserView};

/// `Debug` for a type with secret fields: the named fields are shown, the rest is `***`.
macro_rules! redacted_debug {
    ($ty:ident { $($shown:ident),* } hides $($hidden:ident),+) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($shown), &self.$shown))*
                    $(.field(stringify!($hidden), &"***"))+
                    .finish()
            }
        }
    };
}
pub(crate) use redacted_debug;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(min_length = 3, max_length = 64, pattern = r"^[a-z0-9_.\-]+$")]
    pub username: String,
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
}
redacted_debug!(RegisterRequest { username, email } hides password);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(min_length = 3, max_length = 64, pattern = r"^[a-z0-9_.\-]+$")]
    pub username: String,
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
}
redacted_debug!(LoginRequest { username } hides password);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(min_length = 1, max_length = 256)]
    pub refresh_token: String,
}
redacted_debug!(RefreshRequest {} hides refresh_token);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub token: String,
}
redacted_debug!(VerifyRequest {} hides token);

/// An access token with its refresh token.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: u64,
}
redacted_debug!(TokenPair { token_type, expires_in, refresh_expires_in } hides access_token, refresh_token);

/// The result of introspecting a token (RFC 7662 shape): `active`, and the token's claims
/// only when it is active.
#[derive(Debug, Serialize, Deserialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Claims>,
}

// Written out because `#[serde(flatten)]` of an optional struct cannot be derived: the
// claims are there only when `active` is true, so none of them is required.
impl utoipa::PartialSchema for Introspection {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
        let mut object = ObjectBuilder::new()
            .description(Some("Whether the token is active; its claims when it is."))
            .property("active", ObjectBuilder::new().schema_type(Type::Boolean))
            .required("active")
            .build();
        if let RefOr::T(Schema::Object(claims)) = <Claims as utoipa::PartialSchema>::schema() {
            object.properties.extend(claims.properties);
        }
        object.into()
    }
}

impl ToSchema for Introspection {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <Claims as ToSchema>::schemas(schemas);
    }
}

/// A service token from the client-credentials grant.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ServiceToken {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub scope: String,
}
redacted_debug!(ServiceToken { token_type, expires_in, scope } hides access_token);

fn parse_credentials(username: &str, password: &str) -> ApiResult<(Username, Password)> {
    let mut fields = Fields::default();
    let username = fields.take(Username::parse("username", username));
    let password = fields.take(Password::parse("password", password));
    fields.finish()?;
    match (username, password) {
        (Some(u), Some(p)) => Ok((u, p)),
        _ => Err(ApiError::internal("field parsing returned no value")),
    }
}

/// Creates a customer account. The role cannot be chosen here. Limited per client
/// address (each registration runs Argon2): 429 with `Retry-After` beyond the limit.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = UserView), (status = 409, description = "Username or email already taken"),
        (status = 429, description = "Too many registrations from this client address; see Retry-After")))]
pub async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<impl IntoResponse> {
    let client = mercato_kit::ratelimit::client_address(&headers, peer, state.edge_key.as_ref());
    limited(
        &state.register_by_client,
        &client,
        "too many registrations; try again later",
    )?;
    create_user(
        &state,
        &req.username,
        &req.email,
        &req.password,
        Role::Customer,
    )
    .await
}

/// Validates and inserts a user (201 with the user), naming every bad field (422) or
/// the one already taken (409).
pub async fn create_user(
    state: &AppState,
    username: &str,
    email: &str,
    password: &str,
    role: Role,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let mut fields = Fields::default();
    let username = fields.take(Username::parse("username", username));
    let email = fields.take(Email::parse("email", email));
    let password = fields.take(Password::parse("password", password));
    fields.finish()?;
    let (Some(username), Some(email), Some(password)) = (username, email, password) else {
        return Err(ApiError::internal("field parsing returned no value"));
    };
    let hash = state
        .hasher
        .hash(password.expose().to_string())
        .await
        .map_err(ApiError::internal)?;
    let new = users::NewUser {
        username: username.as_str(),
        email: email.as_str(),
        password_hash: &hash,
        role,
    };
    users::insert(&state.pool, &new)
        .await
        .map_err(|e| {
            if mercato_kit::error::is_unique_violation(&e, "users_username_key") {
                ApiError::conflict("username_taken", "Username already taken")
            } else if mercato_kit::error::is_unique_violation(&e, "users_email_key") {
                ApiError::conflict("email_taken", "Email already registered")
            } else {
                e.into()
            }
        })
        .map(|user| (StatusCode::CREATED, Json(UserView::from(user))))
}

fn invalid_login() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "Invalid username or password",
    )
}

/// 429 with `Retry-After` when `key` has used up `limiter`.
fn limited(
    limiter: &mercato_kit::ratelimit::KeyedLimiter,
    key: &str,
    detail: &'static str,
) -> ApiResult<()> {
    limiter.check(key).map_err(|wait| {
        ApiError::too_many_requests(wait.as_secs().saturating_add(1)).with_detail(detail)
    })
}

/// Issues a token pair. Unknown users and wrong passwords get the same answer, in the
/// same time.
///
/// Attempts are limited three ways, so that strangers cannot lock a well-known account
/// (`admin`) out: per client address (any username); per username *from one address*
/// (the tight limit: guessing one account's password from one place); and per username
/// from every address the user has never logged in from successfully (a much looser cap
/// that slows a distributed guess). An address the user has logged in from before is not
/// held to that loose cap, so a flood of failures elsewhere cannot lock the owner out.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenPair), (status = 401, description = "Invalid username or password"),
        (status = 429, description = "Too many attempts for this username or client; see Retry-After")))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<TokenPair>> {
    let (username, password) = parse_credentials(&req.username, &req.password)?;
    let client = mercato_kit::ratelimit::client_address(&headers, peer, state.edge_key.as_ref());
    let detail = "too many login attempts; try again later";
    limited(&state.login_by_client, &client, detail)?;
    limited(
        &state.login_by_username_and_client,
        &format!("{}\n{client}", username.as_str()),
        detail,
    )?;
    if !users::is_known_address(&state.pool, username.as_str(), &client).await? {
        limited(&state.login_by_username, username.as_str(), detail)?;
    }
    let user = users::by_username(&state.pool, username.as_str()).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let verified = state
        .hasher
        .verify(password.expose().to_string(), hash)
        .await;
    match user {
        Some(user) if verified && !user.disabled => {
            users::remember_address(&state.pool, user.id, &client).await?;
            Ok(Json(issue_pair(&state, &user).await?))
        }
        _ => Err(invalid_login()),
    }
}

async fn issue_pair(state: &AppState, user: &UserRow) -> ApiResult<TokenPair> {
    let (family, refresh_token) =
        tokens::start_family(&state.pool, user.id, state.refresh_ttl).await?;
    pair_with(state, user, family, refresh_token)
}

/// An access token for `user` in session `family`, issued no earlier than the user's
/// tokens are valid from (so a login right after a password change is not voided).
fn pair_with(
    state: &AppState,
    user: &UserRow,
    family: uuid::Uuid,
    refresh_token: String,
) -> ApiResult<TokenPair> {
    let mut claims = state.signer.claims(
        &user.id.to_string(),
        Some(user.role),
        None,
        state.access_ttl,
    );
    claims.iat = revocations::issued_at(user.tokens_valid_from);
    claims.exp = claims.iat + state.access_ttl.as_secs();
    claims.sid = Some(family.to_string());
    let access_token = state.signer.sign(&claims).map_err(ApiError::internal)?;
    Ok(TokenPair {
        access_token,
        token_type: "Bearer".into(),
        expires_in: state.access_ttl.as_secs(),
        refresh_token,
        refresh_expires_in: state.refresh_ttl.as_secs(),
    })
}

/// Rotates a refresh token. Presenting an already-rotated token revokes its family.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, description = "Invalid, expired or reused refresh token")))]
pub async fn refresh(
    State(state): State<AppState>,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<Json<TokenPair>> {
    if !(1..=256).contains(&req.refresh_token.chars().count()) {
        return Err(ApiError::field(
            "refresh_token",
            "must be 1 to 256 characters",
        ));
    }
    match tokens::rotate(
        &state.pool,
        &req.refresh_token,
        state.refresh_ttl,
        state.access_ttl,
    )
    .await?
    {
        Rotation::Rotated {
            user_id,
            family,
            token,
        } => {
            let user = users::by_id(&state.pool, user_id).await?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_refresh_token",
                    "Invalid refresh token",
                )
            })?;
            Ok(Json(pair_with(&state, &user, family, token)?))
        }
        Rotation::Invalid => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
            "Invalid refresh token",
        )),
        Rotation::Reused => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "refresh_token_reused",
            "Refresh token already used",
        )
        .with_detail("this session has been revoked; log in again")),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    pub refresh_token: String,
}
redacted_debug!(LogoutRequest {} hides refresh_token);

/// Ends the session of a refresh token, and that of the presented access token if any;
/// their access tokens stop working on every service within seconds.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", request_body = LogoutRequest,
    responses((status = 204, description = "Logged out")))]
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<LogoutRequest>,
) -> ApiResult<StatusCode> {
    let bearer =
        mercato_kit::auth::bearer_token(&headers).and_then(|t| state.verifier.verify(t).ok());
    let owner = bearer.as_ref().and_then(|c| c.sub.parse().ok());
    let sid = bearer
        .as_ref()
        .and_then(|c| c.sid.as_deref())
        .and_then(|s| s.parse().ok());
    tokens::logout(
        &state.pool,
        &req.refresh_token,
        owner,
        sid,
        state.access_ttl,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Introspection: whether a token is active (signature, expiry, not revoked, user enabled).
#[utoipa::path(post, path = "/auth/verify", tag = "auth", request_body = VerifyRequest,
    responses((status = 200, body = Introspection)))]
pub async fn verify(
    State(state): State<AppState>,
    Json(req): Json<VerifyRequest>,
) -> ApiResult<Json<Introspection>> {
    let inactive = Json(Introspection {
        active: false,
        claims: None,
    });
    let Ok(claims) = state.verifier.verify(&req.token) else {
        return Ok(inactive);
    };
    if !active_claims(&state, &claims).await? {
        return Ok(inactive);
    }
    Ok(Json(Introspection {
        active: true,
        claims: Some(claims),
    }))
}

/// Whether verified claims are still good, checked against auth's own tables (what the
/// revocation feed tells other services): the user exists and is enabled, the token was
/// issued after the user's tokens were last voided, and its session is still open.
pub async fn active_claims(state: &AppState, claims: &Claims) -> ApiResult<bool> {
    if claims.role.is_none() {
        return Ok(true);
    }
    let Ok(id) = claims.sub.parse() else {
        return Ok(false);
    };
    let Some(user) = users::by_id(&state.pool, id).await? else {
        return Ok(false);
    };
    if user.disabled || i64::try_from(claims.iat).unwrap_or(i64::MAX) < user.tokens_valid_from {
        return Ok(false);
    }
    match claims.sid.as_deref().map(str::parse) {
        Some(Ok(sid)) => Ok(tokens::session_open(&state.pool, sid, id).await?),
        Some(Err(_)) => Ok(false),
        None => Ok(true),
    }
}

/// The revocation feed every service polls: sessions that ended and users whose earlier
/// tokens are void, after the cursor `after`, for a service token with `auth:revocations`.
#[utoipa::path(get, path = "/internal/revocations", tag = "internal", params(FeedQuery),
    security(("bearer" = [])),
    responses((status = 200, body = RevocationPage),
        (status = 401, description = "No valid service token", body = mercato_kit::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks scope auth:revocations", body = mercato_kit::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`after` is not a non-negative integer", body = mercato_kit::Problem, content_type = "application/problem+json")))]
pub async fn revocation_feed(
    State(state): State<AppState>,
    _caller: Service<AuthRevocations>,
    Query(q): Query<FeedQuery>,
) -> ApiResult<Json<RevocationPage>> {
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::field("after", "must not be negative"));
    }
    Ok(Json(revocations::page(&state.pool, after).await?))
}

/// `Err` (401, "session has ended") unless the claims are still active here.
pub async fn require_active(state: &AppState, claims: &Claims) -> ApiResult<()> {
    if active_claims(state, claims).await? {
        Ok(())
    } else {
        Err(TokenError::Revoked.into())
    }
}

#[derive(Default, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// Required (or a 422): `client_credentials`, the only grant.
    #[schema(required = true, nullable = false, pattern = "^client_credentials$")]
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Space-separated subset of the client's scopes; all of them when absent.
    pub scope: Option<String>,
}
redacted_debug!(TokenRequest { grant_type, client_id, scope } hides client_secret);

/// OAuth2 client-credentials grant for services: form or JSON body, or HTTP Basic.
#[utoipa::path(post, path = "/auth/token", tag = "service", request_body(content = TokenRequest,
        content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = ServiceToken), (status = 401, description = "Unknown client or wrong secret")))]
pub async fn token(
    State(state): State<AppState>,
    request: Request,
) -> ApiResult<Json<ServiceToken>> {
    let headers = request.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = Bytes::from_request(request, &state)
        .await
        .map_err(mercato_kit::extract::body_rejection)?;
    let mut req: TokenRequest = if content_type.starts_with("application/x-www-form-urlencoded") {
        mercato_kit::extract::refuse_nul_in_form(&body)?;
        serde_urlencoded::from_bytes(&body).map_err(|e| {
            ApiError::bad_request("invalid_request", "Malformed form body")
                .with_detail(e.to_string())
        })?
    } else if content_type.starts_with("application/json") {
        mercato_kit::extract::parse_json(&body)?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
        )
        .with_detail("expected application/x-www-form-urlencoded or application/json"));
    };
    if let Some((id, secret)) = basic_credentials(&headers) {
        req.client_id = Some(id);
        req.client_secret = Some(secret);
    }
    match req.grant_type.as_deref() {
        Some("client_credentials") => {}
        None => return Err(ApiError::field("grant_type", "is required")),
        Some(_) => {
            return Err(
                ApiError::bad_request("unsupported_grant_type", "Unsupported grant type")
                    .with_detail("only client_credentials is supported"),
            );
        }
    }
    let (Some(id), Some(secret)) = (req.client_id, req.client_secret) else {
        return Err(invalid_client());
    };
    let granted = tokens::authenticate_client(&state.pool, &id, &secret)
        .await?
        .ok_or_else(invalid_client)?;
    let scopes: Vec<String> = match req.scope.as_deref().map(str::split_whitespace) {
        Some(wanted) => {
            let wanted: Vec<String> = wanted.map(str::to_owned).collect();
            if let Some(bad) = wanted.iter().find(|s| !granted.contains(s)) {
                return Err(ApiError::bad_request("invalid_scope", "Scope not granted")
                    .with_detail(format!("client {id} may not request {bad}")));
            }
            wanted
        }
        None => granted,
    };
    let scope = scopes.join(" ");
    let claims = state
        .signer
        .claims(&id, None, Some(scope.clone()), state.access_ttl);
    let access_token = state.signer.sign(&claims).map_err(ApiError::internal)?;
    Ok(Json(ServiceToken {
        access_token,
        token_type: "Bearer".into(),
        expires_in: state.access_ttl.as_secs(),
        scope,
    }))
}

fn invalid_client() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "Invalid client credentials",
    )
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

/// The public keys tokens are verified with.
#[utoipa::path(get, path = "/auth/jwks", tag = "auth", responses((status = 200, description = "JWK set")))]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        axum::Json(state.verifier.jwks()),
    )
}
