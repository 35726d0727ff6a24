//! One desired object, kind-erased so that every kind goes through the same code: what it
//! is, which component it belongs to, and the fingerprint that says what was last applied.

use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use kube::core::ApiResource;
use mercato_contract::Component;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::meta::APPLIED_HASH_ANNOTATION;

/// One desired object, kind-erased so every kind goes through the same code.
#[derive(Debug, Clone)]
pub struct Child {
    pub resource: ApiResource,
    pub name: String,
    /// The object to apply: apiVersion, kind, metadata and spec; never status.
    pub object: Value,
    /// The component the object belongs to (its service, or its database); `None` for
    /// what serves the whole store (the Secrets, the store-wide NetworkPolicies).
    pub component: Option<Component>,
    /// Fields left out of the fingerprint and the ownership check (a Secret's `data`, which
    /// is generated once and may be rotated by hand without the operator reverting it).
    ignore: &'static [&'static str],
}

impl Child {
    pub fn new<K>(obj: &K) -> Child
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Serialize,
    {
        let mut object =
            serde_json::to_value(obj).expect("Kubernetes objects always serialize to JSON");
        if let Some(map) = object.as_object_mut() {
            map.remove("status");
        }
        let ignore: &'static [&'static str] = if K::kind(&()) == "Secret" {
            &["data"]
        } else {
            &[]
        };
        let mut child = Child {
            resource: ApiResource::erase::<K>(&()),
            name: obj.meta().name.clone().unwrap_or_default(),
            component: None,
            object,
            ignore,
        };
        let hash = child.fingerprint();
        child.set_annotation(APPLIED_HASH_ANNOTATION, hash);
        child
    }

    /// The same object, as part of `component`.
    pub fn of(mut self, component: Component) -> Child {
        self.component = Some(component);
        self
    }

    pub fn kind(&self) -> &str {
        &self.resource.kind
    }

    /// `Kind/name`, for events, logs and error messages.
    pub fn display(&self) -> String {
        format!("{}/{}", self.resource.kind, self.name)
    }

    /// SHA-256 of the object as it is desired (without the hash annotation itself).
    pub fn fingerprint(&self) -> String {
        let mut v = self.checked_part();
        if let Some(annotations) = v
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.remove(APPLIED_HASH_ANNOTATION);
            if annotations.is_empty()
                && let Some(meta) = v.pointer_mut("/metadata").and_then(Value::as_object_mut)
            {
                meta.remove("annotations");
            }
        }
        hex(&Sha256::digest(v.to_string().as_bytes()))
    }

    /// Changes the desired object with `edit`, and its fingerprint with it.
    pub fn edit(&mut self, edit: impl FnOnce(&mut Value)) {
        edit(&mut self.object);
        let hash = self.fingerprint();
        self.set_annotation(APPLIED_HASH_ANNOTATION, hash);
    }

    pub(crate) fn checked_part(&self) -> Value {
        let mut v = self.object.clone();
        if let Some(map) = v.as_object_mut() {
            for field in self.ignore {
                map.remove(*field);
            }
        }
        v
    }

    fn set_annotation(&mut self, key: &str, value: String) {
        let Some(meta) = self
            .object
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
        else {
            return;
        };
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(map) = annotations.as_object_mut() {
            map.insert(key.to_string(), Value::String(value));
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
