//! Per backend service: a PostgreSQL StatefulSet (one pod, one volume claim) and the
//! headless Service that names it, runnable under the `restricted` Pod Security Standard.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, ExecAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSpec, PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mercato_contract::{Component, POSTGRES_PORT, names, secret_keys};

use super::backup;
use super::pod::{empty_dir, env_from_secret, env_value, mount};
use super::security::{container_security_context, pod_security_context};
use super::{SecretData, config_hash};
use crate::crd::{DatabaseSpec, StoreSpec};
use crate::images::ImageDefaults;
use crate::meta::{CONFIG_HASH_ANNOTATION, Owner, Role, labels, selector, selector_labels};

/// uid, gid and fsGroup of the official (Debian) postgres image's `postgres` user.
pub const POSTGRES_UID: i64 = 999;
/// Where the data volume is mounted.
pub const DATA_MOUNT: &str = "/var/lib/postgresql/data";
/// `PGDATA`: a subdirectory, since the volume root may hold `lost+found`.
pub const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
/// Name of the volume claim template; claims are `data-<store>-<c>-db-0`.
pub const DATA_VOLUME: &str = "data";
pub const POSTGRES_PORT_NAME: &str = "postgres";
/// Name of the PostgreSQL container.
pub const CONTAINER: &str = "postgres";
/// Name of the init container that fetches a restore's dump from a bucket.
pub const FETCH_CONTAINER: &str = "fetch-backup";

/// The postgres image's own settings (not Mercato names, so not in the contract).
const POSTGRES_USER: &str = "POSTGRES_USER";
const POSTGRES_PASSWORD: &str = "POSTGRES_PASSWORD";
const POSTGRES_DB: &str = "POSTGRES_DB";
const PGDATA_ENV: &str = "PGDATA";

/// The file `restore.sh` leaves in `PGDATA` when a restore failed.
pub const RESTORE_FAILED_MARKER: &str = "mercato-restore-failed";
/// Where the postgres image's entrypoint looks for init scripts (run on a new data
/// directory only).
pub const INITDB_DIR: &str = "/docker-entrypoint-initdb.d";

/// `pg_isready` over TCP as the configured user and database: over TCP so that the
/// entrypoint's temporary init server (socket only) does not count as ready. With
/// `restoring`, never ready while `restore.sh`'s failure marker exists, so a store whose
/// restore failed does not start on an empty database.
fn pg_isready_probe(period: i32, failures: i32, restoring: bool) -> Probe {
    let isready = format!(
        "exec pg_isready -U \"${POSTGRES_USER}\" -d \"${POSTGRES_DB}\" -h 127.0.0.1 -p {POSTGRES_PORT}"
    );
    let script = if restoring {
        format!("[ ! -e \"${PGDATA_ENV}/{RESTORE_FAILED_MARKER}\" ] && {isready}")
    } else {
        isready
    };
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["sh".to_string(), "-c".to_string(), script]),
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// The PostgreSQL StatefulSet of component `c`, whose settings are `db`.
pub fn stateful_set(
    owner: &Owner,
    spec: &StoreSpec,
    images: &ImageDefaults,
    db: &DatabaseSpec,
    c: Component,
    secrets: &SecretData,
) -> StatefulSet {
    let pull_policy = spec.image_pull_policy;
    let role = Role::database(c);
    let name = names::database(&owner.name, c);
    let creds = names::db_credentials_secret(&owner.name, c);
    let mut env = vec![
        env_from_secret(POSTGRES_USER, &creds, secret_keys::DB_USERNAME),
        env_from_secret(POSTGRES_PASSWORD, &creds, secret_keys::DB_PASSWORD),
        env_from_secret(POSTGRES_DB, &creds, secret_keys::DB_DATABASE),
        EnvVar {
            name: PGDATA_ENV.to_string(),
            value: Some(PGDATA.to_string()),
            value_from: None,
        },
    ];
    let mut mounts = vec![
        mount(DATA_VOLUME, DATA_MOUNT, false),
        mount("run", "/var/run/postgresql", false),
        mount("tmp", "/tmp", false),
    ];
    let mut volumes = vec![empty_dir("run"), empty_dir("tmp")];
    // Only what a restore needs is added, so a database that restores nothing keeps the pod
    // template it always had (and an operator upgrade rolls no database).
    let restoring = db.restore_from.is_some();
    let mut init_containers = None;
    if let Some(restore) = &db.restore_from {
        env.push(env_value("RESTORE_DIR", backup::dir(c)));
        env.push(env_value("RESTORE_FILE", restore.file.clone()));
        mounts.push(mount(backup::BACKUPS_VOLUME, backup::BACKUPS_MOUNT, true));
        mounts.push(mount(backup::SCRIPTS_VOLUME, INITDB_DIR, true));
        match (&restore.s3, &restore.claim_name) {
            (Some(s3), _) => {
                // The dump is fetched into a scratch volume first, unless the data
                // directory exists (the entrypoint would restore nothing into it).
                let mut fetch_env = backup::s3_env(s3, &owner.name, c);
                fetch_env.push(env_value("RESTORE_FILE", restore.file.clone()));
                let pg_version = format!("{PGDATA}/PG_VERSION");
                init_containers = Some(vec![backup::tool_container(
                    FETCH_CONTAINER,
                    spec.backup_image(images),
                    pull_policy,
                    &[
                        "fetch",
                        "--into",
                        &backup::dir(c),
                        "--unless-exists",
                        &pg_version,
                    ],
                    fetch_env,
                    vec![
                        mount(backup::BACKUPS_VOLUME, backup::BACKUPS_MOUNT, false),
                        mount(DATA_VOLUME, DATA_MOUNT, true),
                    ],
                )]);
                volumes.push(empty_dir(backup::BACKUPS_VOLUME));
            }
            (None, claim) => {
                // The CRD asks for one of the two; a claim is the backups' default place.
                let claim = claim
                    .clone()
                    .unwrap_or_else(|| backup::claim_name(&owner.name));
                volumes.push(backup::claim_volume(&claim, true));
            }
        }
        volumes.push(backup::script_volume(
            &owner.name,
            backup::RESTORE_SCRIPT_KEY,
        ));
    }
    let hash = config_hash(
        secrets,
        std::slice::from_ref(&creds),
        &serde_json::json!({ "env": env, "image": db.image() }),
    );

    let container = Container {
        name: CONTAINER.to_string(),
        image: Some(db.image().to_string()),
        image_pull_policy: Some(pull_policy.as_str().to_string()),
        ports: Some(vec![ContainerPort {
            name: Some(POSTGRES_PORT_NAME.to_string()),
            container_port: i32::from(POSTGRES_PORT),
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        env: Some(env),
        resources: Some(db.resources.clone()),
        readiness_probe: Some(pg_isready_probe(5, 3, restoring)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(30),
            ..pg_isready_probe(10, 6, false)
        }),
        security_context: Some(container_security_context()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            labels: Some(labels(&owner.name, &role)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: db.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(db.storage_size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    };

    StatefulSet {
        metadata: owner.child_meta(name.clone(), &role),
        spec: Some(StatefulSetSpec {
            service_name: Some(name.clone()),
            replicas: Some(1),
            selector: selector(&owner.name, &role),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&owner.name, &role)),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), hash)])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: None,
                    automount_service_account_token: Some(false),
                    // Service URLs come from our own variables; no `<SVC>_PORT` noise in the env.
                    enable_service_links: Some(false),
                    security_context: Some(pod_security_context(POSTGRES_UID)),
                    init_containers,
                    containers: vec![container],
                    volumes: Some(volumes),
                    image_pull_secrets: spec.pull_secrets(),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// Keeps the image of a live database's `fetch-backup` init container in `child` (its
/// desired StatefulSet). That container matters only when the database is created; after,
/// it finds the data directory and fetches nothing, so a new default image of an upgraded
/// operator must not restart the database for it.
pub fn keep_fetch_image(child: &mut crate::child::Child, live: &kube::api::DynamicObject) {
    fn fetch_image(sts: &serde_json::Value) -> Option<&serde_json::Value> {
        sts.pointer("/spec/template/spec/initContainers")?
            .as_array()?
            .iter()
            .find(|c| c["name"] == FETCH_CONTAINER)?
            .get("image")
    }
    // A DynamicObject's `data` is everything but its type and metadata: `spec` included.
    let Some(live_image) = fetch_image(&live.data).cloned() else {
        return;
    };
    if fetch_image(&child.object).is_some_and(|desired| *desired != live_image) {
        child.edit(|sts| {
            let containers = sts.pointer_mut("/spec/template/spec/initContainers");
            for c in containers
                .and_then(|c| c.as_array_mut())
                .into_iter()
                .flatten()
            {
                if c["name"] == FETCH_CONTAINER {
                    c["image"] = live_image.clone();
                }
            }
        });
    }
}

/// The headless Service that gives the PostgreSQL pod a stable DNS name.
pub fn headless_service(owner: &Owner, c: Component) -> Service {
    let role = Role::database(c);
    Service {
        metadata: owner.child_meta(names::database(&owner.name, c), &role),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            selector: Some(selector_labels(&owner.name, &role)),
            ports: Some(vec![ServicePort {
                name: Some(POSTGRES_PORT_NAME.to_string()),
                port: i32::from(POSTGRES_PORT),
                target_port: Some(IntOrString::String(POSTGRES_PORT_NAME.to_string())),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The PostgreSQL major version an image reference names: the leading digits of its tag
/// (`15` for `postgres:15.4-bookworm` and `registry:5000/pg:15@sha256:…`). `None` without a
/// tag, with a tag that does not start with a digit (`latest`), or with a digest only: such
/// images are not compared. Parses as the CRD's rule does (`crd::cel_major_version`).
pub fn major_version(image: &str) -> Option<&str> {
    let name = image.split('@').next().unwrap_or(image);
    let (_, tag) = name.rsplit_once(':')?;
    if tag.contains('/') {
        // `registry:5000/postgres`: the colon is the registry's port.
        return None;
    }
    let digits = tag.find(|c: char| !c.is_ascii_digit()).unwrap_or(tag.len());
    (digits > 0).then(|| &tag[..digits])
}

/// Whether running `desired` on the data directory `live` made would change PostgreSQL's
/// major version, which a server cannot do in place (only when both name one).
pub fn major_upgrade(live: &str, desired: &str) -> bool {
    matches!((major_version(live), major_version(desired)), (Some(l), Some(d)) if l != d)
}

/// The image of the postgres container of a database StatefulSet.
pub fn postgres_image(sts: &StatefulSet) -> Option<&str> {
    sts.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == CONTAINER)?
        .image
        .as_deref()
}
