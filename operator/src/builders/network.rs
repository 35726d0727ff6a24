//! NetworkPolicies: deny everything for the store's pods, then allow exactly the edges of
//! the checkout flow and the storefront (`super::callees`), each service to its own
//! PostgreSQL (and its backup pods to it), DNS, and ingress to the gateway from anywhere.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mercato_contract::{Component, HTTP_PORT, OPS_PORT, POSTGRES_PORT, names};

use crate::crd::{Destination, DnsSpec, PeerSpec, S3Target, StoreSpec};
use crate::meta::{Owner, Role, selector, store_pods_selector};

const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
const DNS_PORT: i32 = 53;

fn tcp(port: i32) -> NetworkPolicyPort {
    port_of("TCP", port)
}

fn port_of(protocol: &str, port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_string()),
        port: Some(IntOrString::Int(port)),
        end_port: None,
    }
}

/// The addresses of `cidr`.
fn ip_block(cidr: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_string(),
            except: None,
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn pods(store: &str, role: &Role) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(selector(store, role)),
        ..NetworkPolicyPeer::default()
    }
}

fn policy(owner: &Owner, name: String, role: &Role, spec: NetworkPolicySpec) -> NetworkPolicy {
    NetworkPolicy {
        metadata: owner.child_meta(name, role),
        spec: Some(spec),
    }
}

/// Name of the store-wide default-deny policy.
pub fn default_deny_name(store: &str) -> String {
    format!("{store}-default-deny")
}

/// Name of the store-wide DNS egress policy.
pub fn dns_name(store: &str) -> String {
    format!("{store}-allow-dns")
}

/// Every pod of the store: no ingress, no egress, unless another policy allows it.
pub fn default_deny(owner: &Owner) -> NetworkPolicy {
    policy(
        owner,
        default_deny_name(&owner.name),
        &Role::store(),
        NetworkPolicySpec {
            pod_selector: Some(store_pods_selector(&owner.name)),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: None,
            egress: None,
        },
    )
}

/// Every pod of the store may resolve names with the cluster DNS (UDP and TCP 53): the DNS
/// pods `dns` selects, and the addresses it lists.
pub fn allow_dns(owner: &Owner, dns: &DnsSpec) -> NetworkPolicy {
    let mut peers = vec![NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                dns.namespace.clone(),
            )])),
            match_expressions: None,
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(dns.pod_labels.clone()),
            match_expressions: None,
        }),
        ip_block: None,
    }];
    peers.extend(dns.cidrs.iter().map(|cidr| ip_block(cidr)));
    policy(
        owner,
        dns_name(&owner.name),
        &Role::store(),
        NetworkPolicySpec {
            pod_selector: Some(store_pods_selector(&owner.name)),
            policy_types: Some(vec!["Egress".to_string()]),
            ingress: None,
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(peers),
                ports: Some(vec![port_of("UDP", DNS_PORT), port_of("TCP", DNS_PORT)]),
            }]),
        },
    )
}

/// The components of the Store that call `c`.
pub fn callers(spec: &StoreSpec, c: Component) -> Vec<Component> {
    spec.components()
        .filter(|caller| super::callees(spec, *caller).contains(&c))
        .collect()
}

/// The ports a caller may reach on `callee`: the API, and for the gateway, which reports
/// the readiness of the services it has an ops URL for (`Component::ops_url_env`) on its
/// `/health`, their ops port (`/readyz`). The storefront is not among them: the gateway
/// only routes pages to it.
fn ports_to(caller: Component, callee: Component) -> Vec<NetworkPolicyPort> {
    if caller == Component::Gateway && callee.ops_url_env().is_some() {
        vec![tcp(i32::from(HTTP_PORT)), tcp(i32::from(OPS_PORT))]
    } else {
        vec![tcp(i32::from(HTTP_PORT))]
    }
}

/// Pods of another namespace, selected by namespace name and labels.
fn peer_of(peer: &PeerSpec) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                peer.namespace.clone(),
            )])),
            match_expressions: None,
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(peer.pod_labels.clone()),
            match_expressions: None,
        }),
        ip_block: None,
    }
}

/// A component's pods: ingress from its callers (the gateway: from anywhere) on the HTTP
/// port, from the gateway on the ops port of the services it probes, and from the Store's
/// `monitoring.prometheus` on the ops port; egress to its callees (the same ports), its own
/// PostgreSQL and, with `tracing`, the OpenTelemetry collector. Probes come from the
/// kubelet on the node, which NetworkPolicies do not restrict.
pub fn component(owner: &Owner, spec: &StoreSpec, c: Component) -> NetworkPolicy {
    let store = &owner.name;
    let prometheus = spec.monitoring.prometheus.as_ref();
    let tracing = spec.tracing.as_ref();
    let role = Role::service(c);
    let mut ingress: Vec<NetworkPolicyIngressRule> = if c == Component::Gateway {
        vec![NetworkPolicyIngressRule {
            from: None,
            ports: Some(vec![tcp(i32::from(HTTP_PORT))]),
        }]
    } else {
        callers(spec, c)
            .into_iter()
            .map(|caller| NetworkPolicyIngressRule {
                from: Some(vec![pods(store, &Role::service(caller))]),
                ports: Some(ports_to(caller, c)),
            })
            .collect()
    };
    if let Some(prometheus) = prometheus {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![peer_of(prometheus)]),
            ports: Some(vec![tcp(i32::from(OPS_PORT))]),
        });
    }
    let mut egress: Vec<NetworkPolicyEgressRule> = super::callees(spec, c)
        .into_iter()
        .map(|callee| NetworkPolicyEgressRule {
            to: Some(vec![pods(store, &Role::service(callee))]),
            ports: Some(ports_to(c, callee)),
        })
        .collect();
    if spec.external_database(c).is_some() {
        // The database's address is in a Secret the operator does not read (and may be a
        // name that resolves anywhere): PostgreSQL's port to any address, for this service
        // only.
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![ip_block("0.0.0.0/0"), ip_block("::/0")]),
            ports: Some(vec![tcp(i32::from(POSTGRES_PORT))]),
        });
    } else if c.has_database() {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![pods(store, &Role::database(c))]),
            ports: Some(vec![tcp(i32::from(POSTGRES_PORT))]),
        });
    }
    if let Some(tracing) = tracing {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![peer_of(&tracing.collector)]),
            ports: Some(vec![tcp(tracing.port)]),
        });
    }
    policy(
        owner,
        names::component(store, c),
        &role,
        NetworkPolicySpec {
            pod_selector: Some(selector(store, &role)),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: Some(ingress),
            egress: (!egress.is_empty()).then_some(egress),
        },
    )
}

/// A component's PostgreSQL: ingress from that component only, and with `spec.backup`
/// from its backup pods.
pub fn database(owner: &Owner, spec: &StoreSpec, c: Component) -> NetworkPolicy {
    let store = &owner.name;
    let role = Role::database(c);
    let mut from = vec![pods(store, &Role::service(c))];
    if spec.backup.is_some() {
        from.push(pods(store, &Role::backup(c)));
    }
    // A database restoring from a bucket fetches the dump in its init container.
    let bucket = spec
        .service(c)
        .and_then(|s| s.database.restore_from.as_ref())
        .and_then(|r| r.s3.as_ref());
    let mut policy_types = vec!["Ingress".to_string()];
    if bucket.is_some() {
        policy_types.push("Egress".to_string());
    }
    policy(
        owner,
        names::database(store, c),
        &role,
        NetworkPolicySpec {
            pod_selector: Some(selector(store, &role)),
            policy_types: Some(policy_types),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(vec![tcp(i32::from(POSTGRES_PORT))]),
            }]),
            egress: bucket.map(|s3| vec![to_bucket(s3)]),
        },
    )
}

/// The pods of a database's backup CronJob: egress to that database, and to a bucket
/// target's port on any address (its name may resolve anywhere); DNS from the store-wide
/// policy; no ingress.
pub fn backup(owner: &Owner, spec: &StoreSpec, c: Component) -> NetworkPolicy {
    let store = &owner.name;
    let role = Role::backup(c);
    let mut egress = vec![NetworkPolicyEgressRule {
        to: Some(vec![pods(store, &Role::database(c))]),
        ports: Some(vec![tcp(i32::from(POSTGRES_PORT))]),
    }];
    if let Some(Destination::S3(s3)) = spec.backup.as_ref().map(|b| b.target.destination()) {
        egress.push(to_bucket(s3));
    }
    policy(
        owner,
        super::backup::cron_job_name(store, c),
        &role,
        NetworkPolicySpec {
            pod_selector: Some(selector(store, &role)),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: None,
            egress: Some(egress),
        },
    )
}

/// Egress to a bucket's endpoint: its port, to any address.
fn to_bucket(s3: &S3Target) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![ip_block("0.0.0.0/0"), ip_block("::/0")]),
        ports: Some(vec![tcp(s3.port())]),
    }
}
