//! Store status computed from its children: conditions per the Kubernetes API conventions,
//! readiness per component, the gateway endpoint.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use mercato_contract::{Component, HTTP_PORT, names};

use crate::crd::{BackupStatus, ComponentStatus, Phase, Store, StoreStatus};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
/// The `Degraded` reason when pods or claims say why components are not ready.
pub const COMPONENTS_FAILING: &str = "ComponentsFailing";
/// With `spec.backup`: whether the latest finished backup Job of any database failed.
pub const BACKUP_FAILED: &str = "BackupFailed";
/// Present while a database's StatefulSet is held back because the Store asks for another
/// PostgreSQL major version than its data directory has.
pub const UPGRADE_BLOCKED: &str = "UpgradeBlocked";

/// A database left on its image because the desired one is another major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedUpgrade {
    /// The image the live StatefulSet runs.
    pub live: String,
    /// The image the Store asks for.
    pub desired: String,
}

/// The children that status is computed from, as last read or applied.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub deployments: BTreeMap<Component, Deployment>,
    pub stateful_sets: BTreeMap<Component, StatefulSet>,
    pub gateway_service: Option<Service>,
    /// The backup CronJob of each database (with `spec.backup`).
    pub cron_jobs: BTreeMap<Component, CronJob>,
    /// The Jobs those CronJobs started and still keep (their history limits), per database.
    pub backup_jobs: BTreeMap<Component, Vec<Job>>,
    /// Why a component (`order`) or a database (`order-db`) is not ready, when its pods or
    /// claims say (see `diagnose`).
    pub causes: BTreeMap<String, String>,
    /// The databases whose StatefulSet was not applied: a major-version change.
    pub blocked_upgrades: BTreeMap<Component, BlockedUpgrade>,
    /// The components whose new pod template waits for another component's rollout, and
    /// that component (one rolls at a time).
    pub held_rollouts: Vec<Component>,
    pub rolling: Option<Component>,
}

/// The `Progressing` reason while components wait their turn to roll out.
pub const ROLLING_ONE_AT_A_TIME: &str = "RollingOneAtATime";

/// The `UpgradeBlocked` message: which databases, their images, and the two ways out.
pub fn upgrade_blocked_message(blocked: &BTreeMap<Component, BlockedUpgrade>) -> String {
    let each: Vec<String> = blocked
        .iter()
        .map(|(c, b)| {
            format!(
                "{}-db runs {} and the Store asks for {}",
                c.name(),
                b.live,
                b.desired
            )
        })
        .collect();
    format!(
        "PostgreSQL cannot change major version in place, so these StatefulSets were left as they are: {}. Set database.image back to the running major version, or dump the database and restore it into a new Store with database.restoreFrom",
        each.join("; ")
    )
}

/// Replicas of a workload that are ready and run its current template; 0 while the
/// controller has not yet seen the latest spec.
fn current_ready(
    generation: Option<i64>,
    observed_generation: Option<i64>,
    ready: Option<i32>,
    updated: Option<i32>,
) -> i32 {
    if observed_generation.unwrap_or(0) < generation.unwrap_or(0) {
        return 0;
    }
    ready.unwrap_or(0).min(updated.unwrap_or(0))
}

fn deployment_ready(d: &Deployment) -> i32 {
    let s = d.status.clone().unwrap_or_default();
    current_ready(
        d.metadata.generation,
        s.observed_generation,
        s.ready_replicas,
        s.updated_replicas,
    )
}

fn stateful_set_ready(s: &StatefulSet) -> bool {
    let st = s.status.clone().unwrap_or_default();
    let want = s.spec.as_ref().and_then(|sp| sp.replicas).unwrap_or(1);
    current_ready(
        s.metadata.generation,
        st.observed_generation,
        st.ready_replicas,
        st.updated_replicas,
    ) >= want
}

/// A Deployment whose rollout has passed its progress deadline.
fn rollout_stuck(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
        })
}

/// The last and the last successful run of a backup CronJob.
fn backup_status(cron_job: Option<&CronJob>) -> BackupStatus {
    let status = cron_job.and_then(|j| j.status.as_ref());
    BackupStatus {
        last_schedule_time: status.and_then(|s| s.last_schedule_time.clone()),
        last_successful_time: status.and_then(|s| s.last_successful_time.clone()),
    }
}

/// A finished Job's outcome: `Some(None)` when it completed, `Some(Some(why))` when it
/// failed, `None` while it runs.
fn job_outcome(job: &Job) -> Option<Option<String>> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let holds = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    if holds("Complete").is_some() {
        return Some(None);
    }
    let failed = holds("Failed")?;
    let reason = failed
        .reason
        .clone()
        .unwrap_or_else(|| "Failed".to_string());
    Some(Some(match failed.message.as_deref() {
        Some(m) if !m.is_empty() => format!("{reason} ({m})"),
        _ => reason,
    }))
}

/// Why the latest finished backup Job of a database failed; `None` when it succeeded (or
/// none has finished). A run in progress does not hide the failure before it.
pub fn backup_failure(jobs: &[Job]) -> Option<String> {
    let latest = jobs
        .iter()
        .filter_map(|j| job_outcome(j).map(|o| (j, o)))
        .max_by(|(a, _), (b, _)| {
            let key = |j: &Job| {
                (
                    j.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    j.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        })?;
    let (job, why) = latest;
    why.map(|why| {
        format!(
            "Job {} failed: {why}",
            job.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

/// Where the gateway answers, from its Service.
pub fn endpoint(store: &str, namespace: &str, svc: &Service) -> String {
    let in_cluster = format!(
        "http://{}.{namespace}.svc:{HTTP_PORT}",
        names::component(store, Component::Gateway)
    );
    let spec = svc.spec.clone().unwrap_or_default();
    match spec.type_.as_deref() {
        Some("LoadBalancer") => svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .and_then(|i| i.first())
            .and_then(|i| i.ip.clone().or_else(|| i.hostname.clone()))
            .map_or(in_cluster, |host| format!("http://{host}:{HTTP_PORT}")),
        Some("NodePort") => spec
            .ports
            .as_ref()
            .and_then(|p| p.first())
            .and_then(|p| p.node_port)
            .map_or(in_cluster, |port| format!("http://<node-address>:{port}")),
        _ => in_cluster,
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        // Filled in by `carry_transition_times`.
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// Keeps each condition's `lastTransitionTime` from the previous status unless its status
/// flipped, in which case it becomes `now`.
fn carry_transition_times(conditions: &mut [Condition], previous: &[Condition], now: Timestamp) {
    for c in conditions {
        c.last_transition_time = match previous.iter().find(|p| p.type_ == c.type_) {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => Time(now),
        };
    }
}

/// The status of `store` given its children (`None` when they could not be read) and the
/// error of this reconcile, if any. `now` is whole seconds, as the API server stores it.
pub fn compute(
    store: &Store,
    observed: Option<&Observed>,
    error: Option<&str>,
    now: Timestamp,
) -> StoreStatus {
    let previous = store.status.clone().unwrap_or_default();
    let generation = store.metadata.generation;
    let name = store.metadata.name.clone().unwrap_or_default();
    let namespace = store.metadata.namespace.clone().unwrap_or_default();

    let (components, endpoint, stuck) = match observed {
        Some(o) => {
            let mut components = BTreeMap::new();
            // A component the Store turned off has no entry, and nothing to wait for.
            for c in store.spec.components() {
                let ready = o.deployments.get(&c).map_or(0, deployment_ready);
                // An external database is not the operator's to watch: the service is
                // ready only once it has connected to it and migrated it.
                let database_ready = (c.has_database()
                    && store.spec.external_database(c).is_none())
                .then(|| o.stateful_sets.get(&c).is_some_and(stateful_set_ready));
                components.insert(
                    c.name().to_string(),
                    ComponentStatus {
                        replicas: store.spec.workload(c).replicas,
                        ready_replicas: ready,
                        database_ready,
                    },
                );
            }
            let endpoint = o
                .gateway_service
                .as_ref()
                .map(|svc| endpoint(&name, &namespace, svc));
            let stuck: Vec<String> = o
                .deployments
                .iter()
                .filter(|(_, d)| rollout_stuck(d))
                .map(|(c, _)| c.name().to_string())
                .collect();
            (components, endpoint, stuck)
        }
        None => (
            previous.components.clone(),
            previous.endpoint.clone(),
            Vec::new(),
        ),
    };

    let causes = observed.map(|o| &o.causes);
    let cause_of = |what: &str| causes.and_then(|c| c.get(what));
    // What is not ready, and the cause of each that has one.
    let mut failing: Vec<String> = Vec::new();
    let waiting: Vec<String> = components
        .iter()
        .flat_map(|(c, s)| {
            let mut w = Vec::new();
            if s.ready_replicas < s.replicas {
                let counts = format!("{}/{}", s.ready_replicas, s.replicas);
                match cause_of(c) {
                    Some(cause) => {
                        w.push(format!("{c} ({counts}: {cause})"));
                        failing.push(format!("{c}: {cause}"));
                    }
                    None => w.push(format!("{c} ({counts})")),
                }
            }
            if s.database_ready == Some(false) {
                let db = format!("{c}-db");
                match cause_of(&db) {
                    Some(cause) => {
                        w.push(format!("{db} ({cause})"));
                        failing.push(format!("{db}: {cause}"));
                    }
                    None => w.push(db),
                }
            }
            w
        })
        .collect();
    let all_ready = observed.is_some() && waiting.is_empty();

    let (ready, progressing, degraded) = match error {
        Some(e) => (
            condition(READY, false, "ReconcileFailed", e.to_string(), generation),
            condition(
                PROGRESSING,
                false,
                "ReconcileFailed",
                e.to_string(),
                generation,
            ),
            condition(DEGRADED, true, "ReconcileFailed", e.to_string(), generation),
        ),
        None => {
            let ready = if all_ready {
                condition(
                    READY,
                    true,
                    "AllComponentsReady",
                    "every component and database is ready".into(),
                    generation,
                )
            } else {
                condition(
                    READY,
                    false,
                    "ComponentsNotReady",
                    format!("waiting for: {}", waiting.join(", ")),
                    generation,
                )
            };
            let held = observed.map(|o| (o.rolling, &o.held_rollouts[..]));
            let progressing = if let Some((rolling, waiting @ [_, ..])) = held {
                let names: Vec<&str> = waiting.iter().map(|c| c.name()).collect();
                let now = rolling.map_or_else(
                    || "a component is rolling out".to_string(),
                    |c| format!("{c} is rolling out"),
                );
                condition(
                    PROGRESSING,
                    true,
                    ROLLING_ONE_AT_A_TIME,
                    format!(
                        "{now}; one component at a time, so these wait their turn: {}",
                        names.join(", ")
                    ),
                    generation,
                )
            } else if all_ready {
                condition(
                    PROGRESSING,
                    false,
                    "RolloutComplete",
                    "the store runs its desired state".into(),
                    generation,
                )
            } else {
                condition(
                    PROGRESSING,
                    true,
                    "RollingOut",
                    format!("waiting for: {}", waiting.join(", ")),
                    generation,
                )
            };
            let degraded = if !failing.is_empty() {
                condition(
                    DEGRADED,
                    true,
                    COMPONENTS_FAILING,
                    failing.join("; "),
                    generation,
                )
            } else if stuck.is_empty() {
                condition(
                    DEGRADED,
                    false,
                    "ReconcileSucceeded",
                    "all children are applied".into(),
                    generation,
                )
            } else {
                condition(
                    DEGRADED,
                    true,
                    "RolloutStuck",
                    format!(
                        "rollout exceeded its progress deadline: {}",
                        stuck.join(", ")
                    ),
                    generation,
                )
            };
            (ready, progressing, degraded)
        }
    };
    let phase = if degraded.status == "True" {
        Phase::Degraded
    } else if ready.status == "True" {
        Phase::Ready
    } else {
        Phase::Progressing
    };
    let mut conditions = vec![ready, progressing, degraded];
    let mut backups = BTreeMap::new();
    if store.spec.backup.is_some() {
        match observed {
            Some(o) => {
                let mut failed = Vec::new();
                for c in store.spec.operated_databases() {
                    backups.insert(c.name().to_string(), backup_status(o.cron_jobs.get(&c)));
                    let jobs = o.backup_jobs.get(&c).map_or(&[][..], Vec::as_slice);
                    if let Some(why) = backup_failure(jobs) {
                        failed.push(format!("{}: {why}", c.name()));
                    }
                }
                conditions.push(if failed.is_empty() {
                    condition(
                        BACKUP_FAILED,
                        false,
                        "BackupsSucceeded",
                        "no database's latest backup failed".into(),
                        generation,
                    )
                } else {
                    condition(
                        BACKUP_FAILED,
                        true,
                        "BackupJobFailed",
                        format!("the latest backup failed: {}", failed.join("; ")),
                        generation,
                    )
                });
            }
            // The children could not be read: what was known stands.
            None => {
                backups = previous.backups.clone();
                conditions.extend(
                    previous
                        .conditions
                        .iter()
                        .find(|c| c.type_ == BACKUP_FAILED)
                        .cloned(),
                );
            }
        }
    }
    match observed {
        Some(o) if !o.blocked_upgrades.is_empty() => conditions.push(condition(
            UPGRADE_BLOCKED,
            true,
            "MajorVersionChange",
            upgrade_blocked_message(&o.blocked_upgrades),
            generation,
        )),
        Some(_) => {}
        // The children could not be read: what was known stands.
        None => conditions.extend(
            previous
                .conditions
                .iter()
                .find(|c| c.type_ == UPGRADE_BLOCKED)
                .cloned(),
        ),
    }
    carry_transition_times(&mut conditions, &previous.conditions, now);

    StoreStatus {
        observed_generation: generation,
        phase: Some(phase),
        conditions,
        components,
        endpoint,
        admin_secret: Some(names::admin_secret(&name)),
        // The rotation's own step (reconciler::rotation) sets this; kept as it was here.
        signing_key: previous.signing_key.clone(),
        backups,
    }
}

/// Now, truncated to whole seconds (the precision of `metav1.Time`).
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn endpoint_follows_the_gateway_service_type() {
        let cluster_ip = svc(json!({"spec": {"type": "ClusterIP"}}));
        assert_eq!(
            endpoint("demo", "shop", &cluster_ip),
            "http://demo-gateway.shop.svc:8080"
        );
        let node_port = svc(
            json!({"spec": {"type": "NodePort", "ports": [{"port": 8080, "nodePort": 30080}]}}),
        );
        assert_eq!(
            endpoint("demo", "shop", &node_port),
            "http://<node-address>:30080"
        );
        let pending = svc(json!({"spec": {"type": "LoadBalancer"}}));
        assert_eq!(
            endpoint("demo", "shop", &pending),
            "http://demo-gateway.shop.svc:8080"
        );
        let lb = svc(
            json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}),
        );
        assert_eq!(endpoint("demo", "shop", &lb), "http://203.0.113.7:8080");
    }

    #[test]
    fn a_workload_whose_controller_lags_the_spec_counts_as_not_ready() {
        assert_eq!(current_ready(Some(2), Some(1), Some(3), Some(3)), 0);
        assert_eq!(
            current_ready(Some(2), Some(2), Some(3), Some(1)),
            1,
            "only updated replicas count"
        );
        assert_eq!(current_ready(Some(2), Some(2), None, None), 0);
    }
}
