//! End-to-end check of the operator against the cluster in KUBECONFIG (`make e2e`):
//!
//!   cargo run -p mercato-operator --example e2e
//!
//! It installs the CRD, runs the operator in this process (watching one fresh namespace
//! that enforces the `restricted` Pod Security Standard), applies `examples/store.yaml`,
//! waits for every child, checks them, edits and deletes children and sees them put back,
//! checks that a settled Store costs no writes, that invalid Stores are refused, that a Store
//! can turn its storefront off and on and its backups on and off (the backup claim stays),
//! and that deleting Stores honours their deletion policy (but keeps backups). Without a
//! cluster configuration it says so and exits 0.
//!
//! Why an example and not a test: `cargo nextest run --workspace` must not touch a cluster,
//! and a test that returns early without one would pass without testing anything. An
//! example is compiled (and linted) with the workspace but runs only when asked to.
//!
//! Set MERCATO_E2E_READY=1 when the Mercato images are loaded into the cluster, to also
//! wait for the Store to become Ready.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Config, ResourceExt};
use mercato_operator::apply::Child;
use mercato_operator::builders::{self, secrets};
use mercato_operator::crd::{DeletionPolicy, Store};
use mercato_operator::meta::{Owner, store_selector};
use mercato_operator::metrics::Metrics;
use mercato_operator::reconciler::Context;
use serde_json::json;
use tokio::sync::watch;

const FIELD_MANAGER: &str = "mercato-e2e";
const TIMEOUT: Duration = Duration::from_secs(180);

fn step(what: &str) {
    println!("e2e: {what}");
}

/// Polls `check` every second until it yields a value or `timeout` passes.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if tokio::time::Instant::now() > deadline {
            return Err(anyhow!(
                "timed out after {timeout:?} waiting for {what} (last error: {last_error:?})"
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match Config::infer().await {
        Ok(c) => c,
        Err(e) => {
            println!(
                "e2e: skipped: no cluster configured (KUBECONFIG, ~/.kube/config or in-cluster): {e}"
            );
            return Ok(());
        }
    };
    let client = Client::try_from(config).context("cannot build a Kubernetes client")?;
    let version = tokio::time::timeout(Duration::from_secs(15), client.apiserver_version())
        .await
        .map_err(|_| anyhow!("the configured cluster did not answer within 15s"))?
        .context("the configured cluster is unreachable")?;
    step(&format!(
        "cluster {}.{} ({})",
        version.major, version.minor, version.git_version
    ));

    let namespace = format!(
        "mercato-e2e-{}",
        mercato_contract::credentials::random_secret(5).to_lowercase()
    );
    let result = run(client.clone(), &namespace).await;
    step(&format!("deleting namespace {namespace}"));
    let _ = Api::<Namespace>::all(client)
        .delete(&namespace, &DeleteParams::default())
        .await;
    match &result {
        Ok(()) => println!("e2e: 1 passed, 0 failed"),
        Err(e) => println!("e2e: 0 passed, 1 failed: {e:#}"),
    }
    result
}

async fn run(client: Client, ns: &str) -> anyhow::Result<()> {
    step("installing the CRD");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = mercato_operator::crd::crd();
    let crd_name = crd.name_any();
    crds.patch(
        &crd_name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .context("apply the CRD")?;
    wait_for("the CRD to be established", TIMEOUT, || async {
        let crd = crds.get(&crd_name).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Established" && c.status == "True");
        Ok(established.then_some(()))
    })
    .await?;

    step(&format!(
        "creating namespace {ns} (Pod Security: restricted, enforced)"
    ));
    let namespace: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "restricted"}}
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;

    step("starting the operator in this process");
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Context::new(
        client.clone(),
        Arc::new(Metrics::default()),
        Some("e2e".into()),
    );
    let owned_ns = ns.to_string();
    let operator = tokio::spawn(async move {
        mercato_operator::controller::run(ctx, Some(&owned_ns), stop_rx).await;
    });

    let result = scenario(&client, ns).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), operator).await;
    result
}

async fn scenario(client: &Client, ns: &str) -> anyhow::Result<()> {
    let stores: Api<Store> = Api::namespaced(client.clone(), ns);

    step("an invalid Store is refused with a message that says what to fix");
    for (manifest, expected) in [
        (
            json!({"metadata": {"name": "a".repeat(41)}}),
            "at most 40 characters",
        ),
        (
            json!({"metadata": {"name": "bad-port"}, "spec": {"gateway": {"service": {"nodePort": 30080}}}}),
            "nodePort can only be set",
        ),
        (
            json!({"metadata": {"name": "bad-replicas"}, "spec": {"order": {"replicas": -1}}}),
            "spec.order.replicas",
        ),
        (
            json!({"metadata": {"name": "bad-policy"}, "spec": {"deletionPolicy": "Shred"}}),
            "spec.deletionPolicy",
        ),
        (
            json!({"metadata": {"name": "bad-external"}, "spec": {"order": {"database": {
                "external": {"secretName": "shop-order-db-app"},
                "restoreFrom": {"claimName": "old-backups", "file": "latest"}}}}}),
            "cannot be set together",
        ),
    ] {
        let mut manifest = manifest;
        manifest["apiVersion"] = json!("mercato.dev/v1alpha1");
        manifest["kind"] = json!("Store");
        let name = manifest["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match stores
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(&manifest),
            )
            .await
        {
            Ok(_) => bail!("Store {name} was accepted; expected a refusal mentioning {expected:?}"),
            Err(kube::Error::Api(s)) => ensure!(
                s.code == 422 && s.message.contains(expected),
                "Store {name}: expected 422 mentioning {expected:?}, got {} {}",
                s.code,
                s.message
            ),
            Err(e) => return Err(e.into()),
        }
    }

    step("applying examples/store.yaml");
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/store.yaml"
    ))?;
    let manifest: serde_json::Value = serde_yaml::from_str(&yaml)?;
    let name = manifest["metadata"]["name"]
        .as_str()
        .context("the example has a name")?
        .to_string();
    stores
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&manifest),
        )
        .await?;
    let store = stores.get(&name).await?;
    ensure!(
        store.spec.deletion_policy == DeletionPolicy::Retain,
        "the API server applied the schema defaults"
    );
    let owner = Owner::of(&store).context("the Store has a uid")?;

    step("a change of PostgreSQL's major version is refused (the default is postgres:17)");
    match stores
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"order": {"database": {"image": "postgres:16"}}}})),
        )
        .await
    {
        Ok(_) => bail!("database.image postgres:17 -> postgres:16 was accepted"),
        Err(kube::Error::Api(s)) => ensure!(
            s.code == 422 && s.message.contains("major version"),
            "expected 422 mentioning the major version, got {} {}",
            s.code,
            s.message
        ),
        Err(e) => return Err(e.into()),
    }

    // What should exist: the same list `render` prints.
    let data = secrets::generate(&name);
    let expected: Vec<Child> = builders::desired(&owner, &store.spec, &Default::default(), &data);

    step(&format!("waiting for {} children", expected.len()));
    wait_for(
        "every child with a controller reference to the Store",
        TIMEOUT,
        || async {
            for child in &expected {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), ns, &child.resource);
                let Some(live) = api.get_opt(&child.name).await? else {
                    return Ok(None);
                };
                let controlled = live
                    .owner_references()
                    .iter()
                    .any(|r| r.uid == owner.reference().uid && r.controller == Some(true));
                ensure!(
                    controlled,
                    "{} is not controlled by the Store",
                    child.display()
                );
                ensure!(
                    live.labels()
                        == child.object["metadata"]["labels"]
                            .as_object()
                            .map(|m| m
                                .iter()
                                .map(|(k, v)| (
                                    k.clone(),
                                    v.as_str().unwrap_or_default().to_string()
                                ))
                                .collect::<BTreeMap<_, _>>())
                            .as_ref()
                            .unwrap_or(&BTreeMap::new()),
                    "{} has other labels",
                    child.display()
                );
            }
            Ok(Some(()))
        },
    )
    .await?;

    step("status: conditions with observedGeneration, admin Secret, endpoint");
    let status = wait_for("a status", TIMEOUT, || async {
        Ok(stores
            .get(&name)
            .await?
            .status
            .filter(|s| !s.conditions.is_empty()))
    })
    .await?;
    ensure!(
        status.admin_secret.as_deref() == Some("demo-admin"),
        "adminSecret: {:?}",
        status.admin_secret
    );
    ensure!(status.endpoint.is_some(), "no endpoint");
    for c in &status.conditions {
        ensure!(
            c.observed_generation == store.metadata.generation,
            "{} has observedGeneration {:?}",
            c.type_,
            c.observed_generation
        );
    }

    step("pods are admitted under the restricted Pod Security Standard");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    wait_for(
        "every workload to have created its pods",
        TIMEOUT,
        || async {
            for d in deployments
                .list(&ListParams::default().labels(&store_selector(&name)))
                .await?
            {
                let conditions = d
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.clone())
                    .unwrap_or_default();
                if let Some(failure) = conditions
                    .iter()
                    .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                {
                    bail!("{}: {:?}", d.name_any(), failure.message);
                }
                if d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0) < 1 {
                    return Ok(None);
                }
            }
            for s in statefulsets
                .list(&ListParams::default().labels(&store_selector(&name)))
                .await?
            {
                if s.status.as_ref().map_or(0, |st| st.replicas) < 1 {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await?;

    if std::env::var_os("MERCATO_E2E_READY").is_some() {
        step("waiting for the Store to become Ready (MERCATO_E2E_READY)");
        wait_for("Ready=True", Duration::from_secs(600), || async {
            let s = stores.get(&name).await?.status.unwrap_or_default();
            Ok(s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(()))
        })
        .await?;
    }

    step("a settled Store costs no writes");
    let stable_kinds = ["Secret", "ServiceAccount", "NetworkPolicy"];
    let versions = |client: Client| {
        let expected = expected.clone();
        async move {
            let mut out = BTreeMap::new();
            for child in expected.iter().filter(|c| stable_kinds.contains(&c.kind())) {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), ns, &child.resource);
                out.insert(
                    child.display(),
                    api.get(&child.name).await?.resource_version(),
                );
            }
            anyhow::Ok(out)
        }
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = versions(client.clone()).await?;
    // Any change to the Store triggers a reconcile; an annotation changes nothing desired.
    stores
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"e2e/poke": "1"}}})),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    ensure!(
        versions(client.clone()).await? == before,
        "a reconcile of an unchanged Store wrote to children"
    );

    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret_data = |api: Api<Secret>| async move {
        let mut out = BTreeMap::new();
        for s in api
            .list(&ListParams::default().labels(&store_selector("demo")))
            .await?
        {
            out.insert(s.name_any(), s.data.clone());
        }
        anyhow::Ok(out)
    };
    let secrets_before = secret_data(secrets_api.clone()).await?;

    step("a hand-edited Deployment is put back");
    let original = deployments.get("demo-auth").await?;
    let image = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers[0].image.clone())
    };
    deployments
        .patch(
            "demo-auth",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "auth", "image": "busybox:hand-edit"}]}}}})),
        )
        .await?;
    wait_for("demo-auth's image to be restored", TIMEOUT, || async {
        let d = deployments.get("demo-auth").await?;
        Ok((image(&d) == image(&original)).then_some(()))
    })
    .await?;

    step("a deleted Service and NetworkPolicy are recreated");
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let old_uid = services.get("demo-product").await?.uid();
    services
        .delete("demo-product", &DeleteParams::default())
        .await?;
    let policies: Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
        Api::namespaced(client.clone(), ns);
    policies
        .delete("demo-default-deny", &DeleteParams::default())
        .await?;
    wait_for(
        "demo-product and demo-default-deny to come back",
        TIMEOUT,
        || async {
            let svc = services.get_opt("demo-product").await?;
            let np = policies.get_opt("demo-default-deny").await?;
            Ok((svc.is_some_and(|s| s.uid() != old_uid) && np.is_some()).then_some(()))
        },
    )
    .await?;

    step("Secrets were not regenerated");
    ensure!(
        secret_data(secrets_api.clone()).await? == secrets_before,
        "Secret data changed"
    );

    step("four hand edits at once, one of which apply cannot merge, are all repaired");
    four_hand_edits(client, ns, &name).await?;

    step("a component whose image cannot be had is named, with the cause, in the status");
    image_that_cannot_be_pulled(client, ns).await?;

    step("the gateway routes to the storefront; turning it off removes it, and back on");
    storefront_off_and_on(client, ns, &name).await?;

    step(
        "backup on: a claim the Store does not own, the scripts, a CronJob per database; off: the claim stays",
    );
    backups_on_and_off(client, ns, &name).await?;

    step("deleting the Store with deletionPolicy Retain keeps the volume claims");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    delete_store(&stores, &name).await?;
    let kept = pvcs
        .list(&ListParams::default().labels(&store_selector(&name)))
        .await?;
    ensure!(
        kept.items.len() == 5,
        "expected the 4 database claims and the backup claim to stay, found {}",
        kept.items.len()
    );

    step(
        "deleting a Store with deletionPolicy Delete removes its volume claims but not its backups",
    );
    let doomed = json!({"apiVersion": "mercato.dev/v1alpha1", "kind": "Store",
                         "metadata": {"name": "doomed"}, "spec": {"deletionPolicy": "Delete", "networkPolicies": {"enabled": false},
                                                                 "backup": {"schedule": "17 3 * * *"}}});
    stores
        .patch(
            "doomed",
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&doomed),
        )
        .await?;
    wait_for(
        "doomed's 4 volume claims and its backup claim",
        TIMEOUT,
        || async {
            let n = pvcs
                .list(&ListParams::default().labels(&store_selector("doomed")))
                .await?
                .items
                .len();
            Ok((n == 5).then_some(()))
        },
    )
    .await?;
    delete_store(&stores, "doomed").await?;
    let backups = builders::backup::claim_name("doomed");
    wait_for(
        "doomed's volume claims to be gone, but for its backups",
        TIMEOUT,
        || async {
            let names: Vec<String> = pvcs
                .list(&ListParams::default().labels(&store_selector("doomed")))
                .await?
                .items
                .iter()
                .map(ResourceExt::name_any)
                .collect();
            Ok((names == [backups.clone()]).then_some(()))
        },
    )
    .await?;
    pvcs.delete(&backups, &DeleteParams::default()).await?;
    Ok(())
}

/// `spec.backup` on the e2e Store: the claim `<store>-backups` without an owner, the
/// ConfigMap with the scripts, a CronJob per database (with the schedule, in the database's
/// image), and `status.backups`; moved to a bucket, the CronJobs upload (and the claim
/// stays); removed, the CronJobs and the ConfigMap go and the claim stays.
async fn backups_on_and_off(client: &Client, ns: &str, store: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::batch::v1::CronJob;
    use k8s_openapi::api::core::v1::ConfigMap;
    use mercato_contract::Component;

    let stores: Api<Store> = Api::namespaced(client.clone(), ns);
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let claim = builders::backup::claim_name(store);
    let scripts = builders::backup::scripts_name(store);
    let jobs: Vec<String> = Component::WITH_DATABASE
        .into_iter()
        .map(|c| builders::backup::cron_job_name(store, c))
        .collect();
    let switch = |backup: serde_json::Value| {
        let stores = stores.clone();
        async move {
            stores
                .patch(
                    store,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"backup": backup}})),
                )
                .await
        }
    };
    switch(json!({"schedule": "17 3 * * *", "retention": 3})).await?;
    wait_for(
        "the backup claim, the scripts and 4 backup CronJobs",
        TIMEOUT,
        || async {
            let mut all = pvcs.get_opt(&claim).await?.is_some()
                && config_maps.get_opt(&scripts).await?.is_some();
            for job in &jobs {
                all = all && cron_jobs.get_opt(job).await?.is_some();
            }
            Ok(all.then_some(()))
        },
    )
    .await?;
    let pvc = pvcs.get(&claim).await?;
    ensure!(
        pvc.owner_references().is_empty(),
        "{claim} is owned by {:?}: deleting the Store would take the backups",
        pvc.owner_references()
    );
    let job = cron_jobs.get(&jobs[0]).await?;
    let spec = job.spec.clone().unwrap_or_default();
    ensure!(
        spec.schedule == "17 3 * * *" && spec.concurrency_policy.as_deref() == Some("Forbid"),
        "{}: schedule {:?}, concurrencyPolicy {:?}",
        jobs[0],
        spec.schedule,
        spec.concurrency_policy
    );
    wait_for("status.backups for every database", TIMEOUT, || async {
        let status = stores.get(store).await?.status.unwrap_or_default();
        Ok((status.backups.len() == 4
            && status.conditions.iter().any(|c| c.type_ == "BackupFailed"))
        .then_some(()))
    })
    .await?;

    // To a bucket instead (the API server checks the CRD's rules on it): each CronJob dumps
    // in an init container and uploads with mercato-backup; the claim stays as it was.
    switch(
        json!({"schedule": "17 3 * * *", "retention": 3, "target": {"pvc": null,
        "s3": {"endpoint": "http://s3.backups.example:9000", "bucket": "shop-backups",
               "credentialsSecret": "backup-bucket"}}}),
    )
    .await?;
    wait_for(
        "4 backup CronJobs that upload to the bucket",
        TIMEOUT,
        || async {
            let mut all = true;
            for job in &jobs {
                let pod = cron_jobs
                    .get(job)
                    .await?
                    .spec
                    .and_then(|s| s.job_template.spec)
                    .and_then(|s| s.template.spec)
                    .unwrap_or_default();
                let upload = pod.containers.first().and_then(|c| c.args.clone());
                all = all
                    && pod.init_containers.is_some_and(|i| i.len() == 1)
                    && upload.is_some_and(|a| a.first().map(String::as_str) == Some("push"));
            }
            Ok(all.then_some(()))
        },
    )
    .await?;
    ensure!(
        pvcs.get_opt(&claim).await?.is_some(),
        "{claim} was deleted when the backups moved to a bucket"
    );
    let both = stores
        .patch(
            store,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"backup": {"target": {"pvc": {"size": "1Gi"}}}}})),
        )
        .await;
    ensure!(
        matches!(&both, Err(kube::Error::Api(e)) if e.message.contains("exactly one of pvc and s3")),
        "a target with both a claim and a bucket was accepted: {both:?}"
    );

    switch(serde_json::Value::Null).await?;
    wait_for(
        "the CronJobs and the scripts to be gone",
        TIMEOUT,
        || async {
            let mut gone = config_maps.get_opt(&scripts).await?.is_none();
            for job in &jobs {
                gone = gone && cron_jobs.get_opt(job).await?.is_none();
            }
            Ok(gone.then_some(()))
        },
    )
    .await?;
    ensure!(
        pvcs.get_opt(&claim).await?.is_some(),
        "{claim} was deleted with spec.backup"
    );
    Ok(())
}

async fn delete_store(stores: &Api<Store>, name: &str) -> anyhow::Result<()> {
    stores.delete(name, &DeleteParams::default()).await?;
    wait_for(
        &format!("Store {name} to be gone (finalizer done)"),
        TIMEOUT,
        || async { Ok(stores.get_opt(name).await?.is_none().then_some(())) },
    )
    .await
}

/// The incident of issue #10: a deleted Deployment, a hand scale, a deleted NetworkPolicy,
/// and a merge patch that leaves the auth Service with a second port named `http`, which
/// the API server refuses to merge with ours. Every one is repaired within a minute, the
/// Service is taken back with a Warning event, and no child is left failing.
async fn four_hand_edits(client: &Client, ns: &str, store: &str) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let policies: Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
        Api::namespaced(client.clone(), ns);
    let (product, order, payment, auth) = (
        format!("{store}-product"),
        format!("{store}-order"),
        format!("{store}-payment"),
        format!("{store}-auth"),
    );
    let ports = |s: &Service| {
        s.spec
            .as_ref()
            .and_then(|sp| sp.ports.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.port))
            .collect::<Vec<_>>()
    };
    let desired_ports = ports(&services.get(&auth).await?);

    deployments
        .delete(&product, &DeleteParams::default())
        .await?;
    deployments
        .patch_scale(
            &order,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await?;
    policies.delete(&payment, &DeleteParams::default()).await?;
    // As `kubectl patch --type=merge` does it, under kubectl's manager name.
    let as_kubectl = PatchParams {
        field_manager: Some("kubectl-patch".into()),
        ..PatchParams::default()
    };
    services
        .patch(
            &auth,
            &as_kubectl,
            &Patch::Merge(
                json!({"spec": {"ports": [{"name": "http", "port": 9999, "targetPort": "http"}]}}),
            ),
        )
        .await?;

    wait_for(
        "all four to be repaired",
        Duration::from_secs(60),
        || async {
            let product_back = deployments.get_opt(&product).await?.is_some();
            let order_replicas = deployments.get(&order).await?.spec.and_then(|s| s.replicas);
            let policy_back = policies.get_opt(&payment).await?.is_some();
            let auth_ports = ports(&services.get(&auth).await?);
            Ok((product_back
                && order_replicas == Some(1)
                && policy_back
                && auth_ports == desired_ports)
                .then_some(()))
        },
    )
    .await?;

    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let overridden = wait_for("an Overridden event for the Service", TIMEOUT, || async {
        Ok(events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("Overridden")
                    && e.note.as_deref().is_some_and(|n| {
                        n.contains(&format!("Service/{auth}")) && n.contains("kubectl-patch")
                    })
            })
            .and_then(|e| e.note))
    })
    .await?;
    step(&format!("event: {overridden}"));

    let stores: Api<Store> = Api::namespaced(client.clone(), ns);
    // Every child applied again: no ReconcileFailed. (Without the Mercato and PostgreSQL
    // images on the nodes the Store may still be Degraded, for ComponentsFailing.)
    wait_for("the Store to have no failed child", TIMEOUT, || async {
        let status = stores.get(store).await?.status.unwrap_or_default();
        Ok(status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.reason != "ReconcileFailed")
            .then_some(()))
    })
    .await?;
    Ok(())
}

/// A Store whose order image does not exist (and may not be pulled): its status names
/// order and the kubelet's reason, instead of only "waiting for: order (0/1)".
async fn image_that_cannot_be_pulled(client: &Client, ns: &str) -> anyhow::Result<()> {
    let stores: Api<Store> = Api::namespaced(client.clone(), ns);
    let missing = "mercato/order:e2e-missing";
    let broken = json!({"apiVersion": "mercato.dev/v1alpha1", "kind": "Store",
                        "metadata": {"name": "broken"},
                        "spec": {"deletionPolicy": "Delete", "imagePullPolicy": "Never",
                                 "networkPolicies": {"enabled": false},
                                 "order": {"image": missing}}});
    stores
        .patch(
            "broken",
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&broken),
        )
        .await?;
    let message = wait_for(
        "Degraded=True ComponentsFailing naming the image",
        TIMEOUT,
        || async {
            let status = stores.get("broken").await?.status.unwrap_or_default();
            Ok(status
                .conditions
                .iter()
                .find(|c| {
                    c.type_ == "Degraded"
                        && c.status == "True"
                        && c.reason == "ComponentsFailing"
                        && c.message
                            .contains(&format!("order: cannot pull image {missing}"))
                })
                .map(|c| c.message.clone()))
        },
    )
    .await?;
    step(&format!("Degraded: {message}"));
    delete_store(&stores, "broken").await
}

/// The gateway's `STOREFRONT_URL`, if its Deployment sets one.
fn storefront_url(gateway: &Deployment) -> Option<String> {
    gateway
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers[0].env.clone())
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.name == mercato_contract::env::STOREFRONT_URL)
        .and_then(|e| e.value)
}

/// The storefront's Deployment, Service, ServiceAccount and Secret exist and the gateway is
/// told where it answers; `storefront.enabled: false` removes all four and the variable;
/// turned on again, it comes back with a cookie key of its own.
async fn storefront_off_and_on(client: &Client, ns: &str, store: &str) -> anyhow::Result<()> {
    let stores: Api<Store> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = mercato_contract::names::component(store, mercato_contract::Component::Storefront);
    let secret = mercato_contract::names::storefront_secret(store);
    let gateway = mercato_contract::names::component(store, mercato_contract::Component::Gateway);
    let wanted = format!("http://{name}.{ns}.svc:{}", mercato_contract::HTTP_PORT);

    ensure!(
        deployments.get_opt(&name).await?.is_some() && services.get_opt(&name).await?.is_some(),
        "no Deployment and Service {name}"
    );
    let url = storefront_url(&deployments.get(&gateway).await?);
    ensure!(
        url.as_deref() == Some(wanted.as_str()),
        "{gateway} has STOREFRONT_URL {url:?}, not {wanted}"
    );
    let key = secrets.get(&secret).await?.data;

    let switch = |enabled: bool| {
        let stores = stores.clone();
        async move {
            stores
                .patch(
                    store,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"storefront": {"enabled": enabled}}})),
                )
                .await
        }
    };
    switch(false).await?;
    wait_for(
        "the storefront's objects and STOREFRONT_URL to be gone",
        TIMEOUT,
        || async {
            let gone = deployments.get_opt(&name).await?.is_none()
                && services.get_opt(&name).await?.is_none()
                && accounts.get_opt(&name).await?.is_none()
                && secrets.get_opt(&secret).await?.is_none()
                && storefront_url(&deployments.get(&gateway).await?).is_none();
            Ok(gone.then_some(()))
        },
    )
    .await?;
    let status = stores.get(store).await?.status.unwrap_or_default();
    ensure!(
        !status.components.contains_key("storefront"),
        "status.components still lists the storefront"
    );

    switch(true).await?;
    wait_for("the storefront to come back", TIMEOUT, || async {
        let back = deployments.get_opt(&name).await?.is_some()
            && services.get_opt(&name).await?.is_some()
            && storefront_url(&deployments.get(&gateway).await?).as_deref()
                == Some(wanted.as_str());
        Ok(back.then_some(()))
    })
    .await?;
    ensure!(
        secrets.get(&secret).await?.data != key,
        "{secret} came back with the old cookie key"
    );
    Ok(())
}
