//! The reconciler against an in-memory API server: what it writes, and when it writes
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use futures::StreamExt;
use http::Method;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::eventually;
use super::fake_api::{FakeApi, Logged};
use super::fixtures::NAMESPACE;
use crate::cache::{Cached, ChildCache};
use crate::crd::{DeletionPolicy, Phase, Store};
use crate::meta::FINALIZER;
use crate::metrics::Metrics;
use crate::reconciler::{BACKOFF_BASE, Context, Error, RECHECK, RESYNC, error_policy, reconcile};
use crate::status::{DEGRADED, PROGRESSING, READY};

pub(super) struct Harness {
    pub(super) fake: FakeApi,
    pub(super) ctx: Arc<Context>,
}

impl Harness {
    pub(super) fn new(store: Store) -> Harness {
        let (fake, client) = FakeApi::new();
        fake.insert("stores", serde_json::to_value(&store).unwrap());
        let ctx = Arc::new(Context::new(
            client,
            Arc::new(Metrics::default()),
            Some("test".into()),
        ));
        Harness { fake, ctx }
    }

    /// A harness whose reconciler reads children from watch caches, as under the
    /// controller; the watches run until the test ends.
    pub(super) async fn with_cache(store: Store) -> (Harness, ChildCache) {
        let (fake, client) = FakeApi::new();
        fake.insert("stores", serde_json::to_value(&store).unwrap());
        let (cache, feeds) = ChildCache::watch(&client, Some(NAMESPACE));
        let plurals: Vec<String> = feeds.iter().map(|f| f.resource.plural.clone()).collect();
        let feeds = futures::stream::select_all(feeds.into_iter().map(|f| f.stream));
        tokio::spawn(feeds.for_each(|_| async {}));
        // The fake's watches do not replay from a resourceVersion: wait until every kind's
        // watch is open, so that no change falls between its list and its watch.
        let watching = fake.clone();
        eventually("every child kind is watched", move || {
            plurals.iter().all(|p| {
                watching
                    .requests()
                    .iter()
                    .any(|r| r.query.contains("watch=true") && r.path.ends_with(&format!("/{p}")))
            })
        })
        .await;
        let ctx = Context::new(client, Arc::new(Metrics::default()), Some("test".into()))
            .with_cache(cache.clone());
        (
            Harness {
                fake,
                ctx: Arc::new(ctx),
            },
            cache,
        )
    }

    /// Waits until `cache` holds every object of the child kinds as the API server has
    /// it (same resourceVersion), as the controller's next reconcile would find it.
    pub(super) async fn settle(&self, cache: &ChildCache) {
        let fake = self.fake.clone();
        let cache = cache.clone();
        eventually("the watch caches caught up", move || {
            cache.is_synced()
                && cache.kinds().iter().all(|kind| {
                    let live = fake.names(&kind.plural);
                    let Cached::Known(cached) = cache.list(kind, NAMESPACE, &BTreeMap::new())
                    else {
                        return false;
                    };
                    cached.len() == live.len()
                        && cached.iter().all(|o| {
                            let name = o.metadata.name.clone().unwrap_or_default();
                            fake.get(&kind.plural, NAMESPACE, &name).is_some_and(|l| {
                                l["metadata"]["resourceVersion"].as_str()
                                    == o.metadata.resource_version.as_deref()
                            })
                        })
                })
        })
        .await;
    }

    /// The events recorded for the store, as (reason, note).
    pub(super) fn events(&self) -> Vec<(String, String)> {
        self.fake
            .names("events")
            .iter()
            .filter_map(|n| self.get("events", n))
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["note"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// The Store as the API server has it now (what the controller's watch would deliver).
    pub(super) fn store(&self) -> Store {
        serde_json::from_value(
            self.fake
                .get("stores", NAMESPACE, "demo")
                .expect("store exists"),
        )
        .unwrap()
    }

    pub(super) async fn reconcile(&self) -> Result<Action, Error> {
        self.fake.clear_log();
        reconcile(Arc::new(self.store()), self.ctx.clone()).await
    }

    pub(super) fn get(&self, plural: &str, name: &str) -> Option<Value> {
        self.fake.get(plural, NAMESPACE, name)
    }

    pub(super) fn condition(&self, type_: &str) -> (String, String, String) {
        let status = self.store().status.expect("status is set");
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition exists");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    /// Marks every Deployment and StatefulSet of the store as fully rolled out.
    pub(super) fn roll_out(&self) {
        for plural in ["deployments", "statefulsets"] {
            for name in self.fake.names(plural) {
                let obj = self.get(plural, &name).unwrap();
                let replicas = obj["spec"]["replicas"].clone();
                self.fake.set_status(
                    plural,
                    NAMESPACE,
                    &name,
                    json!({"observedGeneration": obj["metadata"]["generation"], "replicas": replicas,
                           "readyReplicas": replicas, "updatedReplicas": replicas,
                           "availableReplicas": replicas}),
                );
            }
        }
    }
}

/// Every request of every test is one the chart's ClusterRole allows (the fake answers 403
/// to the others, which most tests would notice anyway; this names the permission).
impl Drop for Harness {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_eq!(
                self.fake.forbidden(),
                Vec::<String>::new(),
                "requests that operator/src/rbac.rs does not allow"
            );
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn a_store_without_the_finalizer_gets_it_first_and_nothing_else() {
    let mut store = Store::test();
    store.metadata.finalizers = None;
    let h = Harness::new(store);
    assert_eq!(h.reconcile().await.unwrap(), Action::await_change());
    assert_eq!(h.fake.writes(), vec!["PATCH stores/demo"]);
    assert_eq!(
        h.store().metadata.finalizers,
        Some(vec![FINALIZER.to_string()])
    );
}

#[tokio::test]
async fn first_reconcile_creates_every_child_and_sets_status() {
    let h = Harness::new(Store::test());
    let action = h.reconcile().await.unwrap();
    assert_eq!(
        action,
        Action::requeue(RECHECK),
        "not ready yet: check again soon"
    );

    let (children, _) = Store::test().children();
    for child in &children {
        let plural = child.resource.plural.as_str();
        let live = h
            .get(plural, &child.name)
            .unwrap_or_else(|| panic!("{} missing", child.display()));
        assert_eq!(
            live["metadata"]["labels"],
            child.object["metadata"]["labels"],
            "{}",
            child.display()
        );
    }
    // Secrets are created (POST), everything else server-side applied, one write each.
    let writes = h.fake.writes();
    let secrets = writes
        .iter()
        .filter(|w| w.starts_with("POST secrets"))
        .count();
    let applies = writes
        .iter()
        .filter(|w| w.starts_with("PATCH ") && !w.contains("stores/"))
        .count();
    let secret_count = children.iter().filter(|c| c.kind() == "Secret").count();
    assert_eq!(secrets, 13);
    assert_eq!(secret_count, 13);
    assert_eq!(applies, children.len() - secret_count);
    for r in h
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && !r.path.contains("/stores/"))
    {
        assert_eq!(r.content_type, "application/apply-patch+yaml");
        assert!(
            r.query.contains("fieldManager=mercato-operator") && r.query.contains("force=true"),
            "{r:?}"
        );
    }
    assert!(writes.contains(&"PATCH stores/demo/status".to_string()));
    assert!(
        writes.iter().any(|w| w.starts_with("POST events")),
        "a Created event"
    );

    let status = h.store().status.unwrap();
    assert_eq!(status.phase, Some(Phase::Progressing));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.admin_secret.as_deref(), Some("demo-admin"));
    assert_eq!(
        status.endpoint.as_deref(),
        Some("http://demo-gateway.shop.svc:8080")
    );
    assert_eq!(h.condition(READY).0, "False");
    assert_eq!(h.condition(PROGRESSING).0, "True");
    assert_eq!(h.condition(DEGRADED).0, "False");
    for c in status.conditions {
        assert_eq!(c.observed_generation, Some(1));
    }
}

#[tokio::test]
async fn reconciling_an_unchanged_store_writes_nothing() {
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    h.reconcile().await.unwrap();
    assert_eq!(h.fake.writes(), Vec::<String>::new());
    assert!(!h.fake.requests().is_empty(), "it did look");

    // Also once everything is ready and status has settled.
    h.roll_out();
    h.reconcile().await.unwrap();
    assert_eq!(h.fake.writes(), vec!["PATCH stores/demo/status"]);
    assert_eq!(h.reconcile().await.unwrap(), Action::requeue(RESYNC));
    assert_eq!(h.fake.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn an_unchanged_reconcile_reads_secrets_then_children_in_order_then_lists_prunable_kinds() {
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    h.reconcile().await.unwrap();
    let (children, _) = Store::test().children();
    let mut expected: Vec<String> = children
        .iter()
        .map(|c| format!("GET {}/{}", c.resource.plural, c.name))
        .collect();
    expected.push("GET cronjobs".into());
    expected.push("GET configmaps".into());
    expected.push("GET poddisruptionbudgets".into());
    expected.push("GET networkpolicies".into());
    let seen: Vec<String> = h.fake.requests().iter().map(|r| r.short()).collect();
    assert_eq!(seen, expected);
    for list in h.fake.requests().iter().rev().take(4) {
        assert!(
            list.query.contains("labelSelector="),
            "{list:?}: prune lists only this store's objects"
        );
    }
}

#[tokio::test]
async fn a_deleted_child_is_recreated_and_only_it() {
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    let before = h.get("deployments", "demo-order").unwrap();
    h.fake.remove("deployments", NAMESPACE, "demo-order");
    h.fake
        .remove("networkpolicies", NAMESPACE, "demo-default-deny");
    h.reconcile().await.unwrap();
    assert_eq!(
        h.fake.child_writes(),
        vec![
            "PATCH deployments/demo-order",
            "PATCH networkpolicies/demo-default-deny"
        ]
    );
    assert_eq!(
        h.get("deployments", "demo-order").unwrap()["spec"],
        before["spec"]
    );
}

#[tokio::test]
async fn a_hand_edit_of_an_owned_field_is_put_back() {
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    let image = h.get("deployments", "demo-auth").unwrap()["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    h.fake.edit(
        "deployments",
        NAMESPACE,
        "demo-auth",
        "kubectl-edit",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "auth", "image": "evil:latest"}]}}}}),
    );
    h.fake.edit(
        "services",
        NAMESPACE,
        "demo-gateway",
        "kubectl-patch",
        json!({"spec": {"type": "NodePort"}}),
    );
    h.reconcile().await.unwrap();
    assert_eq!(
        h.fake.child_writes(),
        vec!["PATCH deployments/demo-auth", "PATCH services/demo-gateway"]
    );
    let live = h.get("deployments", "demo-auth").unwrap();
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        image
    );
    assert_eq!(
        h.get("services", "demo-gateway").unwrap()["spec"]["type"],
        "ClusterIP"
    );
    // And then it is stable again.
    h.reconcile().await.unwrap();
    assert_eq!(h.fake.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_foreign_label_beside_ours_is_left_alone() {
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    h.fake.edit(
        "services",
        NAMESPACE,
        "demo-auth",
        "kubectl-label",
        json!({"metadata": {"labels": {"team": "web"}}}),
    );
    h.reconcile().await.unwrap();
    assert_eq!(h.fake.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn secrets_are_never_regenerated() {
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    let secret_names = h.fake.names("secrets");
    let before: Vec<Value> = secret_names
        .iter()
        .map(|n| h.get("secrets", n).unwrap()["data"].clone())
        .collect();

    // A spec change and a deleted workload: the Secrets stay as they are.
    let mut store = h.store();
    store.spec.gateway.replicas = 2;
    store.metadata.generation = Some(2);
    h.fake
        .insert("stores", serde_json::to_value(&store).unwrap());
    h.fake.remove("deployments", NAMESPACE, "demo-auth");
    h.reconcile().await.unwrap();
    assert!(
        h.fake.writes().iter().all(|w| !w.contains("secrets/")),
        "{:?}",
        h.fake.writes()
    );
    let after: Vec<Value> = secret_names
        .iter()
        .map(|n| h.get("secrets", n).unwrap()["data"].clone())
        .collect();
    assert_eq!(before, after);

    // A rotated password is kept, not reverted; the pods that read it roll (once no other
    // component is rolling out).
    h.roll_out();
    let hash = |h: &Harness| {
        h.get("deployments", "demo-order").unwrap()["spec"]["template"]["metadata"]["annotations"]["mercato.dev/config-hash"].clone()
    };
    let old_hash = hash(&h);
    h.fake.edit(
        "secrets",
        NAMESPACE,
        "demo-order-db-credentials",
        "kubectl-edit",
        json!({"data": {"password": "cm90YXRlZA=="}}),
    );
    h.reconcile().await.unwrap();
    assert_eq!(
        h.get("secrets", "demo-order-db-credentials").unwrap()["data"]["password"],
        "cm90YXRlZA=="
    );
    assert!(h.fake.writes().iter().all(|w| !w.contains("secrets/")));
    assert_ne!(
        hash(&h),
        old_hash,
        "order's pods roll onto the new password"
    );

    // A deleted Secret is generated anew, alone.
    h.fake.remove("secrets", NAMESPACE, "demo-payment-client");
    h.reconcile().await.unwrap();
    let secret_writes: Vec<String> = h
        .fake
        .writes()
        .into_iter()
        .filter(|w| w.contains("secrets"))
        .collect();
    assert_eq!(secret_writes, vec!["POST secrets"]);
    assert!(h.get("secrets", "demo-payment-client").unwrap()["data"]["client-secret"].is_string());
}

#[tokio::test]
async fn half_a_key_pair_is_reported_not_papered_over() {
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    h.fake.remove("secrets", NAMESPACE, "demo-jwks");
    let err = h.reconcile().await.unwrap_err();
    assert_eq!(err.kind(), "half_key_pair");
    assert!(
        h.get("secrets", "demo-jwks").is_none(),
        "no lone public key set is invented"
    );
    let (status, reason, message) = h.condition(DEGRADED);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ReconcileFailed")
    );
    assert!(message.contains("demo-jwt-signing"), "{message}");
}

#[tokio::test]
async fn an_api_error_sets_degraded_and_backs_off_exponentially() {
    let h = Harness::new(Store::test());
    h.fake
        .fail(Method::PATCH, "/deployments/demo-order", 500, None);
    let err = h.reconcile().await.unwrap_err();
    assert_eq!(err.kind(), "children");
    let (status, reason, message) = h.condition(DEGRADED);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ReconcileFailed")
    );
    assert!(message.contains("Deployment/demo-order"), "{message}");
    assert_eq!(h.store().status.unwrap().phase, Some(Phase::Degraded));
    assert_eq!(h.condition(READY).0, "False");
    assert!(
        h.fake.writes().iter().any(|w| w.starts_with("POST events")),
        "a Warning event"
    );

    let store = Arc::new(h.store());
    assert_eq!(
        error_policy(store.clone(), &err, h.ctx.clone()),
        Action::requeue(BACKOFF_BASE)
    );
    assert_eq!(
        error_policy(store.clone(), &err, h.ctx.clone()),
        Action::requeue(BACKOFF_BASE * 2)
    );
    assert_eq!(
        error_policy(store.clone(), &err, h.ctx.clone()),
        Action::requeue(BACKOFF_BASE * 4)
    );
    for _ in 0..20 {
        error_policy(store.clone(), &err, h.ctx.clone());
    }
    assert_eq!(
        error_policy(store.clone(), &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(300))
    );
    let metrics = h.ctx.metrics.render();
    assert!(
        metrics.contains(r#"mercato_operator_reconcile_failures_total{error="children"} 1"#),
        "{metrics}"
    );

    // Once the API recovers, Degraded clears and the backoff starts over.
    h.fake.clear_failures();
    h.reconcile().await.unwrap();
    let (status, reason, _) = h.condition(DEGRADED);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ReconcileSucceeded")
    );
    assert_eq!(
        error_policy(store, &err, h.ctx.clone()),
        Action::requeue(BACKOFF_BASE)
    );
}

#[tokio::test]
async fn status_is_computed_from_the_children() {
    let h = Harness::new(Store::test().with(|s| s.order.replicas = 2));
    h.reconcile().await.unwrap();
    h.roll_out();
    // One order replica is not ready yet.
    h.fake.set_status(
        "deployments",
        NAMESPACE,
        "demo-order",
        json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 1, "updatedReplicas": 2}),
    );
    h.reconcile().await.unwrap();
    let status = h.store().status.unwrap();
    assert_eq!(status.components["order"].ready_replicas, 1);
    assert_eq!(status.components["order"].replicas, 2);
    assert_eq!(status.components["order"].database_ready, Some(true));
    assert_eq!(status.components["gateway"].database_ready, None);
    let (ready, reason, message) = h.condition(READY);
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "ComponentsNotReady")
    );
    assert_eq!(message, "waiting for: order (1/2)");
    let not_ready_since = h.store().status.unwrap().conditions[0]
        .last_transition_time
        .clone();

    h.roll_out();
    h.reconcile().await.unwrap();
    let status = h.store().status.unwrap();
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(h.condition(READY).0, "True");
    assert_eq!(
        h.condition(PROGRESSING),
        (
            "False".into(),
            "RolloutComplete".into(),
            "the store runs its desired state".into()
        )
    );
    assert!(status.conditions[0].last_transition_time.0 >= not_ready_since.0);
    let degraded_since = status.conditions[2].last_transition_time.clone();

    // A database going down flips Ready only; Degraded keeps its transition time.
    h.fake.set_status(
        "statefulsets",
        NAMESPACE,
        "demo-auth-db",
        json!({"observedGeneration": 1, "readyReplicas": 0, "updatedReplicas": 1}),
    );
    h.reconcile().await.unwrap();
    let status = h.store().status.unwrap();
    assert_eq!(status.components["auth"].database_ready, Some(false));
    assert_eq!(h.condition(READY).2, "waiting for: auth-db");
    assert_eq!(status.conditions[2].last_transition_time, degraded_since);

    // A stuck rollout is Degraded.
    h.fake.set_status(
        "deployments",
        NAMESPACE,
        "demo-payment",
        json!({"observedGeneration": 1, "replicas": 1, "readyReplicas": 0, "updatedReplicas": 1,
               "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
    );
    h.reconcile().await.unwrap();
    assert_eq!(h.condition(DEGRADED).1, "RolloutStuck");
}

#[tokio::test]
async fn scaling_down_removes_the_disruption_budget_and_turning_policies_off_removes_them() {
    let h = Harness::new(Store::test().with(|s| s.gateway.replicas = 3));
    h.reconcile().await.unwrap();
    assert!(h.get("poddisruptionbudgets", "demo-gateway").is_some());
    let mut store = h.store();
    store.spec.gateway.replicas = 1;
    store.spec.network_policies.enabled = false;
    h.fake
        .insert("stores", serde_json::to_value(&store).unwrap());
    h.reconcile().await.unwrap();
    assert!(h.get("poddisruptionbudgets", "demo-gateway").is_none());
    assert!(h.fake.names("networkpolicies").is_empty());
    assert_eq!(
        h.get("deployments", "demo-gateway").unwrap()["spec"]["replicas"],
        1
    );
}

/// Every object named `demo-storefront`, as `plural/name`.
fn storefront_objects(h: &Harness) -> Vec<String> {
    [
        "secrets",
        "serviceaccounts",
        "services",
        "deployments",
        "poddisruptionbudgets",
        "networkpolicies",
    ]
    .into_iter()
    .filter(|plural| h.get(plural, "demo-storefront").is_some())
    .map(|plural| format!("{plural}/demo-storefront"))
    .collect()
}

/// The gateway's `STOREFRONT_URL`, as its Deployment has it.
fn gateway_storefront_url(h: &Harness) -> Option<String> {
    let gateway = h.get("deployments", "demo-gateway").expect("a gateway");
    gateway["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == mercato_contract::env::STOREFRONT_URL)
        .map(|e| e["value"].as_str().unwrap_or_default().to_string())
}

fn set_storefront(h: &Harness, enabled: bool) {
    h.fake.edit(
        "stores",
        NAMESPACE,
        "demo",
        "kubectl-edit",
        json!({"spec": {"storefront": {"enabled": enabled}}}),
    );
}

#[tokio::test]
async fn turning_the_storefront_off_deletes_its_objects_and_the_store_stays_ready() {
    let h = Harness::new(Store::test().with(|s| s.storefront.replicas = 2));
    h.reconcile().await.unwrap();
    h.roll_out();
    assert_eq!(h.reconcile().await.unwrap(), Action::requeue(RESYNC));
    assert_eq!(h.store().status.unwrap().phase, Some(Phase::Ready));
    assert_eq!(
        storefront_objects(&h),
        [
            "secrets/demo-storefront",
            "serviceaccounts/demo-storefront",
            "services/demo-storefront",
            "deployments/demo-storefront",
            "poddisruptionbudgets/demo-storefront",
            "networkpolicies/demo-storefront",
        ]
    );
    assert_eq!(
        gateway_storefront_url(&h).as_deref(),
        Some("http://demo-storefront.shop.svc:8080")
    );
    let status = h.store().status.unwrap();
    assert_eq!(
        (
            status.components["storefront"].replicas,
            status.components["storefront"].ready_replicas,
            status.components["storefront"].database_ready
        ),
        (2, 2, None)
    );
    let old_key = h.get("secrets", "demo-storefront").unwrap()["data"]["cookie-key"].clone();

    set_storefront(&h, false);
    h.reconcile().await.unwrap();
    assert_eq!(
        writes_to_children(&h),
        [
            // The gateway stops routing to it first, then it goes, policy and workload
            // before the identity and the key.
            "PATCH deployments/demo-gateway",
            "PATCH networkpolicies/demo-gateway",
            "DELETE networkpolicies/demo-storefront",
            "DELETE poddisruptionbudgets/demo-storefront",
            "DELETE deployments/demo-storefront",
            "DELETE services/demo-storefront",
            "DELETE serviceaccounts/demo-storefront",
            "DELETE secrets/demo-storefront",
        ]
    );
    assert_eq!(storefront_objects(&h), Vec::<String>::new());
    assert_eq!(gateway_storefront_url(&h), None);
    assert!(
        h.events().iter().any(
            |(reason, note)| reason == "Deleted" && note.contains("Deployment/demo-storefront")
        ),
        "{:?}",
        h.events()
    );

    // Once the gateway has rolled, the store is Ready without it, and nothing is written.
    h.roll_out();
    h.reconcile().await.unwrap();
    let status = h.store().status.unwrap();
    assert_eq!(status.phase, Some(Phase::Ready), "{:?}", status.conditions);
    assert!(!status.components.contains_key("storefront"));
    assert_eq!(h.reconcile().await.unwrap(), Action::requeue(RESYNC));
    assert_eq!(h.fake.writes(), Vec::<String>::new());

    // Back on: everything returns, with a cookie key of its own.
    set_storefront(&h, true);
    h.reconcile().await.unwrap();
    assert_eq!(storefront_objects(&h).len(), 6);
    assert!(gateway_storefront_url(&h).is_some());
    let new_key = h.get("secrets", "demo-storefront").unwrap()["data"]["cookie-key"].clone();
    assert!(new_key.is_string());
    assert_ne!(new_key, old_key);
}

#[tokio::test]
async fn a_storefront_object_the_store_does_not_control_is_left_alone() {
    let h = Harness::new(Store::test().with(|s| s.storefront.enabled = false));
    h.fake.insert(
        "services",
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "demo-storefront", "namespace": NAMESPACE},
               "spec": {"ports": [{"port": 80}]}}),
    );
    h.reconcile().await.unwrap();
    assert!(h.get("services", "demo-storefront").is_some());
    assert!(
        !h.fake.writes().iter().any(|w| w.starts_with("DELETE")),
        "{:?}",
        h.fake.writes()
    );
    assert_eq!(gateway_storefront_url(&h), None);
}

#[tokio::test]
async fn a_store_without_a_storefront_becomes_ready_and_then_writes_nothing() {
    let h = Harness::new(Store::test().with(|s| s.storefront.enabled = false));
    h.reconcile().await.unwrap();
    assert_eq!(storefront_objects(&h), Vec::<String>::new());
    h.reconcile().await.unwrap();
    assert_eq!(h.fake.writes(), Vec::<String>::new());
    h.roll_out();
    h.reconcile().await.unwrap();
    assert_eq!(h.store().status.unwrap().phase, Some(Phase::Ready));
    assert_eq!(h.reconcile().await.unwrap(), Action::requeue(RESYNC));
    assert_eq!(h.fake.writes(), Vec::<String>::new());
}

fn pvc(name: &str, store: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": name, "namespace": NAMESPACE, "labels": {
               "app.kubernetes.io/part-of": "mercato", "app.kubernetes.io/instance": store,
               "app.kubernetes.io/managed-by": "mercato-operator"}}})
}

async fn delete_with(policy: DeletionPolicy) -> Harness {
    let h = Harness::new(Store::test().with(|s| s.deletion_policy = policy));
    h.reconcile().await.unwrap();
    h.fake
        .insert("persistentvolumeclaims", pvc("data-demo-auth-db-0", "demo"));
    h.fake.insert(
        "persistentvolumeclaims",
        pvc("data-other-auth-db-0", "other"),
    );
    let mut store = h.store();
    store.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    h.fake
        .insert("stores", serde_json::to_value(&store).unwrap());
    assert_eq!(h.reconcile().await.unwrap(), Action::await_change());
    h
}

#[tokio::test]
async fn deletion_with_delete_removes_the_stores_volume_claims() {
    let h = delete_with(DeletionPolicy::Delete).await;
    assert_eq!(
        h.fake.names("persistentvolumeclaims"),
        vec!["data-other-auth-db-0"]
    );
    assert!(
        h.fake
            .writes()
            .contains(&"DELETE statefulsets/demo-auth-db".to_string())
    );
    assert!(
        h.get("stores", "demo").is_none(),
        "finalizer removed, store gone"
    );
}

#[tokio::test]
async fn deletion_with_retain_keeps_volume_claims_and_their_passwords() {
    let h = delete_with(DeletionPolicy::Retain).await;
    assert_eq!(
        sorted(h.fake.names("persistentvolumeclaims")),
        vec!["data-demo-auth-db-0", "data-other-auth-db-0"]
    );
    // The retained databases hold these passwords (the auth database also holds the first
    // admin, whom auth creates only once), so garbage collection must not take them.
    let mut retained: Vec<String> = mercato_contract::Component::WITH_DATABASE
        .into_iter()
        .map(|c| mercato_contract::names::db_credentials_secret("demo", c))
        .collect();
    retained.push("demo-admin".into());
    for name in &retained {
        let secret = h.get("secrets", name).unwrap();
        assert_eq!(
            secret["metadata"]["ownerReferences"],
            json!([]),
            "{name}: released from garbage collection"
        );
    }
    // What auth reads afresh at start-up goes with the Store.
    for name in [
        "demo-jwt-signing",
        "demo-jwks",
        "demo-order-client",
        "demo-payment-client",
    ] {
        assert_eq!(
            h.get("secrets", name).unwrap()["metadata"]["ownerReferences"][0]["uid"],
            super::fixtures::UID,
            "{name}: still owned, collected with the Store"
        );
    }
    assert!(h.fake.writes().iter().all(|w| !w.starts_with("DELETE")));
    assert!(h.get("stores", "demo").is_none());
}

#[tokio::test]
async fn a_recreated_store_adopts_retained_credentials() {
    let h = delete_with(DeletionPolicy::Retain).await;
    let password =
        h.get("secrets", "demo-order-db-credentials").unwrap()["data"]["password"].clone();
    let admin = h.get("secrets", "demo-admin").unwrap()["data"].clone();
    // The garbage collector takes what the old Store still owned.
    for name in h.fake.names("secrets") {
        let owned = h.get("secrets", &name).unwrap()["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|r| !r.is_empty());
        if owned {
            h.fake.remove("secrets", NAMESPACE, &name);
        }
    }
    let mut again = Store::test();
    again.metadata.uid = Some("second-uid".into());
    h.fake
        .insert("stores", serde_json::to_value(&again).unwrap());
    h.reconcile().await.unwrap();
    let secret = h.get("secrets", "demo-order-db-credentials").unwrap();
    assert_eq!(secret["data"]["password"], password);
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        "second-uid"
    );
    let secret = h.get("secrets", "demo-admin").unwrap();
    assert_eq!(
        secret["data"], admin,
        "the retained admin's password still opens the retained auth database"
    );
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        "second-uid"
    );
    assert!(
        h.get("secrets", "demo-jwt-signing").is_some(),
        "a new key pair"
    );
}

/// The four hand edits of a real incident, all at once: a deleted Deployment, a scaled
/// one, a deleted NetworkPolicy, and a merge patch that leaves the auth Service with a
/// second port named `http` (owned by kubectl), which makes every apply of ours invalid.
fn break_four_children(h: &Harness) {
    h.fake.remove("deployments", NAMESPACE, "demo-product");
    h.fake.edit(
        "deployments",
        NAMESPACE,
        "demo-order",
        "kubectl-scale",
        json!({"spec": {"replicas": 3}}),
    );
    h.fake.remove("networkpolicies", NAMESPACE, "demo-payment");
    h.fake.edit(
        "services",
        NAMESPACE,
        "demo-auth",
        "kubectl-patch",
        json!({"spec": {"ports": [{"name": "http", "port": 9999, "targetPort": "http"}]}}),
    );
}

fn ports(h: &Harness, service: &str) -> Value {
    h.get("services", service).unwrap()["spec"]["ports"].clone()
}

#[tokio::test]
async fn a_hand_edit_that_apply_cannot_merge_is_overridden_and_everything_else_repaired() {
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    let desired_ports = ports(&h, "demo-auth");
    break_four_children(&h);

    h.reconcile().await.unwrap();
    assert_eq!(
        h.fake.child_writes(),
        vec![
            "PATCH deployments/demo-order",
            "PATCH deployments/demo-product",
            "PATCH networkpolicies/demo-payment",
            // The apply is refused (422), so the Service is replaced with its desired state.
            "PATCH services/demo-auth",
            "PUT services/demo-auth",
        ]
    );
    assert_eq!(ports(&h, "demo-auth"), desired_ports);
    assert!(h.get("deployments", "demo-product").is_some());
    assert_eq!(
        h.get("deployments", "demo-order").unwrap()["spec"]["replicas"],
        1
    );
    assert!(h.get("networkpolicies", "demo-payment").is_some());
    assert_eq!(h.condition(DEGRADED).0, "False");
    let overridden: Vec<String> = h
        .events()
        .into_iter()
        .filter(|(reason, _)| reason == "Overridden")
        .map(|(_, note)| note)
        .collect();
    assert_eq!(overridden.len(), 1, "{overridden:?}");
    assert!(
        overridden[0].starts_with("Service/demo-auth: server-side apply was rejected")
            && overridden[0].contains("Duplicate value")
            && overridden[0].ends_with("overriding the changes of kubectl-patch"),
        "{}",
        overridden[0]
    );

    // Taken back for good: the next pass writes nothing, so it cannot loop.
    h.reconcile().await.unwrap();
    assert_eq!(h.fake.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_child_that_cannot_be_applied_is_reported_by_name_while_the_rest_is_repaired() {
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    let desired_ports = ports(&h, "demo-auth");
    break_four_children(&h);
    h.fake
        .fail(Method::PATCH, "/deployments/demo-product", 500, None);
    h.fake
        .fail(Method::PATCH, "/networkpolicies/demo-payment", 403, None);

    let err = h.reconcile().await.unwrap_err();
    assert_eq!(err.kind(), "children");
    // Everything else was repaired in the same pass.
    assert_eq!(ports(&h, "demo-auth"), desired_ports);
    assert_eq!(
        h.get("deployments", "demo-order").unwrap()["spec"]["replicas"],
        1
    );
    let (status, reason, message) = h.condition(DEGRADED);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ReconcileFailed")
    );
    assert_eq!(
        message,
        "2 children could not be applied: Deployment/demo-product (injected failure); \
         NetworkPolicy/demo-payment (injected failure)"
    );
    assert_eq!(h.store().status.unwrap().phase, Some(Phase::Degraded));
    assert!(
        h.events()
            .iter()
            .any(|(reason, note)| reason == "ReconcileFailed" && *note == message),
        "a Warning event with the same words"
    );
    assert_eq!(
        error_policy(Arc::new(h.store()), &err, h.ctx.clone()),
        Action::requeue(BACKOFF_BASE),
        "retried with backoff"
    );

    // Once the API server takes them, the store is whole and Degraded clears.
    h.fake.clear_failures();
    h.reconcile().await.unwrap();
    let writes: Vec<String> = h
        .fake
        .child_writes()
        .into_iter()
        .filter(|w| !w.contains("stores/"))
        .collect();
    assert_eq!(
        writes,
        vec![
            "PATCH deployments/demo-product",
            "PATCH networkpolicies/demo-payment"
        ]
    );
    assert_eq!(h.condition(DEGRADED).0, "False");
}

#[tokio::test]
async fn a_rejected_apply_that_no_one_else_caused_is_reported_not_forced() {
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    // Nothing of the Service belongs to anyone else, so the 422 is about our own object:
    // replacing it would fail the same way, and is not tried.
    h.fake.remove("services", NAMESPACE, "demo-auth");
    h.fake.fail(Method::PATCH, "/services/demo-auth", 422, None);
    let err = h.reconcile().await.unwrap_err();
    assert_eq!(err.kind(), "children");
    assert!(
        h.fake.writes().iter().all(|w| !w.starts_with("PUT")),
        "{:?}",
        h.fake.writes()
    );
    assert!(h.condition(DEGRADED).2.contains("Service/demo-auth"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synced_watch_caches_an_unchanged_store_costs_no_requests() {
    let (h, cache) = Harness::with_cache(Store::test()).await;
    h.reconcile().await.unwrap();
    h.roll_out();
    h.settle(&cache).await;
    h.reconcile().await.unwrap();
    assert_eq!(h.fake.writes(), vec!["PATCH stores/demo/status"]);

    h.settle(&cache).await;
    h.reconcile().await.unwrap();
    assert_eq!(
        h.fake.requests(),
        Vec::new(),
        "no GET of any child, no LIST for pruning, no write"
    );

    // A deleted child is known to be gone from the cache: recreated without a read.
    h.fake.remove("deployments", NAMESPACE, "demo-order");
    h.settle(&cache).await;
    h.reconcile().await.unwrap();
    let seen: Vec<String> = h
        .fake
        .requests()
        .iter()
        .filter(|r| !r.path.contains("/events"))
        .map(|r| r.short())
        .collect();
    assert_eq!(
        seen,
        vec!["PATCH deployments/demo-order", "PATCH stores/demo/status"]
    );
}

fn labelled(role: &crate::meta::Role) -> Value {
    json!(crate::meta::labels("demo", role))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_cannot_start_is_named_with_its_cause_once() {
    use crate::meta::Role;
    use mercato_contract::Component;
    let (h, cache) = Harness::with_cache(Store::test()).await;
    h.reconcile().await.unwrap();
    h.roll_out();
    // The order pod cannot pull its image; payment's database claim is not bound.
    h.fake.set_status(
        "deployments",
        NAMESPACE,
        "demo-order",
        json!({"observedGeneration": 1, "replicas": 1, "readyReplicas": 0, "updatedReplicas": 1}),
    );
    h.fake.set_status(
        "statefulsets",
        NAMESPACE,
        "demo-payment-db",
        json!({"observedGeneration": 1, "replicas": 1, "readyReplicas": 0, "updatedReplicas": 1}),
    );
    h.fake.insert(
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "demo-order-5c7d", "namespace": NAMESPACE,
                            "labels": labelled(&Role::service(Component::Order))},
               "status": {"phase": "Pending", "containerStatuses": [{"name": "order",
                   "image": "mercato/order:0.1.0", "imageID": "", "ready": false, "restartCount": 0,
                   "state": {"waiting": {"reason": "ErrImageNeverPull",
                             "message": "Container image \"mercato/order:0.1.0\" is not present with pull policy of Never"}}}]}}),
    );
    h.fake.insert(
        "persistentvolumeclaims",
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "data-demo-payment-db-0", "namespace": NAMESPACE,
                            "labels": labelled(&Role::database(Component::Payment))},
               "spec": {}, "status": {"phase": "Pending"}}),
    );
    h.settle(&cache).await;
    h.reconcile().await.unwrap();

    let (ready, _, message) = h.condition(READY);
    assert_eq!(ready, "False");
    assert_eq!(
        message,
        "waiting for: order (0/1: cannot pull image mercato/order:0.1.0: ErrImageNeverPull: \
         Container image \"mercato/order:0.1.0\" is not present with pull policy of Never), \
         payment-db (volume claim data-demo-payment-db-0 is Pending (storage class the \
         cluster's default: is there a provisioner, and room?))"
    );
    let (degraded, reason, message) = h.condition(DEGRADED);
    assert_eq!(
        (degraded.as_str(), reason.as_str()),
        ("True", "ComponentsFailing")
    );
    assert!(message.starts_with("order: cannot pull image"), "{message}");
    assert_eq!(h.store().status.unwrap().phase, Some(Phase::Degraded));
    let failing = |h: &Harness| {
        h.events()
            .into_iter()
            .filter(|(reason, _)| reason == "ComponentsFailing")
            .count()
    };
    assert_eq!(failing(&h), 1, "a Warning event says it");

    // The same causes again: no second event, no write.
    h.reconcile().await.unwrap();
    assert_eq!(failing(&h), 1);
    assert_eq!(h.fake.writes(), Vec::<String>::new());

    // Once the pods run and the claim is bound, the store is healthy again.
    h.fake.remove("pods", NAMESPACE, "demo-order-5c7d");
    h.fake.remove(
        "persistentvolumeclaims",
        NAMESPACE,
        "data-demo-payment-db-0",
    );
    h.roll_out();
    h.settle(&cache).await;
    h.reconcile().await.unwrap();
    assert_eq!(h.condition(DEGRADED).0, "False");
    assert_eq!(h.condition(READY).0, "True");
}

const MONITORING_KINDS: [(&str, &str); 2] = [
    ("PodMonitor", "podmonitors"),
    ("PrometheusRule", "prometheusrules"),
];

#[tokio::test]
async fn with_the_prometheus_operator_a_store_gets_its_monitor_and_alerts_until_it_turns_them_off()
{
    let h = Harness::new(Store::test());
    h.fake
        .serve_kinds("monitoring.coreos.com/v1", &MONITORING_KINDS);
    assert!(crate::controller::has_monitoring_kinds(&h.ctx.client).await);
    h.ctx
        .monitoring
        .store(true, std::sync::atomic::Ordering::Relaxed);
    h.reconcile().await.unwrap();

    let monitor = h.get("podmonitors", "demo-services").expect("a PodMonitor");
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(
        (endpoint["port"].as_str(), endpoint["path"].as_str()),
        (Some("ops"), Some("/metrics"))
    );
    let selector = &monitor["spec"]["selector"];
    assert_eq!(
        selector["matchLabels"]["app.kubernetes.io/instance"],
        "demo"
    );
    let names: Vec<&str> = selector["matchExpressions"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        names,
        [
            "mercato-auth",
            "mercato-product",
            "mercato-order",
            "mercato-payment",
            "mercato-gateway",
            "mercato-storefront"
        ],
        "the services, not their databases"
    );
    let rule = h
        .get("prometheusrules", "demo-alerts")
        .expect("a PrometheusRule");
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let alerts: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    for wanted in [
        "MercatoServiceDown",
        "MercatoAuthMissing",
        "MercatoGatewayMissing",
        "MercatoHighErrorRatio",
        "MercatoOutboxBacklog",
        "MercatoReservationExpiries",
        "MercatoOutboxDeadLetters",
    ] {
        assert!(alerts.contains(&wanted), "{wanted} in {alerts:?}");
    }
    let job = format!(r#"job="{NAMESPACE}/demo-services""#);
    for r in rules {
        assert!(
            r["expr"].as_str().unwrap().contains(&job),
            "every alert looks at this store only: {}",
            r["expr"]
        );
    }

    // Turned off: both are pruned.
    h.fake.edit(
        "stores",
        NAMESPACE,
        "demo",
        "kubectl-edit",
        json!({"spec": {"monitoring": {"enabled": false}}}),
    );
    h.reconcile().await.unwrap();
    assert!(h.get("podmonitors", "demo-services").is_none());
    assert!(h.get("prometheusrules", "demo-alerts").is_none());
}

#[tokio::test]
async fn without_the_prometheus_operator_nothing_of_monitoring_is_asked_for() {
    let h = Harness::new(Store::test());
    assert!(!crate::controller::has_monitoring_kinds(&h.ctx.client).await);
    h.reconcile().await.unwrap();
    let asked: Vec<String> = h
        .fake
        .requests()
        .iter()
        .filter(|r| r.path.contains("monitoring.coreos.com"))
        .map(Logged::short)
        .collect();
    assert_eq!(asked, Vec::<String>::new());
    assert!(h.fake.names("podmonitors").is_empty());
}

/// The writes of the last reconcile other than to the Store and events, in order.
fn writes_to_children(h: &Harness) -> Vec<String> {
    h.fake
        .writes()
        .into_iter()
        .filter(|w| !w.contains(" events") && !w.contains("stores/"))
        .collect()
}

/// The key ids `demo-jwt-signing` holds (`private.pem`, `next.pem`) and the sorted key ids
/// `demo-jwks` lists.
fn keys(h: &Harness) -> (String, Option<String>, Vec<String>) {
    use k8s_openapi::api::core::v1::Secret;
    use mercato_contract::credentials::public_jwk_of_pem;
    use mercato_contract::secret_keys::{JWKS, JWT_NEXT_PRIVATE_KEY, JWT_PRIVATE_KEY};
    let data = |name: &str| {
        let s: Secret = serde_json::from_value(h.get("secrets", name).unwrap()).unwrap();
        s.data.unwrap()
    };
    let signing = data("demo-jwt-signing");
    let kid = |key: &str| {
        signing.get(key).map(|pem| {
            public_jwk_of_pem(std::str::from_utf8(&pem.0).unwrap())
                .unwrap()
                .0
        })
    };
    let jwks: Value = serde_json::from_slice(&data("demo-jwks")[JWKS].0).unwrap();
    let listed = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    (
        kid(JWT_PRIVATE_KEY).unwrap(),
        kid(JWT_NEXT_PRIVATE_KEY),
        sorted(listed),
    )
}

fn key_status(h: &Harness) -> crate::crd::SigningKeyStatus {
    h.store().status.unwrap().signing_key.unwrap()
}

/// Moves the start of the rotation's current phase `secs` into the past, as if that long
/// had passed.
fn age_key_phase(h: &Harness, secs: i64) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let status = h.store().status.unwrap();
    let since = status.signing_key.as_ref().unwrap().since.0;
    let mut value = serde_json::to_value(&status).unwrap();
    value["signingKey"]["since"] = serde_json::to_value(Time(
        k8s_openapi::jiff::Timestamp::from_second(since.as_second() - secs).unwrap(),
    ))
    .unwrap();
    h.fake.set_status("stores", NAMESPACE, "demo", value);
}

/// A requeue after `secs`, or one second sooner: the status keeps whole seconds, so when a
/// second boundary passes between two reconciles, one second less is left.
fn requeue_about(secs: u64) -> [Action; 2] {
    [
        Action::requeue(Duration::from_secs(secs)),
        Action::requeue(Duration::from_secs(secs - 1)),
    ]
}

fn request_rotation(h: &Harness, value: &str) {
    h.fake.edit(
        "stores",
        NAMESPACE,
        "demo",
        "kubectl-annotate",
        json!({"metadata": {"annotations": {mercato_contract::ROTATE_SIGNING_KEY_ANNOTATION: value}}}),
    );
}

fn pod_template_hashes(h: &Harness) -> Vec<Value> {
    h.fake
        .names("deployments")
        .iter()
        .map(|n| {
            h.get("deployments", n).unwrap()["spec"]["template"]["metadata"]["annotations"]
                ["mercato.dev/config-hash"]
                .clone()
        })
        .collect()
}

fn sorted_pair(a: &str, b: &str) -> Vec<String> {
    sorted(vec![a.to_string(), b.to_string()])
}

#[tokio::test]
async fn a_rotation_publishes_switches_and_retires_on_schedule_without_rolling_pods() {
    use crate::crd::KeyPhase;
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    h.roll_out();
    h.reconcile().await.unwrap();
    let (old, none, listed) = keys(&h);
    assert_eq!((none, listed), (None, vec![old.clone()]));
    assert_eq!(key_status(&h).phase, KeyPhase::Idle);
    assert_eq!(key_status(&h).kid, old);
    let hashes = pod_template_hashes(&h);
    let propagation = Duration::from_secs(120);

    // Publishing: the next key is stored aside and published beside the old one.
    request_rotation(&h, "1");
    assert_eq!(h.reconcile().await.unwrap(), Action::requeue(propagation));
    assert_eq!(
        writes_to_children(&h),
        vec!["PATCH secrets/demo-jwt-signing", "PATCH secrets/demo-jwks"],
        "the signing Secret holds the next key before any JWKS lists it"
    );
    let (signing, next, listed) = keys(&h);
    let new = next.clone().expect("the next key is stored");
    assert_eq!(signing, old, "auth still signs with the old key");
    assert_eq!(listed, sorted_pair(&old, &new));
    let s = key_status(&h);
    assert_eq!(
        (
            s.phase,
            s.kid.as_str(),
            s.previous_kid.as_deref(),
            s.rotation.as_deref()
        ),
        (
            KeyPhase::Publishing,
            new.as_str(),
            Some(old.as_str()),
            Some("1")
        )
    );
    assert!(
        h.events()
            .iter()
            .any(|(reason, note)| reason == "SigningKeyPublishing" && note.contains(&new)),
        "{:?}",
        h.events()
    );

    // Not due yet: nothing is written, and the reconcile wakes when it is.
    age_key_phase(&h, 100);
    let action = h.reconcile().await.unwrap();
    assert!(requeue_about(20).contains(&action), "{action:?}");
    assert_eq!(h.fake.writes(), Vec::<String>::new());

    // Signing: auth's Secret holds only the new key; both stay published.
    age_key_phase(&h, 20);
    assert_eq!(h.reconcile().await.unwrap(), Action::requeue(propagation));
    assert_eq!(
        writes_to_children(&h),
        vec!["PATCH secrets/demo-jwt-signing"]
    );
    assert_eq!(keys(&h), (new.clone(), None, sorted_pair(&old, &new)));
    assert_eq!(key_status(&h).phase, KeyPhase::Signing);

    // Retiring: auth has switched; the old key is kept for the tokens it signed, which
    // live 900 s plus the 30 s leeway (the periodic resync comes sooner than that).
    age_key_phase(&h, 120);
    assert_eq!(h.reconcile().await.unwrap(), Action::requeue(RESYNC));
    assert_eq!(writes_to_children(&h), Vec::<String>::new());
    assert_eq!(key_status(&h).phase, KeyPhase::Retiring);
    age_key_phase(&h, 928);
    let action = h.reconcile().await.unwrap();
    assert!(requeue_about(2).contains(&action), "{action:?}");
    assert_eq!(keys(&h).2, sorted_pair(&old, &new), "not a second early");

    // Idle: the old public key is withdrawn.
    age_key_phase(&h, 2);
    assert_eq!(h.reconcile().await.unwrap(), Action::requeue(RESYNC));
    assert_eq!(writes_to_children(&h), vec!["PATCH secrets/demo-jwks"]);
    assert_eq!(keys(&h), (new.clone(), None, vec![new.clone()]));
    let s = key_status(&h);
    assert_eq!(
        (s.phase, s.kid.as_str(), s.previous_kid),
        (KeyPhase::Idle, new.as_str(), None)
    );
    let reasons: Vec<String> = h.events().into_iter().map(|(r, _)| r).collect();
    for phase in ["Publishing", "Signing", "Retiring", "Idle"] {
        assert!(
            reasons.contains(&format!("SigningKey{phase}")),
            "{phase}: {reasons:?}"
        );
    }

    // Settled: nothing more, no pod rolled at any step, and the same value starts nothing.
    h.reconcile().await.unwrap();
    assert_eq!(h.fake.writes(), Vec::<String>::new());
    assert_eq!(pod_template_hashes(&h), hashes);
    request_rotation(&h, "2");
    h.reconcile().await.unwrap();
    assert_eq!(key_status(&h).phase, KeyPhase::Publishing);
    assert_eq!(key_status(&h).previous_kid.as_deref(), Some(new.as_str()));
}

#[tokio::test]
async fn a_rotation_interrupted_before_its_status_is_written_resumes_with_the_same_key() {
    use crate::crd::KeyPhase;
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    let (old, _, _) = keys(&h);

    request_rotation(&h, "now");
    h.fake
        .fail(Method::PATCH, "stores/demo/status", 500, Some(1));
    h.reconcile().await.unwrap_err();
    assert_eq!(
        key_status(&h).phase,
        KeyPhase::Idle,
        "status was not written"
    );
    let (_, next, _) = keys(&h);
    let new = next.expect("the next key was stored");

    h.reconcile().await.unwrap();
    assert_eq!(
        writes_to_children(&h),
        Vec::<String>::new(),
        "the stored key is reused, not replaced"
    );
    assert_eq!(key_status(&h).phase, KeyPhase::Publishing);
    assert_eq!(key_status(&h).kid, new);
    assert_eq!(
        keys(&h),
        (old.clone(), Some(new.clone()), sorted_pair(&old, &new))
    );

    // Stopped again, after handing auth the new key.
    age_key_phase(&h, 120);
    h.fake
        .fail(Method::PATCH, "stores/demo/status", 500, Some(1));
    h.reconcile().await.unwrap_err();
    assert_eq!(keys(&h).0, new);
    h.reconcile().await.unwrap();
    assert_eq!(writes_to_children(&h), Vec::<String>::new());
    assert_eq!(key_status(&h).phase, KeyPhase::Signing);
}

#[tokio::test]
async fn a_store_created_with_the_annotation_does_not_rotate() {
    use crate::crd::KeyPhase;
    let mut store = Store::test();
    store.metadata.annotations = Some(std::collections::BTreeMap::from([(
        mercato_contract::ROTATE_SIGNING_KEY_ANNOTATION.to_string(),
        "copied-from-another-store".to_string(),
    )]));
    let h = Harness::new(store);
    h.reconcile().await.unwrap();
    let s = key_status(&h);
    assert_eq!(s.phase, KeyPhase::Idle);
    assert_eq!(s.rotation.as_deref(), Some("copied-from-another-store"));
    assert_eq!(keys(&h).1, None);
}

#[tokio::test]
async fn a_rotation_that_cannot_go_on_is_reported_while_the_rest_is_repaired() {
    use crate::crd::KeyPhase;
    use base64::Engine;
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    request_rotation(&h, "1");
    h.reconcile().await.unwrap();
    // Someone puts a key no JWKS lists where the next key was.
    let stranger = mercato_contract::credentials::generate_jwt_keys();
    let encoded = base64::engine::general_purpose::STANDARD.encode(stranger.private_pem);
    h.fake.edit(
        "secrets",
        NAMESPACE,
        "demo-jwt-signing",
        "kubectl-edit",
        json!({"data": {mercato_contract::secret_keys::JWT_NEXT_PRIVATE_KEY: encoded}}),
    );
    h.fake.remove("deployments", NAMESPACE, "demo-order");
    age_key_phase(&h, 120);

    let err = h.reconcile().await.unwrap_err();
    assert_eq!(err.kind(), "children");
    assert!(
        h.get("deployments", "demo-order").is_some(),
        "the rest is repaired"
    );
    assert_eq!(
        keys(&h).0,
        key_status(&h).previous_kid.unwrap(),
        "auth keeps its key"
    );
    assert_eq!(key_status(&h).phase, KeyPhase::Publishing);
    let (status, _, message) = h.condition(DEGRADED);
    assert_eq!(status, "True");
    assert!(
        message.contains("Secret/demo-jwt-signing") && message.contains("cannot go on"),
        "{message}"
    );
}

#[tokio::test]
async fn the_age_of_each_stores_signing_key_is_a_metric_until_the_store_is_gone() {
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    h.reconcile().await.unwrap();
    let since = h
        .store()
        .status
        .and_then(|s| s.signing_key)
        .expect("the key's status")
        .since
        .0
        .as_second();
    let series = format!(
        r#"mercato_operator_signing_key_since_timestamp_seconds{{store_namespace="{NAMESPACE}",store="demo"}} {since}"#
    );
    assert!(h.ctx.metrics.render().contains(&series), "{series}");
    h.ctx.metrics.forget_store(NAMESPACE, "demo");
    assert!(!h.ctx.metrics.render().contains("store=\"demo\""));
}
