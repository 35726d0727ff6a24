//! The storefront's pages over real HTTP, through the gateway, against a whole store:
//! cookies and headers, CSRF, double submits, sessions that end, a service that is down,
//! escaping, and whose address the API calls count against.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mercato_contract::Component;
use mercato_devstack::dev::TestStore;
use mercato_storefront::cookies::{self, CookieKey};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::Value;
use support::{Api, store};

/// A browser without JavaScript: a cookie jar, redirects followed by hand.
struct Shopper {
    http: reqwest::Client,
    base: String,
    forwarded_for: Option<String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    /// The value of the hidden field `name` in the first form that has one.
    fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} field in {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        unescape(&self.body[start..end])
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }
}

/// An attribute's value as a browser reads it (the templates escape `&"'<>`).
fn unescape(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#38;", "&")
}

impl Shopper {
    fn new(store: &TestStore) -> Self {
        Self {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: store.gateway_url(),
            forwarded_for: None,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.forwarded_for {
            Some(a) => req.header("x-forwarded-for", a),
            None => req,
        };
        let r = req.send().await.unwrap();
        Page {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    /// GET, following redirects.
    async fn get(&self, path: &str) -> Page {
        let mut path = path.to_string();
        for _ in 0..5 {
            let page = self
                .send(self.http.get(format!("{}{path}", self.base)))
                .await;
            if !page.status.is_redirection() {
                return page;
            }
            path = page.headers[LOCATION].to_str().unwrap().to_string();
        }
        panic!("too many redirects");
    }

    /// POSTs a form (with the page's CSRF token unless `fields` says otherwise); the answer
    /// as it comes, a redirect not followed.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let req = self.http.post(format!("{}{path}", self.base)).form(fields);
        self.send(req).await
    }

    async fn csrf(&self) -> String {
        self.get("/shop/login").await.field("csrf")
    }

    async fn register(&self, username: &str) {
        let csrf = self.csrf().await;
        let page = self
            .post(
                "/shop/register",
                &[
                    ("csrf", &csrf),
                    ("username", username),
                    ("email", &format!("{username}@example.com")),
                    ("password", "correct horse battery"),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    }

    async fn add(&self, product: &str, quantity: &str) -> Page {
        let csrf = self.csrf().await;
        self.post(
            "/shop/cart/add",
            &[
                ("csrf", &csrf),
                ("product_id", product),
                ("quantity", quantity),
            ],
        )
        .await
    }
}

/// The session cookie's payload (the tokens), as the browser holds it.
fn session_of(page: &Page) -> Value {
    let cookie = page
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("mercato_session=") && !c.contains("Max-Age=0"))
        .expect("a session cookie");
    let value = cookie["mercato_session=".len()..]
        .split(';')
        .next()
        .unwrap();
    let payload = value.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn first_product(api: &Api) -> String {
    api.get("/products?limit=1", None).await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn pages_set_http_only_lax_cookies_a_csp_without_inline_script_and_are_not_cached() {
    let store = store().await;
    let shopper = Shopper::new(&store);
    let page = shopper.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Espresso cup"), "the demo catalogue");
    let cookie = &page.set_cookies()[0];
    assert!(cookie.starts_with("mercato_browser="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP here: {cookie}");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers["cache-control"], "private, no-store");
    assert!(!page.body.contains("<script>"), "no inline script");
    // Every input has a label.
    for page in [
        shopper.get("/shop/register").await,
        shopper.get("/shop/login").await,
    ] {
        for id in ["username", "password"] {
            assert!(page.body.contains(&format!("<label for=\"{id}\">")), "{id}");
        }
    }
    let css = shopper.get("/assets/style.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert_eq!(
        shopper.get("/shop/nowhere").await.status,
        StatusCode::NOT_FOUND
    );
    // The API is where it was.
    assert_eq!(shopper.get("/products").await.status, StatusCode::OK);
}

#[tokio::test]
async fn cookies_are_secure_when_a_trusted_proxy_says_the_shopper_used_https() {
    let store = TestStore::start(
        &[(Component::Gateway, &["--trusted-proxies=127.0.0.0/8"])],
        false,
    )
    .await
    .unwrap();
    let shopper = Shopper::new(&store);
    let req = shopper
        .http
        .get(format!("{}/shop/login", store.gateway_url()))
        .header("x-forwarded-proto", "https");
    let page = shopper.send(req).await;
    assert!(
        page.set_cookies()[0].contains("; Secure"),
        "{:?}",
        page.set_cookies()
    );

    // A client's own claim is not believed when the gateway does not trust its peer.
    let plain = TestStore::start(&[], false).await.unwrap();
    let shopper = Shopper::new(&plain);
    let req = shopper
        .http
        .get(format!("{}/shop/login", plain.gateway_url()))
        .header("x-forwarded-proto", "https");
    assert!(!shopper.send(req).await.set_cookies()[0].contains("Secure"));
}

#[tokio::test]
async fn forms_without_this_browsers_csrf_token_are_refused_and_change_nothing() {
    let store = store().await;
    let api = Api::of(&store);
    let product = first_product(&api).await;
    let shopper = Shopper::new(&store);
    shopper.get("/").await;
    let stranger = Shopper::new(&store);
    let strangers_token = stranger.csrf().await;
    for token in [
        None,
        Some(""),
        Some("forged"),
        Some(strangers_token.as_str()),
    ] {
        let mut fields = vec![("product_id", product.as_str()), ("quantity", "1")];
        if let Some(t) = token {
            fields.push(("csrf", t));
        }
        let page = shopper.post("/shop/cart/add", &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{token:?}");
        assert!(page.body.contains("Nothing was changed"));
        assert!(
            !page
                .set_cookies()
                .iter()
                .any(|c| c.starts_with("mercato_cart="))
        );
    }
    let cart = shopper.get("/shop/cart").await;
    assert!(cart.body.contains("Your cart is empty"));
    // With its own token the same form works.
    let page = shopper.add(&product, "1").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(shopper.get("/shop/cart").await.body.contains("Cart (1)"));
}

#[tokio::test]
async fn a_checkout_submitted_twice_at_once_places_one_order() {
    let mut store = store().await;
    let api = Api::of(&store);
    let admin = api.admin(&mut store).await;
    let product = first_product(&api).await;
    let stock = api.stock(&product).await;
    let shopper = Shopper::new(&store);
    shopper.register("twice").await;
    shopper.add(&product, "2").await;
    let cart = shopper.get("/shop/cart").await;
    let (csrf, key) = (cart.field("csrf"), cart.field("idempotency_key"));
    let form = [("csrf", csrf.as_str()), ("idempotency_key", key.as_str())];
    let (a, b) = tokio::join!(
        shopper.post("/shop/checkout", &form),
        shopper.post("/shop/checkout", &form)
    );
    assert_eq!(
        (a.status, b.status),
        (StatusCode::SEE_OTHER, StatusCode::SEE_OTHER)
    );
    assert_eq!(a.headers[LOCATION], b.headers[LOCATION], "the same order");
    let orders = api.orders(&admin).await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(api.stock(&product).await, stock - 2, "reserved once");
}

#[tokio::test]
async fn an_expired_token_is_refreshed_and_an_ended_session_sends_the_shopper_to_log_in() {
    let mut store = store().await;
    let key: CookieKey = store.dev().topology.cookie_key.parse().unwrap();
    let shopper = Shopper::new(&store);
    let csrf = shopper.csrf().await;
    shopper.register("kate").await;
    let login = shopper
        .post(
            "/shop/login",
            &[
                ("csrf", &csrf),
                ("username", "kate"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    let mut session = session_of(&login);

    // A session whose access token is no good any more: the refresh token renews it.
    session["access_token"] = "expired.token.value".into();
    let stale = key.seal(cookies::SESSION, &serde_json::to_vec(&session).unwrap());
    let req = shopper
        .http
        .get(format!("{}/shop/orders", store.gateway_url()))
        .header("cookie", format!("mercato_session={stale}"));
    let page = shopper.send(req).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("My orders"));
    let renewed = session_of(&page);
    assert_ne!(renewed["access_token"], "expired.token.value");
    assert_ne!(
        renewed["refresh_token"], session["refresh_token"],
        "rotated"
    );

    // Ended at auth (a logout elsewhere): the next page asks to log in again.
    let api = Api::of(&store);
    let r = api
        .http
        .post(format!("{}/auth/logout", api.base))
        .json(&serde_json::json!({"refresh_token": renewed["refresh_token"]}))
        .bearer_auth(renewed["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let mut ended = renewed.clone();
    ended["access_token"] = "expired.token.value".into();
    let sealed = key.seal(cookies::SESSION, &serde_json::to_vec(&ended).unwrap());
    let req = shopper
        .http
        .get(format!("{}/shop/orders", store.gateway_url()))
        .header("cookie", format!("mercato_session={sealed}"));
    let page = shopper.send(req).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.headers[LOCATION], "/shop/login?next=%2Fshop%2Forders");
    assert!(
        page.set_cookies()
            .iter()
            .any(|c| c.starts_with("mercato_session=;"))
    );
    let login = shopper.get("/shop/login?next=%2Fshop%2Forders").await;
    assert!(
        login.body.contains("Your session has ended"),
        "{}",
        login.body
    );
}

#[tokio::test]
async fn logging_out_revokes_the_refresh_token_at_auth() {
    let store = store().await;
    let shopper = Shopper::new(&store);
    let csrf = shopper.csrf().await;
    shopper.register("leo").await;
    let login = shopper
        .post(
            "/shop/login",
            &[
                ("csrf", &csrf),
                ("username", "leo"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    let session = session_of(&login);
    let page = shopper.post("/shop/logout", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(
        page.set_cookies()
            .iter()
            .any(|c| c.starts_with("mercato_session=;"))
    );
    let api = Api::of(&store);
    let refresh = api
        .http
        .post(format!("{}/auth/refresh", api.base))
        .json(&serde_json::json!({"refresh_token": session["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);
    let token = session["access_token"].as_str().unwrap();
    let me = mercato_kit::testing::poll(
        50,
        || {
            api.http
                .get(format!("{}/users/me", api.base))
                .bearer_auth(token)
                .send()
        },
        |r| {
            r.as_ref()
                .is_ok_and(|r| r.status() == StatusCode::UNAUTHORIZED)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        me.status(),
        StatusCode::UNAUTHORIZED,
        "the access token ended too"
    );
}

#[tokio::test]
async fn a_stopped_service_gives_a_readable_page_and_the_cart_is_kept() {
    let mut store = store().await;
    let api = Api::of(&store);
    let product = first_product(&api).await;
    let shopper = Shopper::new(&store);
    shopper.add(&product, "1").await;
    store.dev().stop_component(Component::Product).await;
    let page = shopper.get("/").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.body
            .contains("Product service is not answering right now"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("panicked") && !page.body.contains("\"type\""));
    store
        .dev()
        .start_component(Component::Product)
        .await
        .unwrap();
    let page =
        mercato_kit::testing::poll(100, || shopper.get("/shop/cart"), |p| p.status == 200).await;
    assert!(page.body.contains("Cart (1)"), "the cart survived");
}

#[tokio::test]
async fn values_from_the_api_are_escaped_in_every_page() {
    let mut store = store().await;
    let api = Api::of(&store);
    let admin = api.admin(&mut store).await;
    let id = api
        .product(&admin, "<img src=x onerror=alert(1)>", 100, 5)
        .await;
    let shopper = Shopper::new(&store);
    for path in [
        "/?category=tests".to_string(),
        format!("/shop/products/{id}"),
    ] {
        let page = shopper.get(&path).await;
        assert!(!page.body.contains("<img src=x"), "{path}");
        assert!(
            page.body.contains("&#60;img src=x onerror=alert(1)&#62;")
                || page.body.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{path}: {}",
            page.body
        );
    }
}

#[tokio::test]
async fn each_shopper_counts_against_the_rate_limit_not_the_storefront() {
    let store = TestStore::start(
        &[(
            Component::Gateway,
            &["--trusted-proxies=127.0.0.0/8", "--rate-limit-per-minute=8"],
        )],
        true,
    )
    .await
    .unwrap();
    let mut ann = Shopper::new(&store);
    ann.forwarded_for = Some("203.0.113.10".into());
    let mut ben = Shopper::new(&store);
    ben.forwarded_for = Some("203.0.113.20".into());
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(ann.get("/").await.status);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Ann's page loads and the API calls made for her used up her allowance, not Ben's.
    assert_eq!(ben.get("/").await.status, StatusCode::OK);
}

/// Logs the shopper in through the login form; the CSRF token of the page.
async fn log_in(shopper: &Shopper, username: &str, password: &str) -> String {
    let csrf = shopper.csrf().await;
    let page = shopper
        .post(
            "/shop/login",
            &[
                ("csrf", &csrf),
                ("username", username),
                ("password", password),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    csrf
}

#[tokio::test]
async fn a_shopper_changes_their_email_and_password_and_wrong_input_changes_nothing() {
    let store = store().await;
    let api = Api::of(&store);
    let shopper = Shopper::new(&store);
    shopper.register("nina").await;
    let csrf = log_in(&shopper, "nina", "correct horse battery").await;
    let profile = shopper.get("/shop/profile").await;
    assert!(profile.body.contains("nina@example.com"));

    let bad = shopper
        .post(
            "/shop/profile",
            &[
                ("csrf", &csrf),
                ("change", "email"),
                ("email", "not an email"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("field-error"), "{}", bad.body);
    let ok = shopper
        .post(
            "/shop/profile",
            &[
                ("csrf", &csrf),
                ("change", "email"),
                ("email", "nina@example.org"),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert!(
        shopper
            .get("/shop/profile")
            .await
            .body
            .contains("nina@example.org")
    );

    let wrong = shopper
        .post(
            "/shop/profile",
            &[
                ("csrf", &csrf),
                ("change", "password"),
                ("current_password", "nope"),
                ("password", "a brand new passphrase"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        wrong.body.contains("The current password is incorrect"),
        "{}",
        wrong.body
    );
    let changed = shopper
        .post(
            "/shop/profile",
            &[
                ("csrf", &csrf),
                ("change", "password"),
                ("current_password", "correct horse battery"),
                ("password", "a brand new passphrase"),
            ],
        )
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    // Still signed in (with the new password), and only the new password logs in.
    assert!(
        shopper
            .get("/shop/profile")
            .await
            .body
            .contains("Password changed")
    );
    let old = api
        .http
        .post(format!("{}/auth/login", api.base))
        .json(&serde_json::json!({"username": "nina", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    api.login("nina", "a brand new passphrase").await;
}

#[tokio::test]
async fn an_admin_edits_prices_and_stock_deletes_products_and_manages_users() {
    let mut store = store().await;
    let api = Api::of(&store);
    let admin_token = api.admin(&mut store).await;
    let (user, password) = {
        let dev = store.dev();
        (dev.admin_username.clone(), dev.admin_password.clone())
    };
    let id = api.product(&admin_token, "Desk lamp", 3_000, 4).await;
    let admin = Shopper::new(&store);
    let csrf = log_in(&admin, &user, &password).await;

    // An edit made from a page that is out of date (an order took stock meanwhile) is refused.
    let form = admin.get(&format!("/shop/admin/products/{id}")).await;
    let version = form.field("version");
    let customer = Api::of(&store);
    customer_order(&customer, &store, &id).await;
    let edit = |price: &'static str, stock: &'static str, version: String| {
        let (admin, csrf, id) = (&admin, csrf.clone(), id.clone());
        async move {
            admin
                .post(
                    &format!("/shop/admin/products/{id}"),
                    &[
                        ("csrf", csrf.as_str()),
                        ("version", &version),
                        ("name", "Desk lamp"),
                        ("description", ""),
                        ("category", "tests"),
                        ("price", price),
                        ("currency", "EUR"),
                        ("stock", stock),
                    ],
                )
                .await
        }
    };
    let stale = edit("25.00", "10", version).await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.body
    );
    assert!(stale.body.contains("Nothing was saved"));
    assert_eq!(api.stock(&id).await, 3, "the order's reservation stands");
    // The page it shows instead carries the current version; saving from it works.
    let fresh = stale.field("version");
    let typo = edit("25.0.0", "10", fresh.clone()).await;
    assert_eq!(typo.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        typo.body.contains("Price must be an amount"),
        "{}",
        typo.body
    );
    let saved = edit("25.00", "10", fresh).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let product = api.get(&format!("/products/{id}"), None).await;
    assert_eq!(
        (product["price"].as_i64(), product["stock"].as_i64()),
        (Some(2_500), Some(10))
    );

    // Delete: gone from the catalogue.
    let deleted = admin
        .post(
            &format!("/shop/admin/products/{id}/delete"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert!(
        !admin
            .get("/shop/admin/products")
            .await
            .body
            .contains("Desk lamp")
    );

    // Users: promote, then disable; a disabled user cannot log in.
    let shopper = Shopper::new(&store);
    shopper.register("omar").await;
    let users = admin.get("/shop/admin/users").await;
    assert!(users.body.contains("omar@example.com"));
    let omar = api.get("/users?limit=100", Some(&admin_token)).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "omar")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let promoted = admin
        .post(
            &format!("/shop/admin/users/{omar}"),
            &[("csrf", &csrf), ("role", "admin")],
        )
        .await;
    assert_eq!(promoted.status, StatusCode::SEE_OTHER);
    let disabled = admin
        .post(
            &format!("/shop/admin/users/{omar}"),
            &[("csrf", &csrf), ("disabled", "true")],
        )
        .await;
    assert_eq!(disabled.status, StatusCode::SEE_OTHER);
    let view = api.get(&format!("/users/{omar}"), Some(&admin_token)).await;
    assert_eq!(
        (view["role"].as_str(), view["disabled"].as_bool()),
        (Some("admin"), Some(true))
    );
    let login = api
        .http
        .post(format!("{}/auth/login", api.base))
        .json(&serde_json::json!({"username": "omar", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::UNAUTHORIZED);
}

/// A customer orders one of `product` through the API.
async fn customer_order(api: &Api, store: &TestStore, product: &str) {
    let buyer = Shopper::new(store);
    buyer.register("buyer").await;
    let token = api.login("buyer", "correct horse battery").await;
    let r = api
        .http
        .post(format!("{}/orders", api.base))
        .bearer_auth(token)
        .json(&serde_json::json!({"product_id": product, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}
