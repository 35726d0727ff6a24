//! `/users/*`: a user's own profile, and user management for admins.

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use mercato_kit::auth::User;
use mercato_kit::jwt::Role;
use mercato_kit::{ApiError, ApiResult, Json, Path, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::domain::{Email, Fields, Password};
use crate::routes::auth::{create_user, redacted_debug, require_active};
use crate::users::{self, Changes, UserView};
use crate::{revocations, tokens};

/// A signed-in user whose token is still active here, where the user table is at hand:
/// tokens of ended sessions, of disabled or deleted users and tokens issued before a
/// password or role change are refused ("session has ended") at once, without waiting for
/// the revocation feed.
pub struct Me(pub User);

impl FromRequestParts<AppState> for Me {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = User::from_request_parts(parts, state).await?;
        require_active(state, &user.claims).await?;
        Ok(Me(user))
    }
}

/// [`Me`] with the admin role: auth's own admin routes check its tables directly, so a
/// demoted or logged-out admin is refused at once.
pub struct Admin(pub User);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Me(user) = Me::from_request_parts(parts, state).await?;
        if !user.is_admin() {
            return Err(ApiError::forbidden("admin role required"));
        }
        Ok(Admin(user))
    }
}

fn user_id(user: &User) -> ApiResult<Uuid> {
    user.id
        .parse()
        .map_err(|_| ApiError::unauthorized("token subject is not a user"))
}

#[utoipa::path(get, path = "/users/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = UserView)))]
pub async fn get_me(State(state): State<AppState>, Me(user): Me) -> ApiResult<Json<UserView>> {
    let row = users::by_id(&state.pool, user_id(&user)?)
        .await?
        .ok_or_else(|| ApiError::unauthorized("user no longer exists"))?;
    Ok(Json(row.into()))
}

/// Own profile changes: email and password (with the current one). Not role or username.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMe {
    #[schema(format = Email, max_length = 254)]
    pub email: Option<String>,
    /// Needs `current_password`.
    #[schema(min_length = 8, max_length = 128)]
    pub password: Option<String>,
    pub current_password: Option<String>,
}
redacted_debug!(UpdateMe { email } hides password, current_password);

#[utoipa::path(put, path = "/users/me", tag = "users", security(("bearer" = [])), request_body = UpdateMe,
    responses((status = 200, body = UserView), (status = 409, description = "Email already registered")))]
pub async fn update_me(
    State(state): State<AppState>,
    Me(user): Me,
    Json(req): Json<UpdateMe>,
) -> ApiResult<Json<UserView>> {
    let id = user_id(&user)?;
    let mut fields = Fields::default();
    let email = fields.optional(req.email.as_deref().map(|e| Email::parse("email", e)));
    let password = fields.optional(
        req.password
            .as_deref()
            .map(|p| Password::parse("password", p)),
    );
    if password.is_some() && req.current_password.is_none() {
        fields.take::<()>(Err(mercato_kit::FieldError::new(
            "current_password",
            "is required to change the password",
        )));
    }
    fields.finish()?;
    let current = users::by_id(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("user no longer exists"))?;
    let mut changes = Changes {
        email: email.map(|e| e.as_str().to_string()),
        ..Changes::default()
    };
    if let Some(password) = &password {
        let given = req.current_password.clone().unwrap_or_default();
        if !state
            .hasher
            .verify(given, Some(current.password_hash.clone()))
            .await
        {
            return Err(ApiError::field("current_password", "is incorrect"));
        }
        changes.password_hash = Some(
            state
                .hasher
                .hash(password.expose().to_string())
                .await
                .map_err(ApiError::internal)?,
        );
    }
    let updated = apply_changes(&state, id, &changes).await?;
    Ok(Json(updated.into()))
}

/// Applies changes in one transaction. A new password or a disable ends every session;
/// those and a role change void the user's tokens issued so far, on every service.
async fn apply_changes(state: &AppState, id: Uuid, changes: &Changes) -> ApiResult<users::UserRow> {
    let mut tx = state.pool.begin().await?;
    let current_role = users::by_id(&mut *tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("User not found"))?
        .role;
    let updated = users::update(&mut *tx, id, changes).await.map_err(|e| {
        if mercato_kit::error::is_unique_violation(&e, "users_email_key") {
            ApiError::conflict("email_taken", "Email already registered")
        } else {
            e.into()
        }
    })?;
    let updated = updated.ok_or_else(|| ApiError::not_found("User not found"))?;
    if changes.password_hash.is_some() || changes.disabled == Some(true) {
        tokens::revoke_all_for_user(&mut *tx, id, "credentials changed").await?;
    }
    if changes.password_hash.is_some()
        || changes.disabled == Some(true)
        || changes.role.is_some_and(|role| role != current_role)
    {
        revocations::void_user_tokens(&mut tx, id, state.access_ttl).await?;
    }
    tx.commit().await?;
    Ok(updated)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, default 50.
    #[param(minimum = 1, maximum = 100, nullable = false)]
    pub limit: Option<i64>,
    #[param(minimum = 0, maximum = 10_000, nullable = false)]
    pub offset: Option<i64>,
    #[param(nullable = false)]
    pub role: Option<Role>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<UserView>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

#[utoipa::path(get, path = "/users", tag = "users", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = UserPage)))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<UserPage>> {
    let mut errors = Vec::new();
    let (limit, offset) = mercato_kit::page::limit_offset(q.limit, q.offset, 50, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let (rows, total) = users::list(&state.pool, q.role, limit, offset).await?;
    Ok(Json(UserPage {
        items: rows.into_iter().map(Into::into).collect(),
        total,
        limit,
        offset,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(min_length = 3, max_length = 64, pattern = r"^[a-z0-9_.\-]+$")]
    pub username: String,
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    #[serde(default = "customer")]
    pub role: Role,
}
redacted_debug!(CreateUser { username, email, role } hides password);

fn customer() -> Role {
    Role::Customer
}

#[utoipa::path(post, path = "/users", tag = "users", security(("bearer" = [])), request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 409, description = "Username or email already taken")))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<CreateUser>,
) -> ApiResult<impl IntoResponse> {
    create_user(&state, &req.username, &req.email, &req.password, req.role).await
}

#[utoipa::path(get, path = "/users/{id}", tag = "users", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The user's id")),
    responses((status = 200, body = UserView), (status = 404, description = "No such user")))]
pub async fn get_one(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<UserView>> {
    let row = users::by_id(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("User not found"))?;
    Ok(Json(row.into()))
}

/// Admin changes to a user; omitted fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[schema(format = Email, max_length = 254)]
    pub email: Option<String>,
    #[schema(min_length = 8, max_length = 128)]
    pub password: Option<String>,
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}
redacted_debug!(UpdateUser { email, role, disabled } hides password);

#[utoipa::path(put, path = "/users/{id}", tag = "users", security(("bearer" = [])), request_body = UpdateUser, params(("id" = Uuid, Path, description = "The user's id")),
    responses((status = 200, body = UserView), (status = 404, description = "No such user"),
        (status = 409, description = "Email already registered, or the admin would lock themselves out")))]
pub async fn update_one(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<Uuid>,
    Json(req): Json<UpdateUser>,
) -> ApiResult<Json<UserView>> {
    let mut fields = Fields::default();
    let email = fields.optional(req.email.as_deref().map(|e| Email::parse("email", e)));
    let password = fields.optional(
        req.password
            .as_deref()
            .map(|p| Password::parse("password", p)),
    );
    fields.finish()?;
    if admin.id == id.to_string()
        && (req.role == Some(Role::Customer) || req.disabled == Some(true))
    {
        return Err(ApiError::conflict(
            "self_lockout",
            "You cannot remove your own admin access",
        ));
    }
    let password_hash = match password {
        Some(p) => Some(
            state
                .hasher
                .hash(p.expose().to_string())
                .await
                .map_err(ApiError::internal)?,
        ),
        None => None,
    };
    let changes = Changes {
        email: email.map(|e| e.as_str().to_string()),
        password_hash,
        role: req.role,
        disabled: req.disabled,
    };
    Ok(Json(apply_changes(&state, id, &changes).await?.into()))
}

#[utoipa::path(delete, path = "/users/{id}", tag = "users", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The user's id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such user"),
        (status = 409, description = "An admin cannot delete themselves")))]
pub async fn delete_one(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    if admin.id == id.to_string() {
        return Err(ApiError::conflict(
            "self_lockout",
            "You cannot delete yourself",
        ));
    }
    let mut tx = state.pool.begin().await?;
    if !users::delete(&mut *tx, id).await? {
        return Err(ApiError::not_found("User not found"));
    }
    revocations::void_user_tokens(&mut tx, id, state.access_ttl).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
