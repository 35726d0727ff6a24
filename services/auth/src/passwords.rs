//! Argon2id password and secret hashing, off the async runtime.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

/// Hashes and verifies passwords with fixed Argon2id parameters.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    /// A real hash verified when the user does not exist, so an unknown user costs the
    /// same time as a wrong password.
    dummy: String,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .finish()
    }
}

impl Hasher {
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> anyhow::Result<Self> {
        let params = Params::new(memory_kib, iterations, parallelism, None)
            .map_err(|e| anyhow::anyhow!("invalid Argon2 parameters: {e}"))?;
        let mut hasher = Self {
            params,
            dummy: String::new(),
        };
        hasher.dummy = hasher.hash_blocking("not a real password")?;
        Ok(hasher)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    fn hash_blocking(&self, password: &str) -> anyhow::Result<String> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
    }

    fn verify_blocking(&self, password: &str, hash: Option<&str>) -> bool {
        let hash = hash.unwrap_or(&self.dummy);
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        // Verify with the parameters stored in the hash, so changing the configured
        // cost does not lock out existing users.
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    }

    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.hash_blocking(&password)).await?
    }

    /// Verifies against `hash`, or against a dummy hash when there is no user.
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let this = self.clone();
        let exists = hash.is_some();
        let ok =
            tokio::task::spawn_blocking(move || this.verify_blocking(&password, hash.as_deref()))
                .await
                .unwrap_or(false);
        ok && exists
    }
}

/// SHA-256 of a high-entropy token or client secret. These are random, so a fast hash is
/// enough; the point is that a database leak does not leak usable tokens.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
