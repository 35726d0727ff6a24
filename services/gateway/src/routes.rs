//! The routing table: which service answers which public path, and which requests need a
//! signed-in caller before they are forwarded. The storefront's pages (`/`, `/shop/…`) and
//! assets (`/assets/…`) go to the storefront, which signs its shoppers in with cookies and
//! calls the API back through the gateway like any other client.

use axum::http::Method;
use mercato_contract::Component;

/// The service that serves `path`, or `None` (internal endpoints are never routed).
pub fn upstream_for(path: &str) -> Option<Component> {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "auth" | "users" => Some(Component::Auth),
        "products" => Some(Component::Product),
        "orders" => Some(Component::Order),
        "payments" => Some(Component::Payment),
        "" | "shop" | "assets" => Some(Component::Storefront),
        _ => None,
    }
}

/// Whether the request needs a valid bearer token at the gateway. Services verify again;
/// this only turns anonymous traffic away early.
pub fn requires_token(method: &Method, path: &str) -> bool {
    match upstream_for(path) {
        Some(Component::Auth) => path.starts_with("/users"),
        Some(Component::Product) => {
            !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        }
        Some(Component::Order | Component::Payment) => *method != Method::OPTIONS,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_paths_route_to_their_service_and_internal_ones_nowhere() {
        assert_eq!(upstream_for("/auth/login"), Some(Component::Auth));
        assert_eq!(upstream_for("/users/me"), Some(Component::Auth));
        assert_eq!(upstream_for("/products"), Some(Component::Product));
        assert_eq!(upstream_for("/products/abc"), Some(Component::Product));
        assert_eq!(upstream_for("/orders/x/cancel"), Some(Component::Order));
        assert_eq!(upstream_for("/payments"), Some(Component::Payment));
        assert_eq!(upstream_for("/internal/orders/x"), None);
        assert_eq!(upstream_for("/productsX"), None);
        assert_eq!(upstream_for("/"), Some(Component::Storefront));
        assert_eq!(upstream_for("/shop/cart"), Some(Component::Storefront));
        assert_eq!(
            upstream_for("/assets/style.css"),
            Some(Component::Storefront)
        );
        assert_eq!(upstream_for("/shopping"), None);
    }

    #[test]
    fn catalog_reads_and_auth_are_public_everything_else_needs_a_token() {
        assert!(!requires_token(&Method::GET, "/products"));
        assert!(requires_token(&Method::POST, "/products"));
        assert!(requires_token(&Method::PATCH, "/products/1"));
        assert!(!requires_token(&Method::POST, "/auth/login"));
        assert!(requires_token(&Method::GET, "/users/me"));
        assert!(requires_token(&Method::GET, "/orders"));
        assert!(requires_token(&Method::POST, "/payments"));
        assert!(!requires_token(&Method::OPTIONS, "/orders"));
    }
}
