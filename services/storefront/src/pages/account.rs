//! Registering, logging in and out, and the shopper's profile.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::{Plain, Posted, fail, render, safe_next};
use crate::Shop;
use crate::api::{Call, Explain, Failure, Tokens};
use crate::views::{Chrome, User};
use crate::visit::{Flash, Session, Visit};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    next: String,
    username: String,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: Option<String>,
}

pub async fn login_page(visit: Visit, Query(q): Query<NextQuery>) -> Response {
    let page = LoginPage {
        chrome: Chrome::of(&visit, "Log in"),
        next: safe_next(q.next.as_deref()),
        username: String::new(),
        error: None,
    };
    render(visit, StatusCode::OK, &page)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// Logs in with the API and keeps the tokens and who they belong to in the session cookie.
async fn sign_in(
    shop: &Shop,
    visit: &mut Visit,
    username: &str,
    password: &str,
) -> Result<(), Failure> {
    let body = serde_json::json!({ "username": username, "password": password });
    let tokens = shop
        .api
        .call::<Tokens>(visit, Call::new(Method::POST, "/auth/login").json(&body))
        .await?
        .body;
    // Who the tokens belong to, asked with them.
    visit.session = Some(Session {
        access_token: tokens.access_token.clone(),
        refresh_token: tokens.refresh_token.clone(),
        user_id: Uuid::nil(),
        username: username.to_string(),
        role: String::new(),
    });
    let me = shop
        .api
        .call::<User>(visit, Call::get("/users/me").as_shopper())
        .await?
        .body;
    let current = visit.session.take();
    let (access_token, refresh_token) = current
        .map(|s| (s.access_token, s.refresh_token))
        .unwrap_or((tokens.access_token, tokens.refresh_token));
    visit.set_session(Session {
        access_token,
        refresh_token,
        user_id: me.id,
        username: me.username,
        role: me.role,
    });
    Ok(())
}

pub async fn login(State(shop): State<Shop>, posted: Posted<LoginForm>) -> Response {
    let Posted { mut visit, form } = posted;
    let next = safe_next(form.next.as_deref());
    match sign_in(&shop, &mut visit, form.username.trim(), &form.password).await {
        Ok(()) => {
            let name = visit
                .session
                .as_ref()
                .map(|s| s.username.clone())
                .unwrap_or_default();
            visit.notice(Flash::ok(format!("Welcome, {name}.")));
            visit.redirect(&next)
        }
        Err(Failure::Refused(p)) if matches!(p.status, 401 | 422 | 429) => {
            visit.session = None;
            let error = match p.status {
                401 | 422 => "Wrong username or password.".to_string(),
                _ => "Too many attempts. Please wait a few minutes and try again.".to_string(),
            };
            let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::UNAUTHORIZED);
            let page = LoginPage {
                chrome: Chrome::of(&visit, "Log in"),
                next,
                username: form.username,
                error: Some(error),
            };
            render(visit, status, &page)
        }
        Err(e) => fail(visit, e, "/shop/login"),
    }
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    chrome: Chrome,
    username: String,
    email: String,
    error: Option<String>,
    username_error: Option<String>,
    email_error: Option<String>,
    password_error: Option<String>,
}

pub async fn register_page(visit: Visit) -> Response {
    let page = RegisterPage {
        chrome: Chrome::of(&visit, "Create an account"),
        username: String::new(),
        email: String::new(),
        error: None,
        username_error: None,
        email_error: None,
        password_error: None,
    };
    render(visit, StatusCode::OK, &page)
}

#[derive(Debug, Deserialize)]
pub struct RegisterForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

pub async fn register(State(shop): State<Shop>, posted: Posted<RegisterForm>) -> Response {
    let Posted { mut visit, form } = posted;
    let username = form.username.trim().to_string();
    let body = serde_json::json!({
        "username": username, "email": form.email.trim(), "password": form.password,
    });
    let created = shop
        .api
        .call::<User>(
            &mut visit,
            Call::new(Method::POST, "/auth/register").json(&body),
        )
        .await;
    match created {
        Ok(_) => match sign_in(&shop, &mut visit, &username, &form.password).await {
            Ok(()) => {
                visit.notice(Flash::ok(format!("Welcome to Mercato, {username}.")));
                visit.redirect("/")
            }
            Err(e) => fail(visit, e, "/shop/login"),
        },
        Err(Failure::Refused(p)) if matches!(p.status, 409 | 422 | 429) => {
            let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST);
            let page = RegisterPage {
                chrome: Chrome::of(&visit, "Create an account"),
                username_error: p.field("username").map(str::to_string),
                email_error: p.field("email").map(str::to_string),
                password_error: p.field("password").map(str::to_string),
                error: Some(match p.status {
                    409 => "That username or email is already registered.".to_string(),
                    429 => "Too many new accounts from here. Please try again later.".to_string(),
                    _ => "Please correct the fields below.".to_string(),
                }),
                username,
                email: form.email,
            };
            render(visit, status, &page)
        }
        Err(e) => fail(visit, e, "/shop/register"),
    }
}

/// Ends the session at auth (the refresh token and the access token stop working
/// everywhere), then forgets it here.
pub async fn logout(State(shop): State<Shop>, posted: Posted<Plain>) -> Response {
    let Posted { mut visit, .. } = posted;
    if let Some(session) = visit.session.clone() {
        let body = serde_json::json!({ "refresh_token": session.refresh_token });
        let call = Call::new(Method::POST, "/auth/logout")
            .json(&body)
            .as_shopper();
        match shop.api.call::<serde_json::Value>(&mut visit, call).await {
            Ok(_) | Err(Failure::SessionEnded | Failure::SignedOut) => {}
            Err(Failure::Refused(p)) if p.status < 500 => {}
            Err(e) => return fail(visit, e, "/"),
        }
    }
    visit.end_session();
    visit.notice(Flash::ok("You are logged out."));
    visit.redirect("/")
}

#[derive(Template)]
#[template(path = "profile.html")]
struct ProfilePage {
    chrome: Chrome,
    user: User,
    email_error: Option<String>,
    password_error: Option<String>,
}

async fn profile_page(
    shop: &Shop,
    mut visit: Visit,
    status: StatusCode,
    email_error: Option<String>,
    password_error: Option<String>,
) -> Response {
    match shop
        .api
        .call::<User>(&mut visit, Call::get("/users/me").as_shopper())
        .await
    {
        Ok(a) => {
            let page = ProfilePage {
                chrome: Chrome::of(&visit, "My profile"),
                user: a.body,
                email_error,
                password_error,
            };
            render(visit, status, &page)
        }
        Err(e) => fail(visit, e, "/shop/profile"),
    }
}

pub async fn profile(State(shop): State<Shop>, visit: Visit) -> Response {
    profile_page(&shop, visit, StatusCode::OK, None, None).await
}

#[derive(Debug, Deserialize)]
pub struct ProfileForm {
    change: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    current_password: String,
}

pub async fn update_profile(State(shop): State<Shop>, posted: Posted<ProfileForm>) -> Response {
    let Posted { mut visit, form } = posted;
    let password_change = form.change == "password";
    let body = if password_change {
        serde_json::json!({ "password": form.password, "current_password": form.current_password })
    } else {
        serde_json::json!({ "email": form.email.trim() })
    };
    let call = Call::new(Method::PUT, "/users/me").json(&body).as_shopper();
    match shop.api.call::<User>(&mut visit, call).await {
        Ok(me) if password_change => {
            // A new password ends every session, this one too: sign in again with it.
            let username = me.body.username;
            match sign_in(&shop, &mut visit, &username, &form.password).await {
                Ok(()) => {
                    visit.notice(Flash::ok(
                        "Password changed. Other sessions were logged out.",
                    ));
                    visit.redirect("/shop/profile")
                }
                Err(e) => fail(visit, e, "/shop/profile"),
            }
        }
        Ok(_) => {
            visit.notice(Flash::ok("Email saved."));
            visit.redirect("/shop/profile")
        }
        Err(Failure::Refused(p)) if matches!(p.status, 401 | 403 | 409 | 422) => {
            let message = p
                .field(if password_change { "password" } else { "email" })
                .map(|m| format!("The new value {m}."))
                .or_else(|| {
                    p.field("current_password")
                        .map(|m| format!("The current password {m}."))
                })
                .unwrap_or_else(|| match p.status {
                    409 => "That email is already registered.".to_string(),
                    401 | 403 => "The current password is not right.".to_string(),
                    _ => p.message(),
                });
            let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST);
            let (email_error, password_error) = if password_change {
                (None, Some(message))
            } else {
                (Some(message), None)
            };
            profile_page(&shop, visit, status, email_error, password_error).await
        }
        Err(e) => fail(visit, e, "/shop/profile"),
    }
}
