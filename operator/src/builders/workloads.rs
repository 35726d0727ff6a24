//! Per component: Deployment, Service, ServiceAccount and, with several replicas, a
//! PodDisruptionBudget; the environment is wired from the Secrets by the contract's names.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, PodSpec, PodTemplateSpec, Probe,
    SecretVolumeSource, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mercato_contract::{
    Component, DEFAULT_JWT_AUDIENCE, DEFAULT_JWT_ISSUER, HTTP_PORT, OPS_PORT, POSTGRES_PORT, env,
    names, paths, secret_keys, service_clients,
};

use super::pod::{empty_dir, env_from_secret, env_value, mount};
use super::security::{container_security_context, pod_security_context};
use sha2::{Digest, Sha256};

use super::{SecretData, config_hash};
use crate::crd::{GatewayServiceType, StoreSpec};
use crate::images::ImageDefaults;
use crate::meta::{
    CONFIG_HASH_ANNOTATION, Owner, Role, TEMPLATE_HASH_ANNOTATION, selector, selector_labels,
};

/// Name of the container port every service listens on.
pub const HTTP_PORT_NAME: &str = "http";
/// Name of the container port of the operational endpoints (probes, metrics); no Service
/// exposes it.
pub const OPS_PORT_NAME: &str = "ops";
/// Value of `LOG_FORMAT` in a cluster.
const LOG_FORMAT_JSON: &str = "json";
/// Non-root uid/gid the service containers run as (the distroless `nonroot` user).
pub const SERVICE_UID: i64 = 65532;

const JWKS_VOLUME: &str = "jwks";
const SIGNING_KEY_VOLUME: &str = "jwt-signing";
const TMP_VOLUME: &str = "tmp";
/// libpq's TLS mode variable, which sqlx reads too (not a Mercato name, so not in the
/// contract).
pub const PGSSLMODE: &str = "PGSSLMODE";
/// Secret files readable by the owner and the pod's fsGroup only.
const SECRET_FILE_MODE: i32 = 0o440;

/// `CLIENT_SECRET_ORDER`, from which auth's `SERVICE_CLIENTS` is composed.
pub fn client_secret_env(c: Component) -> String {
    format!("{}{}", env::CLIENT_SECRET_PREFIX, c.name().to_uppercase())
}

/// Whether a component verifies access tokens itself, against the mounted JWKS: every one
/// but the storefront, which passes a shopper's token on to the gateway and reads no key.
fn verifies_tokens(c: Component) -> bool {
    !matches!(c, Component::Storefront)
}

/// Whether a component reads the edge key (`<store>-edge`), which signs client addresses.
fn uses_edge_key(c: Component) -> bool {
    matches!(
        c,
        Component::Auth | Component::Gateway | Component::Storefront
    )
}

/// The components that hold an OAuth2 client, i.e. auth's service clients.
fn service_clients() -> impl Iterator<Item = Component> {
    Component::ALL
        .into_iter()
        .filter(|c| c.service_client_scopes().is_some())
}

/// The environment of a component's container. Order matters: a `$(VAR)` reference only
/// expands variables defined above it.
pub fn env(owner: &Owner, spec: &StoreSpec, c: Component) -> Vec<EnvVar> {
    let store = &owner.name;
    let mut out = vec![
        env_value(env::HTTP_ADDR, format!("0.0.0.0:{HTTP_PORT}")),
        env_value(env::OPS_ADDR, format!("0.0.0.0:{OPS_PORT}")),
        env_value(env::LOG_FORMAT, LOG_FORMAT_JSON),
    ];
    if verifies_tokens(c) {
        out.extend([
            env_value(env::JWT_ISSUER, DEFAULT_JWT_ISSUER),
            env_value(env::JWT_AUDIENCE, DEFAULT_JWT_AUDIENCE),
            env_value(env::JWKS_PATH, paths::JWKS_FILE),
        ]);
    }
    if let Some(external) = spec.external_database(c) {
        // The URL whole, from the user's Secret; sqlx applies `PGSSLMODE` unless the URL
        // has an `sslmode` of its own.
        out.extend([
            env_from_secret(env::DATABASE_URL, &external.secret_name, &external.url_key),
            env_value(PGSSLMODE, external.tls_mode.as_str()),
        ]);
    } else if c.has_database() {
        let creds = names::db_credentials_secret(store, c);
        out.extend([
            env_from_secret(env::DB_USER, &creds, secret_keys::DB_USERNAME),
            env_from_secret(env::DB_PASSWORD, &creds, secret_keys::DB_PASSWORD),
            env_from_secret(env::DB_NAME, &creds, secret_keys::DB_DATABASE),
            env_value(env::DB_HOST, owner.database_host(c)),
            env_value(
                env::DATABASE_URL,
                format!(
                    "postgres://$({}):$({})@$({}):{POSTGRES_PORT}/$({})",
                    env::DB_USER,
                    env::DB_PASSWORD,
                    env::DB_HOST,
                    env::DB_NAME
                ),
            ),
        ]);
    }
    if c == Component::Auth {
        let admin = names::admin_secret(store);
        out.extend([
            env_value(env::JWT_PRIVATE_KEY_PATH, paths::SIGNING_KEY_FILE),
            env_value(
                env::ACCESS_TOKEN_TTL_SECS,
                spec.tokens.access_token_ttl_seconds.to_string(),
            ),
            env_value(
                env::REFRESH_TOKEN_TTL_SECS,
                spec.tokens.refresh_token_ttl_seconds.to_string(),
            ),
            env_from_secret(env::ADMIN_USERNAME, &admin, secret_keys::ADMIN_USERNAME),
            env_from_secret(env::ADMIN_EMAIL, &admin, secret_keys::ADMIN_EMAIL),
            env_from_secret(env::ADMIN_PASSWORD, &admin, secret_keys::ADMIN_PASSWORD),
        ]);
        let clients: Vec<Component> = service_clients().collect();
        for client in &clients {
            out.push(env_from_secret(
                &client_secret_env(*client),
                &names::client_secret(store, *client),
                secret_keys::CLIENT_SECRET,
            ));
        }
        let refs: Vec<(&str, String)> = clients
            .iter()
            .map(|c| (c.name(), format!("$({})", client_secret_env(*c))))
            .collect();
        out.push(env_value(
            env::SERVICE_CLIENTS,
            service_clients::format(refs.iter().map(|(id, s)| (*id, s.as_str()))),
        ));
    }
    if c.service_client_scopes().is_some() {
        let client = names::client_secret(store, c);
        out.extend([
            env_from_secret(env::CLIENT_ID, &client, secret_keys::CLIENT_ID),
            env_from_secret(env::CLIENT_SECRET, &client, secret_keys::CLIENT_SECRET),
        ]);
    }
    for callee in super::callees(spec, c) {
        out.push(env_value(callee.url_env(), owner.service_url(callee)));
    }
    if c == Component::Storefront {
        out.extend([
            env_from_secret(
                env::STOREFRONT_COOKIE_KEY,
                &names::storefront_secret(store),
                secret_keys::STOREFRONT_COOKIE_KEY,
            ),
            env_value(
                env::STOREFRONT_SECURE_COOKIES,
                spec.storefront.secure_cookies.as_env(),
            ),
            // A shopper's session cookie lives as long as the refresh token it holds.
            env_value(
                env::REFRESH_TOKEN_TTL_SECS,
                spec.tokens.refresh_token_ttl_seconds.to_string(),
            ),
        ]);
    }
    if uses_edge_key(c) {
        // The gateway signs the client address it settled on; auth counts logins by it; the
        // storefront believes the address the gateway signed on a page request and vouches
        // for it on the API calls it makes for that shopper.
        out.push(env_from_secret(
            env::EDGE_KEY,
            &names::edge_secret(store),
            secret_keys::EDGE_KEY,
        ));
    }
    if let Some(tracing) = &spec.tracing {
        out.push(env_value(
            env::OTEL_EXPORTER_OTLP_ENDPOINT,
            tracing.otlp_endpoint.clone(),
        ));
    }
    if c == Component::Gateway && !spec.gateway.trusted_proxies.is_empty() {
        out.push(env_value(
            env::TRUSTED_PROXIES,
            spec.gateway.trusted_proxies.join(","),
        ));
    }
    out
}

/// The Secrets whose data goes into a component's pod template hash: those of the store it
/// reads, except the two key Secrets. The services re-read those files when they change (the
/// JWKS in every service, the signing key in auth), and a signing-key rotation rewrites
/// them three times: hashing them would roll every pod at each step, and a roll of a
/// one-replica auth is a gap in logins, the outage the rotation exists to avoid.
pub fn hashed_secrets(store: &str, spec: &StoreSpec, c: Component) -> Vec<String> {
    let live_reloaded = [names::jwks_secret(store), names::jwt_signing_secret(store)];
    referenced_secrets(store, spec, c)
        .into_iter()
        .filter(|s| !live_reloaded.contains(s))
        .collect()
}

/// The store's Secrets a component's pods read (not an external database's Secret, which
/// the operator neither makes nor reads: a new URL there reaches the pods when they
/// restart).
pub fn referenced_secrets(store: &str, spec: &StoreSpec, c: Component) -> Vec<String> {
    let mut out = Vec::new();
    if verifies_tokens(c) {
        out.push(names::jwks_secret(store));
    }
    if c == Component::Storefront {
        out.push(names::storefront_secret(store));
    }
    if c.has_database() && spec.external_database(c).is_none() {
        out.push(names::db_credentials_secret(store, c));
    }
    if c == Component::Auth {
        out.push(names::jwt_signing_secret(store));
        out.push(names::admin_secret(store));
        out.extend(service_clients().map(|client| names::client_secret(store, client)));
    }
    if c.service_client_scopes().is_some() {
        out.push(names::client_secret(store, c));
    }
    if uses_edge_key(c) {
        out.push(names::edge_secret(store));
    }
    out.sort();
    out.dedup();
    out
}

fn secret_volume(name: &str, secret: String) -> Volume {
    Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            default_mode: Some(SECRET_FILE_MODE),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn ops_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(OPS_PORT_NAME.to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// The Deployment of a component. `secrets` holds the data of the Secrets its pods read.
pub fn deployment(
    owner: &Owner,
    spec: &StoreSpec,
    images: &ImageDefaults,
    c: Component,
    secrets: &SecretData,
) -> Deployment {
    let role = Role::service(c);
    let workload = spec.workload(c);
    let image = workload.image(c, images);
    let name = names::component(&owner.name, c);
    let env = env(owner, spec, c);

    let mut volumes = vec![empty_dir(TMP_VOLUME)];
    let mut mounts = vec![mount(TMP_VOLUME, "/tmp", false)];
    if verifies_tokens(c) {
        volumes.insert(
            0,
            secret_volume(JWKS_VOLUME, names::jwks_secret(&owner.name)),
        );
        mounts.insert(0, mount(JWKS_VOLUME, paths::JWKS_DIR, true));
    }
    if c == Component::Auth {
        volumes.push(secret_volume(
            SIGNING_KEY_VOLUME,
            names::jwt_signing_secret(&owner.name),
        ));
        mounts.push(mount(SIGNING_KEY_VOLUME, paths::SIGNING_KEY_DIR, true));
    }

    let hash = config_hash(
        secrets,
        &hashed_secrets(&owner.name, spec, c),
        &serde_json::json!({ "env": env, "image": image }),
    );

    let container = Container {
        name: c.name().to_string(),
        image: Some(image),
        image_pull_policy: Some(spec.image_pull_policy.as_str().to_string()),
        ports: Some(vec![
            ContainerPort {
                name: Some(HTTP_PORT_NAME.to_string()),
                container_port: i32::from(HTTP_PORT),
                protocol: Some("TCP".to_string()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some(OPS_PORT_NAME.to_string()),
                container_port: i32::from(OPS_PORT),
                protocol: Some("TCP".to_string()),
                ..ContainerPort::default()
            },
        ]),
        env: Some(env),
        resources: Some(workload.resources.clone()),
        liveness_probe: Some(ops_probe("/healthz", 10, 3)),
        readiness_probe: Some(ops_probe("/readyz", 5, 3)),
        security_context: Some(container_security_context()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(crate::meta::labels(&owner.name, &role)),
            annotations: Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), hash)])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(name.clone()),
            automount_service_account_token: Some(false),
            // Service URLs come from our own variables; no `<SVC>_PORT` noise in the env.
            enable_service_links: Some(false),
            security_context: Some(pod_security_context(SERVICE_UID)),
            containers: vec![container],
            volumes: Some(volumes),
            image_pull_secrets: spec.pull_secrets(),
            ..PodSpec::default()
        }),
    };
    let mut metadata = owner.child_meta(name, &role);
    metadata.annotations.get_or_insert_default().insert(
        TEMPLATE_HASH_ANNOTATION.to_string(),
        template_hash(&template),
    );
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(workload.replicas),
            selector: selector(&owner.name, &role),
            template,
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// Hex SHA-256 of a pod template as the operator builds it.
fn template_hash(template: &PodTemplateSpec) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    super::hex(&Sha256::digest(json))
}

/// The Service in front of a component; the gateway's type comes from the Store. The
/// gateway's Service, the public one, exposes the API only; the others (reachable inside
/// the namespace only, and on the ops port only from the gateway and Prometheus by
/// NetworkPolicy) also expose the ops port: a backend's is where the gateway reads
/// `/readyz` for its `/health`; the storefront's, which the gateway does not probe, is
/// there for `kubectl port-forward` like every other one.
pub fn service(owner: &Owner, spec: &StoreSpec, c: Component) -> Service {
    let role = Role::service(c);
    let (type_, node_port, traffic_policy) = if c == Component::Gateway {
        let s = &spec.gateway.service;
        (s.type_, s.node_port, s.external_traffic_policy)
    } else {
        (GatewayServiceType::ClusterIP, None, None)
    };
    let port = |name: &str, number: u16, node_port: Option<i32>| ServicePort {
        name: Some(name.to_string()),
        port: i32::from(number),
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        node_port,
        ..ServicePort::default()
    };
    let mut ports = vec![port(HTTP_PORT_NAME, HTTP_PORT, node_port)];
    if c != Component::Gateway {
        ports.push(port(OPS_PORT_NAME, OPS_PORT, None));
    }
    Service {
        metadata: owner.child_meta(names::component(&owner.name, c), &role),
        spec: Some(ServiceSpec {
            type_: Some(type_.as_str().to_string()),
            selector: Some(selector_labels(&owner.name, &role)),
            ports: Some(ports),
            external_traffic_policy: traffic_policy.map(|p| p.as_str().to_string()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The component's own identity, with no API token: no service talks to the API server.
pub fn service_account(owner: &Owner, c: Component) -> ServiceAccount {
    ServiceAccount {
        metadata: owner.child_meta(names::component(&owner.name, c), &Role::service(c)),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// With several replicas, a voluntary disruption (node drain) takes at most one at a time.
pub fn pod_disruption_budget(
    owner: &Owner,
    spec: &StoreSpec,
    c: Component,
) -> Option<PodDisruptionBudget> {
    if spec.workload(c).replicas <= 1 {
        return None;
    }
    let role = Role::service(c);
    Some(PodDisruptionBudget {
        metadata: owner.child_meta(names::component(&owner.name, c), &role),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector(&owner.name, &role)),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}
