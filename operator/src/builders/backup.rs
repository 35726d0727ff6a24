//! Backups (`spec.backup`): the claim they are written to (or the bucket they are uploaded
//! to), the scripts that write and restore them, and one CronJob per database that runs
//! `pg_dump` in the database's image.
//!
//! The claim is the one child the Store does not own: deleting the Store (whatever its
//! deletion policy) or turning backups off must never take the backups with it.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EnvVar, KeyToPath, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mercato_contract::{Component, POSTGRES_PORT, names, secret_keys};

use super::database::POSTGRES_UID;
use super::pod::{empty_dir, env_from_secret, env_value, mount};
use super::security::{container_security_context, pod_security_context};
use crate::crd::{
    BackupSpec, Destination, ImagePullPolicy, PvcTarget, S3Target, StoreSpec, resources,
};
use crate::images::ImageDefaults;
use crate::meta::{Owner, Role, labels};

/// `backup.sh`: one checked dump of one database, pruned to the retention.
pub const BACKUP_SCRIPT: &str = include_str!("scripts/backup.sh");
/// `restore.sh`: the init script that fills a new database from a dump.
pub const RESTORE_SCRIPT: &str = include_str!("scripts/restore.sh");
pub const BACKUP_SCRIPT_KEY: &str = "backup.sh";
pub const RESTORE_SCRIPT_KEY: &str = "restore.sh";

/// Where the backup claim is mounted, in the backup pods and in a restoring database.
pub const BACKUPS_MOUNT: &str = "/backups";
/// Where the backup pods find the scripts.
const SCRIPTS_MOUNT: &str = "/scripts";
/// Volume names in the pods.
pub const BACKUPS_VOLUME: &str = "backups";
pub const SCRIPTS_VOLUME: &str = "backup-scripts";

/// Annotation on the backup claim saying why it has no owner.
pub const KEPT_ANNOTATION: &str = "mercato.dev/kept";
const KEPT_NOTE: &str = "the Store's backups: not owned by the Store, so neither deleting it (whatever its deletionPolicy) nor turning spec.backup off deletes this claim; delete it by hand when the backups are no longer wanted";

/// The backup claim of Store `store` (also the default `restoreFrom.claimName` of a Store
/// restoring another one's backups).
pub fn claim_name(store: &str) -> String {
    format!("{store}-backups")
}

/// The ConfigMap holding both scripts.
pub fn scripts_name(store: &str) -> String {
    format!("{store}-backup-scripts")
}

/// The backup CronJob of component `c`'s database, and the NetworkPolicy of its pods.
pub fn cron_job_name(store: &str, c: Component) -> String {
    format!("{store}-{}-db-backup", c.name())
}

/// Where the dumps of component `c` are, on the backup volume.
pub fn dir(c: Component) -> String {
    format!("{BACKUPS_MOUNT}/{}", c.name())
}

/// Whether the Store needs the scripts: to back up, or to restore a database.
pub fn needs_scripts(spec: &StoreSpec) -> bool {
    spec.backup.is_some()
        || spec
            .operated_databases()
            .filter_map(|c| spec.service(c))
            .any(|s| s.database.restore_from.is_some())
}

/// The claim the dumps are written to: no owner reference, on purpose.
pub fn claim(owner: &Owner, target: &PvcTarget) -> PersistentVolumeClaim {
    let mut metadata = owner.unowned_meta(claim_name(&owner.name), &Role::backups());
    metadata.annotations = Some(BTreeMap::from([(
        KEPT_ANNOTATION.to_string(),
        KEPT_NOTE.to_string(),
    )]));
    PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: target.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(target.size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// The ConfigMap with `backup.sh` and `restore.sh`.
pub fn scripts(owner: &Owner) -> ConfigMap {
    ConfigMap {
        metadata: owner.child_meta(scripts_name(&owner.name), &Role::backups()),
        data: Some(BTreeMap::from([
            (BACKUP_SCRIPT_KEY.to_string(), BACKUP_SCRIPT.to_string()),
            (RESTORE_SCRIPT_KEY.to_string(), RESTORE_SCRIPT.to_string()),
        ])),
        ..ConfigMap::default()
    }
}

/// A volume of one script of the ConfigMap (mode 0644: the postgres entrypoint sources a
/// non-executable init script, and the backup pods run theirs with `sh`).
pub fn script_volume(store: &str, key: &str) -> Volume {
    Volume {
        name: SCRIPTS_VOLUME.to_string(),
        config_map: Some(ConfigMapVolumeSource {
            name: scripts_name(store),
            items: Some(vec![KeyToPath {
                key: key.to_string(),
                path: key.to_string(),
                mode: None,
            }]),
            default_mode: Some(0o644),
            optional: None,
        }),
        ..Volume::default()
    }
}

/// A volume of the claim `claim_name`.
pub fn claim_volume(claim_name: &str, read_only: bool) -> Volume {
    Volume {
        name: BACKUPS_VOLUME.to_string(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim_name.to_string(),
            read_only: read_only.then_some(true),
        }),
        ..Volume::default()
    }
}

/// Longest a backup run may take before it counts as failed.
pub const ACTIVE_DEADLINE_SECONDS: i64 = 3600;
/// Retries of a failed run (on a new pod) before the Job fails.
pub const BACKOFF_LIMIT: i32 = 2;
/// Finished Jobs kept of each outcome: the latest tells whether the last backup failed.
pub const HISTORY_LIMIT: i32 = 3;

/// Where a bucket backup's pod keeps the dump between checking and uploading it.
const WORK_MOUNT: &str = "/work";
const WORK_VOLUME: &str = "work";

/// The variables `mercato-backup` reads: the bucket `s3`, the folder of Store `store`'s
/// dumps of component `c`, and the credentials from the Secret the Store names.
pub fn s3_env(s3: &S3Target, store: &str, c: Component) -> Vec<EnvVar> {
    let secret = &s3.credentials_secret;
    let mut session_token = env_from_secret("AWS_SESSION_TOKEN", secret, "AWS_SESSION_TOKEN");
    if let Some(source) = session_token
        .value_from
        .as_mut()
        .and_then(|v| v.secret_key_ref.as_mut())
    {
        source.optional = Some(true);
    }
    vec![
        env_value("S3_ENDPOINT", s3.endpoint.clone()),
        env_value("S3_BUCKET", s3.bucket.clone()),
        env_value("S3_REGION", s3.region.clone()),
        env_value("S3_URL_STYLE", s3.url_style.as_str()),
        env_value("S3_PREFIX", s3.prefix_of(store, c)),
        env_from_secret("AWS_ACCESS_KEY_ID", secret, "AWS_ACCESS_KEY_ID"),
        env_from_secret("AWS_SECRET_ACCESS_KEY", secret, "AWS_SECRET_ACCESS_KEY"),
        session_token,
    ]
}

/// A container running `mercato-backup` (in `image`) with `args`.
pub fn tool_container(
    name: &str,
    image: String,
    pull_policy: ImagePullPolicy,
    args: &[&str],
    env: Vec<EnvVar>,
    mounts: Vec<VolumeMount>,
) -> Container {
    Container {
        name: name.to_string(),
        image: Some(image),
        image_pull_policy: Some(pull_policy.as_str().to_string()),
        args: Some(args.iter().map(|a| a.to_string()).collect()),
        env: Some(env),
        // Parts of a dump are held in memory while they upload (16 MiB each).
        resources: Some(resources(("20m", "32Mi"), ("500m", "128Mi"))),
        security_context: Some(container_security_context()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// The CronJob that backs up component `c`'s database (settings `spec`): `backup.sh` runs
/// `pg_dump` in `db_image` (the database's own, which has `pg_dump`, `pg_restore` and
/// `sh`), as the postgres user. To a claim, it writes and prunes there. To a bucket, it
/// writes into a scratch volume in an init container, and `mercato-backup` (`images`'
/// backup image, or the Store's) uploads the checked dump and prunes the bucket.
pub fn cron_job(
    owner: &Owner,
    spec: &StoreSpec,
    backup: &BackupSpec,
    images: &ImageDefaults,
    db_image: &str,
    c: Component,
) -> CronJob {
    let role = Role::backup(c);
    let creds = names::db_credentials_secret(&owner.name, c);
    let dump = |volume: &str, at: &str, retention: i32| Container {
        name: "backup".to_string(),
        image: Some(db_image.to_string()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().to_string()),
        command: Some(vec![
            "sh".to_string(),
            format!("{SCRIPTS_MOUNT}/{BACKUP_SCRIPT_KEY}"),
        ]),
        env: Some(vec![
            env_value("PGHOST", owner.database_host(c)),
            env_value("PGPORT", POSTGRES_PORT.to_string()),
            env_from_secret("PGUSER", &creds, secret_keys::DB_USERNAME),
            env_from_secret("PGPASSWORD", &creds, secret_keys::DB_PASSWORD),
            env_from_secret("PGDATABASE", &creds, secret_keys::DB_DATABASE),
            env_value("BACKUP_DIR", format!("{at}/{}", c.name())),
            env_value("BACKUP_RETENTION", retention.to_string()),
        ]),
        resources: Some(resources(("50m", "64Mi"), ("500m", "256Mi"))),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![
            mount(volume, at, false),
            mount(SCRIPTS_VOLUME, SCRIPTS_MOUNT, true),
            mount("tmp", "/tmp", false),
        ]),
        ..Container::default()
    };
    let (init_containers, containers, first_volume) = match backup.target.destination() {
        Destination::Pvc(_) => (
            None,
            vec![dump(BACKUPS_VOLUME, BACKUPS_MOUNT, backup.retention)],
            claim_volume(&claim_name(&owner.name), false),
        ),
        Destination::S3(s3) => {
            // The scratch volume holds this run's dump only: retention is the bucket's.
            let from = format!("{WORK_MOUNT}/{}", c.name());
            let mut env = s3_env(s3, &owner.name, c);
            env.push(env_value("BACKUP_RETENTION", backup.retention.to_string()));
            let upload = tool_container(
                "upload",
                spec.backup_image(images),
                spec.image_pull_policy,
                &["push", "--from", &from],
                env,
                vec![mount(WORK_VOLUME, WORK_MOUNT, true)],
            );
            (
                Some(vec![dump(WORK_VOLUME, WORK_MOUNT, 1)]),
                vec![upload],
                empty_dir(WORK_VOLUME),
            )
        }
    };
    let pod_meta = ObjectMeta {
        labels: Some(labels(&owner.name, &role)),
        ..ObjectMeta::default()
    };
    CronJob {
        metadata: owner.child_meta(cron_job_name(&owner.name, c), &role),
        spec: Some(CronJobSpec {
            schedule: backup.schedule.clone(),
            concurrency_policy: Some("Forbid".to_string()),
            successful_jobs_history_limit: Some(HISTORY_LIMIT),
            failed_jobs_history_limit: Some(HISTORY_LIMIT),
            job_template: JobTemplateSpec {
                // The Jobs carry the labels too: the operator watches them to tell a failed run.
                metadata: Some(pod_meta.clone()),
                spec: Some(JobSpec {
                    backoff_limit: Some(BACKOFF_LIMIT),
                    active_deadline_seconds: Some(ACTIVE_DEADLINE_SECONDS),
                    template: PodTemplateSpec {
                        metadata: Some(pod_meta),
                        spec: Some(PodSpec {
                            restart_policy: Some("Never".to_string()),
                            automount_service_account_token: Some(false),
                            enable_service_links: Some(false),
                            security_context: Some(pod_security_context(POSTGRES_UID)),
                            init_containers,
                            containers,
                            volumes: Some(vec![
                                first_volume,
                                script_volume(&owner.name, BACKUP_SCRIPT_KEY),
                                empty_dir("tmp"),
                            ]),
                            image_pull_secrets: spec.pull_secrets(),
                            ..PodSpec::default()
                        }),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        status: None,
    }
}
