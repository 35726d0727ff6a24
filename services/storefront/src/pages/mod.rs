//! The pages: one module per part of the shop, the routes, and what every page shares
//! (rendering, forms and their CSRF check, turning API failures into readable pages).

mod account;
mod admin;
mod cart;
mod catalog;
mod orders;

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use crate::Shop;
use crate::api::{Explain, Failure};
use crate::views::Chrome;
use crate::visit::{Flash, Visit};

pub fn routes() -> Router<Shop> {
    Router::new()
        .route("/", get(catalog::index))
        .route("/shop", get(|| async { Redirect::to("/") }))
        .route("/shop/", get(|| async { Redirect::to("/") }))
        .route("/shop/products/{id}", get(catalog::product))
        .route("/shop/cart", get(cart::show))
        .route("/shop/cart/add", post(cart::add))
        .route("/shop/cart/update", post(cart::update))
        .route("/shop/checkout", post(cart::checkout))
        .route("/shop/login", get(account::login_page).post(account::login))
        .route(
            "/shop/register",
            get(account::register_page).post(account::register),
        )
        .route("/shop/logout", post(account::logout))
        .route(
            "/shop/profile",
            get(account::profile).post(account::update_profile),
        )
        .route("/shop/orders", get(orders::list))
        .route("/shop/orders/{id}", get(orders::show))
        .route("/shop/orders/{id}/pay", post(orders::pay))
        .route("/shop/orders/{id}/cancel", post(orders::cancel))
        .route(
            "/shop/admin/products",
            get(admin::products).post(admin::create_product),
        )
        .route(
            "/shop/admin/products/{id}",
            get(admin::product).post(admin::update_product),
        )
        .route(
            "/shop/admin/products/{id}/delete",
            post(admin::delete_product),
        )
        .route("/shop/admin/users", get(admin::users))
        .route("/shop/admin/users/{id}", post(admin::update_user))
        .route("/assets/style.css", get(style))
        .route("/assets/app.js", get(script))
        .route("/{*rest}", get(not_found))
}

const STYLE: &str = include_str!("../../assets/style.css");
const SCRIPT: &str = include_str!("../../assets/app.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn not_found(visit: Visit) -> Response {
    error_page(
        visit,
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no page at this address.",
    )
}

/// A page, with the visit's cookies.
pub(crate) fn render(visit: Visit, status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => visit.finish((status, Html(html))),
        Err(e) => {
            tracing::error!(error = %e, "a page failed to render");
            visit.finish((
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><p>This page could not be shown. Please try again.</p>".to_string()),
            ))
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    heading: String,
    message: String,
    back: String,
}

pub(crate) fn error_page(
    visit: Visit,
    status: StatusCode,
    heading: &str,
    message: &str,
) -> Response {
    let page = ErrorPage {
        chrome: Chrome::of(&visit, heading),
        heading: heading.into(),
        message: message.into(),
        back: safe_next(Some(&visit.path)),
    };
    render(visit, status, &page)
}

/// Where to go after logging in: a path on this site only (never `//elsewhere`).
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") => {
            n.to_string()
        }
        _ => "/".into(),
    }
}

/// The page for a call that failed: log in again, a part of the store is down, not
/// allowed, not found, or what the API said. `back` is where the shopper came from.
pub(crate) fn fail(mut visit: Visit, failure: Failure, back: &str) -> Response {
    match failure {
        Failure::SignedOut => {
            visit.notice(Flash::error("Please log in first."));
            let to = format!("/shop/login?next={}", encode(back));
            visit.redirect(&to)
        }
        Failure::SessionEnded => {
            visit.end_session();
            visit.notice(Flash::error("Your session has ended. Please log in again."));
            let to = format!("/shop/login?next={}", encode(back));
            visit.redirect(&to)
        }
        Failure::Unavailable(part) => error_page(
            visit,
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            &format!(
                "{part} is not answering right now, so this could not be done. Nothing was \
                 changed and your cart is kept. Please try again in a moment."
            ),
        ),
        Failure::Refused(p) if p.status == 403 => error_page(
            visit,
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Your account may not do this.",
        ),
        Failure::Refused(p) if p.status == 404 => error_page(
            visit,
            StatusCode::NOT_FOUND,
            "Not found",
            "It does not exist, or it is not yours.",
        ),
        Failure::Refused(p) if p.status == 429 => error_page(
            visit,
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            "You are going a little fast. Please wait a minute and try again.",
        ),
        Failure::Refused(p) => {
            let status = StatusCode::from_u16(p.status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            error_page(visit, status, "That did not work", &p.message())
        }
    }
}

/// Percent-encoding for one query value.
pub(crate) fn encode(value: &str) -> String {
    serde_urlencoded::to_string([("v", value)])
        .map(|s| s.trim_start_matches("v=").to_string())
        .unwrap_or_default()
}

/// A form posted from one of this shop's pages: the visit, and the fields once its CSRF
/// token has been checked. A form without a valid token (another site's, or a stale page
/// from before the browser's cookies were cleared) is refused with 403 and changes nothing.
pub(crate) struct Posted<T> {
    pub visit: Visit,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<Shop> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, shop: &Shop) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let visit = match <Visit as axum::extract::FromRequestParts<Shop>>::from_request_parts(
            &mut parts, shop,
        )
        .await
        {
            Ok(v) => v,
            Err(never) => match never {},
        };
        let req = Request::from_parts(parts, body);
        let Ok(bytes) = Bytes::from_request(req, shop).await else {
            return Err(error_page(
                visit,
                StatusCode::BAD_REQUEST,
                "Form not received",
                "The form could not be read. Please try again.",
            ));
        };
        let fields: BTreeMap<String, String> =
            serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        let token_ok = fields.get("csrf").is_some_and(|t| visit.csrf_ok(t));
        if !token_ok {
            tracing::warn!(path = %visit.path, "form refused: missing or invalid CSRF token");
            return Err(error_page(
                visit,
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form did not come from this page of the shop, or it has expired. \
                 Nothing was changed. Go back, reload the page and try again.",
            ));
        }
        match serde_urlencoded::from_bytes::<T>(&bytes) {
            Ok(form) => Ok(Posted { visit, form }),
            Err(e) => Err(error_page(
                visit,
                StatusCode::UNPROCESSABLE_ENTITY,
                "Form incomplete",
                &format!("The form could not be read ({e}). Nothing was changed."),
            )),
        }
    }
}

/// A form with nothing in it but its CSRF token (logout, cancel, delete).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Plain {}
