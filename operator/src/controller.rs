//! Wiring the reconciler into a kube-runtime Controller that watches Stores and every kind
//! of child they own.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use kube::api::DynamicObject;
use kube::runtime::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::cache::ChildCache;
use crate::crd::Store;
use crate::meta::LABEL_INSTANCE;
use crate::reconciler::{Context, error_policy, reconcile};

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// How long the controller waits for more events about a Store before reconciling it.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// Stores reconciled at once. Unbounded, an operator restart over 100 Stores reconciled
/// them all together (~4,500 requests in one burst, 215 MiB); four at a time keeps memory
/// at ~166 MiB for half a second more (`make bench`, operator part).
pub const MAX_CONCURRENT_RECONCILES: u16 = 4;

/// How long in-flight reconciles may take to finish after shutdown is requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Completes once the flag in `rx` is true (or its sender is gone).
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The Store an observed object (a pod, a claim) belongs to, by its instance label.
fn store_of(object: DynamicObject) -> Option<ObjectRef<Store>> {
    let name = object.labels().get(LABEL_INSTANCE)?;
    Some(ObjectRef::new(name).within(&object.namespace()?))
}

/// How often the controller looks again for the Prometheus Operator's CRDs (installed after
/// the operator, they are used from the next look on).
const MONITORING_RECHECK: Duration = Duration::from_secs(300);

/// Whether the cluster serves `monitoring.coreos.com/v1` with both PodMonitor and
/// PrometheusRule (discovery, which every authenticated client may read).
pub async fn has_monitoring_kinds(client: &Client) -> bool {
    match client
        .list_api_group_resources("monitoring.coreos.com/v1")
        .await
    {
        Ok(list) => ["PodMonitor", "PrometheusRule"]
            .iter()
            .all(|kind| list.resources.iter().any(|r| r.kind == *kind)),
        Err(_) => false,
    }
}

/// Keeps `flag` saying whether the monitoring CRDs exist, until `stop`.
async fn watch_monitoring_kinds(
    client: Client,
    flag: Arc<std::sync::atomic::AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let found = has_monitoring_kinds(&client).await;
        let before = flag.swap(found, std::sync::atomic::Ordering::Relaxed);
        if found != before {
            info!(
                found,
                "Prometheus Operator CRDs (PodMonitor, PrometheusRule) {}",
                if found {
                    "found: Stores get monitors and alerts"
                } else {
                    "absent"
                }
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(MONITORING_RECHECK) => {}
            _ = stop.changed() => if *stop.borrow() { return },
        }
    }
}

/// Runs one controller per namespace in `namespaces` (each with its own watches, so the
/// operator needs permissions in those namespaces only), or one over every namespace when
/// the list is empty, until `stop` turns true.
pub async fn run_in(ctx: Context, namespaces: &[String], stop: watch::Receiver<bool>) {
    // Known before the first reconcile, then looked at again now and then.
    let found = has_monitoring_kinds(&ctx.client).await;
    ctx.monitoring
        .store(found, std::sync::atomic::Ordering::Relaxed);
    let watcher = tokio::spawn(watch_monitoring_kinds(
        ctx.client.clone(),
        ctx.monitoring.clone(),
        stop.clone(),
    ));
    if namespaces.is_empty() {
        run(ctx, None, stop).await;
    } else {
        let controllers = namespaces
            .iter()
            .map(|ns| run(ctx.fork(), Some(ns.as_str()), stop.clone()));
        futures::future::join_all(controllers).await;
    }
    watcher.abort();
}

/// Runs the controller until `stop` turns true; in-flight reconciles get `SHUTDOWN_GRACE`
/// to finish (kube-runtime would otherwise wait forever for caches that never synced, e.g.
/// when the API server is unreachable). `namespace` limits it to one namespace; `None`
/// watches all. The watches of the child kinds both trigger reconciles and fill the cache
/// the reconciler reads children from.
pub async fn run(ctx: Context, namespace: Option<&str>, stop: watch::Receiver<bool>) {
    let client = ctx.client.clone();
    // Only children carrying our managed-by label are watched and cached, not every Secret
    // of the cluster.
    let (cache, feeds) = ChildCache::watch(&client, namespace);
    let ctx = Arc::new(ctx.with_cache(cache));
    let mut controller = Controller::new(
        api::<Store>(&client, namespace),
        watcher::Config::default().any_semantic(),
    );
    for feed in feeds {
        controller = if feed.owned {
            controller.owns_stream_with(feed.stream, feed.resource)
        } else {
            controller.watches_stream_with(feed.stream, store_of, feed.resource)
        };
    }
    let controller = controller
        // A burst of child events (a rollout) becomes one reconcile, not one per event.
        .with_config(
            kube::runtime::controller::Config::default()
                .debounce(DEBOUNCE)
                .concurrency(MAX_CONCURRENT_RECONCILES),
        )
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((store, action)) => debug!(store = %store, ?action, "reconciled"),
                Err(e) => warn!(error = %e, "controller error"),
            }
        });
    let deadline = async {
        stopped(stop).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = controller => {}
        _ = deadline => warn!(grace = ?SHUTDOWN_GRACE, "reconciles did not finish in time; stopping anyway"),
    }
}
