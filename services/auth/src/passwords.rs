//! Argon2id password and secret hashing, off the async runtime.

use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// Hashes and verifies passwords with Argon2id.
///
/// Two limits keep memory flat under a login burst (the first benchmark saw the auth
/// service reach 3.4 GiB at 32 concurrent logins):
/// - at most `max_concurrent` hashes run at once (by default one per core: more would
///   only queue on the CPU while each holds its `memory_kib`);
/// - the Argon2 work memory is reused from a small pool instead of being allocated per
///   hash, since the allocator keeps freed 19 MiB blocks per thread arena.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
    max_concurrent: usize,
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
    pub fn new(
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
        max_concurrent: usize,
    ) -> anyhow::Result<Self> {
        let params = Params::new(memory_kib, iterations, parallelism, None)
            .map_err(|e| anyhow::anyhow!("invalid Argon2 parameters: {e}"))?;
        let max_concurrent = max_concurrent.max(1);
        let mut hasher = Self {
            params,
            permits: Arc::new(Semaphore::new(max_concurrent)),
            memory: Arc::new(Mutex::new(Vec::new())),
            max_concurrent,
            dummy: String::new(),
        };
        hasher.dummy = hasher.hash_blocking("not a real password")?;
        Ok(hasher)
    }

    /// Runs Argon2id with pooled work memory.
    fn compute(
        &self,
        params: &Params,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        let wanted = params.block_count();
        let reused = {
            let mut pool = self.memory.lock().unwrap_or_else(|p| p.into_inner());
            pool.iter()
                .position(|b| b.len() == wanted)
                .map(|i| pool.swap_remove(i))
        };
        let mut blocks = reused.unwrap_or_else(|| vec![Block::default(); wanted]);
        let result = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
            .hash_password_into_with_memory(password, salt, out, &mut blocks[..]);
        let mut pool = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < self.max_concurrent {
            pool.push(blocks);
        }
        result
    }

    fn hash_blocking(&self, password: &str) -> anyhow::Result<String> {
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_buf = [0u8; 64];
        let salt_bytes = salt
            .as_salt()
            .decode_b64(&mut salt_buf)
            .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        let len = self
            .params
            .output_len()
            .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let output = Output::init_with(len, |out| {
            self.compute(&self.params, password.as_bytes(), salt_bytes, out)
                .map_err(Into::into)
        })
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params)
                .map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(phc.to_string())
    }

    /// Verifies with the parameters stored in the hash, so changing the configured cost
    /// does not lock out existing users.
    fn verify_blocking(&self, password: &str, hash: Option<&str>) -> bool {
        let hash = hash.unwrap_or(&self.dummy);
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let (Ok(params), Some(salt), Some(expected)) =
            (Params::try_from(&parsed), parsed.salt, parsed.hash)
        else {
            return false;
        };
        if parsed.algorithm != Algorithm::Argon2id.ident() {
            return false;
        }
        let mut salt_buf = [0u8; 64];
        let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        let mut out = vec![0u8; expected.len()];
        if self
            .compute(&params, password.as_bytes(), salt_bytes, &mut out)
            .is_err()
        {
            return false;
        }
        // `Output` compares in constant time.
        Output::new(&out).is_ok_and(|computed| computed == expected)
    }

    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.hash_blocking(&password)).await?
    }

    /// Verifies against `hash`, or against a dummy hash when there is no user.
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_standard_argon2id_phc_strings_that_verify() {
        let h = Hasher::new(64, 1, 1, 2).unwrap();
        let phc = h.hash_blocking("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(h.verify_blocking("correct horse", Some(&phc)));
        assert!(!h.verify_blocking("wrong horse", Some(&phc)));
        // The argon2 crate's own verifier agrees, so stored hashes stay portable.
        use argon2::password_hash::PasswordVerifier;
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &PasswordHash::new(&phc).unwrap())
                .is_ok()
        );
    }

    #[test]
    fn hashes_made_with_other_parameters_still_verify() {
        let old = Hasher::new(128, 2, 1, 1)
            .unwrap()
            .hash_blocking("pw-12345678")
            .unwrap();
        let now = Hasher::new(64, 1, 1, 1).unwrap();
        assert!(now.verify_blocking("pw-12345678", Some(&old)));
    }
}
