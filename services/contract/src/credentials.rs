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

    #[test]
    fn secrets_are_alphanumeric_and_distinct() {
        let a = random_secret(SECRET_LEN);
        assert_eq!(a.len(), SECRET_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, random_secret(SECRET_LEN));
    }
}
