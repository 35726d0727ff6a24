//! Conditional reads (RFC 9110 §13.1.2): whether the `If-None-Match` a client sent names
//! the representation it would get, so the answer can be `304 Not Modified`. The product
//! service answers its catalogue reads with it, and the gateway its cached copies of them.

use axum::http::header::IF_NONE_MATCH;
use axum::http::{HeaderMap, HeaderValue};

/// Whether `If-None-Match` says the client already holds the representation tagged `etag`.
/// The comparison is weak, as §13.1.2 requires for `If-None-Match` (`W/"3"` matches
/// `"3"`); `*` matches any current representation. A header that is not a list of entity
/// tags matches nothing: the full answer is always a safe one.
pub fn client_has(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = opaque(etag.to_str().unwrap_or_default());
    let mut matched = false;
    for value in headers.get_all(IF_NONE_MATCH) {
        let Ok(text) = value.to_str() else {
            return false;
        };
        for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if tag == "*" {
                matched = true;
                continue;
            }
            match opaque(tag) {
                Some(theirs) => matched |= Some(theirs) == ours,
                None => return false,
            }
        }
    }
    matched
}

/// The quoted part of an entity tag, weak or strong; `None` if it is not one.
fn opaque(tag: &str) -> Option<&str> {
    let quoted = tag.strip_prefix("W/").unwrap_or(tag);
    quoted
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .filter(|t| !t.contains('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.append(IF_NONE_MATCH, v);
            }
        }
        h
    }

    #[test]
    fn only_the_current_tag_or_a_star_is_not_modified() {
        let tag = HeaderValue::from_static("\"7\"");
        assert!(
            !client_has(&asking(&[]), &tag),
            "no header: the full answer"
        );
        assert!(client_has(&asking(&["\"7\""]), &tag));
        assert!(client_has(&asking(&["W/\"7\""]), &tag), "weak comparison");
        assert!(client_has(&asking(&["\"6\", \"7\""]), &tag));
        assert!(client_has(&asking(&["\"6\"", "\"7\""]), &tag));
        assert!(client_has(&asking(&["*"]), &tag));
        assert!(!client_has(&asking(&["\"6\""]), &tag), "an older version");
        assert!(!client_has(&asking(&["\"70\""]), &tag));
        assert!(!client_has(&asking(&["7"]), &tag), "not an entity tag");
        assert!(
            !client_has(&asking(&["\"7\", 8"]), &tag),
            "a malformed list"
        );
    }
}
