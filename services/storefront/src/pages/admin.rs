//! Admin pages: products (create, edit price and stock, delete) and users (disable, role).
//! Customers get 403 here before anything is asked of the API, which refuses them too.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::{Plain, Posted, encode, error_page, fail, render};
use crate::Shop;
use crate::api::{Call, Explain, Failure, Problem};
use crate::views::{Chrome, Product, ProductPage, User, UserPage, parse_money};
use crate::visit::{Flash, Visit};

/// `Err` with the page to show unless an admin is signed in.
fn admin_only(visit: Visit) -> Result<Visit, Box<Response>> {
    match &visit.session {
        Some(s) if s.is_admin() => Ok(visit),
        Some(_) => Err(Box::new(error_page(
            visit,
            StatusCode::FORBIDDEN,
            "Administrators only",
            "This page is for the shop's administrators.",
        ))),
        None => {
            let back = visit.path.clone();
            Err(Box::new(fail(visit, Failure::SignedOut, &back)))
        }
    }
}

/// The product form, as shown and as posted back.
#[derive(Debug, Default)]
struct ProductForm {
    action: String,
    submit: String,
    version: Option<String>,
    error: Option<String>,
    errors: BTreeMap<String, String>,
    name: String,
    description: String,
    category: String,
    price: String,
    currency: String,
    stock: String,
}

impl ProductForm {
    fn new_product() -> Self {
        Self {
            action: "/shop/admin/products".into(),
            submit: "Create product".into(),
            currency: "EUR".into(),
            stock: "0".into(),
            ..Self::default()
        }
    }

    fn of(product: &Product, version: Option<String>) -> Self {
        Self {
            action: format!("/shop/admin/products/{}", product.id),
            submit: "Save changes".into(),
            version,
            name: product.name.clone(),
            description: product.description.clone(),
            category: product.category.clone(),
            price: product.price_input(),
            currency: product.currency.clone(),
            stock: product.stock.to_string(),
            ..Self::default()
        }
    }

    /// The posted fields over `self` (which keeps its action and version).
    fn posted(mut self, p: &PostedProduct) -> Self {
        self.name = p.name.clone();
        self.description = p.description.clone();
        self.category = p.category.clone();
        self.price = p.price.clone();
        self.currency = p.currency.trim().to_ascii_uppercase();
        self.stock = p.stock.clone();
        self
    }

    /// The API's body, or the fields typed wrong (nothing is sent then).
    fn body(&self) -> Result<serde_json::Value, BTreeMap<String, String>> {
        let mut errors = BTreeMap::new();
        let price = parse_money(&self.price, &self.currency)
            .map_err(|e| errors.insert("price".into(), format!("Price {e}.")))
            .ok();
        let stock = self.stock.trim().parse::<i64>().ok().filter(|s| *s >= 0);
        if stock.is_none() {
            errors.insert(
                "stock".into(),
                "Stock must be a whole number, 0 or more.".into(),
            );
        }
        match (price, stock) {
            (Some(price), Some(stock)) if errors.is_empty() => Ok(serde_json::json!({
                "name": self.name.trim(), "description": self.description.trim(),
                "category": self.category.trim(), "price": price,
                "currency": self.currency, "stock": stock,
            })),
            _ => Err(errors),
        }
    }

    /// The API's field errors shown next to their fields.
    fn refused(mut self, p: &Problem) -> Self {
        for e in &p.errors {
            self.errors.insert(
                e.field.clone(),
                format!("{} {}.", capital(&e.field), e.message),
            );
        }
        if self.errors.is_empty() {
            self.error = Some(p.message());
        }
        self
    }
}

fn capital(field: &str) -> String {
    let mut c = field.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[derive(Debug, Deserialize)]
pub struct PostedProduct {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    stock: String,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_products.html")]
struct ProductsPage {
    chrome: Chrome,
    products: Vec<Product>,
    next_url: Option<String>,
    form: ProductForm,
}

#[derive(Debug, Deserialize)]
pub struct CursorQuery {
    #[serde(default)]
    cursor: Option<String>,
}

async fn products_page(
    shop: &Shop,
    mut visit: Visit,
    cursor: Option<&str>,
    status: StatusCode,
    form: ProductForm,
) -> Response {
    let mut path = "/products?limit=50".to_string();
    if let Some(c) = cursor {
        path.push_str(&format!("&cursor={}", encode(c)));
    }
    match shop
        .api
        .call::<ProductPage>(&mut visit, Call::get(path))
        .await
    {
        Ok(a) => {
            let page = ProductsPage {
                chrome: Chrome::of(&visit, "Products"),
                next_url: a
                    .body
                    .next_cursor
                    .map(|c| format!("/shop/admin/products?cursor={}", encode(&c))),
                products: a.body.items,
                form,
            };
            render(visit, status, &page)
        }
        Err(e) => fail(visit, e, "/shop/admin/products"),
    }
}

pub async fn products(
    State(shop): State<Shop>,
    visit: Visit,
    Query(q): Query<CursorQuery>,
) -> Response {
    let visit = match admin_only(visit) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    products_page(
        &shop,
        visit,
        q.cursor.as_deref(),
        StatusCode::OK,
        ProductForm::new_product(),
    )
    .await
}

pub async fn create_product(State(shop): State<Shop>, posted: Posted<PostedProduct>) -> Response {
    let Posted {
        visit,
        form: posted,
    } = posted;
    let mut visit = match admin_only(visit) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let mut form = ProductForm::new_product().posted(&posted);
    let body = match form.body() {
        Ok(b) => b,
        Err(errors) => {
            form.errors = errors;
            return products_page(&shop, visit, None, StatusCode::UNPROCESSABLE_ENTITY, form).await;
        }
    };
    let call = Call::new(Method::POST, "/products")
        .json(&body)
        .as_shopper();
    match shop.api.call::<Product>(&mut visit, call).await {
        Ok(a) => {
            shop.categories.forget();
            visit.notice(Flash::ok(format!("Created {}.", a.body.name)));
            visit.redirect("/shop/admin/products")
        }
        Err(Failure::Refused(p)) if matches!(p.status, 409 | 422) => {
            let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST);
            products_page(&shop, visit, None, status, form.refused(&p)).await
        }
        Err(e) => fail(visit, e, "/shop/admin/products"),
    }
}

#[derive(Template)]
#[template(path = "admin_product.html")]
struct ProductEdit {
    chrome: Chrome,
    form: ProductForm,
}

fn edit_page(visit: Visit, status: StatusCode, form: ProductForm) -> Response {
    let page = ProductEdit {
        chrome: Chrome::of(&visit, format!("Edit {}", form.name)),
        form,
    };
    render(visit, status, &page)
}

fn no_such_product(visit: Visit) -> Response {
    error_page(
        visit,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such product.",
    )
}

pub async fn product(State(shop): State<Shop>, visit: Visit, Path(id): Path<String>) -> Response {
    let mut visit = match admin_only(visit) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Ok(id) = id.parse::<Uuid>() else {
        return no_such_product(visit);
    };
    match shop
        .api
        .call::<Product>(&mut visit, Call::get(format!("/products/{id}")))
        .await
    {
        Ok(a) => edit_page(visit, StatusCode::OK, ProductForm::of(&a.body, a.etag)),
        Err(e) => fail(visit, e, "/shop/admin/products"),
    }
}

/// Saves an edit, only if no one changed the product since the form was shown (its ETag,
/// sent back as If-Match): a sale or another admin's edit in between is never overwritten.
pub async fn update_product(
    State(shop): State<Shop>,
    Path(id): Path<String>,
    posted: Posted<PostedProduct>,
) -> Response {
    let Posted {
        visit,
        form: posted,
    } = posted;
    let mut visit = match admin_only(visit) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Ok(id) = id.parse::<Uuid>() else {
        return no_such_product(visit);
    };
    let mut form = ProductForm {
        action: format!("/shop/admin/products/{id}"),
        submit: "Save changes".into(),
        version: posted.version.clone(),
        ..ProductForm::default()
    }
    .posted(&posted);
    let body = match form.body() {
        Ok(b) => b,
        Err(errors) => {
            form.errors = errors;
            return edit_page(visit, StatusCode::UNPROCESSABLE_ENTITY, form);
        }
    };
    let version = posted.version.unwrap_or_default();
    let mut call = Call::new(Method::PATCH, format!("/products/{id}"))
        .json(&body)
        .as_shopper();
    if !version.is_empty() {
        call = call.if_match(&version);
    }
    match shop.api.call::<Product>(&mut visit, call).await {
        Ok(a) => {
            shop.categories.forget();
            visit.notice(Flash::ok(format!("Saved {}.", a.body.name)));
            visit.redirect("/shop/admin/products")
        }
        Err(Failure::Refused(p)) if p.status == 412 => {
            // Show what the product is now, to edit again.
            match shop
                .api
                .call::<Product>(&mut visit, Call::get(format!("/products/{id}")))
                .await
            {
                Ok(a) => {
                    let mut fresh = ProductForm::of(&a.body, a.etag);
                    fresh.error = Some(
                        "Someone changed this product (or sold some) while you were editing. \
                         Nothing was saved; here it is as it is now."
                            .into(),
                    );
                    edit_page(visit, StatusCode::PRECONDITION_FAILED, fresh)
                }
                Err(e) => fail(visit, e, "/shop/admin/products"),
            }
        }
        Err(Failure::Refused(p)) if matches!(p.status, 409 | 422) => {
            let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST);
            edit_page(visit, status, form.refused(&p))
        }
        Err(e) => fail(visit, e, "/shop/admin/products"),
    }
}

pub async fn delete_product(
    State(shop): State<Shop>,
    Path(id): Path<String>,
    posted: Posted<Plain>,
) -> Response {
    let Posted { visit, .. } = posted;
    let mut visit = match admin_only(visit) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Ok(id) = id.parse::<Uuid>() else {
        return no_such_product(visit);
    };
    let call = Call::new(Method::DELETE, format!("/products/{id}")).as_shopper();
    match shop.api.call::<serde_json::Value>(&mut visit, call).await {
        Ok(_) => {
            shop.categories.forget();
            visit.notice(Flash::ok("Product deleted."));
            visit.redirect("/shop/admin/products")
        }
        Err(e) => fail(visit, e, "/shop/admin/products"),
    }
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<User>,
    total: i64,
    next_url: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct OffsetQuery {
    #[serde(default)]
    offset: Option<u32>,
}

const USERS_PER_PAGE: u32 = 50;

pub async fn users(
    State(shop): State<Shop>,
    visit: Visit,
    Query(q): Query<OffsetQuery>,
) -> Response {
    let mut visit = match admin_only(visit) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let offset = q.offset.unwrap_or(0).min(10_000);
    let call = Call::get(format!("/users?limit={USERS_PER_PAGE}&offset={offset}")).as_shopper();
    match shop.api.call::<UserPage>(&mut visit, call).await {
        Ok(a) => {
            let next = offset + USERS_PER_PAGE;
            let page = UsersPage {
                chrome: Chrome::of(&visit, "Users"),
                next_url: (i64::from(next) < a.body.total)
                    .then(|| format!("/shop/admin/users?offset={next}")),
                total: a.body.total,
                users: a.body.items,
            };
            render(visit, StatusCode::OK, &page)
        }
        Err(e) => fail(visit, e, "/shop/admin/users"),
    }
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    disabled: Option<String>,
}

pub async fn update_user(
    State(shop): State<Shop>,
    Path(id): Path<String>,
    posted: Posted<UserForm>,
) -> Response {
    let Posted { visit, form } = posted;
    let mut visit = match admin_only(visit) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Ok(id) = id.parse::<Uuid>() else {
        return error_page(
            visit,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such user.",
        );
    };
    let mut body = serde_json::Map::new();
    match form.role.as_deref() {
        Some(role @ ("admin" | "customer")) => {
            body.insert("role".into(), role.into());
        }
        Some(_) => {
            visit.notice(Flash::error(
                "A role is admin or customer; nothing was changed.",
            ));
            return visit.redirect("/shop/admin/users");
        }
        None => {}
    }
    match form.disabled.as_deref() {
        Some("true") => {
            body.insert("disabled".into(), true.into());
        }
        Some("false") => {
            body.insert("disabled".into(), false.into());
        }
        _ => {}
    }
    if body.is_empty() {
        visit.notice(Flash::error("Nothing to change."));
        return visit.redirect("/shop/admin/users");
    }
    let body = serde_json::Value::Object(body);
    let call = Call::new(Method::PUT, format!("/users/{id}"))
        .json(&body)
        .as_shopper();
    match shop.api.call::<User>(&mut visit, call).await {
        Ok(a) => {
            let u = a.body;
            let state = if u.disabled { "disabled" } else { "active" };
            visit.notice(Flash::ok(format!(
                "{} is now {} and {state}.",
                u.username, u.role
            )));
            visit.redirect("/shop/admin/users")
        }
        Err(Failure::Refused(p)) if matches!(p.status, 409 | 422) => {
            visit.notice(Flash::error(format!("Not changed: {}", p.message())));
            visit.redirect("/shop/admin/users")
        }
        Err(e) => fail(visit, e, "/shop/admin/users"),
    }
}
