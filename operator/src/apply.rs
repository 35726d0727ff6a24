//! Bringing one child to its desired state with server-side apply, without writing when
//! it is already there.
//!
//! A child is left alone when both hold:
//! 1. its `mercato.dev/applied-hash` annotation equals the fingerprint of the desired object,
//!    so the last thing applied is what is desired now; and
//! 2. every field of the desired object is still owned by our field manager in the live
//!    object's `managedFields`.
//!
//! The second check is what catches hand edits without comparing values (which the API
//! server normalises, e.g. `0.5` CPU becomes `500m`): a `kubectl edit`, `patch`, `scale` or
//! a foreign apply that changes or removes one of our fields moves that field's ownership
//! to another manager. Fields someone else adds beside ours are not ours to police and are
//! left alone, as server-side apply intends. A deleted child simply is not there. Reading
//! the child costs nothing when the controller's watch cache has it (see `cache`); an
//! unchanged Store therefore costs no writes, and no reads once the caches are synced.
//!
//! Server-side apply merges our fields with everyone else's. When that merge is invalid
//! (someone's `kubectl patch` left a second Service port named like ours, say), the API
//! server rejects the apply with 422 however often it is retried; `ensure` then replaces
//! the object with its desired state instead (see `take_back`), and the reconciler records
//! an Event naming whose changes were overridden.

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Map, Value};

pub use crate::child::Child;
use crate::meta::{APPLIED_HASH_ANNOTATION, MANAGER};

/// Whether `live` already is `child` (see the module comment).
pub fn is_up_to_date(child: &Child, live: &Value) -> bool {
    let applied = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(APPLIED_HASH_ANNOTATION))
        .and_then(Value::as_str);
    let expected = child
        .object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(APPLIED_HASH_ANNOTATION))
        .and_then(Value::as_str);
    applied.is_some() && applied == expected && owns_all(live, &child.checked_part())
}

/// Whether our field manager owns every field `desired` sets in `live`.
pub fn owns_all(live: &Value, desired: &Value) -> bool {
    let Some(fields) = our_fields(live) else {
        return false;
    };
    let Some(desired) = desired.as_object() else {
        return false;
    };
    desired.iter().all(|(key, value)| match key.as_str() {
        // Identity fields are not tracked in managedFields.
        "apiVersion" | "kind" | "status" => true,
        "metadata" => value.as_object().is_none_or(|meta| {
            meta.iter().all(|(k, v)| match k.as_str() {
                "name" | "namespace" => true,
                _ => fields
                    .get("f:metadata")
                    .and_then(|m| m.get(format!("f:{k}")))
                    .is_some_and(|f| covers(f, v)),
            })
        }),
        _ => {
            is_empty(value)
                || fields
                    .get(format!("f:{key}"))
                    .is_some_and(|f| covers(f, value))
        }
    })
}

/// The union of the field sets of our manager's entries on the main resource (both `Apply`
/// and the `Update` of a create).
fn our_fields(live: &Value) -> Option<Value> {
    let entries = live.pointer("/metadata/managedFields")?.as_array()?;
    let mut union = Value::Object(Map::new());
    let mut found = false;
    for entry in entries {
        let ours = entry.get("manager").and_then(Value::as_str) == Some(MANAGER);
        let main = entry
            .get("subresource")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if ours
            && main
            && let Some(f) = entry.get("fieldsV1")
        {
            merge(&mut union, f);
            found = true;
        }
    }
    found.then_some(union)
}

fn merge(into: &mut Value, from: &Value) {
    if let (Some(a), Some(b)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in b {
            merge(
                a.entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new())),
                v,
            );
        }
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Whether the field set `fields` (the `fieldsV1` node of one field) covers `desired`.
fn covers(fields: &Value, desired: &Value) -> bool {
    let Some(fields) = fields.as_object() else {
        return false;
    };
    // A node without children owns the whole value: a scalar, an atomic list or struct.
    // (A node holding only "." owns the value's existence, not its members.)
    if fields.is_empty() {
        return true;
    }
    match desired {
        Value::Object(map) => map.iter().all(|(k, v)| {
            is_empty(v) || fields.get(&format!("f:{k}")).is_some_and(|f| covers(f, v))
        }),
        Value::Array(items) => items.iter().all(|item| match item {
            Value::Object(element) => fields
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("k:")?, v)))
                .filter_map(|(k, v)| Some((serde_json::from_str::<Map<String, Value>>(k).ok()?, v)))
                .find(|(key, _)| key_matches(key, element))
                .is_some_and(|(_, f)| covers(f, item)),
            scalar => fields.contains_key(&format!("v:{scalar}")),
        }),
        _ => true,
    }
}

/// Whether a list element is the one an associative-list key names. Key fields the element
/// does not set were defaulted by the server (`protocol: TCP`) and do not disqualify it.
fn key_matches(key: &Map<String, Value>, element: &Map<String, Value>) -> bool {
    let mut compared = 0;
    for (k, v) in key {
        match element.get(k) {
            Some(e) if e == v => compared += 1,
            Some(_) => return false,
            None => {}
        }
    }
    compared > 0
}

/// What ensuring a child did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Created,
    Updated,
    /// Server-side apply was rejected as invalid because of fields other managers own (an
    /// edit apply cannot merge with ours, e.g. a second Service port of the same name), so
    /// the object was replaced with its desired state.
    Replaced {
        /// What the API server said about the apply.
        rejection: String,
        /// The field managers whose changes the replacement dropped.
        overridden: Vec<String>,
    },
}

/// Applies `child` unless `live` (the object as last seen, `None` when absent) is already
/// it; returns what was done and the object as it is now.
pub async fn ensure(
    client: &Client,
    namespace: &str,
    child: &Child,
    live: Option<DynamicObject>,
) -> Result<(Outcome, DynamicObject), kube::Error> {
    if let Some(live) = live.as_ref()
        && is_up_to_date(
            child,
            &serde_json::to_value(live).map_err(kube::Error::SerdeError)?,
        )
    {
        return Ok((Outcome::Unchanged, live.clone()));
    }
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &child.resource);
    let applied = api
        .patch(
            &child.name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&child.object),
        )
        .await;
    match applied {
        Ok(applied) => {
            let outcome = if live.is_some() {
                Outcome::Updated
            } else {
                Outcome::Created
            };
            Ok((outcome, applied))
        }
        Err(kube::Error::Api(status)) if status.code == 422 => {
            match take_back(&api, child).await? {
                Some((replaced, overridden)) => Ok((
                    Outcome::Replaced {
                        rejection: status.message.clone(),
                        overridden,
                    },
                    replaced,
                )),
                None => Err(kube::Error::Api(status)),
            }
        }
        Err(e) => Err(e),
    }
}

/// Replaces the live object with the desired one when other managers own parts of its
/// spec: their fields are what made the merged object invalid, since ours alone are what
/// `render` and the builder tests check. Returns `None` (so that the apply's own error
/// stands) when the object is gone or nobody else owns any of it: then the desired state
/// itself is invalid, and replacing would fail the same way. The replacement keeps the
/// labels and annotations others added (they cannot make an object invalid, and some are
/// controllers' bookkeeping) and carries the live `resourceVersion`, so a concurrent change
/// makes it fail with 409 instead of being overwritten blindly. Values the API server
/// allocated (a Service's cluster IP and node ports) are kept by the server when left out.
async fn take_back(
    api: &Api<DynamicObject>,
    child: &Child,
) -> Result<Option<(DynamicObject, Vec<String>)>, kube::Error> {
    let Some(fresh) = api.get_opt(&child.name).await? else {
        return Ok(None);
    };
    let fresh = serde_json::to_value(&fresh).map_err(kube::Error::SerdeError)?;
    let overridden = foreign_spec_managers(&fresh);
    if overridden.is_empty() {
        return Ok(None);
    }
    let mut object = child.object.clone();
    for field in ["labels", "annotations"] {
        let Some(theirs) = fresh
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
            continue;
        };
        let ours = meta
            .entry(field)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(ours) = ours.as_object_mut() {
            for (k, v) in theirs {
                ours.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    object["metadata"]["resourceVersion"] = fresh["metadata"]["resourceVersion"].clone();
    let object: DynamicObject = serde_json::from_value(object).map_err(kube::Error::SerdeError)?;
    let params = PostParams {
        dry_run: false,
        field_manager: Some(MANAGER.to_string()),
    };
    let replaced = api.replace(&child.name, &params, &object).await?;
    Ok(Some((replaced, overridden)))
}

/// The field managers other than ours that own something outside `metadata` and `status`
/// of the main resource, in the order the object lists them.
pub fn foreign_spec_managers(live: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for entry in live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let manager = entry.get("manager").and_then(Value::as_str).unwrap_or("");
        let main = entry
            .get("subresource")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        let owns_spec = entry
            .get("fieldsV1")
            .and_then(Value::as_object)
            .is_some_and(|f| f.keys().any(|k| k != "f:metadata" && k != "f:status"));
        if manager != MANAGER && main && owns_spec && !out.iter().any(|m| m == manager) {
            out.push(manager.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live_with(fields: Value, annotations: Value) -> Value {
        json!({
            "metadata": {
                "name": "x",
                "annotations": annotations,
                "managedFields": [
                    {"manager": MANAGER, "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": fields},
                    {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                     "fieldsV1": {"f:status": {"f:replicas": {}}}},
                ]
            }
        })
    }

    /// The shape the API server records for a Deployment like ours (list maps keyed by
    /// `name`, `containerPort`+`protocol`, `mountPath`).
    fn deployment_fields() -> Value {
        json!({
            "f:metadata": {"f:annotations": {"f:mercato.dev/applied-hash": {}}, "f:labels": {"f:app": {}},
                           "f:ownerReferences": {"k:{\"uid\":\"u1\"}": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"auth\"}": {
                        ".": {}, "f:name": {}, "f:image": {},
                        "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}},
                        "f:ports": {"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:name": {}}},
                        "f:securityContext": {"f:capabilities": {"f:drop": {}}}
                    }
                }}}
            }
        })
    }

    fn desired() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "namespace": "ns", "annotations": {"mercato.dev/applied-hash": "h"},
                         "labels": {"app": "a"}, "ownerReferences": [{"uid": "u1", "name": "demo"}]},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{
                "name": "auth", "image": "i", "env": [{"name": "A", "value": "1"}],
                "ports": [{"containerPort": 8080, "name": "http"}],
                "securityContext": {"capabilities": {"drop": ["ALL"]}}
            }]}}}
        })
    }

    #[test]
    fn fully_owned_object_is_covered() {
        assert!(owns_all(
            &live_with(deployment_fields(), json!({})),
            &desired()
        ));
    }

    #[test]
    fn a_field_taken_over_by_a_hand_edit_is_detected() {
        let mut fields = deployment_fields();
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"auth\"}"]
            .as_object_mut()
            .unwrap()
            .remove("f:image");
        assert!(!owns_all(&live_with(fields, json!({})), &desired()));
    }

    #[test]
    fn a_removed_env_var_is_detected() {
        let mut fields = deployment_fields();
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"auth\"}"]["f:env"] =
            json!({"k:{\"name\":\"B\"}": {".": {}}});
        assert!(!owns_all(&live_with(fields, json!({})), &desired()));
    }

    #[test]
    fn scaled_replicas_are_detected() {
        let mut fields = deployment_fields();
        fields["f:spec"]
            .as_object_mut()
            .unwrap()
            .remove("f:replicas");
        assert!(!owns_all(&live_with(fields, json!({})), &desired()));
    }

    #[test]
    fn another_managers_entry_does_not_count_as_ours() {
        let mut live = live_with(deployment_fields(), json!({}));
        live["metadata"]["managedFields"][0]["manager"] = json!("kubectl-edit");
        assert!(!owns_all(&live, &desired()));
    }

    #[test]
    fn changed_desired_state_changes_the_fingerprint_and_is_applied() {
        let sa = k8s_openapi::api::core::v1::ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some("demo-auth".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            automount_service_account_token: Some(false),
            ..Default::default()
        };
        let a = Child::new(&sa);
        let mut sa2 = sa.clone();
        sa2.automount_service_account_token = Some(true);
        let b = Child::new(&sa2);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), Child::new(&sa).fingerprint());
        // The live object carries a's hash: b is not up to date even though all is owned.
        let live = json!({
            "metadata": {"annotations": a.object["metadata"]["annotations"].clone(), "managedFields": [
                {"manager": MANAGER, "operation": "Apply", "fieldsV1": {
                    "f:metadata": {"f:annotations": {"f:mercato.dev/applied-hash": {}}},
                    "f:automountServiceAccountToken": {}}}
            ]}
        });
        assert!(is_up_to_date(&a, &live));
        assert!(!is_up_to_date(&b, &live));
    }

    #[test]
    fn secret_data_is_neither_fingerprinted_nor_policed() {
        use k8s_openapi::ByteString;
        let secret = |v: &str| k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("demo-admin".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            data: Some([("password".to_string(), ByteString(v.into()))].into()),
            ..Default::default()
        };
        let a = Child::new(&secret("one"));
        let b = Child::new(&secret("two"));
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(
            a.object["data"]["password"].is_string(),
            "data is still applied"
        );
        let live = json!({
            "metadata": {"annotations": a.object["metadata"]["annotations"].clone(), "managedFields": [
                {"manager": MANAGER, "operation": "Update", "fieldsV1": {
                    "f:metadata": {"f:annotations": {"f:mercato.dev/applied-hash": {}}}, "f:type": {}}},
                {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:data": {"f:password": {}}}}
            ]}
        });
        assert!(is_up_to_date(&b, &live));
    }

    #[test]
    fn set_elements_are_matched_by_value() {
        let fields = json!({"f:finalizers": {".": {}, "v:\"a\"": {}}});
        let live = json!({"metadata": {"managedFields": [{"manager": MANAGER, "fieldsV1": {"f:metadata": fields}}]}});
        assert!(owns_all(&live, &json!({"metadata": {"finalizers": ["a"]}})));
        assert!(!owns_all(
            &live,
            &json!({"metadata": {"finalizers": ["a", "b"]}})
        ));
    }
}
