//! Backups and restore: the children `spec.backup` and `database.restoreFrom` add, what
//! the reconciler does with them (the claim outlives everything), and the backup status.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PersistentVolumeClaim, PodSpec};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::controller::Action;
use mercato_contract::{Component, POSTGRES_PORT, names, secret_keys};
use serde_json::{Value, json};

use super::builders::{assert_restricted, component_of, secret_ref, statefulset, value, var};
use super::fixtures::NAMESPACE;
use super::reconcile::Harness;
use crate::builders::{backup, database, secrets};
use crate::crd::{BackupSpec, DeletionPolicy, RestoreFrom, Store};
use crate::images::ImageDefaults;
use crate::meta::Role;
use crate::status::BACKUP_FAILED;

fn with_backup() -> Store {
    Store::test().with(|s| {
        s.backup = Some(BackupSpec {
            schedule: "17 3 * * *".into(),
            retention: 9,
            target: Default::default(),
            image: None,
        })
    })
}

fn restoring(c: Component) -> Store {
    Store::test().with(|s| {
        let restore = Some(RestoreFrom {
            claim_name: Some("old-backups".into()),
            s3: None,
            file: "20261203T165513Z.dump".into(),
        });
        match c {
            Component::Auth => s.auth.database.restore_from = restore,
            Component::Product => s.product.database.restore_from = restore,
            Component::Order => s.order.database.restore_from = restore,
            _ => s.payment.database.restore_from = restore,
        }
    })
}

/// The children of `store` of kind `K`, parsed.
pub(super) fn of_kind<K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned>(
    store: &Store,
) -> Vec<K> {
    store
        .children()
        .0
        .into_iter()
        .filter(|c| c.kind() == K::kind(&()))
        .map(|c| serde_json::from_value(c.object).unwrap())
        .collect()
}

/// A container's mounts: volume, path, and whether read-only.
pub(super) fn mounts(container: &Container) -> Vec<(String, String, bool)> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            (
                m.name.clone(),
                m.mount_path.clone(),
                m.read_only == Some(true),
            )
        })
        .collect()
}

pub(super) fn job_pod(job: &CronJob) -> &PodSpec {
    job.spec
        .as_ref()
        .unwrap()
        .job_template
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

pub(super) fn sts_pod(sts: &StatefulSet) -> &PodSpec {
    sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

pub(super) fn policy(store: &Store, name: &str) -> NetworkPolicy {
    of_kind::<NetworkPolicy>(store)
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no NetworkPolicy {name}"))
}

/// The components whose pods a policy's ingress (or egress) rules name, with the ports.
fn peers(p: &NetworkPolicy, egress: bool) -> BTreeSet<(String, i32)> {
    let spec = p.spec.clone().unwrap();
    let rules: Vec<_> = if egress {
        spec.egress
            .into_iter()
            .flatten()
            .map(|r| (r.to, r.ports))
            .collect()
    } else {
        spec.ingress
            .into_iter()
            .flatten()
            .map(|r| (r.from, r.ports))
            .collect()
    };
    let mut out = BTreeSet::new();
    for (peers, ports) in rules {
        for peer in peers.into_iter().flatten() {
            for port in ports.iter().flatten() {
                let Some(IntOrString::Int(n)) = port.port else {
                    panic!("ports are numbers")
                };
                out.insert((component_of(peer.pod_selector.as_ref().unwrap()), n));
            }
        }
    }
    out
}

#[test]
fn without_backup_a_store_has_no_cron_job_claim_or_scripts() {
    let store = Store::test();
    assert!(of_kind::<CronJob>(&store).is_empty());
    assert!(of_kind::<PersistentVolumeClaim>(&store).is_empty());
    assert!(of_kind::<ConfigMap>(&store).is_empty());
    let db = policy(&store, "demo-order-db");
    assert_eq!(
        peers(&db, false),
        BTreeSet::from([("order".into(), i32::from(POSTGRES_PORT))]),
        "only the order service reaches its database"
    );
}

#[test]
fn each_database_gets_a_cron_job_that_runs_backup_sh_in_its_own_image() {
    let store = with_backup().with(|s| s.product.database.image = Some("postgres:17.2".into()));
    let jobs = of_kind::<CronJob>(&store);
    let names: Vec<String> = jobs
        .iter()
        .map(|j| j.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "demo-auth-db-backup",
            "demo-product-db-backup",
            "demo-order-db-backup",
            "demo-payment-db-backup"
        ]
    );
    for (job, c) in jobs.iter().zip(Component::WITH_DATABASE) {
        let what = c.name();
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.schedule, "17 3 * * *");
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        assert!(spec.successful_jobs_history_limit.unwrap() <= 3);
        assert!(spec.failed_jobs_history_limit.unwrap() <= 3);
        let job_spec = spec.job_template.spec.as_ref().unwrap();
        assert!(job_spec.backoff_limit.unwrap() <= 3);
        assert!(job_spec.active_deadline_seconds.is_some());
        // The Jobs and their pods carry the labels the operator watches and the policies select.
        let role = Role::backup(c);
        for labels in [
            spec.job_template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .as_ref()
                .unwrap(),
            job_spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .as_ref()
                .unwrap(),
        ] {
            assert_eq!(labels["app.kubernetes.io/component"], role.component);
            assert_eq!(labels["app.kubernetes.io/instance"], "demo");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "mercato-operator");
        }

        let pod = job_pod(job);
        assert_restricted(pod, what);
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(
            (psc.run_as_user, psc.fs_group),
            (Some(999), Some(999)),
            "{what}"
        );
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let container = &pod.containers[0];
        let image = if c == Component::Product {
            "postgres:17.2"
        } else {
            "postgres:17"
        };
        assert_eq!(container.image.as_deref(), Some(image), "{what}");
        assert_eq!(
            container.command.as_deref(),
            Some(&["sh".to_string(), "/scripts/backup.sh".to_string()][..])
        );
        assert!(container.resources.as_ref().unwrap().limits.is_some());

        let env = container.env.clone().unwrap();
        assert_eq!(
            value(&env, "PGHOST"),
            format!("demo-{what}-db.{NAMESPACE}.svc")
        );
        assert_eq!(value(&env, "PGPORT"), "5432");
        let creds = names::db_credentials_secret("demo", c);
        for (var_name, key) in [
            ("PGUSER", secret_keys::DB_USERNAME),
            ("PGPASSWORD", secret_keys::DB_PASSWORD),
            ("PGDATABASE", secret_keys::DB_DATABASE),
        ] {
            assert_eq!(secret_ref(&env, var_name), (creds.clone(), key.to_string()));
        }
        assert_eq!(value(&env, "BACKUP_DIR"), format!("/backups/{what}"));
        assert_eq!(value(&env, "BACKUP_RETENTION"), "9");

        assert_eq!(
            mounts(container),
            [
                ("backups".to_string(), "/backups".to_string(), false),
                ("backup-scripts".into(), "/scripts".into(), true),
                ("tmp".into(), "/tmp".into(), false),
            ]
        );
        let volumes = pod.volumes.as_ref().unwrap();
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "demo-backups"
        );
        let scripts = volumes[1].config_map.as_ref().unwrap();
        assert_eq!(scripts.name, "demo-backup-scripts");
        assert_eq!(scripts.items.as_ref().unwrap()[0].key, "backup.sh");
        assert!(volumes[2].empty_dir.is_some());
    }
}

#[test]
fn the_backup_claim_is_not_owned_by_the_store_and_says_so() {
    let store = with_backup().with(|s| {
        let pvc = s.backup.as_mut().unwrap().target.pvc.as_mut().unwrap();
        pvc.size = "20Gi".into();
        pvc.storage_class_name = Some("slow".into());
    });
    let (children, _) = store.children();
    for child in &children {
        let refs = &child.object["metadata"]["ownerReferences"];
        if child.kind() == "PersistentVolumeClaim" {
            assert!(refs.is_null(), "the backup claim has no owner: {refs}");
        } else {
            assert_eq!(refs[0]["controller"], true, "{}", child.display());
        }
    }
    let claims = of_kind::<PersistentVolumeClaim>(&store);
    assert_eq!(claims.len(), 1);
    let claim = &claims[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("demo-backups"));
    let labels = claim.metadata.labels.as_ref().unwrap();
    for (k, v) in crate::meta::store_labels("demo") {
        assert_eq!(labels.get(&k), Some(&v), "{k}");
    }
    assert!(
        claim.metadata.annotations.as_ref().unwrap()[backup::KEPT_ANNOTATION]
            .contains("not owned by the Store")
    );
    let spec = claim.spec.as_ref().unwrap();
    assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
    assert_eq!(spec.storage_class_name.as_deref(), Some("slow"));
    assert_eq!(
        spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "20Gi"
    );
    // The default size when the Store names none.
    let default = &of_kind::<PersistentVolumeClaim>(&with_backup())[0];
    assert_eq!(
        default
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "5Gi"
    );
}

#[test]
fn the_scripts_config_map_holds_both_scripts_as_committed() {
    let maps = of_kind::<ConfigMap>(&with_backup());
    assert_eq!(maps.len(), 1);
    assert_eq!(
        maps[0].metadata.name.as_deref(),
        Some("demo-backup-scripts")
    );
    let data = maps[0].data.as_ref().unwrap();
    let dir = format!("{}/src/builders/scripts", env!("CARGO_MANIFEST_DIR"));
    for key in ["backup.sh", "restore.sh"] {
        assert_eq!(
            data[key],
            std::fs::read_to_string(format!("{dir}/{key}")).unwrap(),
            "{key}"
        );
    }
}

#[test]
fn backup_pods_may_reach_their_own_database_and_nothing_else() {
    let store = with_backup();
    let port = i32::from(POSTGRES_PORT);
    for c in Component::WITH_DATABASE {
        let what = c.name();
        let own = policy(&store, &format!("demo-{what}-db-backup"));
        assert_eq!(
            component_of(own.spec.as_ref().unwrap().pod_selector.as_ref().unwrap()),
            format!("{what}-db-backup")
        );
        assert_eq!(
            peers(&own, true),
            BTreeSet::from([(format!("{what}-db"), port)])
        );
        assert!(peers(&own, false).is_empty(), "{what}: no ingress");
        let db = policy(&store, &format!("demo-{what}-db"));
        assert_eq!(
            peers(&db, false),
            BTreeSet::from([
                (what.to_string(), port),
                (format!("{what}-db-backup"), port)
            ])
        );
    }
    let off = with_backup().with(|s| s.network_policies.enabled = false);
    assert!(of_kind::<NetworkPolicy>(&off).is_empty());
}

#[test]
fn restore_from_mounts_the_claim_and_the_init_script_on_that_database_only() {
    let store = restoring(Component::Order);
    let sts = statefulset(&store, Component::Order);
    let pod = sts_pod(&sts);
    assert_restricted(pod, "order-db");
    let container = &pod.containers[0];
    let env = container.env.clone().unwrap();
    assert_eq!(value(&env, "RESTORE_DIR"), "/backups/order");
    assert_eq!(value(&env, "RESTORE_FILE"), "20261203T165513Z.dump");
    let mount = |path: &str| {
        container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == path)
            .unwrap_or_else(|| panic!("nothing at {path}"))
            .clone()
    };
    let backups = mount("/backups");
    assert_eq!(backups.read_only, Some(true));
    let initdb = mount("/docker-entrypoint-initdb.d");
    assert_eq!(initdb.read_only, Some(true));
    let volume = |name: &str| {
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap()
            .clone()
    };
    let claim = volume(&backups.name).persistent_volume_claim.unwrap();
    assert_eq!(
        (claim.claim_name.as_str(), claim.read_only),
        ("old-backups", Some(true))
    );
    let scripts = volume(&initdb.name).config_map.unwrap();
    assert_eq!(scripts.name, "demo-backup-scripts");
    let items = scripts.items.unwrap();
    assert_eq!(items.len(), 1, "only restore.sh is an init script");
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("restore.sh", "restore.sh")
    );
    assert_eq!(
        scripts.default_mode,
        Some(0o644),
        "not executable: the entrypoint sources it"
    );
    let readiness = container
        .readiness_probe
        .as_ref()
        .unwrap()
        .exec
        .as_ref()
        .unwrap();
    assert!(
        readiness.command.as_ref().unwrap()[2]
            .starts_with("[ ! -e \"$PGDATA/mercato-restore-failed\" ] && exec pg_isready"),
        "{readiness:?}"
    );

    // The other databases are exactly what they are without a restore (the same Secrets,
    // the same pod template hash): nothing rolls.
    let plain = Store::test();
    let data = secrets::generate("demo");
    let sts_of = |store: &Store, c: Component| {
        let db = &store.spec.service(c).unwrap().database;
        serde_json::to_value(database::stateful_set(
            &store.owner(),
            &store.spec,
            &ImageDefaults::default(),
            db,
            c,
            &data,
        ))
        .unwrap()
    };
    for c in [Component::Auth, Component::Product, Component::Payment] {
        let sts = sts_of(&store, c);
        assert_eq!(sts, sts_of(&plain, c), "{c}");
        assert!(!sts.to_string().contains("restore"), "{c}");
    }
    assert_ne!(
        sts_of(&store, Component::Order),
        sts_of(&plain, Component::Order)
    );
    // The scripts exist without a backup schedule, and no CronJob or claim does.
    assert_eq!(of_kind::<ConfigMap>(&store).len(), 1);
    assert!(of_kind::<CronJob>(&store).is_empty());
    assert!(of_kind::<PersistentVolumeClaim>(&store).is_empty());
    let plain_order = statefulset(&plain, Component::Order);
    let plain_env = sts_pod(&plain_order).containers[0].env.clone().unwrap();
    assert!(var(&plain_env, "RESTORE_FILE").is_none());
}

// --- The reconciler ---------------------------------------------------------------------

pub(super) fn set_backup(h: &Harness, backup: Value) {
    h.fake.edit(
        "stores",
        NAMESPACE,
        "demo",
        "kubectl-edit",
        json!({"spec": {"backup": backup}}),
    );
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn a_store_without_backup_gets_no_cron_job_claim_or_scripts() {
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    assert!(h.fake.names("cronjobs").is_empty());
    assert!(h.fake.names("persistentvolumeclaims").is_empty());
    assert!(h.fake.names("configmaps").is_empty());
}

#[tokio::test]
async fn turning_backup_off_deletes_the_cron_jobs_and_scripts_but_keeps_the_claim() {
    let h = Harness::new(with_backup());
    h.reconcile().await.unwrap();
    assert_eq!(
        sorted(h.fake.names("cronjobs")),
        [
            "demo-auth-db-backup",
            "demo-order-db-backup",
            "demo-payment-db-backup",
            "demo-product-db-backup"
        ]
    );
    let claim = h
        .get("persistentvolumeclaims", "demo-backups")
        .expect("the backup claim");
    assert!(
        claim["metadata"].get("ownerReferences").is_none(),
        "{claim}"
    );
    assert!(h.get("configmaps", "demo-backup-scripts").is_some());
    assert!(h.get("networkpolicies", "demo-order-db-backup").is_some());

    set_backup(&h, Value::Null);
    h.reconcile().await.unwrap();
    assert!(h.fake.names("cronjobs").is_empty());
    assert!(h.get("configmaps", "demo-backup-scripts").is_none());
    assert!(h.get("networkpolicies", "demo-order-db-backup").is_none());
    assert!(
        h.get("persistentvolumeclaims", "demo-backups").is_some(),
        "the backups stay"
    );
    let db = &h.get("networkpolicies", "demo-order-db").unwrap()["spec"]["ingress"][0]["from"];
    assert_eq!(
        db.as_array().unwrap().len(),
        1,
        "only the service reaches its database: {db}"
    );
    assert!(
        h.fake
            .writes()
            .contains(&"DELETE cronjobs/demo-order-db-backup".to_string())
    );
    assert!(
        !h.fake
            .writes()
            .iter()
            .any(|w| w.contains("persistentvolumeclaims")),
        "{:?}",
        h.fake.writes()
    );
}

#[tokio::test]
async fn a_restoring_store_without_a_schedule_gets_the_scripts_only() {
    let h = Harness::new(restoring(Component::Auth));
    h.reconcile().await.unwrap();
    assert!(h.get("configmaps", "demo-backup-scripts").is_some());
    assert!(h.fake.names("cronjobs").is_empty());
    assert!(h.fake.names("persistentvolumeclaims").is_empty());
    let sts = h.get("statefulsets", "demo-auth-db").unwrap();
    assert!(sts.to_string().contains("old-backups"));
}

#[tokio::test]
async fn deleting_a_store_with_policy_delete_keeps_the_backup_claim() {
    let h = Harness::new(with_backup().with(|s| s.deletion_policy = DeletionPolicy::Delete));
    h.reconcile().await.unwrap();
    h.fake.insert(
        "persistentvolumeclaims",
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "data-demo-auth-db-0", "namespace": NAMESPACE,
                            "labels": crate::meta::labels("demo", &Role::database(Component::Auth))}}),
    );
    let mut store = h.store();
    store.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    h.fake
        .insert("stores", serde_json::to_value(&store).unwrap());
    assert_eq!(h.reconcile().await.unwrap(), Action::await_change());
    assert_eq!(h.fake.names("persistentvolumeclaims"), ["demo-backups"]);
    assert!(
        h.fake
            .writes()
            .contains(&"DELETE persistentvolumeclaims/data-demo-auth-db-0".to_string())
    );
    assert!(
        h.events().iter().any(|(reason, note)| reason == "Cleanup"
            && note.contains("kept the backups in demo-backups"))
    );
    assert!(h.get("stores", "demo").is_none());
}

#[tokio::test]
async fn an_unchanged_store_with_backups_writes_nothing() {
    let h = Harness::new(with_backup());
    h.reconcile().await.unwrap();
    h.reconcile().await.unwrap();
    assert_eq!(h.fake.writes(), Vec::<String>::new());
    h.roll_out();
    h.reconcile().await.unwrap();
    assert_eq!(h.fake.writes(), vec!["PATCH stores/demo/status"]);
    h.reconcile().await.unwrap();
    assert_eq!(h.fake.writes(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synced_watch_caches_an_unchanged_store_with_backups_costs_no_requests() {
    let (h, cache) = Harness::with_cache(with_backup()).await;
    h.reconcile().await.unwrap();
    h.roll_out();
    h.settle(&cache).await;
    h.reconcile().await.unwrap();
    h.settle(&cache).await;
    h.reconcile().await.unwrap();
    assert_eq!(
        h.fake.requests(),
        Vec::new(),
        "no read of a child, a claim or a Job"
    );
}

fn backup_job(c: Component, name: &str, created: &str, outcome: &str) -> Value {
    let condition = match outcome {
        "Failed" => json!({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                           "message": "Job has reached the specified backoff limit"}),
        _ => json!({"type": "Complete", "status": "True"}),
    };
    json!({"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": name, "namespace": NAMESPACE, "creationTimestamp": created,
                        "labels": crate::meta::labels("demo", &Role::backup(c))},
           "status": {"conditions": [condition]}})
}

fn backup_failed(h: &Harness) -> Option<(String, String, String)> {
    let status = h.store().status?;
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == BACKUP_FAILED)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn status_shows_each_databases_last_backup() {
    let h = Harness::new(with_backup());
    h.reconcile().await.unwrap();
    assert_eq!(backup_failed(&h).unwrap().0, "False");
    h.fake.set_status(
        "cronjobs",
        NAMESPACE,
        "demo-order-db-backup",
        json!({"lastScheduleTime": "2026-12-03T03:17:00Z", "lastSuccessfulTime": "2026-12-03T03:17:42Z"}),
    );
    h.reconcile().await.unwrap();
    let backups = h.store().status.unwrap().backups;
    assert_eq!(
        backups.keys().cloned().collect::<Vec<_>>(),
        ["auth", "order", "payment", "product"]
    );
    let order = &backups["order"];
    assert_eq!(
        order.last_successful_time.as_ref().map(|t| t.0.to_string()),
        Some("2026-12-03T03:17:42Z".to_string())
    );
    assert_eq!(
        order.last_schedule_time.as_ref().map(|t| t.0.to_string()),
        Some("2026-12-03T03:17:00Z".to_string())
    );
    assert_eq!(backups["auth"], Default::default(), "auth has not run yet");

    // Without backups, no backup status and no condition.
    set_backup(&h, Value::Null);
    h.reconcile().await.unwrap();
    assert!(h.store().status.unwrap().backups.is_empty());
    assert_eq!(backup_failed(&h), None);
}

#[tokio::test]
async fn a_failed_latest_backup_sets_backup_failed_with_one_warning() {
    let h = Harness::new(with_backup());
    h.reconcile().await.unwrap();
    let order = Component::Order;
    h.fake.insert(
        "jobs",
        backup_job(
            order,
            "demo-order-db-backup-1",
            "2026-12-01T03:17:00Z",
            "Complete",
        ),
    );
    h.fake.insert(
        "jobs",
        backup_job(
            order,
            "demo-order-db-backup-2",
            "2026-12-02T03:17:00Z",
            "Failed",
        ),
    );
    // An older failure of another database that a later run made good.
    h.fake.insert(
        "jobs",
        backup_job(
            Component::Auth,
            "demo-auth-db-backup-1",
            "2026-12-01T03:17:00Z",
            "Failed",
        ),
    );
    h.fake.insert(
        "jobs",
        backup_job(
            Component::Auth,
            "demo-auth-db-backup-2",
            "2026-12-02T03:17:00Z",
            "Complete",
        ),
    );
    h.reconcile().await.unwrap();
    let (status, reason, message) = backup_failed(&h).unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "BackupJobFailed")
    );
    assert!(
        message.contains("order: Job demo-order-db-backup-2 failed: BackoffLimitExceeded"),
        "{message}"
    );
    assert!(!message.contains("auth"), "{message}");
    let warnings = |h: &Harness| {
        h.events()
            .into_iter()
            .filter(|(reason, _)| reason == BACKUP_FAILED)
            .count()
    };
    assert_eq!(warnings(&h), 1);

    // Reconciled again, unchanged: no second warning, no write.
    h.reconcile().await.unwrap();
    assert_eq!(warnings(&h), 1);
    assert_eq!(h.fake.writes(), Vec::<String>::new());

    // The next run succeeds.
    h.fake.insert(
        "jobs",
        backup_job(
            order,
            "demo-order-db-backup-3",
            "2026-12-03T03:17:00Z",
            "Complete",
        ),
    );
    h.reconcile().await.unwrap();
    assert_eq!(backup_failed(&h).unwrap().0, "False");
}

#[test]
fn the_latest_finished_backup_job_decides_and_a_running_one_hides_nothing() {
    let job = |name: &str, created: &str, outcome: Option<&str>| {
        let mut v = backup_job(
            Component::Order,
            name,
            created,
            outcome.unwrap_or("Complete"),
        );
        if outcome.is_none() {
            v["status"] = json!({"active": 1});
        }
        serde_json::from_value::<k8s_openapi::api::batch::v1::Job>(v).unwrap()
    };
    let failed = job(
        "demo-order-db-backup-2",
        "2026-12-02T03:17:00Z",
        Some("Failed"),
    );
    let running = job("demo-order-db-backup-3", "2026-12-03T03:17:00Z", None);
    let older_ok = job(
        "demo-order-db-backup-1",
        "2026-12-01T03:17:00Z",
        Some("Complete"),
    );
    let why = crate::status::backup_failure(&[running.clone(), failed.clone(), older_ok.clone()]);
    assert!(
        why.as_deref().is_some_and(
            |w| w.starts_with("Job demo-order-db-backup-2 failed: BackoffLimitExceeded")
        ),
        "{why:?}"
    );
    let newer_ok = job(
        "demo-order-db-backup-4",
        "2026-12-04T03:17:00Z",
        Some("Complete"),
    );
    assert_eq!(
        crate::status::backup_failure(&[failed, running, newer_ok]),
        None
    );
    assert_eq!(crate::status::backup_failure(&[]), None);
}
