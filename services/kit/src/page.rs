//! Offset pagination as the list endpoints take it: `limit` 1–100 and `offset` 0–10 000,
//! the bounds their OpenAPI parameters declare (a deep offset costs the database a scan).

use crate::error::FieldError;

pub const MAX_LIMIT: i64 = 100;
pub const MAX_OFFSET: i64 = 10_000;

/// `limit` and `offset` with their defaults, or a field error naming each one out of range.
pub fn limit_offset(
    limit: Option<i64>,
    offset: Option<i64>,
    default_limit: i64,
    errors: &mut Vec<FieldError>,
) -> (i64, i64) {
    let (limit, offset) = (limit.unwrap_or(default_limit), offset.unwrap_or(0));
    if !(1..=MAX_LIMIT).contains(&limit) {
        errors.push(FieldError::new(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        ));
    }
    if !(0..=MAX_OFFSET).contains(&offset) {
        errors.push(FieldError::new(
            "offset",
            format!("must be 0 to {MAX_OFFSET}"),
        ));
    }
    (limit, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_beyond_the_maximum_is_named() {
        let mut errors = Vec::new();
        assert_eq!(
            limit_offset(None, Some(MAX_OFFSET + 1), 20, &mut errors),
            (20, MAX_OFFSET + 1)
        );
        assert_eq!(
            errors,
            vec![FieldError::new("offset", "must be 0 to 10000")]
        );
    }

    #[test]
    fn defaults_and_bounds_pass() {
        let mut errors = Vec::new();
        assert_eq!(limit_offset(None, None, 50, &mut errors), (50, 0));
        assert_eq!(
            limit_offset(Some(MAX_LIMIT), Some(MAX_OFFSET), 50, &mut errors),
            (MAX_LIMIT, MAX_OFFSET)
        );
        limit_offset(Some(0), Some(-1), 50, &mut errors);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["limit", "offset"]);
    }
}
