//! The shop in a real browser: headless Chromium driven through ChromeDriver against a
//! whole store (every service, the gateway and the storefront, on real PostgreSQL). Every
//! page visited is saved as a PNG under `target/browser-screenshots/<test>/`.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
mod support;

use support::browser::Browser;
use support::{Api, store};

/// Registers a new shopper through the register page; the shop signs them in.
async fn register(b: &mut Browser, username: &str, password: &str) {
    b.open("/shop/register", "register").await;
    b.fill("#username", username).await;
    b.fill("#email", &format!("{username}@example.com")).await;
    b.fill("#password", password).await;
    b.click("#register", "registered").await;
    assert!(
        b.page_text()
            .await
            .contains(&format!("Welcome to Mercato, {username}")),
        "{}",
        b.page_text().await
    );
}

async fn log_in(b: &mut Browser, username: &str, password: &str) {
    b.open("/shop/login", "login").await;
    b.fill("#username", username).await;
    b.fill("#password", password).await;
    b.click("#login", "logged-in").await;
    assert!(
        b.page_text()
            .await
            .contains(&format!("Welcome, {username}"))
    );
}

/// Opens a product from the catalogue by its name and adds `quantity` to the cart.
async fn add_to_cart(b: &mut Browser, name: &str, quantity: u32) {
    b.open("/", "catalogue").await;
    let link = b
        .client
        .find(fantoccini::Locator::LinkText(name))
        .await
        .unwrap_or_else(|_| panic!("{name} is in the catalogue"));
    link.click().await.unwrap();
    b.find("#add-to-cart").await;
    b.shot("product").await;
    b.fill("#quantity", &quantity.to_string()).await;
    b.click("#add-to-cart", "added").await;
    assert!(
        b.page_text()
            .await
            .contains(&format!("Added {name} to your cart"))
    );
}

#[tokio::test]
async fn a_shopper_filters_the_catalogue_buys_two_products_and_sees_the_order_paid() {
    let mut store = store().await;
    let api = Api::of(&store);
    let mut b = Browser::start(&store.gateway_url(), "checkout").await;

    // Browse and filter.
    b.open("/", "catalogue").await;
    assert!(b.page_text().await.contains("Wool throw"));
    b.find("#category")
        .await
        .select_by_value("stationery")
        .await
        .unwrap();
    b.click("form.filter button", "filtered").await;
    let filtered = b.text("#products").await;
    assert!(
        filtered.contains("Field notebook") && filtered.contains("Brass pen"),
        "{filtered}"
    );
    assert!(!filtered.contains("Wool throw"), "{filtered}");

    // Two products in the cart, kept across a reload.
    add_to_cart(&mut b, "Field notebook", 2).await;
    add_to_cart(&mut b, "Brass pen", 1).await;
    b.open("/shop/cart", "cart").await;
    b.client.refresh().await.unwrap();
    assert_eq!(b.text("#nav-cart").await, "Cart (3)");
    assert_eq!(b.text("#cart-total").await, "€59.00");
    assert!(
        b.has("#login-to-checkout").await,
        "checkout asks to log in first"
    );

    // Register, log out, log in again: the cart is still there.
    register(&mut b, "ada", "correct horse battery").await;
    b.click("form[action='/shop/logout'] button", "logged-out")
        .await;
    assert!(b.page_text().await.contains("You are logged out"));
    log_in(&mut b, "ada", "correct horse battery").await;

    let admin = api.admin(&mut store).await;
    let page = api.get("/products?category=stationery", None).await;
    let notebook = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Field notebook")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let stock_before = api.stock(&notebook).await;

    // Check out and pay.
    b.open("/shop/cart", "cart-signed-in").await;
    b.click("#checkout", "order-placed").await;
    assert!(b.path().await.starts_with("/shop/orders/"));
    assert_eq!(b.text("#order-status").await, "Awaiting payment");
    assert_eq!(b.text("#nav-cart").await, "Cart (0)");
    b.click("#pay", "paid").await;
    assert!(
        b.page_text().await.contains("Payment received"),
        "{}",
        b.page_text().await
    );
    assert_eq!(b.text("#order-status").await, "Paid");

    // The stock went down, and "my orders" shows it paid.
    assert_eq!(api.stock(&notebook).await, stock_before - 2);
    b.open("/shop/orders", "my-orders").await;
    assert!(b.text("#orders").await.contains("Paid"));
    let orders = api.orders(&admin).await;
    assert_eq!(orders.len(), 1, "one order");
    assert_eq!(orders[0]["status"], "PAID");

    // On a phone-sized screen every page fits its width: nothing to scroll sideways.
    b.client.set_window_size(390, 844).await.unwrap();
    for (path, name) in [("/", "phone-catalogue"), ("/shop/orders", "phone-orders")] {
        b.open(path, name).await;
        let overflow = b
            .client
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(overflow, 0, "{path} is wider than the phone");
    }
    b.close().await;
}

#[tokio::test]
async fn a_declined_card_an_out_of_stock_line_and_a_cancel_each_read_clearly() {
    let mut store = store().await;
    let api = Api::of(&store);
    let admin = api.admin(&mut store).await;
    let scarce = api.product(&admin, "Scarce lamp", 4_000, 1).await;
    let mut b = Browser::start(&store.gateway_url(), "refusals").await;
    register(&mut b, "grace", "correct horse battery").await;

    // More than the stock: the line says so in the cart, and checkout is refused there.
    add_to_cart(&mut b, "Scarce lamp", 2).await;
    let line = b.text(&format!("tr[data-product='{scarce}']")).await;
    assert!(line.contains("Only 1 left in stock"), "{line}");
    b.click("#checkout", "out-of-stock").await;
    let line = b
        .text(&format!("tr[data-product='{scarce}'] .field-error"))
        .await;
    assert!(line.contains("Not enough stock"), "{line}");
    assert!(b.page_text().await.contains("The order was not placed"));
    assert!(api.orders(&admin).await.is_empty(), "no order was made");
    assert_eq!(api.stock(&scarce).await, 1);

    // Fix the quantity; a declined card leaves the order unpaid and says so.
    b.fill(&format!("#qty-{scarce}"), "1").await;
    b.click("#update-cart", "cart-updated").await;
    b.click("#checkout", "order-placed").await;
    b.find("#declined-card").await.click().await.unwrap();
    b.click("#pay", "declined").await;
    assert!(b.page_text().await.contains("Your card was declined"));
    assert_eq!(b.text("#order-status").await, "Awaiting payment");

    // Cancel the unpaid order: its stock is back.
    assert_eq!(api.stock(&scarce).await, 0, "held by the order");
    b.click("#cancel", "cancelled").await;
    assert!(b.page_text().await.contains("Order cancelled"));
    assert_eq!(b.text("#order-status").await, "Cancelled");
    assert!(!b.has("#pay").await, "a cancelled order cannot be paid");
    assert_eq!(api.stock(&scarce).await, 1);
    b.close().await;
}

#[tokio::test]
async fn an_admin_adds_a_product_shoppers_see_it_as_text_and_customers_cannot_reach_admin_pages() {
    let mut store = store().await;
    let (user, password) = {
        let dev = store.dev();
        (dev.admin_username.clone(), dev.admin_password.clone())
    };
    let mut b = Browser::start(&store.gateway_url(), "admin").await;
    log_in(&mut b, &user, &password).await;
    b.open("/shop/admin/products", "admin-products").await;
    let name = "<script>alert(1)</script> lamp";
    b.fill("#name", name).await;
    b.fill("#description", "<b>bold</b> & \"quoted\"").await;
    b.fill("#category", "lighting").await;
    b.fill("#price", "12.5").await;
    b.fill("#stock", "3").await;
    b.click("#save-product", "created").await;
    assert!(b.page_text().await.contains(&format!("Created {name}")));

    // Shoppers see it, the name as text: no script ran, no element was made of it.
    b.click("form[action='/shop/logout'] button", "logged-out")
        .await;
    b.open("/?category=lighting", "catalogue-lighting").await;
    assert_eq!(b.text(".product-link").await, name);
    assert_eq!(b.text(".price").await, "€12.50");
    let alert = b.client.get_alert_text().await;
    assert!(alert.is_err(), "no alert: {alert:?}");
    let scripts = b
        .client
        .execute(
            "return document.querySelectorAll('main script').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(scripts, 0);
    b.client
        .find(fantoccini::Locator::Css(".product-link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.find("#add-to-cart").await;
    b.shot("xss-product").await;
    assert!(b.page_text().await.contains("<b>bold</b> & \"quoted\""));

    // A customer is turned away from every admin page.
    register(&mut b, "mallory", "correct horse battery").await;
    for (path, name) in [
        ("/shop/admin/products", "customer-admin-products"),
        ("/shop/admin/users", "customer-admin-users"),
    ] {
        b.open(path, name).await;
        assert!(
            b.page_text().await.contains("Administrators only"),
            "{path}"
        );
        assert!(!b.has("#product-form").await && !b.has("#admin-users").await);
    }
    b.close().await;
}

#[tokio::test]
async fn a_form_posted_without_its_csrf_token_is_refused_and_changes_nothing() {
    let mut store = store().await;
    let api = Api::of(&store);
    let admin = api.admin(&mut store).await;
    let mut b = Browser::start(&store.gateway_url(), "csrf").await;
    register(&mut b, "eve", "correct horse battery").await;
    add_to_cart(&mut b, "Espresso cup", 1).await;
    b.open("/shop/cart", "cart").await;
    // The checkout form, with its token taken out, as another site's copy would be.
    b.client
        .execute(
            "document.querySelector('#checkout-form input[name=csrf]').remove();",
            vec![],
        )
        .await
        .unwrap();
    b.click("#checkout", "refused").await;
    assert!(
        b.page_text().await.contains("Form expired"),
        "{}",
        b.page_text().await
    );
    assert!(api.orders(&admin).await.is_empty(), "no order was made");
    b.open("/shop/cart", "cart-unchanged").await;
    assert_eq!(b.text("#nav-cart").await, "Cart (1)");
    b.close().await;
}
