//! The cart (kept in a signed cookie, so it survives reloads and restarts), and checkout.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::{Posted, error_page, fail, render};
use crate::Shop;
use crate::api::{Call, Explain, Failure, Problem};
use crate::views::{Chrome, Order, Product, money};
use crate::visit::{Flash, MAX_LINES, MAX_QUANTITY, Visit};

struct Line {
    id: Uuid,
    name: String,
    unit_label: String,
    quantity: i64,
    total_label: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "cart.html")]
struct CartPage {
    chrome: Chrome,
    lines: Vec<Line>,
    total: String,
    signed_in: bool,
    idempotency_key: String,
}

/// The cart's lines priced from the catalogue now, with what is wrong with each (gone, or
/// more than the stock), and any error the API gave for a line at checkout.
async fn priced(
    shop: &Shop,
    visit: &mut Visit,
    refused: &BTreeMap<Uuid, String>,
) -> Result<(Vec<Line>, String), Failure> {
    let mut lines = Vec::new();
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    let cart = visit.cart.0.clone();
    for (id, quantity) in cart {
        let product = match shop
            .api
            .call::<Product>(visit, Call::get(format!("/products/{id}")))
            .await
        {
            Ok(a) => a.body,
            Err(Failure::Refused(p)) if p.status == 404 => {
                lines.push(Line {
                    id,
                    name: "A product no longer sold".into(),
                    unit_label: "–".into(),
                    quantity,
                    total_label: "–".into(),
                    error: Some("This product is no longer sold: set its quantity to 0.".into()),
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        *totals.entry(product.currency.clone()).or_default() += product.price * quantity;
        let error = refused.get(&id).cloned().or_else(|| {
            (quantity > product.stock).then(|| match product.stock {
                0 => "Out of stock.".to_string(),
                n => format!("Only {n} left in stock."),
            })
        });
        lines.push(Line {
            id,
            unit_label: product.price_label(),
            total_label: money(product.price * quantity, &product.currency),
            name: product.name,
            quantity,
            error,
        });
    }
    let total = totals
        .iter()
        .map(|(currency, minor)| money(*minor, currency))
        .collect::<Vec<_>>()
        .join(" + ");
    Ok((lines, total))
}

async fn cart_page(
    shop: &Shop,
    mut visit: Visit,
    status: StatusCode,
    refused: BTreeMap<Uuid, String>,
) -> Response {
    match priced(shop, &mut visit, &refused).await {
        Ok((lines, total)) => {
            let page = CartPage {
                chrome: Chrome::of(&visit, "Your cart"),
                lines,
                total,
                signed_in: visit.session.is_some(),
                idempotency_key: Uuid::new_v4().to_string(),
            };
            render(visit, status, &page)
        }
        Err(e) => fail(visit, e, "/shop/cart"),
    }
}

pub async fn show(State(shop): State<Shop>, visit: Visit) -> Response {
    cart_page(&shop, visit, StatusCode::OK, BTreeMap::new()).await
}

#[derive(Debug, Deserialize)]
pub struct AddForm {
    product_id: String,
    #[serde(default)]
    quantity: String,
}

pub async fn add(State(shop): State<Shop>, posted: Posted<AddForm>) -> Response {
    let Posted { mut visit, form } = posted;
    let Ok(id) = form.product_id.parse::<Uuid>() else {
        return error_page(
            visit,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such product.",
        );
    };
    let quantity = match form.quantity.trim() {
        "" => 1,
        q => match q.parse::<i64>() {
            Ok(n) if (1..=MAX_QUANTITY).contains(&n) => n,
            _ => {
                visit.notice(Flash::error(format!(
                    "Quantity must be a whole number from 1 to {MAX_QUANTITY}."
                )));
                return visit.redirect(&format!("/shop/products/{id}"));
            }
        },
    };
    let product = match shop
        .api
        .call::<Product>(&mut visit, Call::get(format!("/products/{id}")))
        .await
    {
        Ok(a) => a.body,
        Err(e) => return fail(visit, e, "/"),
    };
    if !visit.cart.0.contains_key(&id) && visit.cart.0.len() >= MAX_LINES {
        visit.notice(Flash::error(format!(
            "A cart holds at most {MAX_LINES} different products."
        )));
        return visit.redirect("/shop/cart");
    }
    let line = visit.cart.0.entry(id).or_insert(0);
    *line = (*line + quantity).min(MAX_QUANTITY);
    visit.save_cart();
    visit.notice(Flash::ok(format!("Added {} to your cart.", product.name)));
    visit.redirect("/shop/cart")
}

/// `qty.<product id>` per line; 0 removes the line.
pub async fn update(posted: Posted<BTreeMap<String, String>>) -> Response {
    let Posted { mut visit, form } = posted;
    let mut cart = visit.cart.clone();
    for (field, value) in &form {
        let Some(id) = field
            .strip_prefix("qty.")
            .and_then(|i| i.parse::<Uuid>().ok())
        else {
            continue;
        };
        if !cart.0.contains_key(&id) {
            continue;
        }
        match value.trim().parse::<i64>() {
            Ok(0) => {
                cart.0.remove(&id);
            }
            Ok(n) if (1..=MAX_QUANTITY).contains(&n) => {
                cart.0.insert(id, n);
            }
            _ => {
                visit.notice(Flash::error(format!(
                    "Quantities must be whole numbers from 0 to {MAX_QUANTITY}; nothing was changed."
                )));
                return visit.redirect("/shop/cart");
            }
        }
    }
    visit.cart = cart;
    visit.save_cart();
    visit.notice(Flash::ok("Cart updated."));
    visit.redirect("/shop/cart")
}

#[derive(Debug, Deserialize)]
pub struct CheckoutForm {
    idempotency_key: String,
}

/// The lines the API refused (`items[i].…`), by product.
fn refused_lines(problem: &Problem, ids: &[Uuid]) -> BTreeMap<Uuid, String> {
    problem
        .errors
        .iter()
        .filter_map(|e| {
            let index: usize = e
                .field
                .strip_prefix("items[")?
                .split(']')
                .next()?
                .parse()
                .ok()?;
            let message = match e.field.rsplit('.').next() {
                Some("product_id") => "This product is no longer sold.".to_string(),
                _ => format!("Not enough stock: {}.", e.message),
            };
            Some((*ids.get(index)?, message))
        })
        .collect()
}

/// Places the order: one order per rendered cart page, however often the button is
/// pressed (the page's Idempotency-Key), then off to pay for it.
pub async fn checkout(State(shop): State<Shop>, posted: Posted<CheckoutForm>) -> Response {
    let Posted { mut visit, form } = posted;
    if visit.cart.0.is_empty() {
        visit.notice(Flash::error("Your cart is empty."));
        return visit.redirect("/shop/cart");
    }
    let key = form.idempotency_key.trim().to_string();
    if key.is_empty() || key.len() > 255 {
        return error_page(
            visit,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Form incomplete",
            "The checkout form is incomplete. Reload the cart and try again.",
        );
    }
    let ids: Vec<Uuid> = visit.cart.0.keys().copied().collect();
    let body = serde_json::json!({
        "items": visit.cart.0.iter()
            .map(|(id, q)| serde_json::json!({"product_id": id, "quantity": q}))
            .collect::<Vec<_>>()
    });
    let call = Call::new(Method::POST, "/orders")
        .json(&body)
        .idempotency_key(&key)
        .as_shopper();
    match shop.api.call::<Order>(&mut visit, call).await {
        Ok(a) => {
            visit.cart.0.clear();
            visit.save_cart();
            visit.notice(Flash::ok(
                "Order placed and stock held for you. Pay below to complete it.",
            ));
            visit.redirect(&format!("/shop/orders/{}", a.body.id))
        }
        Err(Failure::Refused(p)) if matches!(p.status, 404 | 409 | 422) => {
            let refused = refused_lines(&p, &ids);
            if refused.is_empty() {
                let message = p.message();
                visit.flash = Some(Flash::error(format!("The order was not placed: {message}")));
            } else {
                visit.flash = Some(Flash::error(
                    "The order was not placed: some lines cannot be bought as they are. \
                     Change them and try again.",
                ));
            }
            cart_page(&shop, visit, StatusCode::CONFLICT, refused).await
        }
        Err(e) => fail(visit, e, "/shop/cart"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FieldError;

    #[test]
    fn refused_lines_are_matched_to_their_products() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let p = Problem {
            type_: "about:blank".into(),
            status: 409,
            code: "insufficient_stock".into(),
            title: "Not enough stock".into(),
            detail: None,
            errors: vec![FieldError::new("items[1].quantity", "only 2 in stock")],
            request_id: None,
        };
        let refused = refused_lines(&p, &[a, b]);
        assert_eq!(refused.len(), 1);
        assert!(refused[&b].contains("only 2 in stock"), "{refused:?}");
    }
}
