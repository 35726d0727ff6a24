//! Credentials generated once per store: by the operator into Secrets, by the devstack
//! into its state folder. One implementation, so both produce the same shapes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
use rand::Rng;
use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use serde_json::json;
use sha2::{Digest, Sha256};

/// An Ed25519 signing key and the public key set that verifies it.
#[derive(Clone)]
pub struct JwtKeyMaterial {
    /// PKCS#8 PEM of the private key (auth only).
    pub private_pem: String,
    /// `{"keys":[…]}` with the one public key, for every service.
    pub jwks_json: String,
    /// The key id: the RFC 7638 thumbprint of the public key.
    pub kid: String,
}

impl std::fmt::Debug for JwtKeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeyMaterial")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Writes `contents` to `path` readable by its owner only: a new file beside it is created
/// with mode 0600 (never chmod-ed afterwards), written, synced and renamed over `path`. So
/// a secret never sits in a file with wider permissions, not even when `path` already
/// existed with a wider mode, and a crash leaves the old file or the new one, not half.
pub fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
    })?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        random_secret(12)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&temp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Generates a fresh Ed25519 key pair.
pub fn generate_jwt_keys() -> JwtKeyMaterial {
    let signing = SigningKey::generate(&mut OsRng);
    let private_pem = signing
        .to_pkcs8_pem(LineEnding::LF)
        .expect("an in-memory Ed25519 key always encodes as PKCS#8")
        .to_string();
    let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
    let kid = ed25519_thumbprint(&x);
    let jwks_json = json!({ "keys": [public_jwk(&x, &kid)] }).to_string();
    JwtKeyMaterial {
        private_pem,
        jwks_json,
        kid,
    }
}

/// The key id and public JWK of a PKCS#8 PEM Ed25519 private key (`None` if it is not
/// one): what a JWKS must list for tokens signed with that key to verify.
pub fn public_jwk_of_pem(private_pem: &str) -> Option<(String, serde_json::Value)> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let signing = SigningKey::from_pkcs8_pem(private_pem).ok()?;
    let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
    let kid = ed25519_thumbprint(&x);
    let jwk = public_jwk(&x, &kid);
    Some((kid, jwk))
}

/// The public JWK of an Ed25519 key given its base64url `x`.
pub fn public_jwk(x: &str, kid: &str) -> serde_json::Value {
    json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig" })
}

/// RFC 7638 thumbprint of an Ed25519 public key (`x` in base64url).
pub fn ed25519_thumbprint(x: &str) -> String {
    // Members in lexicographic order, no whitespace, as the RFC requires.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A random alphanumeric secret: safe in URLs, env values and `id=secret` lists.
pub fn random_secret(len: usize) -> String {
    OsRng
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Length of generated passwords and client secrets (about 190 bits).
pub const SECRET_LEN: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::DecodePrivateKey;

    #[test]
    fn the_public_jwk_of_a_pem_is_the_one_its_jwks_lists() {
        let keys = generate_jwt_keys();
        let jwks: serde_json::Value = serde_json::from_str(&keys.jwks_json).unwrap();
        let (kid, jwk) = public_jwk_of_pem(&keys.private_pem).unwrap();
        assert_eq!(kid, keys.kid);
        assert_eq!(jwk, jwks["keys"][0]);
        assert_eq!(public_jwk_of_pem("not a key"), None);
    }

    #[test]
    fn generated_jwks_matches_the_private_key() {
        let keys = generate_jwt_keys();
        let signing = SigningKey::from_pkcs8_pem(&keys.private_pem).unwrap();
        let jwks: serde_json::Value = serde_json::from_str(&keys.jwks_json).unwrap();
        let jwk = &jwks["keys"][0];
        assert_eq!(jwk["kid"], keys.kid.as_str());
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(
            jwk["x"],
            URL_SAFE_NO_PAD
                .encode(signing.verifying_key().as_bytes())
                .as_str()
        );
    }

    #[test]
    fn thumbprint_matches_rfc8037_example() {
        // RFC 8037 appendix A.3.
        assert_eq!(
            ed25519_thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[cfg(unix)]
    fn mode(path: &std::path::Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_created_0600_and_a_wider_existing_one_is_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.json");
        write_private(&path, b"first").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"first");

        let wide = dir.path().join("wide.pem");
        std::fs::write(&wide, b"old").unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&wide, b"new").unwrap();
        assert_eq!(mode(&wide), 0o600);
        assert_eq!(std::fs::read(&wide).unwrap(), b"new");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "no temporary file is left behind: {left:?}");
    }

    #[test]
    fn secrets_are_alphanumeric_and_distinct() {
        let a = random_secret(SECRET_LEN);
        assert_eq!(a.len(), SECRET_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, random_secret(SECRET_LEN));
    }
}
