//! The storefront's children: what it runs with, who may reach it, and that a Store that
//! turns it off has none of it (and a gateway that does not route to it).

use std::collections::BTreeSet;

use k8s_openapi::ByteString;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mercato_contract::{Component, HTTP_PORT, OPS_PORT, env, names, secret_keys};

use super::builders::{
    component_of, config_hash, container, deployment, env_of, pod, secret_ref, value, var,
};
use super::fixtures::NAMESPACE;
use crate::builders::{self, monitoring, network, secrets, workloads};
use crate::crd::{PeerSpec, Store};
use crate::images::ImageDefaults;

fn without_storefront() -> Store {
    Store::test().with(|s| s.storefront.enabled = false)
}

/// (peer component, port) of the rules of `policy` between pods of the store: where its
/// pods may connect to (`Egress`) or be reached from (`Ingress`).
fn edges(policy: &NetworkPolicy, direction: &str) -> BTreeSet<(String, i32)> {
    let spec = policy.spec.clone().unwrap();
    let rules: Vec<_> = match direction {
        "Egress" => spec
            .egress
            .into_iter()
            .flatten()
            .map(|r| (r.to, r.ports))
            .collect(),
        _ => spec
            .ingress
            .into_iter()
            .flatten()
            .map(|r| (r.from, r.ports))
            .collect(),
    };
    let mut out = BTreeSet::new();
    for (peers, ports) in rules {
        for peer in peers.into_iter().flatten() {
            let Some(pods) = peer
                .pod_selector
                .as_ref()
                .filter(|_| peer.namespace_selector.is_none())
            else {
                continue;
            };
            for port in ports.iter().flatten() {
                let Some(IntOrString::Int(n)) = port.port else {
                    panic!("ports are numbers")
                };
                out.insert((component_of(pods), n));
            }
        }
    }
    out
}

fn policy(store: &Store, c: Component) -> NetworkPolicy {
    network::component(&store.owner(), &store.spec, c)
}

#[test]
fn the_storefront_reads_the_gateway_url_its_keys_and_nothing_else() {
    let store = Store::test();
    let env = env_of(&deployment(&store, Component::Storefront));
    let names_set: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names_set,
        [
            env::HTTP_ADDR,
            env::OPS_ADDR,
            env::LOG_FORMAT,
            env::GATEWAY_URL,
            env::STOREFRONT_COOKIE_KEY,
            env::STOREFRONT_SECURE_COOKIES,
            env::REFRESH_TOKEN_TTL_SECS,
            env::EDGE_KEY,
        ],
        "no JWKS, database or client credentials"
    );
    assert_eq!(
        secret_ref(&env, env::EDGE_KEY),
        (
            names::edge_secret("demo"),
            secret_keys::EDGE_KEY.to_string()
        ),
        "the shopper's address, signed by the gateway, is relayed on the API calls"
    );
    assert_eq!(value(&env, env::STOREFRONT_SECURE_COOKIES), "auto");
    assert_eq!(
        value(&env, env::REFRESH_TOKEN_TTL_SECS),
        mercato_contract::DEFAULT_REFRESH_TOKEN_TTL_SECS.to_string()
    );
    assert_eq!(
        value(&env, env::GATEWAY_URL),
        format!("http://demo-gateway.{NAMESPACE}.svc:{HTTP_PORT}")
    );
    assert_eq!(value(&env, env::HTTP_ADDR), format!("0.0.0.0:{HTTP_PORT}"));
    assert_eq!(value(&env, env::OPS_ADDR), format!("0.0.0.0:{OPS_PORT}"));
    assert_eq!(value(&env, env::LOG_FORMAT), "json");
    assert_eq!(
        secret_ref(&env, env::STOREFRONT_COOKIE_KEY),
        (
            names::storefront_secret("demo"),
            secret_keys::STOREFRONT_COOKIE_KEY.to_string()
        )
    );
    assert!(
        var(&env, env::OTEL_EXPORTER_OTLP_ENDPOINT).is_none(),
        "no traces without spec.tracing"
    );

    // No Secret is mounted: the key comes through the environment, and no JWKS is read.
    let d = deployment(&store, Component::Storefront);
    assert!(
        pod(&d).volumes.iter().flatten().all(|v| v.secret.is_none()),
        "{:?}",
        pod(&d).volumes
    );
    assert!(
        container(&d)
            .volume_mounts
            .iter()
            .flatten()
            .all(|m| m.mount_path == "/tmp")
    );
    assert_eq!(
        container(&d).image.as_deref(),
        Some(
            ImageDefaults::default()
                .image(Component::Storefront)
                .as_str()
        )
    );
    assert_eq!(
        pod(&d).service_account_name.as_deref(),
        Some("demo-storefront")
    );
}

#[test]
fn with_tracing_the_storefront_sends_its_traces_to_the_collector() {
    let store = Store::test().with(|s| {
        s.tracing = Some(crate::crd::TracingSpec {
            otlp_endpoint: "http://otel-collector.observability:4318".into(),
            collector: PeerSpec {
                namespace: "observability".into(),
                pod_labels: [("app".to_string(), "otel".to_string())].into(),
            },
            port: 4318,
        });
    });
    let env = env_of(&deployment(&store, Component::Storefront));
    assert_eq!(
        value(&env, env::OTEL_EXPORTER_OTLP_ENDPOINT),
        "http://otel-collector.observability:4318"
    );
}

#[test]
fn the_storefront_settings_come_from_the_store() {
    let store = Store::test().with(|s| {
        s.storefront.secure_cookies = crate::crd::SecureCookies::Always;
        s.tokens.refresh_token_ttl_seconds = 3600;
        s.storefront.image = Some("registry.example.com/shop/storefront:1.2.3".into());
        s.storefront.replicas = 3;
        s.storefront.resources.limits = Some(
            [(
                "memory".to_string(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
            )]
            .into(),
        );
    });
    let d = deployment(&store, Component::Storefront);
    assert_eq!(
        container(&d).image.as_deref(),
        Some("registry.example.com/shop/storefront:1.2.3")
    );
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
    let env = env_of(&d);
    assert_eq!(value(&env, env::STOREFRONT_SECURE_COOKIES), "always");
    assert_eq!(
        value(&env, env::REFRESH_TOKEN_TTL_SECS),
        "3600",
        "the session cookie lives as long as the refresh token in it"
    );
    assert_eq!(
        container(&d)
            .resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap()["memory"]
            .0,
        "1Gi"
    );
    let pdb = workloads::pod_disruption_budget(&store.owner(), &store.spec, Component::Storefront)
        .expect("three replicas get a disruption budget");
    assert_eq!(pdb.metadata.name.as_deref(), Some("demo-storefront"));
    // The gateway keeps its own settings.
    let gateway = deployment(&store, Component::Gateway);
    assert_eq!(gateway.spec.as_ref().unwrap().replicas, Some(1));
}

#[test]
fn a_new_cookie_key_rolls_the_storefront_and_nothing_else_and_a_new_edge_key_rolls_it_too() {
    let store = Store::test();
    let mut data = secrets::generate("demo");
    let hash = |data: &builders::SecretData, c: Component| config_hash(&store, c, data);
    let before: Vec<String> = Component::ALL.iter().map(|c| hash(&data, *c)).collect();
    data.get_mut("demo-storefront").unwrap().insert(
        secret_keys::STOREFRONT_COOKIE_KEY.into(),
        ByteString(b"a-key-someone-set-by-hand-0123456789abcdefghijklmnop".to_vec()),
    );
    for (c, before) in Component::ALL.iter().zip(&before) {
        assert_eq!(
            hash(&data, *c) != *before,
            *c == Component::Storefront,
            "{c}"
        );
    }
    let storefront = hash(&data, Component::Storefront);
    data.get_mut("demo-edge").unwrap().insert(
        secret_keys::EDGE_KEY.into(),
        ByteString(b"an-edge-key-someone-set-by-hand-0123456789abcdef".to_vec()),
    );
    assert_ne!(hash(&data, Component::Storefront), storefront);
}

#[test]
fn the_storefront_service_is_internal_on_the_api_and_ops_ports() {
    let store = Store::test();
    let svc = workloads::service(&store.owner(), &store.spec, Component::Storefront);
    assert_eq!(svc.metadata.name.as_deref(), Some("demo-storefront"));
    let spec = svc.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let ports: Vec<(Option<String>, i32)> = spec
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.port))
        .collect();
    assert_eq!(
        ports,
        [
            (Some("http".to_string()), i32::from(HTTP_PORT)),
            (Some("ops".to_string()), i32::from(OPS_PORT))
        ]
    );
    assert_eq!(
        spec.selector.unwrap()["app.kubernetes.io/component"],
        "storefront"
    );
}

#[test]
fn the_gateway_routes_to_the_storefront_only_when_there_is_one() {
    let url = |store: &Store| {
        var(
            &env_of(&deployment(store, Component::Gateway)),
            env::STOREFRONT_URL,
        )
        .and_then(|e| e.value.clone())
    };
    assert_eq!(
        url(&Store::test()),
        Some(format!(
            "http://demo-storefront.{NAMESPACE}.svc:{HTTP_PORT}"
        ))
    );
    assert_eq!(url(&without_storefront()), None);
    // Nothing else of the gateway changes with it.
    let others = |store: &Store| -> Vec<String> {
        env_of(&deployment(store, Component::Gateway))
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n != env::STOREFRONT_URL)
            .collect()
    };
    assert_eq!(others(&Store::test()), others(&without_storefront()));
}

#[test]
fn the_gateway_and_the_storefront_reach_each_other_on_the_api_port_only() {
    let store = Store::test();
    let storefront = policy(&store, Component::Storefront);
    let gateway = policy(&store, Component::Gateway);
    let api = |c: &str| (c.to_string(), i32::from(HTTP_PORT));

    assert_eq!(
        edges(&storefront, "Ingress"),
        BTreeSet::from([api("gateway")])
    );
    assert_eq!(
        edges(&storefront, "Egress"),
        BTreeSet::from([api("gateway")])
    );
    assert!(
        edges(&gateway, "Egress").contains(&api("storefront")),
        "the gateway may route pages to it"
    );
    assert!(
        !edges(&gateway, "Egress").contains(&("storefront".to_string(), i32::from(OPS_PORT))),
        "the gateway does not probe the storefront: its ops port stays closed"
    );
    assert!(
        edges(&gateway, "Egress").contains(&("auth".to_string(), i32::from(OPS_PORT))),
        "the services' /readyz are still read for /health"
    );
    // The storefront reaches the gateway through the gateway's ingress, open to all on the
    // API port; and nothing else of the store reaches the storefront or is reached by it.
    for c in Component::ALL {
        if matches!(c, Component::Gateway | Component::Storefront) {
            continue;
        }
        let p = policy(&store, c);
        for direction in ["Ingress", "Egress"] {
            assert!(
                edges(&p, direction)
                    .iter()
                    .all(|(peer, _)| peer != "storefront"),
                "{c} {direction}"
            );
        }
    }
}

#[test]
fn prometheus_may_scrape_the_storefront_when_the_store_names_it() {
    let store = Store::test().with(|s| {
        s.monitoring.prometheus = Some(PeerSpec {
            namespace: "monitoring".into(),
            pod_labels: [("app".to_string(), "prometheus".to_string())].into(),
        })
    });
    let spec = policy(&store, Component::Storefront).spec.unwrap();
    let from_monitoring: Vec<i32> = spec
        .ingress
        .iter()
        .flatten()
        .filter(|r| {
            r.from
                .iter()
                .flatten()
                .any(|p| p.namespace_selector.is_some())
        })
        .flat_map(|r| r.ports.iter().flatten())
        .filter_map(|p| match p.port {
            Some(IntOrString::Int(n)) => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(from_monitoring, [i32::from(OPS_PORT)]);
}

#[test]
fn the_pod_monitor_and_alerts_cover_the_storefront_while_it_runs() {
    let scraped = |store: &Store| -> Vec<String> {
        monitoring::pod_monitor(&store.owner(), &store.spec)
            .spec
            .selector
            .match_expressions
            .unwrap()[0]
            .values
            .clone()
            .unwrap()
    };
    let alerts = |store: &Store| -> Vec<String> {
        monitoring::rules(&store.owner(), &store.spec)
            .into_iter()
            .map(|r| r.alert)
            .collect()
    };
    assert!(scraped(&Store::test()).contains(&"mercato-storefront".to_string()));
    assert!(alerts(&Store::test()).contains(&"MercatoStorefrontMissing".to_string()));
    let off = without_storefront();
    assert!(!scraped(&off).contains(&"mercato-storefront".to_string()));
    assert!(scraped(&off).contains(&"mercato-gateway".to_string()));
    assert!(
        !alerts(&off).contains(&"MercatoStorefrontMissing".to_string()),
        "no alert for a storefront that is meant to be absent"
    );
}

#[test]
fn a_store_without_a_storefront_has_none_of_its_objects() {
    let (children, _) = without_storefront().children();
    let storefront: Vec<String> = children
        .iter()
        .filter(|c| {
            c.name.contains("storefront")
                || c.component == Some(Component::Storefront)
                || c.object["metadata"]["labels"]["app.kubernetes.io/component"] == "storefront"
        })
        .map(|c| c.display())
        .collect();
    assert_eq!(storefront, Vec::<String>::new());
    assert!(
        edges(&policy(&without_storefront(), Component::Gateway), "Egress")
            .iter()
            .all(|(peer, _)| peer != "storefront"),
        "no egress to pods that do not exist"
    );
    // Everything else is as with one: the storefront's five objects fewer (Secret,
    // ServiceAccount, Service, Deployment, NetworkPolicy).
    let (all, _) = Store::test().children();
    assert_eq!(all.len() - children.len(), 5);
}

#[test]
fn what_a_store_without_a_storefront_must_delete_is_exactly_the_storefronts_objects() {
    let store = without_storefront().with(|s| s.storefront.replicas = 2);
    let gone: Vec<String> =
        builders::switched_off(&store.owner(), &store.spec, &ImageDefaults::default())
            .iter()
            .map(|c| c.display())
            .collect();
    assert_eq!(
        gone,
        [
            "Secret/demo-storefront",
            "ServiceAccount/demo-storefront",
            "Service/demo-storefront",
            "Deployment/demo-storefront",
            "PodDisruptionBudget/demo-storefront",
            "NetworkPolicy/demo-storefront",
        ]
    );
    let on = Store::test();
    assert!(
        builders::switched_off(&on.owner(), &on.spec, &ImageDefaults::default()).is_empty(),
        "a Store that runs everything has nothing to delete"
    );
}
