//! The credentials a Store needs, generated once with the contract's generator, and the
//! Secret objects that hold them.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use mercato_contract::credentials::{SECRET_LEN, generate_jwt_keys, random_secret};
use mercato_contract::{
    Component, DEFAULT_ADMIN_EMAIL, DEFAULT_ADMIN_USERNAME, names, secret_keys,
};

use crate::crd::StoreSpec;
use crate::meta::{Owner, Role};

/// Length of the storefront's cookie key: the storefront needs at least 32 characters;
/// 64 alphanumerics are some 380 bits, more than its HMAC-SHA256 can use.
pub const COOKIE_KEY_LEN: usize = 64;

/// The data of every Secret of one store, by Secret name.
pub type SecretData = BTreeMap<String, BTreeMap<String, ByteString>>;

/// One Secret a Store needs: its name, what it belongs to, and the keys it must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub name: String,
    pub role: Role,
    pub keys: Vec<&'static str>,
    /// Kept with the data under `deletionPolicy: Retain`, because what it holds is also
    /// stored in a retained database: the database passwords, and the first admin's
    /// password (auth creates that admin only if the username does not exist yet).
    /// The JWT keys and service client secrets are not: auth reads those afresh at start-up
    /// (refresh tokens are opaque hashes that survive a new key; the service clients table
    /// is synced from the configuration), so a recreated Store may generate new ones.
    pub retained: bool,
}

/// Every Secret of a store that runs what `spec` turns on, in the order they are created.
pub fn specs(store: &str, spec: &StoreSpec) -> Vec<SecretSpec> {
    let mut out = vec![
        SecretSpec {
            name: names::jwt_signing_secret(store),
            role: Role::service(Component::Auth),
            keys: vec![secret_keys::JWT_PRIVATE_KEY],
            retained: false,
        },
        SecretSpec {
            name: names::jwks_secret(store),
            role: Role::store(),
            keys: vec![secret_keys::JWKS],
            retained: false,
        },
        SecretSpec {
            name: names::admin_secret(store),
            role: Role::service(Component::Auth),
            keys: vec![
                secret_keys::ADMIN_USERNAME,
                secret_keys::ADMIN_EMAIL,
                secret_keys::ADMIN_PASSWORD,
            ],
            retained: true,
        },
        SecretSpec {
            name: names::edge_secret(store),
            role: Role::store(),
            keys: vec![secret_keys::EDGE_KEY],
            retained: false,
        },
    ];
    if spec.enabled(Component::Storefront) {
        // Signs the shop's cookies and CSRF tokens: a new key only logs shoppers out.
        out.push(SecretSpec {
            name: names::storefront_secret(store),
            role: Role::service(Component::Storefront),
            keys: vec![secret_keys::STOREFRONT_COOKIE_KEY],
            retained: false,
        });
    }
    for c in spec.operated_databases() {
        out.push(SecretSpec {
            name: names::db_credentials_secret(store, c),
            role: Role::database(c),
            keys: vec![
                secret_keys::DB_USERNAME,
                secret_keys::DB_PASSWORD,
                secret_keys::DB_DATABASE,
            ],
            retained: true,
        });
    }
    for c in Component::ALL {
        if c.service_client_scopes().is_some() {
            out.push(SecretSpec {
                name: names::client_secret(store, c),
                role: Role::service(c),
                keys: vec![secret_keys::CLIENT_ID, secret_keys::CLIENT_SECRET],
                retained: false,
            });
        }
    }
    out
}

/// Fresh credentials for every Secret a store can have. The JWT key pair is generated together, so
/// `<store>-jwt-signing` and `<store>-jwks` always match when created from one call.
pub fn generate(store: &str) -> SecretData {
    let b = |s: &str| ByteString(s.as_bytes().to_vec());
    let keys = generate_jwt_keys();
    let mut out = SecretData::new();
    out.insert(
        names::jwt_signing_secret(store),
        BTreeMap::from([(
            secret_keys::JWT_PRIVATE_KEY.to_string(),
            b(&keys.private_pem),
        )]),
    );
    out.insert(
        names::jwks_secret(store),
        BTreeMap::from([(secret_keys::JWKS.to_string(), b(&keys.jwks_json))]),
    );
    out.insert(
        names::admin_secret(store),
        BTreeMap::from([
            (
                secret_keys::ADMIN_USERNAME.to_string(),
                b(DEFAULT_ADMIN_USERNAME),
            ),
            (secret_keys::ADMIN_EMAIL.to_string(), b(DEFAULT_ADMIN_EMAIL)),
            (
                secret_keys::ADMIN_PASSWORD.to_string(),
                b(&random_secret(SECRET_LEN)),
            ),
        ]),
    );
    out.insert(
        names::edge_secret(store),
        BTreeMap::from([(
            secret_keys::EDGE_KEY.to_string(),
            b(&random_secret(SECRET_LEN)),
        )]),
    );
    out.insert(
        names::storefront_secret(store),
        BTreeMap::from([(
            secret_keys::STOREFRONT_COOKIE_KEY.to_string(),
            b(&random_secret(COOKIE_KEY_LEN)),
        )]),
    );
    for c in Component::WITH_DATABASE {
        out.insert(
            names::db_credentials_secret(store, c),
            BTreeMap::from([
                (secret_keys::DB_USERNAME.to_string(), b(&names::db_name(c))),
                (
                    secret_keys::DB_PASSWORD.to_string(),
                    b(&random_secret(SECRET_LEN)),
                ),
                (secret_keys::DB_DATABASE.to_string(), b(&names::db_name(c))),
            ]),
        );
    }
    for c in Component::ALL {
        if c.service_client_scopes().is_some() {
            out.insert(
                names::client_secret(store, c),
                BTreeMap::from([
                    (secret_keys::CLIENT_ID.to_string(), b(c.name())),
                    (
                        secret_keys::CLIENT_SECRET.to_string(),
                        b(&random_secret(SECRET_LEN)),
                    ),
                ]),
            );
        }
    }
    out
}

/// The Secret object for `spec` holding `data`.
pub fn secret(owner: &Owner, spec: &SecretSpec, data: BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: owner.child_meta(spec.name.clone(), &spec.role),
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The secrets whose keys a live Secret lacks: the operator never rewrites a Secret, so a
/// broken one is reported for a human to fix (deleting it makes the operator generate anew).
pub fn missing_keys(
    spec: &SecretSpec,
    data: Option<&BTreeMap<String, ByteString>>,
) -> Vec<&'static str> {
    spec.keys
        .iter()
        .copied()
        .filter(|k| data.is_none_or(|d| !d.contains_key(*k)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_secret_has_the_keys_its_spec_lists() {
        let data = generate("demo");
        let specs = specs("demo", &StoreSpec::default());
        assert_eq!(data.len(), specs.len());
        for spec in &specs {
            assert!(
                missing_keys(spec, data.get(&spec.name)).is_empty(),
                "{} lacks keys",
                spec.name
            );
        }
    }

    #[test]
    fn secret_names_follow_the_contract() {
        let names: Vec<String> = specs("demo", &StoreSpec::default())
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            [
                "demo-jwt-signing",
                "demo-jwks",
                "demo-admin",
                "demo-edge",
                "demo-storefront",
                "demo-auth-db-credentials",
                "demo-product-db-credentials",
                "demo-order-db-credentials",
                "demo-payment-db-credentials",
                "demo-product-client",
                "demo-order-client",
                "demo-payment-client",
                "demo-gateway-client",
            ]
        );
    }

    #[test]
    fn retained_secrets_are_those_whose_contents_a_database_also_holds() {
        let retained: Vec<String> = specs("demo", &StoreSpec::default())
            .into_iter()
            .filter(|s| s.retained)
            .map(|s| s.name)
            .collect();
        assert_eq!(
            retained,
            [
                "demo-admin",
                "demo-auth-db-credentials",
                "demo-product-db-credentials",
                "demo-order-db-credentials",
                "demo-payment-db-credentials",
            ]
        );
    }

    #[test]
    fn db_credentials_use_the_contract_database_name_and_fresh_passwords() {
        let a = generate("demo");
        let b = generate("demo");
        let creds = &a["demo-order-db-credentials"];
        assert_eq!(
            creds[secret_keys::DB_DATABASE].0,
            names::db_name(Component::Order).as_bytes()
        );
        assert_eq!(creds[secret_keys::DB_USERNAME].0, b"order");
        assert_eq!(creds[secret_keys::DB_PASSWORD].0.len(), SECRET_LEN);
        assert_ne!(
            creds[secret_keys::DB_PASSWORD],
            b["demo-order-db-credentials"][secret_keys::DB_PASSWORD]
        );
    }

    #[test]
    fn jwks_matches_the_signing_key_of_the_same_generation() {
        let data = generate("demo");
        let jwks: serde_json::Value =
            serde_json::from_slice(&data["demo-jwks"][secret_keys::JWKS].0).unwrap();
        let pem = String::from_utf8(
            data["demo-jwt-signing"][secret_keys::JWT_PRIVATE_KEY]
                .0
                .clone(),
        )
        .unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
        assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    }

    #[test]
    fn client_secret_ids_are_the_component_names() {
        let data = generate("demo");
        for c in ["product", "order", "payment", "gateway"] {
            assert_eq!(
                data[&format!("demo-{c}-client")][secret_keys::CLIENT_ID].0,
                c.as_bytes()
            );
        }
        assert!(
            !data.contains_key("demo-auth-client"),
            "auth calls no one: it holds no client"
        );
    }

    #[test]
    fn the_cookie_key_is_long_fresh_and_only_for_a_store_with_a_storefront() {
        let (a, b) = (generate("demo"), generate("demo"));
        let key = &a["demo-storefront"][secret_keys::STOREFRONT_COOKIE_KEY];
        assert!(key.0.len() >= 48, "{} characters", key.0.len());
        assert!(key.0.iter().all(u8::is_ascii_alphanumeric));
        assert_ne!(
            key,
            &b["demo-storefront"][secret_keys::STOREFRONT_COOKIE_KEY]
        );

        let mut without = StoreSpec::default();
        without.storefront.enabled = false;
        let names: Vec<String> = specs("demo", &without)
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert!(!names.contains(&"demo-storefront".to_string()), "{names:?}");
        assert_eq!(names.len(), specs("demo", &StoreSpec::default()).len() - 1);
    }

    #[test]
    fn missing_keys_names_what_a_live_secret_lacks() {
        let spec = &specs("demo", &StoreSpec::default())[2];
        let mut data = generate("demo").remove("demo-admin").unwrap();
        assert!(missing_keys(spec, Some(&data)).is_empty());
        data.remove(secret_keys::ADMIN_PASSWORD);
        assert_eq!(
            missing_keys(spec, Some(&data)),
            vec![secret_keys::ADMIN_PASSWORD]
        );
        assert_eq!(missing_keys(spec, None).len(), 3);
    }
}
