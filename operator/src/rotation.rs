//! Signing-key rotation as a pure state machine over the two key Secrets and
//! `status.signingKey`, so every transition is tested without a cluster.
//!
//! The operator cannot see which key file each pod has loaded (no route to the pods, no
//! token in them), so "every pod has it" is a time bound: `spec.tokens.keyPropagationSeconds`
//! after a Secret is rewritten. The phases, and what each rewrite keeps true at every
//! moment a pod may see either the old or the new file:
//!
//! - `Idle` → `Publishing`: the next private key is stored aside in `<store>-jwt-signing`
//!   (`next.pem`, which auth does not read), then `<store>-jwks` lists both public keys.
//!   Auth still signs with the old key, which every JWKS, old or new, lists.
//! - `Publishing` → `Signing` (one propagation bound later, so every pod lists the new key):
//!   `<store>-jwt-signing` holds only the new key. Auth switches when its file changes, and
//!   only to a key its own JWKS lists (kit's `Signer`), so whatever it signs verifies.
//! - `Signing` → `Retiring` (one more bound, so auth has switched): no write; from now on no
//!   token is signed with the old key.
//! - `Retiring` → `Idle` (the longest access-token lifetime plus the verifiers' leeway
//!   later, so every token the old key signed has expired): `<store>-jwks` lists only the
//!   new key.
//!
//! Each step writes the Secrets before the status that records it, and every write is
//! derived from what the Secrets and the status hold (never from memory), so an operator
//! that stops between the two redoes the same write on its next pass.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use mercato_contract::credentials::{JwtKeyMaterial, public_jwk_of_pem};
use mercato_contract::{TOKEN_LEEWAY_SECS, secret_keys};

use crate::crd::{KeyPhase, SigningKeyStatus, TokenSpec};

/// Data of one Secret.
pub type Data = BTreeMap<String, ByteString>;

/// What the next reconcile of the key Secrets does.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// New data for `<store>-jwt-signing`, when it must be rewritten.
    pub signing: Option<Data>,
    /// New data for `<store>-jwks`, when it must be rewritten.
    pub jwks: Option<Data>,
    pub status: SigningKeyStatus,
    /// What changed, when the phase did (for an Event).
    pub event: Option<String>,
    /// How long until the next phase is due.
    pub wake: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    #[error("Secret key {0} does not hold a PKCS#8 Ed25519 private key")]
    UnreadableKey(&'static str),
    #[error(
        "the rotation to key {kid} cannot go on: neither private.pem nor next.pem of the signing Secret holds it; remove status.signingKey to start over"
    )]
    LostNextKey { kid: String },
}

/// The settings a rotation is timed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a rewritten Secret takes to reach every pod's files and be reloaded.
    pub propagation: Duration,
    /// How long the old public key must outlive the switch: access tokens' lifetime plus
    /// the verifiers' leeway.
    pub token_lifetime: Duration,
}

impl Timing {
    pub fn of(tokens: &TokenSpec) -> Timing {
        let secs = |s: i64| u64::try_from(s).unwrap_or(0);
        Timing {
            propagation: Duration::from_secs(secs(tokens.key_propagation_seconds)),
            token_lifetime: Duration::from_secs(
                secs(tokens.access_token_ttl_seconds) + TOKEN_LEEWAY_SECS,
            ),
        }
    }
}

struct Key {
    pem: ByteString,
    kid: String,
    jwk: serde_json::Value,
}

fn key(data: &Data, name: &'static str) -> Result<Option<Key>, RotationError> {
    let Some(pem) = data.get(name) else {
        return Ok(None);
    };
    let (kid, jwk) = std::str::from_utf8(&pem.0)
        .ok()
        .and_then(public_jwk_of_pem)
        .ok_or(RotationError::UnreadableKey(name))?;
    Ok(Some(Key {
        pem: pem.clone(),
        kid,
        jwk,
    }))
}

fn jwks_data(keys: &[&Key]) -> Data {
    let keys: Vec<&serde_json::Value> = keys.iter().map(|k| &k.jwk).collect();
    let json = serde_json::json!({ "keys": keys }).to_string();
    BTreeMap::from([(secret_keys::JWKS.to_string(), ByteString(json.into_bytes()))])
}

/// `wanted` when it differs from `live`: only real changes are written.
fn changed(live: &Data, wanted: Data) -> Option<Data> {
    (live != &wanted).then_some(wanted)
}

/// How long from `now` until `since + wait`; `None` once it has passed.
fn remaining(now: Timestamp, since: &Time, wait: Duration) -> Option<Duration> {
    let elapsed = now.as_second().saturating_sub(since.0.as_second());
    let wait = i64::try_from(wait.as_secs()).unwrap_or(i64::MAX);
    let left = wait.saturating_sub(elapsed);
    (left > 0).then(|| Duration::from_secs(left.unsigned_abs()))
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

/// The next step for a store whose key Secrets hold `signing` and `jwks`, whose status
/// says `status`, and whose rotation annotation says `requested`. `generate` makes a new
/// key pair when a rotation starts.
pub fn step(
    now: Timestamp,
    status: Option<&SigningKeyStatus>,
    requested: Option<&str>,
    signing: &Data,
    jwks: &Data,
    timing: Timing,
    generate: impl FnOnce() -> JwtKeyMaterial,
) -> Result<Step, RotationError> {
    let current = key(signing, secret_keys::JWT_PRIVATE_KEY)?
        .ok_or(RotationError::UnreadableKey(secret_keys::JWT_PRIVATE_KEY))?;
    let next = key(signing, secret_keys::JWT_NEXT_PRIVATE_KEY)?;
    let since = Time(now);
    let wait = |status: SigningKeyStatus, left: Duration| Step {
        signing: None,
        jwks: None,
        status,
        event: None,
        wake: Some(left),
    };

    let (phase, rotation) = match status {
        Some(s) => (s.phase, s.rotation.clone()),
        // A store first seen: the annotation it already carries is not a request.
        None => (KeyPhase::Idle, requested.map(str::to_string)),
    };
    match (phase, status) {
        (KeyPhase::Idle, _) | (_, None) => {
            let asked = requested.is_some() && requested.map(str::to_string) != rotation;
            // `next.pem` without a rotation in status: the operator stopped after storing it.
            if !asked && next.is_none() {
                let mut s = status.cloned().unwrap_or(SigningKeyStatus {
                    kid: current.kid.clone(),
                    phase: KeyPhase::Idle,
                    since,
                    previous_kid: None,
                    rotation,
                });
                s.kid = current.kid.clone();
                return Ok(Step {
                    signing: None,
                    jwks: None,
                    status: s,
                    event: None,
                    wake: None,
                });
            }
            let next = match next {
                Some(next) if next.kid != current.kid => next,
                _ => {
                    let fresh = generate();
                    key(
                        &BTreeMap::from([(
                            secret_keys::JWT_NEXT_PRIVATE_KEY.to_string(),
                            ByteString(fresh.private_pem.into_bytes()),
                        )]),
                        secret_keys::JWT_NEXT_PRIVATE_KEY,
                    )?
                    .ok_or(RotationError::UnreadableKey(
                        secret_keys::JWT_NEXT_PRIVATE_KEY,
                    ))?
                }
            };
            let signing_data = BTreeMap::from([
                (
                    secret_keys::JWT_PRIVATE_KEY.to_string(),
                    current.pem.clone(),
                ),
                (
                    secret_keys::JWT_NEXT_PRIVATE_KEY.to_string(),
                    next.pem.clone(),
                ),
            ]);
            Ok(Step {
                signing: changed(signing, signing_data),
                jwks: changed(jwks, jwks_data(&[&current, &next])),
                event: Some(format!(
                    "publishing signing key {} beside {}; auth switches to it in {} s",
                    next.kid,
                    current.kid,
                    secs(timing.propagation)
                )),
                status: SigningKeyStatus {
                    kid: next.kid,
                    phase: KeyPhase::Publishing,
                    since,
                    previous_kid: Some(current.kid),
                    rotation: requested.map(str::to_string).or(rotation),
                },
                wake: Some(timing.propagation),
            })
        }
        (KeyPhase::Publishing, Some(s)) => {
            if let Some(left) = remaining(now, &s.since, timing.propagation) {
                return Ok(wait(s.clone(), left));
            }
            let signing_data = match &next {
                Some(next) if next.kid == s.kid => Some(BTreeMap::from([(
                    secret_keys::JWT_PRIVATE_KEY.to_string(),
                    next.pem.clone(),
                )])),
                // Written already, before the operator stopped.
                _ if current.kid == s.kid && next.is_none() => None,
                _ => return Err(RotationError::LostNextKey { kid: s.kid.clone() }),
            };
            Ok(Step {
                signing: signing_data,
                jwks: None,
                event: Some(format!(
                    "auth is given signing key {}; it stops signing with {} within {} s",
                    s.kid,
                    s.previous_kid.as_deref().unwrap_or("the old key"),
                    secs(timing.propagation)
                )),
                status: SigningKeyStatus {
                    phase: KeyPhase::Signing,
                    since,
                    ..s.clone()
                },
                wake: Some(timing.propagation),
            })
        }
        (KeyPhase::Signing, Some(s)) => {
            if let Some(left) = remaining(now, &s.since, timing.propagation) {
                return Ok(wait(s.clone(), left));
            }
            Ok(Step {
                signing: None,
                jwks: None,
                event: Some(format!(
                    "auth signs with {}; {} stays published {} s more, until the tokens it signed have expired",
                    s.kid,
                    s.previous_kid.as_deref().unwrap_or("the old key"),
                    secs(timing.token_lifetime)
                )),
                status: SigningKeyStatus {
                    phase: KeyPhase::Retiring,
                    since,
                    ..s.clone()
                },
                wake: Some(timing.token_lifetime),
            })
        }
        (KeyPhase::Retiring, Some(s)) => {
            if let Some(left) = remaining(now, &s.since, timing.token_lifetime) {
                return Ok(wait(s.clone(), left));
            }
            Ok(Step {
                signing: None,
                jwks: changed(jwks, jwks_data(&[&current])),
                event: Some(format!(
                    "retired signing key {}; {} is the only key",
                    s.previous_kid.as_deref().unwrap_or("(unknown)"),
                    current.kid
                )),
                status: SigningKeyStatus {
                    kid: current.kid,
                    phase: KeyPhase::Idle,
                    since,
                    previous_kid: None,
                    rotation: s.rotation.clone(),
                },
                wake: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mercato_contract::credentials::generate_jwt_keys;

    const TIMING: Timing = Timing {
        propagation: Duration::from_secs(120),
        token_lifetime: Duration::from_secs(930),
    };

    fn pem_data(pairs: &[(&str, &JwtKeyMaterial)]) -> Data {
        pairs
            .iter()
            .map(|(k, m)| {
                (
                    k.to_string(),
                    ByteString(m.private_pem.clone().into_bytes()),
                )
            })
            .collect()
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn never() -> JwtKeyMaterial {
        panic!("no key is generated in this step")
    }

    #[test]
    fn the_token_lifetime_includes_the_verifiers_leeway() {
        let timing = Timing::of(&TokenSpec::default());
        assert_eq!(timing.propagation, Duration::from_secs(120));
        assert_eq!(timing.token_lifetime, Duration::from_secs(15 * 60 + 30));
    }

    #[test]
    fn a_request_during_a_rotation_waits_for_it_to_end_then_starts_another() {
        let (old, new) = (generate_jwt_keys(), generate_jwt_keys());
        let signing = pem_data(&[(secret_keys::JWT_PRIVATE_KEY, &new)]);
        let jwks = jwks_data(&[
            &key(&pem_data(&[("k", &old)]), "k").unwrap().unwrap(),
            &key(&signing, secret_keys::JWT_PRIVATE_KEY)
                .unwrap()
                .unwrap(),
        ]);
        let retiring = SigningKeyStatus {
            kid: new.kid.clone(),
            phase: KeyPhase::Retiring,
            since: Time(at(0)),
            previous_kid: Some(old.kid.clone()),
            rotation: Some("1".into()),
        };
        let step1 = step(
            at(10),
            Some(&retiring),
            Some("2"),
            &signing,
            &jwks,
            TIMING,
            never,
        )
        .unwrap();
        assert_eq!(
            step1.status, retiring,
            "the running rotation finishes first"
        );
        assert_eq!(step1.wake, Some(Duration::from_secs(920)));

        let idle = step(
            at(930),
            Some(&retiring),
            Some("2"),
            &signing,
            &jwks,
            TIMING,
            never,
        )
        .unwrap();
        assert_eq!(idle.status.phase, KeyPhase::Idle);
        assert_eq!(idle.status.rotation.as_deref(), Some("1"));
        let jwks = idle.jwks.unwrap();

        let third = generate_jwt_keys();
        let third_kid = third.kid.clone();
        let next = step(
            at(931),
            Some(&idle.status),
            Some("2"),
            &signing,
            &jwks,
            TIMING,
            || third,
        )
        .unwrap();
        assert_eq!(next.status.phase, KeyPhase::Publishing);
        assert_eq!(next.status.kid, third_kid);
        assert_eq!(next.status.rotation.as_deref(), Some("2"));
    }

    #[test]
    fn a_next_key_that_went_missing_stops_the_rotation_with_a_reason() {
        let (old, new, other) = (
            generate_jwt_keys(),
            generate_jwt_keys(),
            generate_jwt_keys(),
        );
        let publishing = SigningKeyStatus {
            kid: new.kid.clone(),
            phase: KeyPhase::Publishing,
            since: Time(at(0)),
            previous_kid: Some(old.kid.clone()),
            rotation: Some("1".into()),
        };
        // Someone replaced next.pem with a key no JWKS lists.
        let signing = pem_data(&[
            (secret_keys::JWT_PRIVATE_KEY, &old),
            (secret_keys::JWT_NEXT_PRIVATE_KEY, &other),
        ]);
        let err = step(
            at(200),
            Some(&publishing),
            None,
            &signing,
            &Data::new(),
            TIMING,
            never,
        )
        .unwrap_err();
        assert_eq!(err, RotationError::LostNextKey { kid: new.kid });
    }

    #[test]
    fn an_idle_status_follows_a_regenerated_key_pair() {
        let (old, new) = (generate_jwt_keys(), generate_jwt_keys());
        let idle = SigningKeyStatus {
            kid: old.kid.clone(),
            phase: KeyPhase::Idle,
            since: Time(at(0)),
            previous_kid: None,
            rotation: None,
        };
        let signing = pem_data(&[(secret_keys::JWT_PRIVATE_KEY, &new)]);
        let s = step(
            at(5),
            Some(&idle),
            None,
            &signing,
            &Data::new(),
            TIMING,
            never,
        )
        .unwrap();
        assert_eq!((s.signing, s.jwks, s.event), (None, None, None));
        assert_eq!(s.status.kid, new.kid);
        assert_eq!(s.status.since, Time(at(0)));
    }
}
