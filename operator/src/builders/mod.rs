//! Desired state: one small pure function per Kubernetes object, assembled here into the
//! full set of children a Store should have.

pub mod backup;
pub mod database;
pub mod monitoring;
pub mod network;
pub mod pod;
pub mod secrets;
pub mod security;
pub mod workloads;

use sha2::{Digest, Sha256};

pub use secrets::SecretData;

use crate::child::Child;
pub use crate::child::hex;
use crate::crd::{Destination, StoreSpec};
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

/// The components `c` calls over HTTP, of those the Store runs: its edges in the network
/// policies and the `<COMPONENT>_URL` variables it gets (so the gateway is told
/// `STOREFRONT_URL` only when there is a storefront).
pub fn callees(spec: &StoreSpec, c: Component) -> Vec<Component> {
    c.calls()
        .iter()
        .copied()
        .filter(|callee| spec.enabled(*callee))
        .collect()
}

/// The Prometheus Operator objects of a Store (when its monitoring is on): applied only in a
/// cluster that has their CRDs, which the reconciler checks.
pub fn monitoring(owner: &Owner, spec: &StoreSpec) -> Vec<Child> {
    if !spec.monitoring.enabled {
        return Vec::new();
    }
    vec![
        Child::new(&monitoring::pod_monitor(owner, spec)),
        Child::new(&monitoring::prometheus_rule(owner, spec)),
    ]
}

/// Everything a Store should have, in apply order: its Secrets first (holding `secrets`,
/// the data they have or, for `render` and tests, freshly generated data), then identities
/// and databases, the workloads that use them, and the policies. The reconciler settles the
/// Secrets on its own (they are created once and never re-applied with other data) and
/// applies the rest.
pub fn desired(
    owner: &Owner,
    spec: &StoreSpec,
    images: &ImageDefaults,
    secrets: &SecretData,
) -> Vec<Child> {
    let mut out: Vec<Child> = secrets::specs(&owner.name, spec)
        .iter()
        .map(|s| {
            let data = secrets.get(&s.name).cloned().unwrap_or_default();
            Child::new(&secrets::secret(owner, s, data))
        })
        .collect();
    for c in spec.components() {
        out.push(Child::new(&workloads::service_account(owner, c)).of(c));
    }
    // Before the databases, whose restore mounts the scripts.
    if let Some(Destination::Pvc(pvc)) = spec.backup.as_ref().map(|b| b.target.destination()) {
        out.push(Child::new(&backup::claim(owner, pvc)));
    }
    if backup::needs_scripts(spec) {
        out.push(Child::new(&backup::scripts(owner)));
    }
    // A service with an external database gets none of these: its database is not ours.
    for c in spec.operated_databases() {
        if let Some(service) = spec.service(c) {
            out.push(Child::new(&database::headless_service(owner, c)).of(c));
            out.push(
                Child::new(&database::stateful_set(
                    owner,
                    spec,
                    images,
                    &service.database,
                    c,
                    secrets,
                ))
                .of(c),
            );
            if let Some(b) = &spec.backup {
                let job = backup::cron_job(owner, spec, b, images, service.database.image(), c);
                out.push(Child::new(&job).of(c));
            }
        }
    }
    for c in spec.components() {
        out.push(Child::new(&workloads::service(owner, spec, c)).of(c));
        out.push(Child::new(&workloads::deployment(owner, spec, images, c, secrets)).of(c));
        if let Some(pdb) = workloads::pod_disruption_budget(owner, spec, c) {
            out.push(Child::new(&pdb).of(c));
        }
    }
    if spec.network_policies.enabled {
        out.push(Child::new(&network::default_deny(owner)));
        out.push(Child::new(&network::allow_dns(
            owner,
            &spec.network_policies.dns,
        )));
        for c in spec.components() {
            out.push(Child::new(&network::component(owner, spec, c)).of(c));
        }
        for c in spec.operated_databases() {
            out.push(Child::new(&network::database(owner, spec, c)).of(c));
            if spec.backup.is_some() {
                out.push(Child::new(&network::backup(owner, spec, c)).of(c));
            }
        }
    }
    out
}

/// The children a Store would have with every optional component on, less those it wants:
/// what a component it turned off (`storefront.enabled: false`) left behind, which the
/// reconciler deletes. The other components' children share their names whatever is
/// turned off (only their contents differ), so none of them is listed.
pub fn switched_off(owner: &Owner, spec: &StoreSpec, images: &ImageDefaults) -> Vec<Child> {
    let mut everything = spec.clone();
    everything.storefront.enabled = true;
    let none = SecretData::new();
    let wanted: Vec<(String, String)> = desired(owner, spec, images, &none)
        .into_iter()
        .map(|c| (c.kind().to_string(), c.name))
        .collect();
    desired(owner, &everything, images, &none)
        .into_iter()
        .filter(|c| !wanted.contains(&(c.kind().to_string(), c.name.clone())))
        .collect()
}
