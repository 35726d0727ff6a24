//! Backups to an S3-compatible bucket, and restores from one: what the operator builds.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Container, PersistentVolumeClaim};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mercato_contract::{Component, POSTGRES_PORT};
use serde_json::{Value, json};

use super::backup::{job_pod, mounts, of_kind, policy, set_backup, sts_pod};
use super::builders::{assert_restricted, secret_ref, statefulset, value, var};
use super::fixtures::NAMESPACE;
use super::reconcile::Harness;
use crate::crd::{BackupSpec, BackupTarget, RestoreFrom, S3Target, Store, UrlStyle};
use crate::images::ImageDefaults;

fn bucket(prefix: Option<&str>) -> S3Target {
    S3Target {
        endpoint: "http://minio.backups.svc:9000".into(),
        bucket: "shop-backups".into(),
        prefix: prefix.map(str::to_string),
        region: "eu-west-1".into(),
        url_style: UrlStyle::Path,
        credentials_secret: "backup-bucket".into(),
    }
}

fn backing_up_to_a_bucket() -> Store {
    Store::test().with(|s| {
        s.backup = Some(BackupSpec {
            schedule: "17 3 * * *".into(),
            retention: 9,
            target: BackupTarget {
                pvc: None,
                s3: Some(bucket(None)),
            },
            image: None,
        })
    })
}

/// What `mercato-backup` is told about the bucket, and where its credentials come from.
fn assert_bucket_env(container: &Container, prefix: &str) {
    let env = container.env.clone().unwrap();
    assert_eq!(value(&env, "S3_ENDPOINT"), "http://minio.backups.svc:9000");
    assert_eq!(value(&env, "S3_BUCKET"), "shop-backups");
    assert_eq!(value(&env, "S3_REGION"), "eu-west-1");
    assert_eq!(value(&env, "S3_URL_STYLE"), "path");
    assert_eq!(value(&env, "S3_PREFIX"), prefix);
    for key in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        assert_eq!(
            secret_ref(&env, key),
            ("backup-bucket".to_string(), key.to_string())
        );
    }
    let optional = |key: &str| {
        var(&env, key)
            .and_then(|v| v.value_from.as_ref()?.secret_key_ref.as_ref()?.optional)
            .unwrap_or(false)
    };
    assert!(!optional("AWS_SECRET_ACCESS_KEY"));
    assert!(
        optional("AWS_SESSION_TOKEN"),
        "only temporary credentials have one"
    );
}

/// The egress rules of a policy as (CIDRs, ports) pairs, for those to addresses.
fn address_egress(p: &NetworkPolicy) -> Vec<(Vec<String>, Vec<i32>)> {
    p.spec
        .clone()
        .unwrap()
        .egress
        .into_iter()
        .flatten()
        .filter(|r| r.to.iter().flatten().any(|peer| peer.ip_block.is_some()))
        .map(|r| {
            let cidrs =
                r.to.iter()
                    .flatten()
                    .filter_map(|peer| Some(peer.ip_block.clone()?.cidr))
                    .collect();
            let ports = r
                .ports
                .iter()
                .flatten()
                .map(|p| match p.port {
                    Some(IntOrString::Int(n)) => n,
                    _ => panic!("ports are numbers"),
                })
                .collect();
            (cidrs, ports)
        })
        .collect()
}

#[test]
fn a_bucket_backup_dumps_in_an_init_container_and_uploads_with_mercato_backup() {
    let store = backing_up_to_a_bucket();
    assert!(
        of_kind::<PersistentVolumeClaim>(&store).is_empty(),
        "a bucket needs no backup claim"
    );
    let jobs = of_kind::<CronJob>(&store);
    assert_eq!(jobs.len(), 4);
    for (job, c) in jobs.iter().zip(Component::WITH_DATABASE) {
        let what = c.name();
        let pod = job_pod(job);
        assert_restricted(pod, what);

        // The dump: backup.sh in the database's image, into the scratch volume, keeping one.
        let init = pod.init_containers.as_ref().unwrap();
        assert_eq!(init.len(), 1);
        let dump = &init[0];
        assert_eq!(dump.image.as_deref(), Some("postgres:17"));
        assert_eq!(
            dump.command.as_deref(),
            Some(&["sh".to_string(), "/scripts/backup.sh".to_string()][..])
        );
        let env = dump.env.clone().unwrap();
        assert_eq!(value(&env, "BACKUP_DIR"), format!("/work/{what}"));
        assert_eq!(value(&env, "BACKUP_RETENTION"), "1");
        assert_eq!(value(&env, "PGHOST"), format!("demo-{what}-db.shop.svc"));
        assert_eq!(mounts(dump)[0], ("work".into(), "/work".into(), false));

        // The upload: mercato-backup pushes that dump and prunes the bucket to 9.
        assert_eq!(pod.containers.len(), 1);
        let upload = &pod.containers[0];
        assert_eq!(upload.image.as_deref(), Some("mercato/backup:0.1.0"));
        assert_eq!(
            upload.args.as_deref(),
            Some(&["push".to_string(), "--from".into(), format!("/work/{what}")][..])
        );
        assert_bucket_env(upload, &format!("demo/{what}"));
        assert_eq!(value(&upload.env.clone().unwrap(), "BACKUP_RETENTION"), "9");
        assert_eq!(mounts(upload), [("work".into(), "/work".into(), true)]);
        assert!(upload.resources.as_ref().unwrap().limits.is_some());

        let volumes = pod.volumes.as_ref().unwrap();
        assert!(volumes[0].empty_dir.is_some() && volumes[0].name == "work");
        assert!(
            volumes.iter().all(|v| v.persistent_volume_claim.is_none()),
            "{what}: no claim"
        );

        // Its pods may reach their database and the bucket's port, anywhere.
        let own = policy(&store, &format!("demo-{what}-db-backup"));
        assert_eq!(
            address_egress(&own),
            [(
                vec!["0.0.0.0/0".to_string(), "::/0".to_string()],
                vec![9000]
            )]
        );
        let egress = own.spec.unwrap().egress.unwrap();
        assert_eq!(egress.len(), 2, "{what}: its database and the bucket");
    }
}

#[test]
fn a_bucket_target_names_its_prefix_and_image_or_gets_the_stores() {
    let store = backing_up_to_a_bucket().with(|s| {
        let b = s.backup.as_mut().unwrap();
        b.image = Some("registry.example/tools/backup:7".into());
        b.target.s3 = Some(S3Target {
            endpoint: "https://s3.eu-west-1.amazonaws.com".into(),
            prefix: Some("/teams/shop/".into()),
            url_style: UrlStyle::VirtualHost,
            ..bucket(None)
        });
    });
    let job = &of_kind::<CronJob>(&store)[2];
    let upload = &job_pod(job).containers[0];
    assert_eq!(
        upload.image.as_deref(),
        Some("registry.example/tools/backup:7")
    );
    let env = upload.env.clone().unwrap();
    assert_eq!(value(&env, "S3_PREFIX"), "teams/shop/order");
    assert_eq!(value(&env, "S3_URL_STYLE"), "virtual-host");
    let own = policy(&store, "demo-order-db-backup");
    assert_eq!(address_egress(&own)[0].1, [443], "https without a port");
}

#[test]
fn restoring_from_a_bucket_fetches_the_dump_before_the_entrypoint_unless_the_data_exists() {
    let store = Store::test().with(|s| {
        s.order.database.restore_from = Some(RestoreFrom {
            claim_name: None,
            s3: Some(bucket(Some("old-shop"))),
            file: "latest".into(),
        })
    });
    let sts = statefulset(&store, Component::Order);
    let pod = sts_pod(&sts);
    assert_restricted(pod, "order-db");
    let init = pod.init_containers.as_ref().unwrap();
    assert_eq!(init.len(), 1);
    let fetch = &init[0];
    assert_eq!(fetch.name, "fetch-backup");
    assert_eq!(fetch.image.as_deref(), Some("mercato/backup:0.1.0"));
    let args: Vec<&str> = fetch.args.iter().flatten().map(String::as_str).collect();
    assert_eq!(
        args,
        [
            "fetch",
            "--into",
            "/backups/order",
            "--unless-exists",
            "/var/lib/postgresql/data/pgdata/PG_VERSION"
        ]
    );
    assert_bucket_env(fetch, "old-shop/order");
    assert_eq!(value(&fetch.env.clone().unwrap(), "RESTORE_FILE"), "latest");
    assert_eq!(
        mounts(fetch),
        [
            ("backups".into(), "/backups".into(), false),
            ("data".into(), "/var/lib/postgresql/data".into(), true),
        ],
        "it reads the data volume only to see whether it is initialised"
    );

    // The entrypoint's restore.sh reads the fetched dump from the scratch volume.
    let postgres = &pod.containers[0];
    let env = postgres.env.clone().unwrap();
    assert_eq!(value(&env, "RESTORE_DIR"), "/backups/order");
    assert_eq!(value(&env, "RESTORE_FILE"), "latest");
    assert!(mounts(postgres).contains(&("backups".into(), "/backups".into(), true)));
    let scratch = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "backups")
        .unwrap();
    assert!(scratch.empty_dir.is_some() && scratch.persistent_volume_claim.is_none());

    // Only this database may reach the bucket, and only while it is this one.
    let db = policy(&store, "demo-order-db");
    assert!(
        db.spec
            .as_ref()
            .unwrap()
            .policy_types
            .as_ref()
            .unwrap()
            .contains(&"Egress".to_string())
    );
    assert_eq!(
        address_egress(&db),
        [(
            vec!["0.0.0.0/0".to_string(), "::/0".to_string()],
            vec![9000]
        )]
    );
    let auth_db = policy(&store, "demo-auth-db");
    assert!(auth_db.spec.unwrap().egress.is_none());
    assert!(
        statefulset(&store, Component::Auth)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .init_containers
            .is_none()
    );
    // The database's port stays closed to everyone but its service.
    let ingress = db.spec.unwrap().ingress.unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(
        ingress[0].ports.as_ref().unwrap()[0].port,
        Some(IntOrString::Int(i32::from(POSTGRES_PORT)))
    );
}

fn bucket_json() -> Value {
    json!({"endpoint": "http://minio.backups.svc:9000", "bucket": "shop-backups",
           "credentialsSecret": "backup-bucket"})
}

#[tokio::test]
async fn moving_backups_from_the_claim_to_a_bucket_keeps_the_claim_and_rewrites_the_jobs() {
    let h = Harness::new(Store::test());
    set_backup(&h, json!({"schedule": "17 3 * * *"}));
    h.reconcile().await.unwrap();
    assert!(h.get("persistentvolumeclaims", "demo-backups").is_some());
    let job = h.get("cronjobs", "demo-order-db-backup").unwrap();
    assert!(job.to_string().contains("demo-backups"));

    set_backup(
        &h,
        json!({"schedule": "17 3 * * *", "target": {"pvc": null, "s3": bucket_json()}}),
    );
    h.reconcile().await.unwrap();
    let job = h.get("cronjobs", "demo-order-db-backup").unwrap();
    let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], "mercato/backup:0.1.0");
    assert_eq!(pod["initContainers"][0]["image"], "postgres:17");
    assert!(!job.to_string().contains("demo-backups"), "{job}");
    assert!(
        h.get("persistentvolumeclaims", "demo-backups").is_some(),
        "the dumps already on the claim stay"
    );
    assert!(
        !h.fake
            .writes()
            .iter()
            .any(|w| w.contains("DELETE persistentvolumeclaims")),
        "{:?}",
        h.fake.writes()
    );
}

#[tokio::test]
async fn an_operator_upgrade_does_not_restart_a_database_restored_from_a_bucket() {
    let store = Store::test().with(|s| {
        s.order.database.restore_from = Some(RestoreFrom {
            claim_name: None,
            s3: Some(bucket(None)),
            file: "latest".into(),
        })
    });
    let mut h = Harness::new(store);
    h.reconcile().await.unwrap();
    h.roll_out();
    h.reconcile().await.unwrap();
    let fetch_image = |h: &Harness| {
        h.get("statefulsets", "demo-order-db").unwrap()["spec"]["template"]["spec"]
            ["initContainers"][0]["image"]
            .clone()
    };
    assert_eq!(fetch_image(&h), "mercato/backup:0.1.0");

    let images = ImageDefaults::new(None, Some("0.2.0")).unwrap();
    h.ctx = Arc::new(h.ctx.fork().with_images(images));
    h.reconcile().await.unwrap();
    let writes = h.fake.child_writes();
    assert!(
        !writes.iter().any(|w| w.contains("statefulsets")),
        "{writes:?}"
    );
    assert_eq!(fetch_image(&h), "mercato/backup:0.1.0");
    // The services do move on (the first of them at once).
    assert!(
        writes.contains(&"PATCH deployments/demo-auth".to_string()),
        "{writes:?}"
    );

    // A database created by the new operator gets its image.
    h.fake.remove("statefulsets", NAMESPACE, "demo-order-db");
    h.reconcile().await.unwrap();
    assert_eq!(fetch_image(&h), "mercato/backup:0.2.0");
}
