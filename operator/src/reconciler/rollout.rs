//! One component's pods roll at a time.
//!
//! An operator upgrade (new default images, new pod templates) or a Store edit touching
//! several components would otherwise replace every component's pods at once: every
//! service's migrations at the same moment, and, if the new release is bad, the whole store
//! down together instead of its first component. So a Deployment whose pod template would
//! change waits while another component's rollout is under way, in the Store's order
//! (auth, product, order, payment, then the gateway and the storefront, which call them).
//! Anything else about it (its replicas, a hand edit to repair) waits with it; a new
//! Deployment never waits.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::DynamicObject;

use crate::child::Child;
use crate::meta::TEMPLATE_HASH_ANNOTATION;

fn template_hash(object: &serde_json::Value) -> Option<&str> {
    object
        .pointer("/metadata/annotations")?
        .get(TEMPLATE_HASH_ANNOTATION)?
        .as_str()
}

/// Whether applying Deployment `child` over `live` would change its pod template (a live
/// Deployment without the fingerprint, from an older operator, counts as changing).
pub fn changes_pods(child: &Child, live: &DynamicObject) -> bool {
    let live = serde_json::to_value(live).unwrap_or_default();
    template_hash(&child.object) != template_hash(&live)
}

/// Whether Deployment `d` is rolling out: its controller has not seen its latest spec, or
/// not every replica runs the new template and is available, or old pods remain. A rollout
/// past its progress deadline no longer counts: a component that cannot start must not
/// hold the others back for ever (its status says it is stuck).
pub fn in_progress(d: &Deployment) -> bool {
    let status = d.status.clone().unwrap_or_default();
    let stuck = status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if stuck {
        return false;
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0)
        || status.updated_replicas.unwrap_or(0) < want
        || status.replicas.unwrap_or(0) > status.updated_replicas.unwrap_or(0)
        || status.available_replicas.unwrap_or(0) < want
}
