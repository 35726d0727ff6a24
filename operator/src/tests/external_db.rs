//! External databases (`database.external`): the children the operator leaves out, the
//! service's database URL from the user's Secret, its egress, and what the reconciler does.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use mercato_contract::{Component, POSTGRES_PORT, env, names};
use serde_json::json;

use super::builders::{deployment, env_of, secret_ref, value, var};
use super::fixtures::NAMESPACE;
use super::reconcile::Harness;
use crate::builders::workloads::PGSSLMODE;
use crate::crd::{BackupSpec, ExternalDatabase, Phase, Store, TlsMode};
use crate::status::READY;

/// The fixture Store with order's database a CloudNativePG Cluster's.
fn external_order() -> Store {
    Store::test().with(|s| {
        s.order.database.external = Some(ExternalDatabase {
            secret_name: "shop-order-db-app".into(),
            url_key: "uri".into(),
            tls_mode: TlsMode::VerifyFull,
        })
    })
}

/// `(kind, name)` of every child of `store`.
fn children(store: &Store) -> Vec<(String, String)> {
    store
        .children()
        .0
        .into_iter()
        .map(|c| (c.kind().to_string(), c.name))
        .collect()
}

#[test]
fn an_external_database_gets_no_stateful_set_service_claim_credentials_or_backup() {
    let with_backup = |s: Store| {
        s.with(|s| {
            s.backup = Some(BackupSpec {
                schedule: "17 3 * * *".into(),
                retention: 7,
                target: Default::default(),
                image: None,
            })
        })
    };
    let ours = children(&with_backup(Store::test()));
    let theirs = children(&with_backup(external_order()));
    let gone: Vec<_> = ours
        .iter()
        .filter(|c| !theirs.contains(c))
        .cloned()
        .collect();
    assert_eq!(
        gone,
        [
            ("Secret", "demo-order-db-credentials"),
            ("Service", "demo-order-db"),
            ("StatefulSet", "demo-order-db"),
            ("CronJob", "demo-order-db-backup"),
            ("NetworkPolicy", "demo-order-db"),
            ("NetworkPolicy", "demo-order-db-backup"),
        ]
        .map(|(k, n)| (k.to_string(), n.to_string())),
        "the volume claim is the StatefulSet's template: none without it"
    );
    assert!(
        theirs.iter().all(|(_, n)| !n.starts_with("demo-order-db")),
        "{theirs:?}"
    );
    assert!(theirs.contains(&("StatefulSet".into(), "demo-product-db".into())));
}

#[test]
fn the_service_reads_its_database_url_from_the_secret_and_the_tls_mode_from_pgsslmode() {
    let store = external_order();
    let env = env_of(&deployment(&store, Component::Order));
    assert_eq!(
        secret_ref(&env, env::DATABASE_URL),
        ("shop-order-db-app".to_string(), "uri".to_string())
    );
    assert_eq!(value(&env, PGSSLMODE), "verify-full");
    for part in [env::DB_USER, env::DB_PASSWORD, env::DB_NAME, env::DB_HOST] {
        assert!(var(&env, part).is_none(), "{part}");
    }
    assert!(
        !serde_json::to_string(&env)
            .unwrap()
            .contains(&names::db_credentials_secret("demo", Component::Order)),
        "no generated credentials"
    );
    // The others keep their own database.
    let product = env_of(&deployment(&store, Component::Product));
    assert!(value(&product, env::DATABASE_URL).starts_with("postgres://$(DB_USER)"));
    assert!(var(&product, PGSSLMODE).is_none());
}

#[test]
fn a_service_with_an_external_database_may_reach_postgres_anywhere_and_only_it() {
    let (all, _) = external_order().children();
    let policy = |name: &str| -> NetworkPolicy {
        let c = all
            .iter()
            .find(|c| c.kind() == "NetworkPolicy" && c.name == name)
            .unwrap_or_else(|| panic!("no NetworkPolicy {name}"));
        serde_json::from_value(c.object.clone()).unwrap()
    };
    let anywhere = |p: &NetworkPolicy| {
        p.spec
            .clone()
            .unwrap()
            .egress
            .into_iter()
            .flatten()
            .filter(|r| r.to.iter().flatten().any(|peer| peer.ip_block.is_some()))
            .map(|r| serde_json::to_value(r).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        anywhere(&policy("demo-order")),
        [
            json!({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
                "ports": [{"protocol": "TCP", "port": i32::from(POSTGRES_PORT)}]})
        ]
    );
    for other in ["demo-product", "demo-auth", "demo-gateway"] {
        assert_eq!(
            anywhere(&policy(other)),
            Vec::<serde_json::Value>::new(),
            "{other}"
        );
    }
}

#[tokio::test]
async fn a_store_with_an_external_database_becomes_ready_with_the_rest_and_then_writes_nothing() {
    let h = Harness::new(external_order());
    h.reconcile().await.unwrap();
    assert!(h.get("statefulsets", "demo-order-db").is_none());
    assert!(h.get("services", "demo-order-db").is_none());
    assert!(h.get("secrets", "demo-order-db-credentials").is_none());
    assert!(h.get("statefulsets", "demo-product-db").is_some());
    let deployment = h.get("deployments", "demo-order").unwrap();
    assert!(deployment.to_string().contains("shop-order-db-app"));

    h.roll_out();
    h.reconcile().await.unwrap();
    let status = h.store().status.unwrap();
    assert_eq!(status.phase, Some(Phase::Ready), "{:?}", h.condition(READY));
    assert_eq!(
        status.components["order"].database_ready, None,
        "not the operator's to watch"
    );
    assert_eq!(status.components["order"].ready_replicas, 1);
    assert_eq!(status.components["product"].database_ready, Some(true));

    h.reconcile().await.unwrap();
    assert_eq!(h.fake.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn an_external_database_is_not_waited_for_but_its_service_is() {
    let h = Harness::new(external_order());
    h.reconcile().await.unwrap();
    h.roll_out();
    // The service cannot reach its database: /readyz fails, so no ready replica.
    h.fake.set_status(
        "deployments",
        NAMESPACE,
        "demo-order",
        json!({"observedGeneration": 1, "replicas": 1, "readyReplicas": 0, "updatedReplicas": 1}),
    );
    h.reconcile().await.unwrap();
    let (status, _, message) = h.condition(READY);
    assert_eq!(status, "False");
    assert!(message.contains("order (0/1)"), "{message}");
    assert!(!message.contains("order-db"), "{message}");
}
