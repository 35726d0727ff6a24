//! Order lines as the order and product services both accept them: 1–50 lines,
//! quantities 1–1000, each product at most once.

pub use mercato_contract::wire::LineItem;
use uuid::Uuid;

use crate::error::{ApiError, FieldError};

pub const MAX_ITEMS: usize = 50;
pub const MAX_QUANTITY: i64 = 1000;

/// Checks the lines, naming each offending field (`items[2].quantity`).
pub fn validate(items: &[LineItem]) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if items.is_empty() || items.len() > MAX_ITEMS {
        errors.push(FieldError::new(
            "items",
            format!("must hold 1 to {MAX_ITEMS} items"),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            errors.push(FieldError::new(
                format!("items[{i}].quantity"),
                format!("must be from 1 to {MAX_QUANTITY}"),
            ));
        }
        if items[..i]
            .iter()
            .any(|other| other.product_id == item.product_id)
        {
            errors.push(FieldError::new(
                format!("items[{i}].product_id"),
                "appears more than once; combine the quantities",
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errors))
    }
}

/// The lines sorted by product, for comparing two requests regardless of order.
pub fn canonical(items: &[LineItem]) -> Vec<(Uuid, i64)> {
    let mut v: Vec<(Uuid, i64)> = items.iter().map(|i| (i.product_id, i.quantity)).collect();
    v.sort();
    v
}
