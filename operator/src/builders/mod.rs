//! Desired state: one small pure function per Kubernetes object, assembled here into the
//! full set of children a Store should have.

pub mod database;
pub mod network;
pub mod pod;
pub mod secrets;
pub mod security;
pub mod workloads;

use sha2::{Digest, Sha256};

pub use secrets::SecretData;

use crate::apply::Child;
use crate::crd::StoreSpec;
use crate::images::ImageDefaults;
use crate::meta::Owner;
use mercato_contract::Component;

/// Hex SHA-256 of the named Secrets' data (names and keys in order) and of `config`: goes
/// into a pod template so that the pods roll when a Secret they read or their config changes.
pub fn config_hash(secrets: &SecretData, names: &[String], config: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    for name in names {
        h.update(name.as_bytes());
        h.update([0]);
        if let Some(data) = secrets.get(name) {
            for (key, value) in data {
                h.update(key.as_bytes());
                h.update([0]);
                h.update((value.0.len() as u64).to_be_bytes());
                h.update(&value.0);
            }
        }
        h.update([0xff]);
    }
    h.update(config.to_string().as_bytes());
    hex(&h.finalize())
}

/// The components `c` calls over HTTP: its edges in the network policies and the
/// `<COMPONENT>_URL` variables it gets.
pub fn callees(c: Component) -> Vec<Component> {
    c.calls().to_vec()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every child except the Secrets (which are created once, see `secrets`), in apply order:
/// identities and databases first, then the workloads that use them, then policies.
pub fn children(
    owner: &Owner,
    spec: &StoreSpec,
    images: &ImageDefaults,
    secrets: &SecretData,
) -> Vec<Child> {
    let mut out = Vec::new();
    for c in Component::ALL {
        out.push(Child::new(&workloads::service_account(owner, c)));
    }
    for c in Component::WITH_DATABASE {
        if let Some(service) = spec.service(c) {
            out.push(Child::new(&database::headless_service(owner, c)));
            out.push(Child::new(&database::stateful_set(
                owner,
                &service.database,
                spec.image_pull_policy,
                spec.pull_secrets(),
                c,
                secrets,
            )));
        }
    }
    for c in Component::ALL {
        out.push(Child::new(&workloads::service(owner, spec, c)));
        out.push(Child::new(&workloads::deployment(
            owner, spec, images, c, secrets,
        )));
        if let Some(pdb) = workloads::pod_disruption_budget(owner, spec, c) {
            out.push(Child::new(&pdb));
        }
    }
    if spec.network_policies.enabled {
        out.push(Child::new(&network::default_deny(owner)));
        out.push(Child::new(&network::allow_dns(owner)));
        for c in Component::ALL {
            out.push(Child::new(&network::component(owner, c)));
        }
        for c in Component::WITH_DATABASE {
            out.push(Child::new(&network::database(owner, c)));
        }
    }
    out
}
