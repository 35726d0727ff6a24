//! The controller (watches, triggers, debounce) against the in-memory API server.

use std::sync::Arc;
use std::time::Duration;

use super::eventually;
use super::fake_api::FakeApi;
use super::fixtures::NAMESPACE;
use crate::controller;
use crate::crd::Store;
use crate::metrics::Metrics;
use crate::reconciler::Context;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_builds_a_new_store_and_puts_back_a_deleted_child() {
    let (fake, client) = FakeApi::new();
    let mut store = Store::test();
    store.metadata.finalizers = None;
    fake.insert("stores", serde_json::to_value(&store).unwrap());
    let metrics = Arc::new(Metrics::default());
    let ctx = Context::new(client, metrics.clone(), Some("test".into()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(controller::run(ctx, Some(NAMESPACE), stopped));

    // The finalizer patch is seen through the Store watch and leads to the reconcile that
    // creates the children.
    eventually("every Deployment exists", || {
        fake.names("deployments").len() == mercato_contract::Component::ALL.len()
    })
    .await;
    eventually("the status is set", || {
        fake.get("stores", NAMESPACE, "demo")
            .is_some_and(|s| s["status"]["observedGeneration"] == 1)
    })
    .await;

    // A deleted child reaches the controller through the metadata watch of its kind.
    let before = metrics.reconciles("success");
    fake.remove("deployments", NAMESPACE, "demo-order");
    eventually("demo-order is back", || {
        fake.get("deployments", NAMESPACE, "demo-order").is_some()
    })
    .await;
    eventually("that reconcile is counted", || {
        metrics.reconciles("success") > before
    })
    .await;
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.query.contains("watch=true") && r.path.ends_with("/deployments")),
        "children are watched"
    );

    assert_eq!(
        fake.forbidden(),
        Vec::<String>::new(),
        "requests that operator/src/rbac.rs does not allow"
    );
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the controller stops")
        .unwrap();
}
