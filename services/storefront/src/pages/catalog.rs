//! The catalogue (filtered by category, a page at a time) and a product's page.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::{encode, error_page, fail, render};
use crate::Shop;
use crate::api::{Call, Failure};
use crate::views::{Chrome, Product, ProductPage};
use crate::visit::Visit;

/// Products per catalogue page.
const PAGE_SIZE: u32 = 12;

#[derive(Debug, Deserialize)]
pub struct CatalogQuery {
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage {
    chrome: Chrome,
    category: Option<String>,
    categories: Vec<String>,
    products: Vec<Product>,
    paged: bool,
    first_url: String,
    next_url: Option<String>,
}

fn catalog_url(category: Option<&str>, cursor: Option<&str>) -> String {
    let mut query = Vec::new();
    if let Some(c) = category {
        query.push(format!("category={}", encode(c)));
    }
    if let Some(c) = cursor {
        query.push(format!("cursor={}", encode(c)));
    }
    if query.is_empty() {
        "/".into()
    } else {
        format!("/?{}", query.join("&"))
    }
}

/// Every category in the catalogue, for the filter (cached for half a minute).
async fn categories(shop: &Shop, visit: &mut Visit) -> Result<Vec<String>, Failure> {
    if let Some(c) = shop.categories.get() {
        return Ok(c);
    }
    let mut found = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    // At most ten pages of a hundred: a shop with more products gets the filter of those.
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/products?limit=100&cursor={}", encode(c)),
            None => "/products?limit=100".to_string(),
        };
        let page = shop
            .api
            .call::<ProductPage>(visit, Call::get(path))
            .await?
            .body;
        found.extend(page.items.into_iter().map(|p| p.category));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let list: Vec<String> = found.into_iter().collect();
    shop.categories.put(list.clone());
    Ok(list)
}

pub async fn index(
    State(shop): State<Shop>,
    mut visit: Visit,
    Query(q): Query<CatalogQuery>,
) -> Response {
    let category = q.category.filter(|c| !c.trim().is_empty());
    let cursor = q.cursor.filter(|c| !c.is_empty());
    let mut path = format!("/products?limit={PAGE_SIZE}");
    if let Some(c) = &category {
        path.push_str(&format!("&category={}", encode(c)));
    }
    if let Some(c) = &cursor {
        path.push_str(&format!("&cursor={}", encode(c)));
    }
    let page = match shop
        .api
        .call::<ProductPage>(&mut visit, Call::get(path))
        .await
    {
        Ok(a) => a.body,
        Err(Failure::Refused(p)) if p.status == 422 => {
            return error_page(
                visit,
                StatusCode::BAD_REQUEST,
                "Unknown page",
                "That catalogue page does not exist (the link may be old).",
            );
        }
        Err(e) => return fail(visit, e, "/"),
    };
    let mut categories = match categories(&shop, &mut visit).await {
        Ok(c) => c,
        Err(e) => return fail(visit, e, "/"),
    };
    // The cached list may predate a product on this page: its category is offered too.
    for p in &page.items {
        if !categories.contains(&p.category) {
            categories.push(p.category.clone());
        }
    }
    categories.sort();
    let title = category.clone().unwrap_or_else(|| "Catalogue".into());
    let next_url = page
        .next_cursor
        .as_deref()
        .map(|n| catalog_url(category.as_deref(), Some(n)));
    let view = CatalogPage {
        chrome: Chrome::of(&visit, title),
        first_url: catalog_url(category.as_deref(), None),
        paged: cursor.is_some(),
        category,
        categories,
        products: page.items,
        next_url,
    };
    render(visit, StatusCode::OK, &view)
}

#[derive(Template)]
#[template(path = "product.html")]
struct ProductView {
    chrome: Chrome,
    product: Product,
}

pub async fn product(
    State(shop): State<Shop>,
    mut visit: Visit,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return error_page(
            visit,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such product.",
        );
    };
    match shop
        .api
        .call::<Product>(&mut visit, Call::get(format!("/products/{id}")))
        .await
    {
        Ok(a) => {
            let view = ProductView {
                chrome: Chrome::of(&visit, a.body.name.clone()),
                product: a.body,
            };
            render(visit, StatusCode::OK, &view)
        }
        Err(e) => fail(visit, e, "/"),
    }
}
