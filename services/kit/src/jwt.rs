//! Access tokens: Ed25519 signing (the auth service only) and verification against a JWKS
//! file; both files are re-read when they change, so a rotated key reaches running pods
//! without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use mercato_contract::credentials::{ed25519_thumbprint, public_jwk};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::JwtConfig;
use crate::revocation::RevocationList;

/// Role of a user token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Role {
    Admin,
    Customer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Customer => "customer",
        }
    }
}

/// The claims of every Mercato access token. User tokens carry `role`; service tokens
/// (client credentials) carry `scope` instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: u64,
    pub iat: u64,
    pub jti: String,
    /// The session (refresh-token family of one login) a user token belongs to; the
    /// revocation feed ends sessions by this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Space-separated scopes (RFC 8693 style), service tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl Claims {
    pub fn is_service(&self) -> bool {
        self.role.is_none() && self.scope.is_some()
    }

    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.split(' ').any(|x| x == wanted))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid JWKS: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Why a token was refused. The message is safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm is not allowed")]
    Algorithm,
    #[error("token key id is unknown")]
    UnknownKey,
    #[error("token has expired")]
    Expired,
    #[error("token issuer or audience is wrong")]
    IssuerOrAudience,
    #[error("token signature is invalid")]
    Signature,
    #[error("session has ended")]
    Revoked,
    #[error("the revocation list is out of date; admin tokens are refused until it is refreshed")]
    RevocationsStale,
}

/// What identifies one version of a file: a Secret volume update swaps a symlink to a new
/// file, so the inode changes even when the size and (coarse) mtime do not.
type Stamp = (SystemTime, u64, u64);

struct KeySet {
    keys: HashMap<String, DecodingKey>,
    jwks: serde_json::Value,
    stamp: Option<Stamp>,
}

/// Verifies access tokens against the public keys in a JWKS file.
pub struct Verifier {
    path: PathBuf,
    validation: Validation,
    keys: RwLock<Arc<KeySet>>,
    revocations: RevocationList,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("path", &self.path)
            .finish()
    }
}

impl Verifier {
    /// Loads the JWKS file now; fails if it is missing or holds no usable key.
    pub fn load(config: &JwtConfig) -> Result<Arc<Self>, KeyError> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Pinned: a token whose header names any other algorithm is refused.
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_issuer(&[&config.jwt_issuer]);
        validation.set_audience(&[&config.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = mercato_contract::TOKEN_LEEWAY_SECS;
        let set = read_key_set(&config.jwks_path)?;
        Ok(Arc::new(Self {
            path: config.jwks_path.clone(),
            validation,
            keys: RwLock::new(Arc::new(set)),
            revocations: RevocationList::default(),
        }))
    }

    fn current(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The sessions and users whose tokens this verifier refuses.
    pub fn revocations(&self) -> &RevocationList {
        &self.revocations
    }

    /// The public key set currently in force, as served on `/auth/jwks`.
    pub fn jwks(&self) -> serde_json::Value {
        self.current().jwks.clone()
    }

    /// Whether the key set currently in force holds the key `kid`.
    pub fn knows(&self, kid: &str) -> bool {
        self.current().keys.contains_key(kid)
    }

    /// Re-reads the file if its modification time or size changed. A broken file keeps
    /// the previous keys (and is logged), so a half-written update cannot lock users out.
    pub fn reload_if_changed(&self) -> bool {
        let stamp = file_stamp(&self.path);
        if stamp.is_some() && stamp == self.current().stamp {
            return false;
        }
        match read_key_set(&self.path) {
            Ok(set) => {
                let kids: Vec<_> = set.keys.keys().cloned().collect();
                match self.keys.write() {
                    Ok(mut guard) => *guard = Arc::new(set),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
                }
                tracing::info!(path = %self.path.display(), ?kids, "reloaded JWKS");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS changed but could not be loaded; keeping previous keys");
                false
            }
        }
    }

    /// Polls the file for changes until the process ends. Polling, not inotify, because
    /// Kubernetes updates mounted Secrets by swapping a symlink, which inotify on the
    /// file itself does not see.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let verifier = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(v) = verifier.upgrade() else { break };
                v.reload_if_changed();
            }
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                // `alg: none` and unknown algorithms fail to parse at all.
                ErrorKind::Json(_) => TokenError::Algorithm,
                _ => TokenError::Malformed,
            }
        })?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let mut set = self.current();
        if !set.keys.contains_key(&kid) && self.reload_if_changed() {
            // A key rotated in since the last poll: pick it up now rather than refuse.
            set = self.current();
        }
        let key = set.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                        TokenError::IssuerOrAudience
                    }
                    ErrorKind::InvalidSignature => TokenError::Signature,
                    ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
                    _ => TokenError::Malformed,
                }
            })?;
        self.revocations.check(&claims)?;
        Ok(claims)
    }
}

fn file_stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    // `metadata` follows symlinks, so a swapped Secret mount changes the stamp.
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

fn read_key_set(path: &Path) -> Result<KeySet, KeyError> {
    let invalid = |reason: String| KeyError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let stamp = file_stamp(path);
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let mut keys = HashMap::new();
    let mut public = Vec::new();
    for jwk in &jwks.keys {
        let jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm else {
            continue; // Only Ed25519 keys can verify our tokens; others are ignored.
        };
        if okp.curve != jsonwebtoken::jwk::EllipticCurve::Ed25519 {
            continue;
        }
        let kid = jwk
            .common
            .key_id
            .clone()
            .unwrap_or_else(|| ed25519_thumbprint(&okp.x));
        let key = DecodingKey::from_ed_components(&okp.x).map_err(|e| invalid(e.to_string()))?;
        public.push(public_jwk(&okp.x, &kid));
        keys.insert(kid, key);
    }
    if keys.is_empty() {
        return Err(invalid("no Ed25519 key in the set".into()));
    }
    Ok(KeySet {
        keys,
        jwks: serde_json::json!({ "keys": public }),
        stamp,
    })
}

/// Signs access tokens with the Ed25519 private key (auth service only). A signer loaded
/// from a file re-reads it when it changes (see [`Signer::reload_if_changed`]), which is
/// how a signing-key rotation reaches auth without a restart.
pub struct Signer {
    key: RwLock<Arc<SigningKeyVersion>>,
    /// The PEM file, when the key came from one and may be replaced.
    path: Option<PathBuf>,
    issuer: String,
    audience: String,
}

struct SigningKeyVersion {
    key: EncodingKey,
    kid: String,
    stamp: Option<Stamp>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid()).finish()
    }
}

impl Signer {
    /// Reads a PKCS#8 PEM private key; its `kid` is the RFC 7638 thumbprint of the public
    /// key, the same id the generated JWKS carries.
    pub fn from_pem_file(path: &Path, issuer: &str, audience: &str) -> anyhow::Result<Self> {
        let version = read_signing_key(path)?;
        Ok(Self {
            key: RwLock::new(Arc::new(version)),
            path: Some(path.to_path_buf()),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
        })
    }

    pub fn from_pem(pem: &str, issuer: &str, audience: &str) -> anyhow::Result<Self> {
        Ok(Self {
            key: RwLock::new(Arc::new(parse_signing_key(pem, None)?)),
            path: None,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
        })
    }

    fn current(&self) -> Arc<SigningKeyVersion> {
        match self.key.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The id of the key new tokens are signed with.
    pub fn kid(&self) -> String {
        self.current().kid.clone()
    }

    /// Re-reads the key file if it changed, and signs with the new key only once
    /// `verifier` (re-read first) lists it: a token signed with a key the JWKS lacks would
    /// be refused everywhere. A key that is unreadable or not yet published keeps the
    /// previous one in use, and is tried again on the next call. Returns whether the key
    /// changed.
    pub fn reload_if_changed(&self, verifier: &Verifier) -> bool {
        let Some(path) = &self.path else { return false };
        let stamp = file_stamp(path);
        let current = self.current();
        if stamp.is_some() && stamp == current.stamp {
            return false;
        }
        let next = match read_signing_key(path) {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "signing key changed but could not be loaded; keeping the previous key");
                return false;
            }
        };
        if next.kid == current.kid {
            self.install(next);
            return false;
        }
        verifier.reload_if_changed();
        if !verifier.knows(&next.kid) {
            tracing::warn!(kid = %next.kid, previous = %current.kid, "new signing key is not in the JWKS yet; still signing with the previous key");
            return false;
        }
        tracing::info!(kid = %next.kid, previous = %current.kid, "switched to a new signing key");
        self.install(next);
        true
    }

    fn install(&self, next: SigningKeyVersion) {
        match self.key.write() {
            Ok(mut guard) => *guard = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
    }

    /// Polls the key file for changes until the signer or the verifier is dropped (see
    /// [`Verifier::spawn_reloader`] for why polling).
    pub fn spawn_reloader(
        self: &Arc<Self>,
        verifier: &Arc<Verifier>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let signer = Arc::downgrade(self);
        let verifier = Arc::downgrade(verifier);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (Some(s), Some(v)) = (signer.upgrade(), verifier.upgrade()) else {
                    break;
                };
                s.reload_if_changed(&v);
            }
        })
    }

    /// Claims for a new token issued now, valid for `ttl`.
    pub fn claims(
        &self,
        sub: &str,
        role: Option<Role>,
        scope: Option<String>,
        ttl: Duration,
    ) -> Claims {
        let now = jsonwebtoken::get_current_timestamp();
        Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: sub.to_string(),
            iat: now,
            exp: now + ttl.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
            sid: None,
            role,
            scope,
        }
    }

    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let version = self.current();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(version.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &version.key)?)
    }
}

fn read_signing_key(path: &Path) -> anyhow::Result<SigningKeyVersion> {
    let stamp = file_stamp(path);
    let pem = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read signing key {}: {e}", path.display()))?;
    parse_signing_key(&pem, stamp)
}

fn parse_signing_key(pem: &str, stamp: Option<Stamp>) -> anyhow::Result<SigningKeyVersion> {
    let signing = SigningKey::from_pkcs8_pem(pem)
        .map_err(|e| anyhow::anyhow!("signing key is not a PKCS#8 Ed25519 key: {e}"))?;
    let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
    Ok(SigningKeyVersion {
        key: EncodingKey::from_ed_pem(pem.as_bytes())?,
        kid: ed25519_thumbprint(&x),
        stamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mercato_contract::credentials::generate_jwt_keys;

    fn setup() -> (tempfile::TempDir, Arc<Verifier>, Signer) {
        let dir = tempfile::tempdir().unwrap();
        let keys = generate_jwt_keys();
        let jwks_path = dir.path().join("jwks.json");
        std::fs::write(&jwks_path, &keys.jwks_json).unwrap();
        let config = JwtConfig {
            jwt_issuer: "iss".into(),
            jwt_audience: "aud".into(),
            jwks_path,
            jwks_reload_interval_secs: 1,
        };
        let verifier = Verifier::load(&config).unwrap();
        let signer = Signer::from_pem(&keys.private_pem, "iss", "aud").unwrap();
        (dir, verifier, signer)
    }

    #[test]
    fn signed_token_verifies_and_kid_matches_jwks() {
        let (_dir, verifier, signer) = setup();
        let claims = signer.claims("u1", Some(Role::Customer), None, Duration::from_secs(60));
        let token = signer.sign(&claims).unwrap();
        assert_eq!(verifier.verify(&token).unwrap(), claims);
        assert_eq!(verifier.jwks()["keys"][0]["kid"], signer.kid());
    }

    #[test]
    fn tampered_payload_is_refused() {
        let (_dir, verifier, signer) = setup();
        let token = signer
            .sign(&signer.claims("u1", Some(Role::Customer), None, Duration::from_secs(60)))
            .unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let admin = signer.claims("u1", Some(Role::Admin), None, Duration::from_secs(60));
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&admin).unwrap());
        assert_eq!(
            verifier.verify(&parts.join(".")),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn scopes_are_matched_whole() {
        let (_dir, _v, signer) = setup();
        let c = signer.claims(
            "order",
            None,
            Some("product:reserve order:read".into()),
            Duration::from_secs(1),
        );
        assert!(c.is_service());
        assert!(c.has_scope("order:read"));
        assert!(!c.has_scope("order"));
    }

    #[test]
    fn signer_switches_to_a_new_key_file_only_once_the_jwks_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (generate_jwt_keys(), generate_jwt_keys());
        let jwks_path = dir.path().join("jwks.json");
        let pem_path = dir.path().join("private.pem");
        std::fs::write(&jwks_path, &old.jwks_json).unwrap();
        std::fs::write(&pem_path, &old.private_pem).unwrap();
        let verifier = Verifier::load(&JwtConfig {
            jwt_issuer: "iss".into(),
            jwt_audience: "aud".into(),
            jwks_path: jwks_path.clone(),
            jwks_reload_interval_secs: 1,
        })
        .unwrap();
        let signer = Signer::from_pem_file(&pem_path, "iss", "aud").unwrap();
        let old_kid = signer.kid();
        let new_kid = Signer::from_pem(&new.private_pem, "iss", "aud")
            .unwrap()
            .kid();

        // Written out of order: the private key before its public half.
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, &new.private_pem).unwrap();
        std::fs::rename(&tmp, &pem_path).unwrap();
        assert!(!signer.reload_if_changed(&verifier));
        assert_eq!(signer.kid(), old_kid, "an unpublished key is not used");

        let old_keys: serde_json::Value = serde_json::from_str(&old.jwks_json).unwrap();
        let new_keys: serde_json::Value = serde_json::from_str(&new.jwks_json).unwrap();
        let both = serde_json::json!({"keys": [old_keys["keys"][0], new_keys["keys"][0]]});
        std::fs::write(&tmp, both.to_string()).unwrap();
        std::fs::rename(&tmp, &jwks_path).unwrap();
        assert!(
            signer.reload_if_changed(&verifier),
            "tried again and switched"
        );
        assert_eq!(signer.kid(), new_kid);
        let token = signer
            .sign(&signer.claims("u1", None, Some("x".into()), Duration::from_secs(60)))
            .unwrap();
        assert_eq!(verifier.verify(&token).unwrap().sub, "u1");
        assert!(
            !signer.reload_if_changed(&verifier),
            "nothing changed since"
        );
    }

    #[test]
    fn a_broken_key_file_keeps_the_previous_key() {
        let (dir, verifier, _) = setup();
        let pem_path = dir.path().join("private.pem");
        // setup() signs from memory; sign from a file here.
        let pair = generate_jwt_keys();
        std::fs::write(dir.path().join("jwks.json"), &pair.jwks_json).unwrap();
        verifier.reload_if_changed();
        std::fs::write(&pem_path, &pair.private_pem).unwrap();
        let signer = Signer::from_pem_file(&pem_path, "iss", "aud").unwrap();
        let kid = signer.kid();
        std::fs::write(&pem_path, "-----BEGIN PRIVATE KEY-----\nbroken").unwrap();
        assert!(!signer.reload_if_changed(&verifier));
        assert_eq!(signer.kid(), kid);
        let token = signer
            .sign(&signer.claims("u1", None, Some("x".into()), Duration::from_secs(60)))
            .unwrap();
        assert_eq!(verifier.verify(&token).unwrap().sub, "u1", "still signs");
    }
}
