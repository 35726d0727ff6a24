//! PostgreSQL major-version changes: a database StatefulSet that runs another major version
//! than the Store asks for is left as it is, and status and an event say why.

use serde_json::json;

use super::fixtures::NAMESPACE;
use super::reconcile::Harness;
use crate::builders::database::major_upgrade;
use crate::crd::Store;
use crate::status::UPGRADE_BLOCKED;

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
