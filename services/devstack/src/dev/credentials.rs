//! The credentials a store generates once and keeps under its state folder: database
//! passwords, service client secrets, the admin password, the JWT key pair and the edge key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mercato_contract::Component;
use mercato_contract::credentials::{SECRET_LEN, generate_jwt_keys, random_secret};
use mercato_contract::secret_keys;
use serde::{Deserialize, Serialize};

/// Credentials generated once and kept in `<state>/secrets.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secrets {
    pub admin_password: String,
    pub client_secrets: BTreeMap<String, String>,
    pub db_passwords: BTreeMap<String, String>,
}

impl Secrets {
    fn generate() -> Self {
        Self {
            admin_password: random_secret(SECRET_LEN),
            client_secrets: Component::ALL
                .into_iter()
                .filter(|c| c.service_client_scopes().is_some())
                .map(|c| (c.name().to_string(), random_secret(SECRET_LEN)))
                .collect(),
            db_passwords: Component::WITH_DATABASE
                .into_iter()
                .map(|c| (c.name().to_string(), random_secret(SECRET_LEN)))
                .collect(),
        }
    }
}

pub(super) fn read_or_create_secrets(state: &Path) -> anyhow::Result<Secrets> {
    let path = state.join("secrets.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{} is damaged ({e}); run `make dev-reset`", path.display())
        });
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
    let path = state.join("keys").join(secret_keys::EDGE_KEY);
    if let Ok(key) = std::fs::read_to_string(&path) {
        return Ok(key.trim().to_string());
    }
    let key = random_secret(SECRET_LEN);
    write_private(&path, &key)?;
    Ok(key)
}

/// Writes a new file readable only by its owner: created with mode 0600, so there is no
/// moment at which others may read it.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())?;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_edge_key_is_created_private_and_kept() {
        let state = tempfile::tempdir().unwrap();
        let key = read_or_create_edge_key(state.path()).unwrap();
        assert!(key.len() >= mercato_kit::edge::EDGE_KEY_MIN_LEN);
        let path = state.path().join("keys").join(secret_keys::EDGE_KEY);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read_or_create_edge_key(state.path()).unwrap(), key);
    }
}
