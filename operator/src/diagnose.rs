//! Why a component is not ready, in words a user can act on: a pod the scheduler cannot
//! place (with its reason, e.g. `Insufficient cpu`), an image that cannot be pulled, a
//! container in CrashLoopBackOff (with its last exit and termination message), a volume
//! claim that is not bound. Read from the pods and claims the watch caches hold.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, PersistentVolumeClaim, Pod};
use k8s_openapi::jiff::Timestamp;

use crate::truncate;

/// Container waiting reasons that mean the image cannot be had.
const PULL_FAILURES: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
];
/// Other waiting reasons that will not resolve on their own.
const CONFIG_FAILURES: [&str; 2] = ["CreateContainerConfigError", "CreateContainerError"];
/// How long a pod may wait for a node before that counts as a cause: a new database pod
/// waits a few seconds for its volume to be provisioned, which is not worth a Warning.
pub const SCHEDULING_GRACE: Duration = Duration::from_secs(30);
/// Longest message taken from a pod or container.
const LIMIT: usize = 160;

fn cut(text: &str) -> String {
    truncate(text.trim(), LIMIT)
}

/// What keeps one of these pods from running, the most telling cause first: scheduling
/// (once it has lasted `SCHEDULING_GRACE` at `now`), then images, then configuration, then
/// crash loops. `None` when no pod shows a cause (they may simply be starting).
pub fn pods(pods: &[Pod], now: Timestamp) -> Option<String> {
    let mut causes: Vec<(u8, String)> = Vec::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.metadata.name.as_deref().unwrap_or("pod");
        let status = pod.status.clone().unwrap_or_default();
        if let Some(c) = status.conditions.iter().flatten().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.last_transition_time
                    .as_ref()
                    .is_none_or(|t| now.duration_since(t.0).unsigned_abs() >= SCHEDULING_GRACE)
        }) {
            causes.push((
                0,
                format!(
                    "pod {name} cannot be scheduled: {}",
                    cut(c.message.as_deref().unwrap_or("no node fits"))
                ),
            ));
        }
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for cs in containers {
            if let Some(cause) = container(cs) {
                causes.push(cause);
            }
        }
    }
    causes.sort_by_key(|(rank, _)| *rank);
    causes.into_iter().next().map(|(_, cause)| cause)
}

fn container(cs: &ContainerStatus) -> Option<(u8, String)> {
    let waiting = cs.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref().unwrap_or_default();
    let message = waiting.message.as_deref().map(cut);
    if PULL_FAILURES.contains(&reason) {
        let why = message.map_or(reason.to_string(), |m| format!("{reason}: {m}"));
        return Some((1, format!("cannot pull image {}: {why}", cs.image)));
    }
    if CONFIG_FAILURES.contains(&reason) {
        let why = message.unwrap_or_default();
        return Some((
            2,
            format!("container {} cannot start: {reason}: {why}", cs.name),
        ));
    }
    if reason == "CrashLoopBackOff" {
        let last = cs
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| {
                let mut last = format!("last exit code {}", t.exit_code);
                if let Some(r) = &t.reason {
                    last.push_str(&format!(" ({r})"));
                }
                if let Some(m) = t.message.as_deref().filter(|m| !m.trim().is_empty()) {
                    last.push_str(&format!(": {}", cut(m)));
                }
                last
            })
            .unwrap_or_else(|| "no exit recorded".to_string());
        return Some((
            3,
            format!(
                "container {} is crash-looping ({} restarts; {last})",
                cs.name, cs.restart_count
            ),
        ));
    }
    None
}

/// A claim of a database that is not bound, with its storage class.
pub fn claims(claims: &[PersistentVolumeClaim]) -> Option<String> {
    claims.iter().find_map(|c| {
        let phase = c.status.as_ref().and_then(|s| s.phase.as_deref());
        (phase != Some("Bound") && c.metadata.deletion_timestamp.is_none()).then(|| {
            let class = c
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
                .unwrap_or("the cluster's default");
            format!(
                "volume claim {} is {} (storage class {class}: is there a provisioner, and room?)",
                c.metadata.name.as_deref().unwrap_or("claim"),
                phase.unwrap_or("Pending")
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "demo-order-7d9f"}, "status": status}))
            .unwrap()
    }

    #[test]
    fn an_unschedulable_pod_names_the_schedulers_reason() {
        let p = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu."}]}),
        );
        assert_eq!(
            pods(&[p], Timestamp::now()).unwrap(),
            "pod demo-order-7d9f cannot be scheduled: 0/1 nodes are available: 1 Insufficient cpu."
        );
    }

    #[test]
    fn a_pod_waiting_a_moment_for_its_volume_is_not_a_cause_yet() {
        let since = Timestamp::from_second(1_000_000).unwrap();
        let p = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "lastTransitionTime": "1970-01-12T13:46:40Z",
            "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."}]}),
        );
        let soon = since.checked_add(jiff_secs(10)).unwrap();
        assert_eq!(pods(std::slice::from_ref(&p), soon), None);
        let later = since.checked_add(jiff_secs(31)).unwrap();
        assert!(pods(&[p], later).unwrap().contains("unbound immediate"));
    }

    fn jiff_secs(n: i64) -> k8s_openapi::jiff::SignedDuration {
        k8s_openapi::jiff::SignedDuration::from_secs(n)
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_named() {
        let p = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "order", "image": "mercato/order:0.1.0",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"mercato/order:0.1.0\""}}}]}),
        );
        assert_eq!(
            pods(&[p], Timestamp::now()).unwrap(),
            "cannot pull image mercato/order:0.1.0: ImagePullBackOff: Back-off pulling image \"mercato/order:0.1.0\""
        );
    }

    #[test]
    fn a_crash_loop_carries_the_last_termination_message() {
        let p = pod(
            json!({"phase": "Running", "containerStatuses": [{"name": "order", "image": "i", "imageID": "",
            "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": "DATABASE_URL: connection refused"}}}]}),
        );
        assert_eq!(
            pods(&[p], Timestamp::now()).unwrap(),
            "container order is crash-looping (4 restarts; last exit code 1 (Error): DATABASE_URL: connection refused)"
        );
    }

    #[test]
    fn scheduling_comes_before_a_crash_and_a_starting_pod_has_no_cause() {
        let crashing = pod(
            json!({"containerStatuses": [{"name": "order", "image": "i", "imageID": "",
            "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
        );
        let pending = pod(
            json!({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "no"}]}),
        );
        assert!(
            pods(&[crashing, pending], Timestamp::now())
                .unwrap()
                .contains("cannot be scheduled")
        );
        let starting = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "order", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(pods(&[starting], Timestamp::now()), None);
    }

    #[test]
    fn an_unbound_claim_is_named_with_its_class() {
        let c: PersistentVolumeClaim =
            serde_json::from_value(json!({"metadata": {"name": "data-demo-order-db-0"},
            "spec": {"storageClassName": "fast"}, "status": {"phase": "Pending"}}))
            .unwrap();
        assert_eq!(
            claims(&[c]).unwrap(),
            "volume claim data-demo-order-db-0 is Pending (storage class fast: is there a provisioner, and room?)"
        );
    }
}
