//! The login session, kept in a file readable only by its owner.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `Debug` shows the gateway and whether tokens are held, never the tokens.
#[derive(Default, Clone, Serialize, Deserialize)]
pub struct Session {
    gateway: Option<String>,
    access_token: Option<String>,
    refresh_token: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = |t: &Option<String>| t.as_ref().map(|_| "***");
        f.debug_struct("Session")
            .field("gateway", &self.gateway)
            .field("access_token", &held(&self.access_token))
            .field("refresh_token", &held(&self.refresh_token))
            .finish()
    }
}

impl Session {
    pub fn default_path() -> PathBuf {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("mercato").join("session.json")
    }

    /// The saved session, or an empty one.
    pub fn load(path: &Path) -> Session {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    pub fn from_tokens(tokens: &Value, gateway: &str) -> Session {
        Session {
            gateway: Some(gateway.to_string()),
            access_token: tokens["access_token"].as_str().map(str::to_owned),
            refresh_token: tokens["refresh_token"].as_str().map(str::to_owned),
        }
    }

    /// Saves the session 0600 from creation (a new file renamed into place), so the
    /// tokens are never readable by others, not even for a moment.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        mercato_contract::credentials::write_private(
            path,
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }

    pub fn access_token(&self) -> Option<&str> {
        self.access_token.as_deref()
    }

    pub fn refresh_token(&self) -> Option<&str> {
        self.refresh_token.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::from_tokens(
            &serde_json::json!({"access_token": "access-secret", "refresh_token": "refresh-secret"}),
            "http://gw",
        )
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn the_session_file_is_private_and_a_wider_one_is_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mercato").join("session.json");
        session().save(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(Session::load(&path).access_token(), Some("access-secret"));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Session::default().save(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(Session::load(&path).access_token(), None);
    }

    #[test]
    fn debug_never_shows_the_tokens() {
        let shown = format!("{:?}", session());
        assert!(shown.contains("http://gw"), "{shown}");
        assert!(
            !shown.contains("access-secret") && !shown.contains("refresh-secret"),
            "{shown}"
        );
    }

    #[test]
    fn debug_of_a_login_command_never_shows_the_password() {
        use clap::Parser;
        let cli = crate::args::Cli::try_parse_from([
            "mercato",
            "login",
            "ann",
            "--password",
            "pa55-word-x",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(
            shown.contains("ann") && !shown.contains("pa55-word-x"),
            "{shown}"
        );
    }
}
