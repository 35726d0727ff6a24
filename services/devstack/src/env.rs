//! Each service's environment, keyed by the contract's names: the same shape the
//! operator writes into Deployments, so the devstack and a cluster configure the
//! services identically.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use mercato_contract::{Component, env, service_clients};

/// Where everything is, and the credentials generated for this stack. `Debug` leaves the
/// credentials out.
#[derive(Clone)]
pub struct Topology {
    /// Each component's public API.
    pub listen: BTreeMap<Component, SocketAddr>,
    /// Each component's operational endpoints (`/healthz`, `/readyz`, `/metrics`).
    pub ops_listen: BTreeMap<Component, SocketAddr>,
    pub database_urls: BTreeMap<Component, String>,
    pub jwks_path: PathBuf,
    pub private_key_path: PathBuf,
    /// Client secrets of the components that call others with service tokens.
    pub client_secrets: BTreeMap<Component, String>,
    pub admin_username: String,
    pub admin_email: String,
    pub admin_password: String,
    /// The key signing the client address the gateway passes to auth.
    pub edge_key: String,
    /// The key signing the storefront's cookies and CSRF tokens.
    pub cookie_key: String,
    pub log_format: String,
    pub log_level: String,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("listen", &self.listen)
            .field("jwks_path", &self.jwks_path)
            .field("private_key_path", &self.private_key_path)
            .field("admin_username", &self.admin_username)
            .finish_non_exhaustive()
    }
}

impl Topology {
    pub fn url(&self, component: Component) -> String {
        format!("http://{}", self.listen[&component])
    }

    /// Where a component's operational endpoints answer (`/metrics` and the probes).
    pub fn ops_url(&self, component: Component) -> String {
        format!("http://{}", self.ops_listen[&component])
    }

    /// The environment of one component.
    pub fn service_env(&self, component: Component) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            (env::HTTP_ADDR, self.listen[&component].to_string()),
            (env::OPS_ADDR, self.ops_listen[&component].to_string()),
            (env::LOG_FORMAT, self.log_format.clone()),
            (env::LOG_LEVEL, self.log_level.clone()),
        ];
        // The storefront verifies no tokens: the API it calls does.
        if component != Component::Storefront {
            vars.push((env::JWKS_PATH, self.jwks_path.display().to_string()));
        }
        if let Some(url) = self.database_urls.get(&component) {
            vars.push((env::DATABASE_URL, url.clone()));
        }
        for callee in component.calls() {
            if self.listen.contains_key(callee) {
                vars.push((callee.url_env(), self.url(*callee)));
            }
        }
        if component == Component::Gateway {
            // Every service's ops port differs here; in a cluster the gateway derives them.
            for callee in component.calls() {
                if let (Some(name), true) =
                    (callee.ops_url_env(), self.ops_listen.contains_key(callee))
                {
                    vars.push((name, self.ops_url(*callee)));
                }
            }
        }
        if matches!(
            component,
            Component::Gateway | Component::Auth | Component::Storefront
        ) {
            vars.push((env::EDGE_KEY, self.edge_key.clone()));
        }
        if component == Component::Storefront {
            vars.push((env::STOREFRONT_COOKIE_KEY, self.cookie_key.clone()));
        }
        if let Some(secret) = self.client_secrets.get(&component) {
            vars.push((env::CLIENT_ID, component.name().to_string()));
            vars.push((env::CLIENT_SECRET, secret.clone()));
        }
        if component == Component::Auth {
            vars.push((
                env::JWT_PRIVATE_KEY_PATH,
                self.private_key_path.display().to_string(),
            ));
            vars.push((env::ADMIN_USERNAME, self.admin_username.clone()));
            vars.push((env::ADMIN_EMAIL, self.admin_email.clone()));
            vars.push((env::ADMIN_PASSWORD, self.admin_password.clone()));
            let clients = self
                .client_secrets
                .iter()
                .map(|(c, s)| (c.name(), s.as_str()));
            vars.push((env::SERVICE_CLIENTS, service_clients::format(clients)));
        }
        vars
    }
}

/// Turns `NAME=value` pairs into `--name=value` flags. Every service setting's flag is
/// its environment variable in lower case with dashes (a test holds the services to
/// that), so in-process services get exactly the environment a process would.
pub fn to_args<'a>(vars: impl IntoIterator<Item = &'a (&'static str, String)>) -> Vec<String> {
    vars.into_iter()
        .map(|(name, value)| format!("--{}={value}", name.to_ascii_lowercase().replace('_', "-")))
        .collect()
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn topology_debug_never_shows_credentials() {
        let topology = Topology {
            listen: BTreeMap::new(),
            ops_listen: BTreeMap::new(),
            database_urls: [(
                Component::Order,
                "postgres://order:db-secret-1@h/order".into(),
            )]
            .into(),
            jwks_path: "/k/jwks.json".into(),
            private_key_path: "/k/private.pem".into(),
            client_secrets: [(Component::Order, "client-secret-1".into())].into(),
            admin_username: "admin".into(),
            admin_email: "admin@example.com".into(),
            admin_password: "admin-secret-1".into(),
            edge_key: "edge-secret-1-0123456789abcdef0123456789".into(),
            cookie_key: "cookie-secret-1-0123456789abcdef0123456789".into(),
            log_format: "pretty".into(),
            log_level: "info".into(),
        };
        let shown = format!("{topology:?}");
        for secret in [
            "db-secret-1",
            "client-secret-1",
            "admin-secret-1",
            "edge-secret-1",
            "cookie-secret-1",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
