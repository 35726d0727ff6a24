//! What pages show: the API's objects as the pages read them, money and stock as a shopper
//! reads them, and the frame around every page.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use uuid::Uuid;

use crate::visit::{Flash, Visit};

/// The frame of every page: who is signed in, the cart's size, the notice, the CSRF token
/// its forms carry.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub title: String,
    pub username: Option<String>,
    pub admin: bool,
    pub csrf: String,
    pub flash: Option<Flash>,
    pub cart_count: i64,
}

impl Chrome {
    pub fn of(visit: &Visit, title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            username: visit.session.as_ref().map(|s| s.username.clone()),
            admin: visit.session.as_ref().is_some_and(|s| s.is_admin()),
            csrf: visit.csrf(),
            flash: visit.flash.clone(),
            cart_count: visit.cart.count(),
        }
    }
}

/// Decimal places of a currency's minor unit (ISO 4217).
fn decimals(currency: &str) -> u32 {
    match currency {
        "JPY" | "KRW" | "ISK" | "CLP" | "VND" => 0,
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" => 3,
        _ => 2,
    }
}

/// `1250, "EUR"` → `12.50`: the amount in major units, without a symbol.
pub fn amount(minor: i64, currency: &str) -> String {
    let places = decimals(currency);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let unit = 10u64.pow(places);
    if places == 0 {
        format!("{sign}{abs}")
    } else {
        format!(
            "{sign}{}.{:0width$}",
            abs / unit,
            abs % unit,
            width = places as usize
        )
    }
}

/// `1250, "EUR"` → `€12.50`; currencies without a common symbol keep their code.
pub fn money(minor: i64, currency: &str) -> String {
    let amount = amount(minor.abs(), currency);
    let sign = if minor < 0 { "-" } else { "" };
    match currency {
        "EUR" => format!("{sign}€{amount}"),
        "USD" => format!("{sign}${amount}"),
        "GBP" => format!("{sign}£{amount}"),
        "JPY" => format!("{sign}¥{amount}"),
        other => format!("{sign}{amount} {other}"),
    }
}

/// What an admin types as a price (`12.5`, `12.50`, `12`) in minor units of `currency`.
pub fn parse_money(text: &str, currency: &str) -> Result<i64, String> {
    let text = text.trim();
    let places = decimals(currency) as usize;
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if !digits(whole) || !(frac.is_empty() || digits(frac)) {
        return Err("must be an amount such as 12.50".into());
    }
    if frac.len() > places {
        return Err(format!("{currency} has {places} decimal places"));
    }
    let frac = format!("{frac:0<places$}");
    let minor = format!("{whole}{frac}")
        .parse::<i64>()
        .map_err(|_| "is too large".to_string())?;
    if minor <= 0 {
        return Err("must be more than zero".into());
    }
    Ok(minor)
}

/// A catalogue product.
#[derive(Debug, Clone, Deserialize)]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub category: String,
    pub price: i64,
    pub currency: String,
    pub stock: i64,
}

impl Product {
    pub fn price_label(&self) -> String {
        money(self.price, &self.currency)
    }

    /// The price as an admin edits it.
    pub fn price_input(&self) -> String {
        amount(self.price, &self.currency)
    }

    pub fn stock_label(&self) -> String {
        match self.stock {
            0 => "Out of stock".into(),
            n if n <= 5 => format!("Only {n} left"),
            _ => "In stock".into(),
        }
    }

    pub fn in_stock(&self) -> bool {
        self.stock > 0
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProductPage {
    pub items: Vec<Product>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// One priced line of an order.
#[derive(Debug, Clone, Deserialize)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub name: String,
    pub quantity: i64,
    pub unit_price: i64,
    pub currency: String,
}

impl OrderLine {
    pub fn unit_label(&self) -> String {
        money(self.unit_price, &self.currency)
    }

    pub fn total_label(&self) -> String {
        money(self.unit_price * self.quantity, &self.currency)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    pub id: Uuid,
    pub status: String,
    pub items: Vec<OrderLine>,
    pub total: i64,
    pub currency: String,
    pub created_at: String,
    pub expires_at: String,
}

impl Order {
    pub fn total_label(&self) -> String {
        money(self.total, &self.currency)
    }

    pub fn is_pending(&self) -> bool {
        self.status == "PENDING"
    }

    pub fn short_id(&self) -> String {
        self.id.simple().to_string()[..8].to_string()
    }

    /// `2026-11-29 20:31 UTC` from RFC 3339.
    pub fn placed(&self) -> String {
        short_time(&self.created_at)
    }

    pub fn expires(&self) -> String {
        short_time(&self.expires_at)
    }

    pub fn status_label(&self) -> &'static str {
        match self.status.as_str() {
            "PENDING" => "Awaiting payment",
            "PAID" => "Paid",
            "CANCELLED" => "Cancelled",
            "EXPIRED" => "Expired",
            _ => "Unknown",
        }
    }

    pub fn status_class(&self) -> String {
        self.status.to_ascii_lowercase()
    }
}

fn short_time(rfc3339: &str) -> String {
    let t = rfc3339.replace('T', " ");
    format!("{} UTC", t.get(..16).unwrap_or(&t))
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderPage {
    pub items: Vec<Order>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Payment {
    pub status: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub role: String,
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UserPage {
    pub items: Vec<User>,
    pub total: i64,
}

/// The catalogue's categories, for the filter: read from the API at most every 30 s.
#[derive(Debug, Default)]
pub struct CategoryCache(Mutex<Option<(Instant, Vec<String>)>>);

impl CategoryCache {
    const FRESH_FOR: Duration = Duration::from_secs(30);

    pub fn get(&self) -> Option<Vec<String>> {
        let guard = self.0.lock().ok()?;
        guard
            .as_ref()
            .filter(|(at, _)| at.elapsed() < Self::FRESH_FOR)
            .map(|(_, c)| c.clone())
    }

    /// After an admin's change, the next page reads them again.
    pub fn forget(&self) {
        if let Ok(mut guard) = self.0.lock() {
            *guard = None;
        }
    }

    pub fn put(&self, categories: Vec<String>) {
        if let Ok(mut guard) = self.0.lock() {
            *guard = Some((Instant::now(), categories));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_shown_with_its_currency() {
        assert_eq!(money(1250, "EUR"), "€12.50");
        assert_eq!(money(5, "USD"), "$0.05");
        assert_eq!(money(1250, "JPY"), "¥1250");
        assert_eq!(money(1250, "SEK"), "12.50 SEK");
        assert_eq!(money(1250, "KWD"), "1.250 KWD");
    }

    #[test]
    fn typed_prices_become_minor_units_or_say_why_not() {
        assert_eq!(parse_money("12.5", "EUR"), Ok(1250));
        assert_eq!(parse_money("12", "EUR"), Ok(1200));
        assert_eq!(parse_money(" 0.99 ", "USD"), Ok(99));
        assert_eq!(parse_money("1250", "JPY"), Ok(1250));
        assert!(parse_money("12.345", "EUR").is_err());
        assert!(parse_money("1.5", "JPY").is_err());
        assert!(parse_money("-3", "EUR").is_err());
        assert!(parse_money("0", "EUR").is_err());
        assert!(parse_money("abc", "EUR").is_err());
        assert!(parse_money("99999999999999999999", "EUR").is_err());
    }

    #[test]
    fn the_price_input_round_trips() {
        let p = |price, currency: &str| Product {
            id: Uuid::nil(),
            name: String::new(),
            description: String::new(),
            category: String::new(),
            price,
            currency: currency.into(),
            stock: 1,
        };
        for (price, currency) in [(1250, "EUR"), (7, "USD"), (1250, "JPY"), (1250, "KWD")] {
            let shown = p(price, currency).price_input();
            assert_eq!(parse_money(&shown, currency), Ok(price), "{shown}");
        }
    }
}
