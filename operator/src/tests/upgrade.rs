//! Upgrades. PostgreSQL major-version changes: a database StatefulSet that runs another
//! major version than the Store asks for is left as it is, and status and an event say why.
//! An operator upgrade that changes the components' pod templates rolls them one at a time.

use std::sync::Arc;

use serde_json::json;

use super::fixtures::NAMESPACE;
use super::reconcile::Harness;
use crate::builders::database::major_upgrade;
use crate::crd::Store;
use crate::images::ImageDefaults;
use crate::status::{PROGRESSING, UPGRADE_BLOCKED};

fn set_order_image(h: &Harness, image: &str) {
    h.fake.edit(
        "stores",
        NAMESPACE,
        "demo",
        "kubectl-edit",
        json!({"spec": {"order": {"database": {"image": image}}}}),
    );
}

fn order_db_image(h: &Harness) -> String {
    h.get("statefulsets", "demo-order-db").unwrap()["spec"]["template"]["spec"]["containers"][0]
        ["image"]
        .as_str()
        .unwrap()
        .to_string()
}

fn upgrade_blocked(h: &Harness) -> Option<(String, String)> {
    let status = h.store().status?;
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == UPGRADE_BLOCKED)?;
    Some((c.status.clone(), c.message.clone()))
}

#[test]
fn only_a_change_of_two_known_major_versions_is_an_upgrade() {
    assert!(major_upgrade("postgres:15", "postgres:17"));
    assert!(major_upgrade("bench/postgres:15", "bench/postgres:16"));
    assert!(major_upgrade("postgres:9.6", "postgres:96"));
    assert!(!major_upgrade("postgres:15.4", "postgres:15.6-bookworm"));
    assert!(!major_upgrade("postgres:15", "postgres:latest"));
    assert!(!major_upgrade("postgres", "postgres:17"));
    assert!(!major_upgrade(
        "postgres:15",
        "postgres@sha256:0123456789abcdef"
    ));
}

#[tokio::test]
async fn a_major_version_change_leaves_the_stateful_set_and_says_why() {
    let h =
        Harness::new(Store::test().with(|s| s.order.database.image = Some("postgres:15".into())));
    h.reconcile().await.unwrap();
    h.roll_out();
    h.reconcile().await.unwrap();
    assert_eq!(upgrade_blocked(&h), None);

    // As if the CRD's rule were not there (or a new operator default named another major).
    set_order_image(&h, "postgres:17");
    h.reconcile().await.unwrap();
    assert_eq!(order_db_image(&h), "postgres:15");
    let writes = h.fake.child_writes();
    assert!(
        !writes.iter().any(|w| w.contains("statefulsets")),
        "{writes:?}"
    );
    let (status, message) = upgrade_blocked(&h).expect("UpgradeBlocked");
    assert_eq!(status, "True");
    for part in [
        "order-db runs postgres:15 and the Store asks for postgres:17",
        "restoreFrom",
    ] {
        assert!(message.contains(part), "{message}");
    }
    let warnings = |h: &Harness| {
        h.events()
            .into_iter()
            .filter(|(reason, _)| reason == UPGRADE_BLOCKED)
            .count()
    };
    assert_eq!(warnings(&h), 1);
    // The other databases were still applied (and the store still runs the old one).
    assert!(h.get("statefulsets", "demo-auth-db").is_some());
    assert!(h.store().status.unwrap().components["order"].database_ready == Some(true));

    // Unchanged: no write, no second warning.
    h.reconcile().await.unwrap();
    assert_eq!(h.fake.writes(), Vec::<String>::new());
    assert_eq!(warnings(&h), 1);

    // Back to the running major version: applied, and the condition goes.
    set_order_image(&h, "postgres:15.6");
    h.reconcile().await.unwrap();
    assert_eq!(order_db_image(&h), "postgres:15.6");
    assert_eq!(upgrade_blocked(&h), None);
}

#[tokio::test]
async fn a_minor_version_change_is_applied() {
    let h =
        Harness::new(Store::test().with(|s| s.order.database.image = Some("postgres:15.4".into())));
    h.reconcile().await.unwrap();
    set_order_image(&h, "postgres:15.6");
    h.reconcile().await.unwrap();
    assert_eq!(order_db_image(&h), "postgres:15.6");
    assert!(
        h.fake
            .child_writes()
            .iter()
            .any(|w| w.contains("statefulsets/demo-order-db")),
        "{:?}",
        h.fake.child_writes()
    );
    assert_eq!(upgrade_blocked(&h), None);
}

// --- One component's pods roll at a time ------------------------------------------------

fn image_of(h: &Harness, c: &str) -> String {
    h.get("deployments", &format!("demo-{c}")).unwrap()["spec"]["template"]["spec"]["containers"][0]
        ["image"]
        .as_str()
        .unwrap()
        .to_string()
}

fn deployment_writes(h: &Harness) -> Vec<String> {
    h.fake
        .child_writes()
        .into_iter()
        .filter(|w| w.contains("deployments/"))
        .collect()
}

/// A Ready store, then the operator restarted as a new release: new default images.
async fn upgraded_operator() -> Harness {
    let mut h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    h.roll_out();
    h.reconcile().await.unwrap();
    assert_eq!(h.condition(PROGRESSING).1, "RolloutComplete");
    let images = ImageDefaults::new(None, Some("0.2.0")).unwrap();
    h.ctx = Arc::new(h.ctx.fork().with_images(images));
    h
}

#[tokio::test]
async fn an_operator_upgrade_rolls_one_component_at_a_time_in_the_stores_order() {
    let h = upgraded_operator().await;
    let order = [
        "auth",
        "product",
        "order",
        "payment",
        "gateway",
        "storefront",
    ];
    for (i, c) in order.iter().enumerate() {
        h.reconcile().await.unwrap();
        assert_eq!(
            deployment_writes(&h),
            [format!("PATCH deployments/demo-{c}")]
        );
        for (j, other) in order.iter().enumerate() {
            let tag = if j <= i { "0.2.0" } else { "0.1.0" };
            assert_eq!(image_of(&h, other), format!("mercato/{other}:{tag}"));
        }
        let (status, reason, message) = h.condition(PROGRESSING);
        if i + 1 < order.len() {
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("True", "RollingOneAtATime")
            );
            assert!(
                message.starts_with(&format!("{c} is rolling out;")),
                "{message}"
            );
            assert!(message.ends_with(&order[i + 1..].join(", ")), "{message}");
        }
        // While it rolls, the next one waits: a reconcile applies no Deployment.
        h.reconcile().await.unwrap();
        assert_eq!(
            deployment_writes(&h),
            Vec::<String>::new(),
            "{c} is still rolling"
        );
        h.roll_out();
    }
    h.reconcile().await.unwrap();
    assert_eq!(deployment_writes(&h), Vec::<String>::new());
    assert_eq!(h.condition(PROGRESSING).1, "RolloutComplete");
}

fn edit_store(h: &Harness, spec: serde_json::Value) {
    h.fake.edit(
        "stores",
        NAMESPACE,
        "demo",
        "kubectl-edit",
        json!({ "spec": spec }),
    );
}

#[tokio::test]
async fn scaling_never_waits_and_a_rollout_past_its_deadline_holds_no_one_back() {
    let h = Harness::new(Store::test());
    h.reconcile().await.unwrap();
    h.roll_out();
    h.reconcile().await.unwrap();

    // A Store edit that changes two components' pods rolls them in turn too.
    edit_store(
        &h,
        json!({"auth": {"image": "mercato/auth:0.1.1"}, "order": {"image": "mercato/order:0.1.1"}}),
    );
    h.reconcile().await.unwrap();
    assert_eq!(deployment_writes(&h), ["PATCH deployments/demo-auth"]);
    assert_eq!(image_of(&h, "order"), "mercato/order:0.1.0");

    // Scaling a component changes no pod template: it is applied while auth rolls.
    edit_store(&h, json!({"product": {"replicas": 3}}));
    h.reconcile().await.unwrap();
    assert_eq!(deployment_writes(&h), ["PATCH deployments/demo-product"]);
    assert_eq!(
        h.get("deployments", "demo-product").unwrap()["spec"]["replicas"],
        3
    );

    // (A Deployment still scaling counts as rolling out, as for `kubectl rollout status`.)
    h.reconcile().await.unwrap();
    assert_eq!(deployment_writes(&h), Vec::<String>::new());
    h.roll_out();

    // auth's new pods never become available and its deadline passes: order goes on.
    let auth = h.get("deployments", "demo-auth").unwrap();
    h.fake.set_status(
        "deployments",
        NAMESPACE,
        "demo-auth",
        json!({"observedGeneration": auth["metadata"]["generation"], "replicas": 3,
               "updatedReplicas": 1, "availableReplicas": 2,
               "conditions": [{"type": "Progressing", "status": "False",
                               "reason": "ProgressDeadlineExceeded"}]}),
    );
    h.reconcile().await.unwrap();
    assert_eq!(deployment_writes(&h), ["PATCH deployments/demo-order"]);
    assert_eq!(image_of(&h, "order"), "mercato/order:0.1.1");
}
