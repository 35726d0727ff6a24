//! The shopper's orders: the list, one order with its payment form, paying with a test
//! card, and cancelling an unpaid order.

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::{Plain, Posted, error_page, fail, render};
use crate::Shop;
use crate::api::{Call, Explain, Failure};
use crate::views::{Chrome, Order, OrderPage, Payment};
use crate::visit::{Flash, Visit};

#[derive(Template)]
#[template(path = "orders.html")]
struct OrdersPage {
    chrome: Chrome,
    orders: Vec<Order>,
}

pub async fn list(State(shop): State<Shop>, mut visit: Visit) -> Response {
    let call = Call::get("/orders?limit=50").as_shopper();
    match shop.api.call::<OrderPage>(&mut visit, call).await {
        Ok(a) => {
            let page = OrdersPage {
                chrome: Chrome::of(&visit, "My orders"),
                orders: a.body.items,
            };
            render(visit, StatusCode::OK, &page)
        }
        Err(e) => fail(visit, e, "/shop/orders"),
    }
}

#[derive(Template)]
#[template(path = "order.html")]
struct OrderView {
    chrome: Chrome,
    order: Order,
    /// Paid, but the order has not heard yet.
    confirming: bool,
    idempotency_key: String,
}

fn no_such_order(visit: Visit) -> Response {
    error_page(
        visit,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such order.",
    )
}

async fn fetch(shop: &Shop, visit: &mut Visit, id: Uuid) -> Result<Order, Failure> {
    let call = Call::get(format!("/orders/{id}")).as_shopper();
    Ok(shop.api.call::<Order>(visit, call).await?.body)
}

fn order_page(visit: Visit, order: Order, confirming: bool) -> Response {
    let view = OrderView {
        chrome: Chrome::of(&visit, format!("Order #{}", order.short_id())),
        confirming: confirming && order.is_pending(),
        order,
        idempotency_key: Uuid::new_v4().to_string(),
    };
    render(visit, StatusCode::OK, &view)
}

pub async fn show(State(shop): State<Shop>, mut visit: Visit, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return no_such_order(visit);
    };
    match fetch(&shop, &mut visit, id).await {
        Ok(order) => order_page(visit, order, false),
        Err(e) => fail(visit, e, &format!("/shop/orders/{id}")),
    }
}

#[derive(Debug, Deserialize)]
pub struct PayForm {
    method: String,
    idempotency_key: String,
}

/// How long paying waits for the order to hear of the payment before showing the order as
/// being confirmed (it then refreshes on its own).
const CONFIRM_WAIT: Duration = Duration::from_secs(5);

pub async fn pay(
    State(shop): State<Shop>,
    Path(id): Path<String>,
    posted: Posted<PayForm>,
) -> Response {
    let Posted { mut visit, form } = posted;
    let Ok(id) = id.parse::<Uuid>() else {
        return no_such_order(visit);
    };
    let back = format!("/shop/orders/{id}");
    if !matches!(form.method.as_str(), "fake-card" | "fake-card-declined") {
        visit.notice(Flash::error("Choose one of the test cards."));
        return visit.redirect(&back);
    }
    // The amount is the order's total as the order service has it now.
    let order = match fetch(&shop, &mut visit, id).await {
        Ok(o) => o,
        Err(e) => return fail(visit, e, &back),
    };
    if !order.is_pending() {
        visit.notice(Flash::error(format!(
            "This order is {} and cannot be paid.",
            order.status_label().to_lowercase()
        )));
        return visit.redirect(&back);
    }
    let body = serde_json::json!({
        "order_id": id, "amount": order.total, "method": form.method,
    });
    let call = Call::new(Method::POST, "/payments")
        .json(&body)
        .idempotency_key(form.idempotency_key.trim())
        .as_shopper();
    let payment = match shop.api.call::<Payment>(&mut visit, call).await {
        Ok(a) => a.body,
        Err(Failure::Refused(p)) if matches!(p.status, 409 | 422) => {
            visit.notice(Flash::error(format!(
                "The payment was not taken: {}",
                p.message()
            )));
            return visit.redirect(&back);
        }
        Err(e) => return fail(visit, e, &back),
    };
    if payment.status == "DECLINED" {
        visit.notice(Flash::error(
            "Your card was declined. Nothing was charged; try another card.",
        ));
        return visit.redirect(&back);
    }
    // The order learns of the payment through the payment service's outbox: usually at
    // once. Wait a moment so the shopper sees PAID.
    let deadline = tokio::time::Instant::now() + CONFIRM_WAIT;
    loop {
        match fetch(&shop, &mut visit, id).await {
            Ok(order) if !order.is_pending() || tokio::time::Instant::now() >= deadline => {
                if order.status == "PAID" {
                    visit.notice(Flash::ok("Payment received. Thank you for your order!"));
                    return visit.redirect(&back);
                }
                if order.is_pending() {
                    return order_page(visit, order, true);
                }
                visit.notice(Flash::error(format!(
                    "The order was {} before the payment reached it; the payment was refunded.",
                    order.status_label().to_lowercase()
                )));
                return visit.redirect(&back);
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return fail(visit, e, &back),
        }
    }
}

pub async fn cancel(
    State(shop): State<Shop>,
    Path(id): Path<String>,
    posted: Posted<Plain>,
) -> Response {
    let Posted { mut visit, .. } = posted;
    let Ok(id) = id.parse::<Uuid>() else {
        return no_such_order(visit);
    };
    let back = format!("/shop/orders/{id}");
    let call = Call::new(Method::POST, format!("/orders/{id}/cancel")).as_shopper();
    match shop.api.call::<Order>(&mut visit, call).await {
        Ok(_) => {
            visit.notice(Flash::ok(
                "Order cancelled; its stock is back on the shelf.",
            ));
            visit.redirect(&back)
        }
        Err(Failure::Refused(p)) if p.status == 409 => {
            visit.notice(Flash::error(format!(
                "The order was not cancelled: {}",
                p.message()
            )));
            visit.redirect(&back)
        }
        Err(e) => fail(visit, e, &back),
    }
}
