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

/// Whether applying Deployment `child` over `live` would change its pod template (a live
/// Deployment without the fingerprint, from an older operator, counts as changing).
pub fn changes_pods(child: &Child, live: &DynamicObject) -> bool {
    let desired = child
        .object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(TEMPLATE_HASH_ANNOTATION))
        .and_then(|h| h.as_str());
    let applied = live
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TEMPLATE_HASH_ANNOTATION))
        .map(String::as_str);
    desired != applied
}

/// Whether Deployment `d` is rolling out in a way that holds the others back: its
/// controller has not seen its latest spec, or not every replica runs the new template and
/// is available, or old pods remain, while some pod of it still serves. Two rollouts do not
/// count: one past its progress deadline, and one of a component none of whose pods is
/// available (a store still starting, or one whose images cannot be had). Such a component
/// has nothing left to protect, and holding the others back would only delay their repair
/// (its status says what is wrong with it).
pub fn holds_others(d: &Deployment) -> bool {
    let status = d.status.clone().unwrap_or_default();
    let stuck = status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    let available = status.available_replicas.unwrap_or(0);
    if stuck || available == 0 {
        return false;
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0)
        || status.updated_replicas.unwrap_or(0) < want
        || status.replicas.unwrap_or(0) > status.updated_replicas.unwrap_or(0)
        || available < want
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demo-auth", "generation": generation},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_rollout_holds_the_others_while_the_component_still_serves() {
        let done = serde_json::json!({"observedGeneration": 2, "replicas": 2,
            "updatedReplicas": 2, "availableReplicas": 2});
        assert!(!holds_others(&deployment(2, done.clone())));
        assert!(holds_others(&deployment(3, done)), "a spec not yet seen");
        let surging = serde_json::json!({"observedGeneration": 3, "replicas": 3,
            "updatedReplicas": 1, "availableReplicas": 2});
        assert!(holds_others(&deployment(3, surging)));
        let old_pod_left = serde_json::json!({"observedGeneration": 3, "replicas": 3,
            "updatedReplicas": 2, "availableReplicas": 2});
        assert!(holds_others(&deployment(3, old_pod_left)));

        let nothing_serves = serde_json::json!({"observedGeneration": 3, "replicas": 2,
            "updatedReplicas": 2, "availableReplicas": 0});
        assert!(!holds_others(&deployment(3, nothing_serves)));
        assert!(
            !holds_others(&deployment(1, serde_json::json!({}))),
            "new: no status yet"
        );
        let past_deadline = serde_json::json!({"observedGeneration": 3, "replicas": 3,
            "updatedReplicas": 1, "availableReplicas": 2, "conditions": [{"type": "Progressing",
            "status": "False", "reason": "ProgressDeadlineExceeded"}]});
        assert!(!holds_others(&deployment(3, past_deadline)));
    }
}
