//! Names, labels and metadata shared by every object a Store owns.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use mercato_contract::Component;

use crate::crd::Store;

/// The one field manager of every server-side apply, and the `managed-by` label value.
pub const MANAGER: &str = "mercato-operator";
/// Finalizer that carries out the Store's deletion policy.
pub const FINALIZER: &str = "mercato.dev/cleanup";
/// Annotation holding the fingerprint of the desired object last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "mercato.dev/applied-hash";
/// Pod template annotation: fingerprint of the referenced Secrets' data and of the config,
/// so pods roll when either changes.
pub const CONFIG_HASH_ANNOTATION: &str = "mercato.dev/config-hash";
/// Deployment annotation: fingerprint of its pod template as the operator last applied it,
/// so the reconciler can tell an apply that rolls pods from one that does not.
pub const TEMPLATE_HASH_ANNOTATION: &str = "mercato.dev/template-hash";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const PART_OF: &str = "mercato";

/// Label selector of every object any Store owns (for the operator's watches).
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGER}")
}

/// Label selector of every object one Store owns (PVCs included).
pub fn store_selector(store: &str) -> String {
    store_labels(store)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels every object of one Store carries (what `store_selector` selects).
pub fn store_labels(store: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_PART_OF.to_string(), PART_OF.to_string()),
        (LABEL_INSTANCE.to_string(), store.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
    ])
}

/// What an object is, in label terms: `app.kubernetes.io/name` and `/component`.
///
/// A service's pods are `name=mercato-<c>, component=<c>`; its database's are
/// `name=postgresql, component=<c>-db`; store-wide objects are `name=mercato, component=store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub component: String,
}

impl Role {
    pub fn service(c: Component) -> Self {
        Role {
            name: format!("mercato-{}", c.name()),
            component: c.name().to_string(),
        }
    }
    pub fn database(c: Component) -> Self {
        Role {
            name: "postgresql".to_string(),
            component: format!("{}-db", c.name()),
        }
    }
    /// The pods of a database's backup CronJob: `name=postgresql-backup, component=<c>-db-backup`.
    pub fn backup(c: Component) -> Self {
        Role {
            name: "postgresql-backup".to_string(),
            component: format!("{}-db-backup", c.name()),
        }
    }
    /// What all the backups of a store share: the backup claim and the scripts.
    pub fn backups() -> Self {
        Role {
            name: PART_OF.to_string(),
            component: "backups".to_string(),
        }
    }
    pub fn store() -> Self {
        Role {
            name: PART_OF.to_string(),
            component: "store".to_string(),
        }
    }
}

/// The five recommended labels.
pub fn labels(store: &str, role: &Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), role.name.clone()),
        (LABEL_INSTANCE.to_string(), store.to_string()),
        (LABEL_COMPONENT.to_string(), role.component.clone()),
        (LABEL_PART_OF.to_string(), PART_OF.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
    ])
}

/// The labels that select one role's pods of one store (immutable in Deployment and
/// StatefulSet selectors, so `managed-by` stays out).
pub fn selector_labels(store: &str, role: &Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), role.name.clone()),
        (LABEL_INSTANCE.to_string(), store.to_string()),
        (LABEL_COMPONENT.to_string(), role.component.clone()),
    ])
}

pub fn selector(store: &str, role: &Role) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(store, role)),
        match_expressions: None,
    }
}

/// Selects every pod of one store, and only the pods this operator made: `managed-by` too,
/// so an unrelated pod in the namespace that happens to carry part-of and instance is not
/// caught by the store's default-deny.
pub fn store_pods_selector(store: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([
            (LABEL_PART_OF.to_string(), PART_OF.to_string()),
            (LABEL_INSTANCE.to_string(), store.to_string()),
            (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
        ])),
        match_expressions: None,
    }
}

/// The identity of a Store that its children's metadata is derived from.
#[derive(Debug, Clone)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    reference: OwnerReference,
}

impl Owner {
    /// Fails when the Store has no namespace or uid, which an object read from the API
    /// server always has.
    pub fn of(store: &Store) -> Option<Owner> {
        Some(Owner {
            name: store.name_any(),
            namespace: store.namespace()?,
            reference: store.controller_owner_ref(&())?,
        })
    }

    /// Metadata of a child: name, namespace, the five labels, the controller reference.
    pub fn child_meta(&self, name: String, role: &Role) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels(&self.name, role)),
            owner_references: Some(vec![self.reference.clone()]),
            ..ObjectMeta::default()
        }
    }

    pub fn reference(&self) -> &OwnerReference {
        &self.reference
    }

    /// Whether an object with these owner references is one this Store controls (and so
    /// one the operator may delete when the Store no longer wants it).
    pub fn controls(&self, references: &[OwnerReference]) -> bool {
        references
            .iter()
            .any(|r| r.uid == self.reference.uid && r.controller == Some(true))
    }

    /// `http://<store>-<component>.<namespace>.svc:<port>`: no cluster domain, which
    /// clusters may change.
    pub fn service_url(&self, c: Component) -> String {
        format!(
            "http://{}.{}.svc:{}",
            mercato_contract::names::component(&self.name, c),
            self.namespace,
            mercato_contract::HTTP_PORT
        )
    }

    /// Metadata of an object the Store makes but does not own (no owner reference, so
    /// garbage collection leaves it when the Store goes): name, namespace, the five labels.
    pub fn unowned_meta(&self, name: String, role: &Role) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels(&self.name, role)),
            ..ObjectMeta::default()
        }
    }

    /// Host name of a component's PostgreSQL (its headless Service).
    pub fn database_host(&self, c: Component) -> String {
        format!(
            "{}.{}.svc",
            mercato_contract::names::database(&self.name, c),
            self.namespace
        )
    }
}
