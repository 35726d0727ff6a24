//! Wiring the reconciler into a kube-runtime Controller that watches Stores and every kind
//! of child they own.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::Controller;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use crate::crd::Store;
use crate::meta::managed_selector;
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

/// Runs the controller until `shutdown` completes (in-flight reconciles finish first).
/// `namespace` limits it to one namespace; `None` watches all.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    // Only children carrying our managed-by label are watched and cached, not every Secret
    // of the cluster.
    let children = watcher::Config::default().labels(&managed_selector());
    Controller::new(
        api::<Store>(&client, namespace),
        watcher::Config::default().any_semantic(),
    )
    .owns(api::<Secret>(&client, namespace), children.clone())
    .owns(api::<ServiceAccount>(&client, namespace), children.clone())
    .owns(api::<Service>(&client, namespace), children.clone())
    .owns(api::<StatefulSet>(&client, namespace), children.clone())
    .owns(api::<Deployment>(&client, namespace), children.clone())
    .owns(
        api::<PodDisruptionBudget>(&client, namespace),
        children.clone(),
    )
    .owns(api::<NetworkPolicy>(&client, namespace), children)
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((store, action)) => debug!(store = %store, ?action, "reconciled"),
            Err(e) => warn!(error = %e, "controller error"),
        }
    })
    .await;
}
