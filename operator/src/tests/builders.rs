//! The desired-state builders, checked object by object against a fixture Store.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mercato_contract::{
    Component, HTTP_PORT, POSTGRES_PORT, env, names, paths, secret_keys, service_clients,
};

use super::fixtures::{NAMESPACE, UID};
use crate::builders::{self, database, network, secrets, workloads};
use crate::crd::{GatewayServiceType, ImagePullPolicy, Store, StoreSpec};
use crate::images::ImageDefaults;
use crate::meta::{APPLIED_HASH_ANNOTATION, CONFIG_HASH_ANNOTATION};

pub(super) fn deployment(store: &Store, c: Component) -> Deployment {
    let data = secrets::generate("demo");
    workloads::deployment(
        &store.owner(),
        &store.spec,
        &ImageDefaults::default(),
        c,
        &data,
    )
}

pub(super) fn pod(d: &Deployment) -> &PodSpec {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

pub(super) fn container(d: &Deployment) -> &Container {
    &pod(d).containers[0]
}

pub(super) fn env_of(d: &Deployment) -> Vec<EnvVar> {
    container(d).env.clone().unwrap()
}

pub(super) fn var<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a EnvVar> {
    env.iter().find(|e| e.name == name)
}

pub(super) fn value(env: &[EnvVar], name: &str) -> String {
    var(env, name)
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| panic!("{name} has no plain value"))
}

/// (Secret, key) an env var is read from.
pub(super) fn secret_ref(env: &[EnvVar], name: &str) -> (String, String) {
    let r = var(env, name)
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref())
        .unwrap_or_else(|| panic!("{name} is not read from a Secret"));
    (r.name.clone(), r.key.clone())
}

pub(super) fn statefulset(store: &Store, c: Component) -> StatefulSet {
    let data = secrets::generate("demo");
    let db = &store.spec.service(c).unwrap().database;
    database::stateful_set(
        &store.owner(),
        &store.spec,
        &ImageDefaults::default(),
        db,
        c,
        &data,
    )
}

#[test]
fn every_child_has_the_store_prefix_five_labels_owner_and_hash() {
    let store = Store::test();
    let (children, _) = store.children();
    for child in &children {
        let o = &child.object;
        let what = child.display();
        assert!(child.name.starts_with("demo-"), "{what}");
        assert!(child.name.len() <= 63, "{what}");
        assert_eq!(o["metadata"]["namespace"], NAMESPACE, "{what}");
        assert!(
            o["apiVersion"].is_string() && o["kind"].is_string(),
            "{what}: SSA needs apiVersion/kind"
        );
        assert!(o.get("status").is_none(), "{what}: status is never sent");
        let labels = &o["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/instance"], "demo", "{what}");
        assert_eq!(labels["app.kubernetes.io/part-of"], "mercato", "{what}");
        assert_eq!(
            labels["app.kubernetes.io/managed-by"], "mercato-operator",
            "{what}"
        );
        assert!(labels["app.kubernetes.io/name"].is_string(), "{what}");
        assert!(labels["app.kubernetes.io/component"].is_string(), "{what}");
        let refs = o["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(refs.len(), 1, "{what}");
        assert_eq!(refs[0]["uid"], UID);
        assert_eq!(refs[0]["kind"], "Store");
        assert_eq!(refs[0]["apiVersion"], "mercato.dev/v1alpha1");
        assert_eq!(refs[0]["controller"], true);
        assert_eq!(
            o["metadata"]["annotations"][APPLIED_HASH_ANNOTATION],
            child.fingerprint().as_str(),
            "{what}"
        );
    }
}

#[test]
fn a_minimal_store_gets_every_child_with_defaults() {
    let store = Store::test();
    assert_eq!(store.spec, StoreSpec::default());
    let (children, _) = store.children();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for c in &children {
        *kinds.entry(c.kind().to_string()).or_default() += 1;
    }
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("Secret".into(), 13),
            ("ServiceAccount".into(), 6),
            ("Service".into(), 10),
            ("StatefulSet".into(), 4),
            ("Deployment".into(), 6),
            // default deny, DNS, one per component, one per database; no PDB at 1 replica
            ("NetworkPolicy".into(), 2 + 6 + 4),
        ])
    );
    for c in Component::ALL {
        let d = deployment(&store, c);
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(1));
        assert_eq!(
            container(&d).image.as_deref(),
            Some(ImageDefaults::default().image(c).as_str())
        );
        assert_eq!(
            container(&d).image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );
        assert!(container(&d).resources.as_ref().unwrap().limits.is_some());
    }
    let sts = statefulset(&store, Component::Order);
    let claim = &sts
        .spec
        .as_ref()
        .unwrap()
        .volume_claim_templates
        .as_ref()
        .unwrap()[0];
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(
        claim_spec.storage_class_name, None,
        "the cluster's default class is used"
    );
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "1Gi"
    );
    assert_eq!(
        sts.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .as_deref(),
        Some("postgres:17")
    );
}

#[test]
fn names_follow_the_contract() {
    let store = Store::test();
    for c in Component::ALL {
        assert_eq!(
            deployment(&store, c).metadata.name.unwrap(),
            names::component("demo", c)
        );
        assert_eq!(
            workloads::service(&store.owner(), &store.spec, c)
                .metadata
                .name
                .unwrap(),
            names::component("demo", c)
        );
        assert_eq!(
            pod(&deployment(&store, c)).service_account_name.as_deref(),
            Some(names::component("demo", c).as_str())
        );
    }
    for c in Component::WITH_DATABASE {
        let sts = statefulset(&store, c);
        assert_eq!(
            sts.metadata.name.as_deref(),
            Some(names::database("demo", c).as_str())
        );
        assert_eq!(
            sts.spec.unwrap().service_name.as_deref(),
            Some(names::database("demo", c).as_str())
        );
        let svc = database::headless_service(&store.owner(), c);
        assert_eq!(
            svc.metadata.name.as_deref(),
            Some(names::database("demo", c).as_str())
        );
        assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    }
}

#[test]
fn auth_env_is_wired_from_the_secrets_by_contract_names() {
    let store = Store::test().with(|s| {
        s.tokens.access_token_ttl_seconds = 600;
        s.tokens.refresh_token_ttl_seconds = 3600;
    });
    let env = env_of(&deployment(&store, Component::Auth));
    let creds = names::db_credentials_secret("demo", Component::Auth);
    assert_eq!(
        secret_ref(&env, env::DB_USER),
        (creds.clone(), secret_keys::DB_USERNAME.into())
    );
    assert_eq!(
        secret_ref(&env, env::DB_PASSWORD),
        (creds.clone(), secret_keys::DB_PASSWORD.into())
    );
    assert_eq!(
        secret_ref(&env, env::DB_NAME),
        (creds, secret_keys::DB_DATABASE.into())
    );
    assert_eq!(
        value(&env, env::DB_HOST),
        format!("demo-auth-db.{NAMESPACE}.svc")
    );
    assert_eq!(
        value(&env, env::DATABASE_URL),
        format!("postgres://$(DB_USER):$(DB_PASSWORD)@$(DB_HOST):{POSTGRES_PORT}/$(DB_NAME)")
    );
    let admin = names::admin_secret("demo");
    assert_eq!(
        secret_ref(&env, env::ADMIN_USERNAME),
        (admin.clone(), secret_keys::ADMIN_USERNAME.into())
    );
    assert_eq!(
        secret_ref(&env, env::ADMIN_EMAIL),
        (admin.clone(), secret_keys::ADMIN_EMAIL.into())
    );
    assert_eq!(
        secret_ref(&env, env::ADMIN_PASSWORD),
        (admin, secret_keys::ADMIN_PASSWORD.into())
    );
    assert_eq!(
        value(&env, env::JWT_PRIVATE_KEY_PATH),
        paths::SIGNING_KEY_FILE
    );
    assert_eq!(value(&env, env::JWKS_PATH), paths::JWKS_FILE);
    assert_eq!(value(&env, env::ACCESS_TOKEN_TTL_SECS), "600");
    assert_eq!(value(&env, env::REFRESH_TOKEN_TTL_SECS), "3600");
    assert_eq!(value(&env, env::HTTP_ADDR), format!("0.0.0.0:{HTTP_PORT}"));

    // SERVICE_CLIENTS names every service client, each secret from its own Secret.
    let clients = service_clients::parse(&value(&env, env::SERVICE_CLIENTS)).unwrap();
    let expected: Vec<Component> = Component::ALL
        .into_iter()
        .filter(|c| c.service_client_scopes().is_some())
        .collect();
    assert_eq!(clients.len(), expected.len());
    for ((id, secret), c) in clients.iter().zip(&expected) {
        assert_eq!(id, c.name());
        let var_name = format!("{}{}", env::CLIENT_SECRET_PREFIX, c.name().to_uppercase());
        assert_eq!(secret, &format!("$({var_name})"));
        assert_eq!(
            secret_ref(&env, &var_name),
            (
                names::client_secret("demo", *c),
                secret_keys::CLIENT_SECRET.into()
            )
        );
    }
    assert!(
        var(&env, env::CLIENT_ID).is_none(),
        "auth has no client of its own"
    );
}

#[test]
fn callers_get_their_callees_urls_and_their_own_client() {
    let store = Store::test();
    for c in Component::ALL {
        let env = env_of(&deployment(&store, c));
        for callee in Component::ALL {
            let url = var(&env, callee.url_env()).and_then(|e| e.value.clone());
            if builders::callees(&store.spec, c).contains(&callee) {
                assert_eq!(
                    url,
                    Some(format!(
                        "http://demo-{}.{NAMESPACE}.svc:{HTTP_PORT}",
                        callee.name()
                    )),
                    "{c} -> {callee}"
                );
            } else {
                assert_eq!(url, None, "{c} does not call {callee}");
            }
        }
        if c.service_client_scopes().is_some() {
            let client = names::client_secret("demo", c);
            assert_eq!(
                secret_ref(&env, env::CLIENT_ID),
                (client.clone(), secret_keys::CLIENT_ID.into())
            );
            assert_eq!(
                secret_ref(&env, env::CLIENT_SECRET),
                (client, secret_keys::CLIENT_SECRET.into())
            );
        } else {
            assert!(var(&env, env::CLIENT_SECRET).is_none(), "{c}");
        }
        assert_eq!(
            var(&env, env::DATABASE_URL).is_some(),
            c.has_database(),
            "{c}"
        );
        if c == Component::Storefront {
            assert!(var(&env, env::JWKS_PATH).is_none(), "it verifies no token");
        } else {
            assert_eq!(value(&env, env::JWKS_PATH), paths::JWKS_FILE, "{c}");
        }
    }
}

/// The variables each component gets: what the service reads (its `--help`; the devstack's
/// `Topology::service_env` sets the same, plus `LOG_LEVEL`, left to the services' default
/// here), and the parts that only feed `$(VAR)` references of other variables.
#[test]
fn each_component_gets_exactly_the_variables_its_service_reads() {
    let addresses = [env::HTTP_ADDR, env::OPS_ADDR, env::LOG_FORMAT];
    let common = [
        &addresses[..],
        &[env::JWT_ISSUER, env::JWT_AUDIENCE, env::JWKS_PATH],
    ]
    .concat();
    let database = [env::DATABASE_URL];
    let database_parts = [env::DB_USER, env::DB_PASSWORD, env::DB_NAME, env::DB_HOST];
    let client = [env::CLIENT_ID, env::CLIENT_SECRET, env::AUTH_URL];
    let expected: BTreeMap<Component, (Vec<&str>, Vec<String>)> = BTreeMap::from([
        (
            Component::Auth,
            (
                [
                    &common[..],
                    &database,
                    &[
                        env::JWT_PRIVATE_KEY_PATH,
                        env::ACCESS_TOKEN_TTL_SECS,
                        env::REFRESH_TOKEN_TTL_SECS,
                        env::ADMIN_USERNAME,
                        env::ADMIN_EMAIL,
                        env::ADMIN_PASSWORD,
                        env::SERVICE_CLIENTS,
                        env::EDGE_KEY,
                    ],
                ]
                .concat(),
                database_parts
                    .iter()
                    .map(|v| v.to_string())
                    .chain(
                        ["PRODUCT", "ORDER", "PAYMENT", "GATEWAY"]
                            .map(|c| format!("CLIENT_SECRET_{c}")),
                    )
                    .collect(),
            ),
        ),
        (
            Component::Product,
            (
                [&common[..], &database, &client].concat(),
                database_parts.map(String::from).to_vec(),
            ),
        ),
        (
            Component::Order,
            (
                [&common[..], &database, &client, &[env::PRODUCT_URL]].concat(),
                database_parts.map(String::from).to_vec(),
            ),
        ),
        (
            Component::Payment,
            (
                [&common[..], &database, &client, &[env::ORDER_URL]].concat(),
                database_parts.map(String::from).to_vec(),
            ),
        ),
        (
            Component::Gateway,
            (
                [
                    &common[..],
                    &client,
                    &[
                        env::PRODUCT_URL,
                        env::ORDER_URL,
                        env::PAYMENT_URL,
                        env::STOREFRONT_URL,
                        env::EDGE_KEY,
                    ],
                ]
                .concat(),
                Vec::new(),
            ),
        ),
        (
            Component::Storefront,
            (
                [
                    &addresses[..],
                    &[
                        env::GATEWAY_URL,
                        env::EDGE_KEY,
                        env::STOREFRONT_COOKIE_KEY,
                        env::STOREFRONT_SECURE_COOKIES,
                        env::REFRESH_TOKEN_TTL_SECS,
                    ],
                ]
                .concat(),
                Vec::new(),
            ),
        ),
    ]);
    assert_eq!(expected.len(), Component::ALL.len(), "every component");
    let store = Store::test();
    for (c, (read, parts)) in expected {
        let got: BTreeSet<String> = env_of(&deployment(&store, c))
            .into_iter()
            .map(|e| e.name)
            .collect();
        let want: BTreeSet<String> = read.iter().map(|v| v.to_string()).chain(parts).collect();
        assert_eq!(got, want, "{c}");
    }
}

#[test]
fn the_gateway_trusts_only_the_proxies_the_store_names_and_signs_what_it_settled_on() {
    let store = Store::test();
    let gateway = env_of(&deployment(&store, Component::Gateway));
    assert!(
        var(&gateway, env::TRUSTED_PROXIES).is_none(),
        "by default no proxy is trusted: a client's own X-Forwarded-For counts for nothing"
    );
    let mut behind_ingress = Store::test();
    behind_ingress.spec.gateway.trusted_proxies = vec!["10.0.0.0/8".into(), "fd00::/8".into()];
    let gateway = env_of(&deployment(&behind_ingress, Component::Gateway));
    assert_eq!(value(&gateway, env::TRUSTED_PROXIES), "10.0.0.0/8,fd00::/8");
    for c in Component::ALL {
        let env = env_of(&deployment(&store, c));
        let edge = env.iter().find(|e| e.name == env::EDGE_KEY);
        let expected = matches!(
            c,
            Component::Auth | Component::Gateway | Component::Storefront
        );
        assert_eq!(edge.is_some(), expected, "{c}");
        if let Some(edge) = edge {
            let from = edge
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            assert_eq!(from.name, "demo-edge", "{c}");
            assert_eq!(from.key, mercato_contract::secret_keys::EDGE_KEY, "{c}");
        }
    }
}

#[test]
fn the_gateway_service_keeps_client_addresses_only_when_asked() {
    let mut store = Store::test();
    let service = workloads::service(&store.owner(), &store.spec, Component::Gateway);
    assert_eq!(service.spec.unwrap().external_traffic_policy, None);
    store.spec.gateway.service.type_ = crate::crd::GatewayServiceType::LoadBalancer;
    store.spec.gateway.service.external_traffic_policy =
        Some(crate::crd::ExternalTrafficPolicy::Local);
    let service = workloads::service(&store.owner(), &store.spec, Component::Gateway);
    assert_eq!(
        service.spec.unwrap().external_traffic_policy.as_deref(),
        Some("Local")
    );
}

/// The product service calls no one but auth, and auth only for the revocation feed.
#[test]
fn the_product_service_reaches_only_auth_and_its_database() {
    let store = Store::test();
    let owner = store.owner();
    let product = env_of(&deployment(&store, Component::Product));
    assert!(var(&product, env::AUTH_URL).is_some());
    let policy = network::component(&owner, &store.spec, Component::Product)
        .spec
        .unwrap();
    let egress: Vec<String> = policy
        .egress
        .iter()
        .flatten()
        .flat_map(|r| r.to.iter().flatten())
        .map(|peer| component_of(peer.pod_selector.as_ref().unwrap()))
        .collect();
    assert_eq!(egress, vec!["auth", "product-db"]);
    let auth = network::component(&owner, &store.spec, Component::Auth)
        .spec
        .unwrap();
    let callers: Vec<String> = auth
        .ingress
        .iter()
        .flatten()
        .flat_map(|rule| rule.from.iter().flatten())
        .map(|peer| component_of(peer.pod_selector.as_ref().unwrap()))
        .collect();
    assert_eq!(callers, vec!["product", "order", "payment", "gateway"]);
}

#[test]
fn every_variable_reference_points_to_a_variable_defined_above_it() {
    let store = Store::test();
    for c in Component::ALL {
        let env = env_of(&deployment(&store, c));
        for (i, e) in env.iter().enumerate() {
            let Some(v) = &e.value else { continue };
            for reference in v.split("$(").skip(1) {
                let name = reference.split(')').next().unwrap();
                assert!(
                    env[..i].iter().any(|earlier| earlier.name == name),
                    "{c}: {} uses $({name}) before it is defined",
                    e.name
                );
            }
        }
    }
}

#[test]
fn the_signing_key_is_mounted_into_auth_only_and_jwks_into_every_service() {
    let store = Store::test();
    for c in Component::ALL
        .into_iter()
        .filter(|c| *c != Component::Storefront)
    {
        let d = deployment(&store, c);
        let secrets_mounted: BTreeMap<String, String> = pod(&d)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .filter_map(|v| Some((v.name.clone(), v.secret.as_ref()?.secret_name.clone()?)))
            .collect();
        let mounts: BTreeMap<String, String> = container(&d)
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.mount_path.clone(), m.name.clone()))
            .collect();
        let jwks = &mounts[paths::JWKS_DIR];
        assert_eq!(secrets_mounted[jwks], names::jwks_secret("demo"), "{c}");
        let signing = mounts.get(paths::SIGNING_KEY_DIR);
        assert_eq!(signing.is_some(), c == Component::Auth, "{c}");
        assert_eq!(
            secrets_mounted
                .values()
                .any(|s| *s == names::jwt_signing_secret("demo")),
            c == Component::Auth,
            "{c}"
        );
    }
}

pub(super) fn assert_restricted(pod: &PodSpec, what: &str) {
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true), "{what}");
    assert!(psc.run_as_user.unwrap() > 0, "{what}");
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault",
        "{what}"
    );
    assert_eq!(pod.automount_service_account_token, Some(false), "{what}");
    assert_eq!(pod.enable_service_links, Some(false), "{what}");
    assert!(pod.host_network.is_none() && pod.host_pid.is_none() && pod.host_ipc.is_none());
    for v in pod.volumes.iter().flatten() {
        assert!(v.host_path.is_none(), "{what}");
    }
    for c in &pod.containers {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{what}");
        assert_eq!(sc.run_as_non_root, Some(true), "{what}");
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_string()]),
            "{what}"
        );
        assert!(sc.capabilities.as_ref().unwrap().add.is_none(), "{what}");
        assert!(sc.privileged.is_none(), "{what}");
        assert!(
            c.ports.iter().flatten().all(|p| p.host_port.is_none()),
            "{what}"
        );
    }
}

#[test]
fn every_pod_meets_the_restricted_pod_security_standard() {
    let store = Store::test();
    for c in Component::ALL {
        assert_restricted(pod(&deployment(&store, c)), c.name());
    }
    for c in Component::WITH_DATABASE {
        let sts = statefulset(&store, c);
        assert_restricted(
            sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap(),
            &format!("{c}-db"),
        );
    }
}

#[test]
fn postgres_runs_as_999_with_pgdata_in_a_subdirectory_and_writable_run_and_tmp() {
    let sts = statefulset(&Store::test(), Component::Payment);
    let pod = sts.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let psc = pod.security_context.unwrap();
    assert_eq!(
        (psc.run_as_user, psc.run_as_group, psc.fs_group),
        (Some(999), Some(999), Some(999))
    );
    let c = &pod.containers[0];
    let env = c.env.clone().unwrap();
    let pgdata = value(&env, "PGDATA");
    let mounts: BTreeMap<String, String> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.mount_path.clone(), m.name.clone()))
        .collect();
    let data_mount = mounts
        .iter()
        .find(|(_, n)| *n == database::DATA_VOLUME)
        .unwrap()
        .0;
    assert!(pgdata.starts_with(&format!("{data_mount}/")) && pgdata.len() > data_mount.len() + 1);
    let empty_dirs: BTreeSet<String> = pod
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.empty_dir.is_some())
        .map(|v| v.name.clone())
        .collect();
    for path in ["/var/run/postgresql", "/tmp"] {
        assert!(empty_dirs.contains(&mounts[path]), "{path} is an emptyDir");
    }
    let creds = names::db_credentials_secret("demo", Component::Payment);
    assert_eq!(
        secret_ref(&env, "POSTGRES_USER"),
        (creds.clone(), secret_keys::DB_USERNAME.into())
    );
    assert_eq!(
        secret_ref(&env, "POSTGRES_PASSWORD"),
        (creds.clone(), secret_keys::DB_PASSWORD.into())
    );
    assert_eq!(
        secret_ref(&env, "POSTGRES_DB"),
        (creds, secret_keys::DB_DATABASE.into())
    );
    let probe = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .exec
        .as_ref()
        .unwrap()
        .command
        .clone()
        .unwrap()
        .join(" ");
    assert!(
        probe.contains("pg_isready -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\""),
        "{probe}"
    );
    assert_eq!(
        c.ports.as_ref().unwrap()[0].container_port,
        i32::from(POSTGRES_PORT)
    );
}

/// Probes reach `/healthz` and `/readyz` on the ops port. The public Service (the
/// gateway's) exposes the API only; a backend's Service also carries the ops port, where the
/// gateway reads `/readyz` for its `/health`, and so does the storefront's, for
/// `kubectl port-forward`.
#[test]
fn services_are_probed_on_healthz_and_readyz_at_the_ops_port_the_public_service_hides() {
    let store = Store::test();
    for c in Component::ALL {
        let d = deployment(&store, c);
        let ct = container(&d);
        let ports = ct.ports.as_ref().unwrap();
        assert_eq!(ports[0].container_port, i32::from(HTTP_PORT));
        let port = &ports[1];
        assert_eq!(port.container_port, i32::from(mercato_contract::OPS_PORT));
        let name = IntOrString::String(port.name.clone().unwrap());
        let service = workloads::service(&store.owner(), &store.spec, c);
        let exposed: Vec<IntOrString> = service
            .spec
            .unwrap()
            .ports
            .unwrap()
            .into_iter()
            .filter_map(|p| p.target_port)
            .collect();
        let expected: Vec<IntOrString> = if c == Component::Gateway {
            vec![IntOrString::String("http".into())]
        } else {
            vec![
                IntOrString::String("http".into()),
                IntOrString::String("ops".into()),
            ]
        };
        assert_eq!(exposed, expected, "{c}");
        let live = ct
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        let ready = ct
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (live.path.as_deref(), &live.port),
            (Some("/healthz"), &name)
        );
        assert_eq!(
            (ready.path.as_deref(), &ready.port),
            (Some("/readyz"), &name)
        );
    }
}

#[test]
fn selectors_match_the_pod_labels() {
    let store = Store::test();
    let matches = |sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>| {
        sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    for c in Component::ALL {
        let d = deployment(&store, c);
        let spec = d.spec.unwrap();
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert!(matches(
            spec.selector.match_labels.as_ref().unwrap(),
            &labels
        ));
        let svc: Service = workloads::service(&store.owner(), &store.spec, c);
        assert!(matches(
            svc.spec.unwrap().selector.as_ref().unwrap(),
            &labels
        ));
    }
    for c in Component::WITH_DATABASE {
        let spec = statefulset(&store, c).spec.unwrap();
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert!(matches(
            spec.selector.match_labels.as_ref().unwrap(),
            &labels
        ));
        let svc = database::headless_service(&store.owner(), c);
        assert!(matches(
            svc.spec.unwrap().selector.as_ref().unwrap(),
            &labels
        ));
        // Claims carry the store's labels, so the Delete policy finds them.
        let claim_labels = spec.volume_claim_templates.unwrap()[0]
            .metadata
            .labels
            .clone()
            .unwrap();
        assert_eq!(claim_labels["app.kubernetes.io/instance"], "demo");
        assert_eq!(
            claim_labels["app.kubernetes.io/managed-by"],
            "mercato-operator"
        );
    }
}

/// The config hash in the pod template of `c`'s Deployment, built from `data`.
pub(super) fn config_hash(store: &Store, c: Component, data: &builders::SecretData) -> String {
    workloads::deployment(
        &store.owner(),
        &store.spec,
        &ImageDefaults::default(),
        c,
        data,
    )
    .spec
    .unwrap()
    .template
    .metadata
    .unwrap()
    .annotations
    .unwrap()[CONFIG_HASH_ANNOTATION]
        .clone()
}

#[test]
fn config_hash_follows_the_referenced_secrets_only() {
    let store = Store::test();
    let mut data = secrets::generate("demo");
    let hash = |data: &crate::builders::SecretData, c: Component| config_hash(&store, c, data);
    let before: BTreeMap<Component, String> = Component::ALL
        .into_iter()
        .map(|c| (c, hash(&data, c)))
        .collect();
    data.get_mut(&names::client_secret("demo", Component::Order))
        .unwrap()
        .insert(
            secret_keys::CLIENT_SECRET.into(),
            ByteString(b"rotated".to_vec()),
        );
    for c in Component::ALL {
        let changed = hash(&data, c) != before[&c];
        // auth verifies the order client's secret, order uses it; nobody else reads it.
        assert_eq!(
            changed,
            matches!(c, Component::Auth | Component::Order),
            "{c}"
        );
    }
}

#[test]
fn rewriting_the_key_secrets_rolls_no_pod() {
    let store = Store::test();
    let mut data = secrets::generate("demo");
    let hash = |data: &crate::builders::SecretData, c: Component| config_hash(&store, c, data);
    let before: Vec<String> = Component::ALL.into_iter().map(|c| hash(&data, c)).collect();
    // What a rotation writes: a next key aside, then a JWKS with both keys.
    let next = mercato_contract::credentials::generate_jwt_keys();
    data.get_mut(&names::jwt_signing_secret("demo"))
        .unwrap()
        .insert(
            secret_keys::JWT_NEXT_PRIVATE_KEY.into(),
            ByteString(next.private_pem.into_bytes()),
        );
    data.get_mut(&names::jwks_secret("demo")).unwrap().insert(
        secret_keys::JWKS.into(),
        ByteString(next.jwks_json.into_bytes()),
    );
    let after: Vec<String> = Component::ALL.into_iter().map(|c| hash(&data, c)).collect();
    assert_eq!(after, before, "the services reload these files themselves");
    // Every other Secret auth reads still rolls it.
    data.get_mut(&names::admin_secret("demo")).unwrap().insert(
        secret_keys::ADMIN_PASSWORD.into(),
        ByteString(b"changed".to_vec()),
    );
    assert_ne!(hash(&data, Component::Auth), before[0]);
}

#[test]
fn pdb_only_with_more_than_one_replica() {
    let store = Store::test().with(|s| s.order.replicas = 3);
    let owner = store.owner();
    assert!(workloads::pod_disruption_budget(&owner, &store.spec, Component::Auth).is_none());
    let pdb = workloads::pod_disruption_budget(&owner, &store.spec, Component::Order).unwrap();
    let spec = pdb.spec.unwrap();
    assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(
        spec.selector,
        deployment(&store, Component::Order)
            .spec
            .map(|s| s.selector)
    );
}

#[test]
fn gateway_service_type_and_node_port_come_from_the_store() {
    let store = Store::test().with(|s| {
        s.gateway.service.type_ = GatewayServiceType::NodePort;
        s.gateway.service.node_port = Some(30080);
        s.image_pull_policy = ImagePullPolicy::Always;
        s.product.database.storage_class_name = Some("fast".into());
    });
    let owner = store.owner();
    let gw = workloads::service(&owner, &store.spec, Component::Gateway)
        .spec
        .unwrap();
    assert_eq!(gw.type_.as_deref(), Some("NodePort"));
    assert_eq!(gw.ports.unwrap()[0].node_port, Some(30080));
    let auth = workloads::service(&owner, &store.spec, Component::Auth)
        .spec
        .unwrap();
    assert_eq!(auth.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(auth.ports.unwrap()[0].node_port, None);
    assert_eq!(
        container(&deployment(&store, Component::Gateway))
            .image_pull_policy
            .as_deref(),
        Some("Always")
    );
    let claim = statefulset(&store, Component::Product)
        .spec
        .unwrap()
        .volume_claim_templates
        .unwrap()
        .remove(0);
    assert_eq!(
        claim.spec.unwrap().storage_class_name.as_deref(),
        Some("fast")
    );
}

#[test]
fn service_accounts_mount_no_token() {
    for c in Component::ALL {
        let sa = workloads::service_account(&Store::test().owner(), c);
        assert_eq!(sa.automount_service_account_token, Some(false));
    }
}

/// The component a selector picks out, by its `app.kubernetes.io/component` label.
pub(super) fn component_of(sel: &LabelSelector) -> String {
    sel.match_labels.as_ref().unwrap()["app.kubernetes.io/component"].clone()
}

#[test]
fn network_policies_allow_exactly_the_flow_edges() {
    let store = Store::test();
    let owner = store.owner();
    let mut expected: BTreeSet<(String, String, i32)> = BTreeSet::new();
    for c in Component::ALL {
        for callee in builders::callees(&store.spec, c) {
            expected.insert((c.name().into(), callee.name().into(), i32::from(HTTP_PORT)));
            if c == Component::Gateway && callee != Component::Storefront {
                // The gateway's /health reads every service's /readyz on the ops port (not
                // the storefront's: it only routes pages there).
                expected.insert((
                    c.name().into(),
                    callee.name().into(),
                    i32::from(mercato_contract::OPS_PORT),
                ));
            }
        }
        if c.has_database() {
            expected.insert((c.name().into(), format!("{c}-db"), i32::from(POSTGRES_PORT)));
        }
    }
    let policies: Vec<NetworkPolicy> = Component::ALL
        .into_iter()
        .map(|c| network::component(&owner, &store.spec, c))
        .chain(
            Component::WITH_DATABASE
                .into_iter()
                .map(|c| network::database(&owner, &store.spec, c)),
        )
        .collect();
    let (mut egress, mut ingress) = (BTreeSet::new(), BTreeSet::new());
    let mut open_ingress = Vec::new();
    for p in &policies {
        let spec = p.spec.clone().unwrap();
        let me = component_of(spec.pod_selector.as_ref().unwrap());
        for rule in spec.egress.iter().flatten() {
            for port in rule.ports.iter().flatten() {
                let IntOrString::Int(n) = port.port.clone().unwrap() else {
                    panic!()
                };
                assert_eq!(port.protocol.as_deref(), Some("TCP"));
                for peer in rule.to.iter().flatten() {
                    egress.insert((
                        me.clone(),
                        component_of(peer.pod_selector.as_ref().unwrap()),
                        n,
                    ));
                }
            }
        }
        for rule in spec.ingress.iter().flatten() {
            for port in rule.ports.iter().flatten() {
                let IntOrString::Int(n) = port.port.clone().unwrap() else {
                    panic!()
                };
                match &rule.from {
                    None => open_ingress.push((me.clone(), n)),
                    Some(peers) => {
                        for peer in peers {
                            assert!(peer.namespace_selector.is_none() && peer.ip_block.is_none());
                            ingress.insert((
                                component_of(peer.pod_selector.as_ref().unwrap()),
                                me.clone(),
                                n,
                            ));
                        }
                    }
                }
            }
        }
    }
    assert_eq!(egress, expected, "egress edges");
    // The gateway's API port is open to all (the storefront's calls included), so its
    // callers need no rule of their own.
    let to_the_gateway = |(_, callee, port): &(String, String, i32)| {
        callee == "gateway" && *port == i32::from(HTTP_PORT)
    };
    assert!(
        expected.iter().any(to_the_gateway),
        "the storefront calls it"
    );
    let expected_ingress: BTreeSet<_> = expected
        .iter()
        .filter(|e| !to_the_gateway(e))
        .cloned()
        .collect();
    assert_eq!(ingress, expected_ingress, "ingress edges");
    assert_eq!(
        open_ingress,
        vec![("gateway".to_string(), i32::from(HTTP_PORT))],
        "only the gateway is open"
    );
}

#[test]
fn default_deny_and_dns_cover_every_pod_of_the_store() {
    let owner = Store::test().owner();
    let deny = network::default_deny(&owner).spec.unwrap();
    assert_eq!(
        deny.policy_types,
        Some(vec!["Ingress".into(), "Egress".into()])
    );
    assert!(deny.ingress.is_none() && deny.egress.is_none());
    let sel = deny.pod_selector.unwrap().match_labels.unwrap();
    let expected = BTreeMap::from([
        (
            "app.kubernetes.io/part-of".to_string(),
            "mercato".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), "demo".to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "mercato-operator".to_string(),
        ),
    ]);
    assert_eq!(
        sel, expected,
        "part-of, instance and managed-by: every pod this operator runs for the store, nothing else"
    );

    let dns = network::allow_dns(&owner, &Default::default())
        .spec
        .unwrap();
    assert_eq!(dns.policy_types, Some(vec!["Egress".into()]));
    assert_eq!(
        dns.pod_selector.as_ref().unwrap().match_labels.as_ref(),
        Some(&expected),
        "DNS is allowed to exactly the pods the default-deny covers"
    );
    let rule = &dns.egress.unwrap()[0];
    let peer = &rule.to.as_ref().unwrap()[0];
    assert_eq!(
        peer.namespace_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["kubernetes.io/metadata.name"],
        "kube-system"
    );
    assert_eq!(
        peer.pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["k8s-app"],
        "kube-dns"
    );
    let ports: Vec<(String, IntOrString)> = rule
        .ports
        .iter()
        .flatten()
        .map(|p| (p.protocol.clone().unwrap(), p.port.clone().unwrap()))
        .collect();
    assert_eq!(
        ports,
        vec![
            ("UDP".into(), IntOrString::Int(53)),
            ("TCP".into(), IntOrString::Int(53))
        ]
    );
    // Every pod the store runs carries the labels the store-wide selector matches.
    let store = Store::test();
    let mut templates: Vec<BTreeMap<String, String>> = Component::ALL
        .into_iter()
        .map(|c| {
            deployment(&store, c)
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .labels
                .unwrap()
        })
        .collect();
    templates.extend(Component::WITH_DATABASE.into_iter().map(|c| {
        statefulset(&store, c)
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .labels
            .unwrap()
    }));
    for pod_labels in templates {
        assert!(
            sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "{pod_labels:?}"
        );
    }
    // A stranger with part-of and instance only is not.
    let stranger = BTreeMap::from([
        (
            "app.kubernetes.io/part-of".to_string(),
            "mercato".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), "demo".to_string()),
    ]);
    assert!(!sel.iter().all(|(k, v)| stranger.get(k) == Some(v)));
}

#[test]
fn network_policies_can_be_turned_off() {
    let store = Store::test().with(|s| s.network_policies.enabled = false);
    let (children, _) = store.children();
    assert!(children.iter().all(|c| c.kind() != "NetworkPolicy"));
}

#[test]
fn dns_egress_follows_the_stores_dns_settings() {
    let store = Store::test().with(|s| {
        s.network_policies.dns.namespace = "dns-system".into();
        s.network_policies.dns.pod_labels = BTreeMap::from([("app".into(), "coredns".into())]);
        s.network_policies.dns.cidrs = vec!["169.254.20.10/32".into()];
    });
    let policy = network::allow_dns(&store.owner(), &store.spec.network_policies.dns);
    let rule = &policy.spec.unwrap().egress.unwrap()[0];
    let peers = rule.to.as_ref().unwrap();
    assert_eq!(
        peers[0].namespace_selector.as_ref().unwrap().match_labels,
        Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            "dns-system".to_string()
        )]))
    );
    assert_eq!(
        peers[0].pod_selector.as_ref().unwrap().match_labels,
        Some(BTreeMap::from([("app".to_string(), "coredns".to_string())]))
    );
    assert_eq!(
        peers[1].ip_block.as_ref().map(|b| b.cidr.as_str()),
        Some("169.254.20.10/32"),
        "a node-local cache is reached by address"
    );
    assert_eq!(rule.ports.as_ref().unwrap().len(), 2, "UDP and TCP 53");
}

/// (namespace, port) of every rule between the store's pods and pods of another namespace,
/// from a policy's ingress (`from`) or egress (`to`) rules given as (peers, ports).
fn namespace_ports<'a>(
    rules: impl Iterator<
        Item = (
            Option<&'a Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>>,
            Option<&'a Vec<k8s_openapi::api::networking::v1::NetworkPolicyPort>>,
        ),
    >,
) -> Vec<(String, i32)> {
    rules
        .flat_map(|(peers, ports)| {
            let ports: Vec<i32> = ports
                .into_iter()
                .flatten()
                .filter_map(|p| match p.port {
                    Some(IntOrString::Int(n)) => Some(n),
                    _ => None,
                })
                .collect();
            peers
                .into_iter()
                .flatten()
                .filter_map(|peer| peer.namespace_selector.as_ref())
                .flat_map(move |ns| {
                    let name =
                        ns.match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"].clone();
                    ports.clone().into_iter().map(move |p| (name.clone(), p))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn prometheus_may_reach_the_ops_port_only_when_the_store_names_it() {
    let owner = Store::test().owner();
    let prometheus = crate::crd::PeerSpec {
        namespace: "monitoring".into(),
        pod_labels: BTreeMap::from([("app.kubernetes.io/name".into(), "prometheus".into())]),
    };
    let from_namespace = |policy: &NetworkPolicy| {
        namespace_ports(
            policy
                .spec
                .as_ref()
                .unwrap()
                .ingress
                .iter()
                .flatten()
                .map(|r| (r.from.as_ref(), r.ports.as_ref())),
        )
    };
    let watched = Store::test().with(|s| s.monitoring.prometheus = Some(prometheus));
    for c in Component::ALL {
        assert!(
            from_namespace(&network::component(&owner, &Store::test().spec, c)).is_empty(),
            "{c}"
        );
        assert_eq!(
            from_namespace(&network::component(&owner, &watched.spec, c)),
            vec![(
                "monitoring".to_string(),
                i32::from(mercato_contract::OPS_PORT)
            )],
            "{c}: Prometheus on the ops port, nothing else"
        );
    }
}

#[test]
fn with_a_collector_every_component_sends_traces_there_and_may_reach_it() {
    let mut store = Store::test();
    store.spec.tracing = Some(crate::crd::TracingSpec {
        otlp_endpoint: "http://otel-collector.observability:4318".into(),
        collector: crate::crd::PeerSpec {
            namespace: "observability".into(),
            pod_labels: BTreeMap::from([("app".into(), "otel-collector".into())]),
        },
        port: 4318,
    });
    let owner = store.owner();
    for c in Component::ALL {
        let env = env_of(&deployment(&store, c));
        assert_eq!(
            value(&env, env::OTEL_EXPORTER_OTLP_ENDPOINT),
            "http://otel-collector.observability:4318",
            "{c}"
        );
        let policy = network::component(&owner, &store.spec, c);
        let spec = policy.spec.unwrap();
        let to_collector = namespace_ports(
            spec.egress
                .iter()
                .flatten()
                .map(|r| (r.to.as_ref(), r.ports.as_ref())),
        );
        assert_eq!(
            to_collector,
            vec![("observability".to_string(), 4318)],
            "{c}"
        );
    }
    let quiet = env_of(&deployment(&Store::test(), Component::Order));
    assert!(var(&quiet, env::OTEL_EXPORTER_OTLP_ENDPOINT).is_none());
}
