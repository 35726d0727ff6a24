//! The credentials a store generates once and keeps under its state folder: database
//! passwords, service client secrets, the admin password, the JWT key pair and the edge key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mercato_contract::Component;
use mercato_contract::credentials::{SECRET_LEN, generate_jwt_keys, random_secret};
use mercato_contract::secret_keys;
use serde::{Deserialize, Serialize};

/// Credentials generated once and kept in `<state>/secrets.json`. `Debug` names whose
/// they are, never their values.
#[derive(Clone, Serialize, Deserialize)]
pub struct Secrets {
    pub admin_password: String,
    pub client_secrets: BTreeMap<String, String>,
    pub db_passwords: BTreeMap<String, String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("admin_password", &"***")
            .field("client_secrets", &self.client_secrets.keys())
            .field("db_passwords", &self.db_passwords.keys())
            .finish()
    }
}

impl Secrets {
    fn generate() -> Self {
        let mut secrets = Self {
            admin_password: random_secret(SECRET_LEN),
            client_secrets: BTreeMap::new(),
            db_passwords: Component::WITH_DATABASE
                .into_iter()
                .map(|c| (c.name().to_string(), random_secret(SECRET_LEN)))
                .collect(),
        };
        secrets.add_missing_clients();
        secrets
    }

    /// Gives every component with a service client a secret; true if one was missing (a
    /// state folder from before that component had a client).
    fn add_missing_clients(&mut self) -> bool {
        let mut added = false;
        for c in Component::ALL {
            if c.service_client_scopes().is_some() && !self.client_secrets.contains_key(c.name()) {
                self.client_secrets
                    .insert(c.name().to_string(), random_secret(SECRET_LEN));
                added = true;
            }
        }
        added
    }
}

pub(super) fn read_or_create_secrets(state: &Path) -> anyhow::Result<Secrets> {
    let path = state.join("secrets.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut secrets: Secrets = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{} is damaged ({e}); run `make dev-reset`", path.display())
        })?;
        if secrets.add_missing_clients() {
            write_private(&path, &serde_json::to_string_pretty(&secrets)?)?;
        }
        return Ok(secrets);
    }
    let secrets = Secrets::generate();
    write_private(&path, &serde_json::to_string_pretty(&secrets)?)?;
    Ok(secrets)
}

pub(super) fn ensure_keys(state: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = state.join("keys");
    let private = dir.join(secret_keys::JWT_PRIVATE_KEY);
    let jwks = dir.join(secret_keys::JWKS);
    if !(private.exists() && jwks.exists()) {
        std::fs::create_dir_all(&dir)?;
        let keys = generate_jwt_keys();
        write_private(&private, &keys.private_pem)?;
        std::fs::write(&jwks, &keys.jwks_json)?;
    }
    Ok((private, jwks))
}

/// The key the gateway signs client addresses with (and auth checks them with), kept in
/// `<state>/keys/edge-key`.
pub(super) fn read_or_create_edge_key(state: &Path) -> anyhow::Result<String> {
    read_or_create_key(state, secret_keys::EDGE_KEY)
}

/// The key signing the storefront's cookies, kept like the edge key (so sessions and carts
/// survive a restart of `make dev`).
pub(super) fn read_or_create_cookie_key(state: &Path) -> anyhow::Result<String> {
    read_or_create_key(state, secret_keys::STOREFRONT_COOKIE_KEY)
}

/// A random key under `keys/<name>`: read if there, else created 0600.
fn read_or_create_key(state: &Path, name: &str) -> anyhow::Result<String> {
    let path = state.join("keys").join(name);
    if let Ok(key) = std::fs::read_to_string(&path) {
        return Ok(key.trim().to_string());
    }
    let key = random_secret(SECRET_LEN);
    write_private(&path, &key)?;
    Ok(key)
}

/// Written 0600 from creation (a new file renamed into place), never chmod-ed after.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    mercato_contract::credentials::write_private(path, contents.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn generated_credentials_and_the_private_key_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        read_or_create_secrets(dir.path()).unwrap();
        let (private, _) = ensure_keys(dir.path()).unwrap();
        assert_eq!(mode(&dir.path().join("secrets.json")), 0o600);
        assert_eq!(mode(&private), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn an_older_state_gains_the_missing_client_secrets_and_stays_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let old = r#"{"admin_password":"a","client_secrets":{"order":"o"},"db_passwords":{}}"#;
        std::fs::write(&path, old).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let secrets = read_or_create_secrets(dir.path()).unwrap();
        assert_eq!(
            secrets.client_secrets["order"], "o",
            "existing secrets are kept"
        );
        for c in [Component::Product, Component::Gateway, Component::Payment] {
            assert!(secrets.client_secrets.contains_key(c.name()), "{c}");
        }
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn debug_never_shows_the_credentials() {
        let secrets = Secrets::generate();
        let shown = format!("{secrets:?}");
        assert!(!shown.contains(&secrets.admin_password), "{shown}");
        for value in secrets
            .client_secrets
            .values()
            .chain(secrets.db_passwords.values())
        {
            assert!(!shown.contains(value.as_str()), "{shown}");
        }
        assert!(shown.contains("order"), "whose they are is shown: {shown}");
    }

    #[cfg(unix)]
    #[test]
    fn the_edge_key_is_created_private_and_kept() {
        let state = tempfile::tempdir().unwrap();
        let key = read_or_create_edge_key(state.path()).unwrap();
        assert!(key.len() >= mercato_kit::edge::EDGE_KEY_MIN_LEN);
        let path = state.path().join("keys").join(secret_keys::EDGE_KEY);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(read_or_create_edge_key(state.path()).unwrap(), key);
        let cookie = read_or_create_cookie_key(state.path()).unwrap();
        assert_ne!(cookie, key, "each key is its own");
        assert_eq!(read_or_create_cookie_key(state.path()).unwrap(), cookie);
    }
}
