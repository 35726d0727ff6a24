//! The contract between the operator, the services and the devstack: every name one side
//! writes and another reads (components, ports, environment variables, Secret keys, mount
//! paths, token scopes), and the code that generates credentials, defined exactly once.
//! With the `wire` feature (the services', not the operator's), also the messages the
//! services exchange: see [`wire`].

pub mod credentials;
#[cfg(feature = "wire")]
pub mod wire;

use std::fmt;

/// HTTP port every service listens on inside a cluster.
pub const HTTP_PORT: u16 = 8080;
/// Port of every service's operational endpoints (`/healthz`, `/readyz`, `/metrics`).
/// The Service for the public API does not expose it; kubelet probes and Prometheus
/// reach the pods on it directly.
pub const OPS_PORT: u16 = 9090;
/// PostgreSQL port of each service's database.
pub const POSTGRES_PORT: u16 = 5432;

/// The header in which the gateway passes on the client address it settled on. The
/// gateway always overwrites it, and signs it with the edge key (see [`env::EDGE_KEY`])
/// so a service trusts it only from the gateway.
pub const CLIENT_ADDRESS_HEADER: &str = "x-mercato-client-address";

/// The header in which the storefront vouches for the shopper it calls the API for: the
/// shopper's address and the time, signed with the edge key. The gateway believes it for a
/// minute and never passes it on.
pub const RELAYED_CLIENT_HEADER: &str = "x-mercato-relayed-client";

/// Default token lifetimes (seconds), shared by the auth service and the Store defaults.
pub const DEFAULT_ACCESS_TOKEN_TTL_SECS: u64 = 15 * 60;
pub const DEFAULT_REFRESH_TOKEN_TTL_SECS: u64 = 7 * 24 * 60 * 60;
/// Seconds an access token is still accepted after its `exp` (every verifier's leeway for
/// clock skew); a retired signing key stays published at least this long past the last
/// token it signed.
pub const TOKEN_LEEWAY_SECS: u64 = 30;

/// Store annotation: setting it to a value it has not had starts a signing-key rotation
/// (`kubectl annotate store demo mercato.dev/rotate-signing-key=$(date +%s) --overwrite`).
pub const ROTATE_SIGNING_KEY_ANNOTATION: &str = "mercato.dev/rotate-signing-key";

/// `iss` of every token the auth service signs, unless configured otherwise.
pub const DEFAULT_JWT_ISSUER: &str = "mercato-auth";
/// `aud` every service expects, unless configured otherwise.
pub const DEFAULT_JWT_AUDIENCE: &str = "mercato";

/// The first admin's username and email unless configured otherwise: the operator writes
/// them into `<store>-admin`, and auth falls back to them.
pub const DEFAULT_ADMIN_USERNAME: &str = "admin";
pub const DEFAULT_ADMIN_EMAIL: &str = "admin@mercato.local";

/// One deployable part of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Auth,
    Product,
    Order,
    Payment,
    Gateway,
    /// The web shop: server-rendered pages, a client of the gateway's public API.
    Storefront,
}

impl Component {
    pub const ALL: [Component; 6] = [
        Component::Auth,
        Component::Product,
        Component::Order,
        Component::Payment,
        Component::Gateway,
        Component::Storefront,
    ];

    /// The components that own a PostgreSQL database.
    pub const WITH_DATABASE: [Component; 4] = [
        Component::Auth,
        Component::Product,
        Component::Order,
        Component::Payment,
    ];

    /// The short name used in object names, labels, binaries and database names.
    pub const fn name(self) -> &'static str {
        match self {
            Component::Auth => "auth",
            Component::Product => "product",
            Component::Order => "order",
            Component::Payment => "payment",
            Component::Gateway => "gateway",
            Component::Storefront => "storefront",
        }
    }

    /// The name people read, in errors that say which part of the store is down or slow
    /// ("Product service unavailable").
    pub const fn display_name(self) -> &'static str {
        match self {
            Component::Auth => "Auth service",
            Component::Product => "Product service",
            Component::Order => "Order service",
            Component::Payment => "Payment service",
            Component::Gateway => "Gateway",
            Component::Storefront => "Storefront",
        }
    }

    pub const fn has_database(self) -> bool {
        !matches!(self, Component::Gateway | Component::Storefront)
    }

    /// The components this one calls over HTTP (the edges of the checkout flow).
    pub const fn calls(self) -> &'static [Component] {
        match self {
            Component::Gateway => &[
                Component::Auth,
                Component::Product,
                Component::Order,
                Component::Payment,
                Component::Storefront,
            ],
            // The storefront is a client of the public API, like a browser or the CLI.
            Component::Storefront => &[Component::Gateway],
            Component::Order => &[Component::Product, Component::Auth],
            Component::Payment => &[Component::Order, Component::Auth],
            // The product service verifies tokens against the mounted JWKS; it calls auth
            // only for the revocation feed.
            Component::Product => &[Component::Auth],
            Component::Auth => &[],
        }
    }

    /// The environment variable through which a caller learns this component's base URL.
    pub const fn url_env(self) -> &'static str {
        match self {
            Component::Auth => env::AUTH_URL,
            Component::Product => env::PRODUCT_URL,
            Component::Order => env::ORDER_URL,
            Component::Payment => env::PAYMENT_URL,
            Component::Gateway => env::GATEWAY_URL,
            Component::Storefront => env::STOREFRONT_URL,
        }
    }

    /// The environment variable through which the gateway may be told where this
    /// component's operational endpoints are (its `/readyz`); unset, the gateway uses the
    /// host of [`Self::url_env`] on [`OPS_PORT`], which is right in a cluster.
    pub const fn ops_url_env(self) -> Option<&'static str> {
        match self {
            Component::Auth => Some(env::AUTH_OPS_URL),
            Component::Product => Some(env::PRODUCT_OPS_URL),
            Component::Order => Some(env::ORDER_OPS_URL),
            Component::Payment => Some(env::PAYMENT_OPS_URL),
            Component::Gateway | Component::Storefront => None,
        }
    }

    /// The OAuth2 client this component uses for service-to-service calls, if any, and
    /// the scopes that client is granted.
    pub const fn service_client_scopes(self) -> Option<&'static [&'static str]> {
        match self {
            Component::Order => Some(&[scopes::PRODUCT_RESERVE, scopes::AUTH_REVOCATIONS]),
            Component::Payment => Some(&[
                scopes::ORDER_READ,
                scopes::ORDER_PAYMENT_EVENTS,
                scopes::AUTH_REVOCATIONS,
            ]),
            Component::Product | Component::Gateway => Some(&[scopes::AUTH_REVOCATIONS]),
            Component::Auth | Component::Storefront => None,
        }
    }

    pub fn from_name(name: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Scopes carried by service tokens; internal endpoints require one of them.
pub mod scopes {
    pub const PRODUCT_RESERVE: &str = "product:reserve";
    pub const ORDER_READ: &str = "order:read";
    pub const ORDER_PAYMENT_EVENTS: &str = "order:payment-events";
    /// Read auth's revocation feed (ended sessions, disabled or demoted users).
    pub const AUTH_REVOCATIONS: &str = "auth:revocations";
}

/// Environment variables read by the services (each is also a CLI flag).
pub mod env {
    pub const HTTP_ADDR: &str = "HTTP_ADDR";
    /// Address of the operational endpoints (`/healthz`, `/readyz`, `/metrics`).
    pub const OPS_ADDR: &str = "OPS_ADDR";
    pub const LOG_FORMAT: &str = "LOG_FORMAT";
    pub const LOG_LEVEL: &str = "LOG_LEVEL";
    /// OTLP/HTTP collector base URL (`/v1/traces` is appended); unset, no traces leave.
    pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    pub const DATABASE_URL: &str = "DATABASE_URL";
    pub const DATABASE_MAX_CONNECTIONS: &str = "DATABASE_MAX_CONNECTIONS";
    /// Parts of the database URL, given separately so a cluster can take the password
    /// from a Secret and compose `DATABASE_URL` with dependent variable expansion.
    pub const DB_USER: &str = "DB_USER";
    pub const DB_PASSWORD: &str = "DB_PASSWORD";
    pub const DB_NAME: &str = "DB_NAME";
    pub const DB_HOST: &str = "DB_HOST";

    pub const JWT_ISSUER: &str = "JWT_ISSUER";
    pub const JWT_AUDIENCE: &str = "JWT_AUDIENCE";
    pub const JWKS_PATH: &str = "JWKS_PATH";
    pub const JWKS_RELOAD_INTERVAL_SECS: &str = "JWKS_RELOAD_INTERVAL_SECS";
    /// Auth only: the PKCS#8 PEM Ed25519 private key.
    pub const JWT_PRIVATE_KEY_PATH: &str = "JWT_PRIVATE_KEY_PATH";
    pub const ACCESS_TOKEN_TTL_SECS: &str = "ACCESS_TOKEN_TTL_SECS";
    pub const REFRESH_TOKEN_TTL_SECS: &str = "REFRESH_TOKEN_TTL_SECS";

    /// Auth only: the first admin, created at start-up if absent.
    pub const ADMIN_USERNAME: &str = "ADMIN_USERNAME";
    pub const ADMIN_EMAIL: &str = "ADMIN_EMAIL";
    pub const ADMIN_PASSWORD: &str = "ADMIN_PASSWORD";
    /// Auth only: `id=secret` pairs, comma separated, one per service client.
    pub const SERVICE_CLIENTS: &str = "SERVICE_CLIENTS";
    /// Auth only: the prefix of per-client secret variables the operator composes
    /// `SERVICE_CLIENTS` from (`CLIENT_SECRET_ORDER`, ...).
    pub const CLIENT_SECRET_PREFIX: &str = "CLIENT_SECRET_";

    /// Callers: this service's own OAuth2 client credentials.
    pub const CLIENT_ID: &str = "CLIENT_ID";
    pub const CLIENT_SECRET: &str = "CLIENT_SECRET";

    pub const AUTH_URL: &str = "AUTH_URL";
    pub const PRODUCT_URL: &str = "PRODUCT_URL";
    pub const ORDER_URL: &str = "ORDER_URL";
    pub const PAYMENT_URL: &str = "PAYMENT_URL";
    pub const GATEWAY_URL: &str = "GATEWAY_URL";
    /// Gateway, optional: where the storefront answers; the gateway then routes `/`,
    /// `/shop/` and `/assets/` to it. Unset, the gateway serves the API only.
    pub const STOREFRONT_URL: &str = "STOREFRONT_URL";
    /// Storefront only: the key (at least 32 characters) that signs its cookies and CSRF
    /// tokens. Every replica needs the same one.
    pub const STOREFRONT_COOKIE_KEY: &str = "STOREFRONT_COOKIE_KEY";
    /// Storefront only: `always` marks cookies `Secure` whatever the request says;
    /// `auto` (the default) when the request reached the gateway over HTTPS.
    pub const STOREFRONT_SECURE_COOKIES: &str = "STOREFRONT_SECURE_COOKIES";
    /// Gateway only, optional: base URLs of the services' operational endpoints, where it
    /// probes `/readyz`. Unset: the service's host on [`super::OPS_PORT`].
    pub const AUTH_OPS_URL: &str = "AUTH_OPS_URL";
    pub const PRODUCT_OPS_URL: &str = "PRODUCT_OPS_URL";
    pub const ORDER_OPS_URL: &str = "ORDER_OPS_URL";
    pub const PAYMENT_OPS_URL: &str = "PAYMENT_OPS_URL";
    /// Gateway only: CIDRs of the proxies in front of it (comma separated; empty trusts
    /// none). The client address is taken from `X-Forwarded-For` only through them.
    pub const TRUSTED_PROXIES: &str = "TRUSTED_PROXIES";
    /// Gateway, auth and the storefront: the key that signs the client address the gateway
    /// passes on ([`super::CLIENT_ADDRESS_HEADER`]) and the storefront's relays
    /// ([`super::RELAYED_CLIENT_HEADER`]).
    pub const EDGE_KEY: &str = "EDGE_KEY";
}

/// Keys inside the Secrets the operator generates.
pub mod secret_keys {
    /// `<store>-jwt-signing`: mounted only into auth.
    pub const JWT_PRIVATE_KEY: &str = "private.pem";
    /// `<store>-jwt-signing`, during a rotation only: the key auth will sign with next,
    /// kept here (auth does not read it) from the moment its public half is published.
    pub const JWT_NEXT_PRIVATE_KEY: &str = "next.pem";
    /// `<store>-jwks`: mounted into every service.
    pub const JWKS: &str = "jwks.json";
    /// `<store>-<component>-db-credentials`.
    pub const DB_USERNAME: &str = "username";
    pub const DB_PASSWORD: &str = "password";
    pub const DB_DATABASE: &str = "database";
    /// `<store>-<component>-client`.
    pub const CLIENT_ID: &str = "client-id";
    pub const CLIENT_SECRET: &str = "client-secret";
    /// `<store>-admin`.
    pub const ADMIN_USERNAME: &str = "username";
    pub const ADMIN_EMAIL: &str = "email";
    pub const ADMIN_PASSWORD: &str = "password";
    /// `<store>-edge`: the key signing the client address header (gateway and auth).
    pub const EDGE_KEY: &str = "edge-key";
    /// `<store>-storefront`: the key signing the storefront's cookies and CSRF tokens.
    pub const STOREFRONT_COOKIE_KEY: &str = "cookie-key";
}

/// Where Secrets are mounted in service containers.
pub mod paths {
    pub const JWKS_DIR: &str = "/var/run/mercato/jwks";
    pub const JWKS_FILE: &str = "/var/run/mercato/jwks/jwks.json";
    pub const SIGNING_KEY_DIR: &str = "/var/run/mercato/jwt-signing";
    pub const SIGNING_KEY_FILE: &str = "/var/run/mercato/jwt-signing/private.pem";
}

/// Object names derived from a Store's name.
pub mod names {
    use super::Component;

    pub fn component(store: &str, component: Component) -> String {
        format!("{store}-{}", component.name())
    }
    pub fn database(store: &str, component: Component) -> String {
        format!("{store}-{}-db", component.name())
    }
    pub fn db_credentials_secret(store: &str, component: Component) -> String {
        format!("{store}-{}-db-credentials", component.name())
    }
    pub fn client_secret(store: &str, component: Component) -> String {
        format!("{store}-{}-client", component.name())
    }
    pub fn jwt_signing_secret(store: &str) -> String {
        format!("{store}-jwt-signing")
    }
    pub fn jwks_secret(store: &str) -> String {
        format!("{store}-jwks")
    }
    pub fn admin_secret(store: &str) -> String {
        format!("{store}-admin")
    }
    pub fn edge_secret(store: &str) -> String {
        format!("{store}-edge")
    }
    pub fn storefront_secret(store: &str) -> String {
        format!("{store}-storefront")
    }
    /// The PostgreSQL database and role name a component uses.
    pub fn db_name(component: Component) -> String {
        component.name().to_string()
    }
}

/// Format and parse the `SERVICE_CLIENTS` value (`id=secret,id=secret`).
pub mod service_clients {
    pub fn format<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
        pairs
            .into_iter()
            .map(|(id, secret)| format!("{id}={secret}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn parse(value: &str) -> Result<Vec<(String, String)>, String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((id, secret)) if !id.is_empty() && !secret.is_empty() => {
                    Ok((id.to_string(), secret.to_string()))
                }
                _ => Err(format!("expected id=secret, got {pair:?}")),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_names_round_trip() {
        for c in Component::ALL {
            assert_eq!(Component::from_name(c.name()), Some(c));
        }
        assert_eq!(Component::from_name("nope"), None);
    }

    #[test]
    fn service_clients_round_trip_and_reject_garbage() {
        let v = service_clients::format([("order", "s1"), ("payment", "s2")]);
        assert_eq!(v, "order=s1,payment=s2");
        assert_eq!(
            service_clients::parse(&v).unwrap(),
            vec![
                ("order".to_string(), "s1".to_string()),
                ("payment".to_string(), "s2".to_string())
            ]
        );
        assert!(service_clients::parse("order").is_err());
        assert!(service_clients::parse("=x").is_err());
    }

    #[test]
    fn every_service_client_calls_auth() {
        for c in Component::ALL {
            if c.service_client_scopes().is_some() {
                assert!(c.calls().contains(&Component::Auth), "{c} needs auth");
            }
        }
    }
}
