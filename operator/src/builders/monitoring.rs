//! Prometheus Operator objects for a Store, applied only when their CRDs exist in the
//! cluster: a PodMonitor that scrapes every service's `/metrics` on the ops port (which no
//! Service exposes, so a ServiceMonitor could not reach it), and a PrometheusRule with the
//! store's alerts, every expression scoped to this Store's scrape job.
//!
//! The types carry only the fields the operator sets; the API server keeps the rest of the
//! CRDs' schemas.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::builders::workloads::OPS_PORT_NAME;
use crate::crd::StoreSpec;
use crate::meta::{LABEL_INSTANCE, LABEL_NAME, LABEL_PART_OF, Owner, PART_OF, Role};

/// `monitoring.coreos.com/v1` PodMonitor: which pods Prometheus scrapes, on which port.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "PodMonitor",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSpec {
    pub selector: LabelSelector,
    pub pod_metrics_endpoints: Vec<PodMetricsEndpoint>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodMetricsEndpoint {
    pub port: String,
    pub path: String,
    pub interval: String,
}

/// `monitoring.coreos.com/v1` PrometheusRule: alerting rules Prometheus loads.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "PrometheusRule",
    namespaced,
    schema = "disabled"
)]
pub struct PrometheusRuleSpec {
    pub groups: Vec<RuleGroup>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RuleGroup {
    pub name: String,
    pub rules: Vec<AlertRule>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AlertRule {
    pub alert: String,
    pub expr: String,
    #[serde(rename = "for")]
    pub for_: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Name of the Store's PodMonitor (and so of its scrape job, `<namespace>/<name>`).
pub fn pod_monitor_name(store: &str) -> String {
    format!("{store}-services")
}

/// Name of the Store's PrometheusRule.
pub fn rule_name(store: &str) -> String {
    format!("{store}-alerts")
}

/// The job label Prometheus gives every series scraped through the Store's PodMonitor.
pub fn job(owner: &Owner) -> String {
    format!("{}/{}", owner.namespace, pod_monitor_name(&owner.name))
}

/// The share of 5xx answers over 10 minutes above which a service is alerted on.
pub const ERROR_RATIO_THRESHOLD: f64 = 0.05;

/// Scrapes `/metrics` on the ops port of every component's pods the Store runs (not its
/// databases).
pub fn pod_monitor(owner: &Owner, spec: &StoreSpec) -> PodMonitor {
    let mut metadata = owner.child_meta(pod_monitor_name(&owner.name), &Role::store());
    extend_labels(&mut metadata.labels, &spec.monitoring.labels);
    let services: Vec<String> = spec.components().map(|c| Role::service(c).name).collect();
    PodMonitor {
        metadata,
        spec: PodMonitorSpec {
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (LABEL_PART_OF.to_string(), PART_OF.to_string()),
                    (LABEL_INSTANCE.to_string(), owner.name.clone()),
                ])),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: LABEL_NAME.to_string(),
                    operator: "In".to_string(),
                    values: Some(services),
                }]),
            },
            pod_metrics_endpoints: vec![PodMetricsEndpoint {
                port: OPS_PORT_NAME.to_string(),
                path: "/metrics".to_string(),
                interval: spec.monitoring.scrape_interval.clone(),
            }],
        },
    }
}

fn extend_labels(labels: &mut Option<BTreeMap<String, String>>, extra: &BTreeMap<String, String>) {
    let labels = labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in extra {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

fn alert(
    name: &str,
    expr: String,
    for_: &str,
    severity: &str,
    summary: String,
    description: &str,
) -> AlertRule {
    AlertRule {
        alert: name.to_string(),
        expr,
        for_: for_.to_string(),
        labels: BTreeMap::from([("severity".to_string(), severity.to_string())]),
        annotations: BTreeMap::from([
            ("summary".to_string(), summary),
            ("description".to_string(), description.to_string()),
        ]),
    }
}

/// The Store's alerts. Every expression selects the Store's own scrape job, so two Stores
/// in one namespace, or one Prometheus for many namespaces, never mix; a component the
/// Store turned off has no `Missing` alert.
pub fn rules(owner: &Owner, spec: &StoreSpec) -> Vec<AlertRule> {
    let store = &owner.name;
    let job = job(owner);
    let sel = format!(r#"job="{job}""#);
    let mut out = vec![alert(
        "MercatoServiceDown",
        format!("up{{{sel}}} == 0"),
        "2m",
        "critical",
        format!("A pod of store {store} does not answer its metrics scrape"),
        "Pod {{ $labels.pod }} ({{ $labels.namespace }}) has not answered /metrics on its ops port for 2 minutes: it is down, hung or unreachable.",
    )];
    for c in spec.components() {
        out.push(alert(
            &format!("Mercato{}Missing", capitalised(c.name())),
            format!(r#"absent(up{{{sel},pod=~"{store}-{}-[a-z0-9]+-[a-z0-9]+"}} == 1)"#, c.name()),
            "5m",
            "critical",
            format!("Store {store} has no running {} pod", c.name()),
            "No pod of this component has answered a scrape for 5 minutes: the store cannot serve what it does. `kubectl describe store` says why a component is not ready.",
        ));
    }
    out.extend([
        alert(
            "MercatoHighErrorRatio",
            format!(
                r#"sum by (service) (rate(mercato_http_requests_total{{{sel},status=~"5.."}}[5m])) / sum by (service) (rate(mercato_http_requests_total{{{sel}}}[5m])) > {}"#,
                ERROR_RATIO_THRESHOLD
            ),
            "10m",
            "warning",
            format!("The {{{{ $labels.service }}}} service of store {store} answers too many 5xx"),
            "More than the threshold of its requests answered 5xx over 10 minutes: a dependency (its database, another service) is failing or it is overloaded.",
        ),
        alert(
            "MercatoOutboxBacklog",
            format!("max(mercato_payment_outbox_oldest_age_seconds{{{sel}}}) > 300"),
            "10m",
            "warning",
            format!("Payment outcomes of store {store} wait more than 5 minutes to reach the order service"),
            "The oldest event of the payment outbox is older than 5 minutes: the order service is down or refusing, so paid orders are not marked PAID yet. mercato_payment_outbox_backlog says how many wait.",
        ),
        alert(
            "MercatoReservationExpiries",
            format!("sum(increase(mercato_stock_reservation_expiries_total{{{sel}}}[1h])) > 25"),
            "15m",
            "warning",
            format!("Many stock reservations of store {store} expire unpaid"),
            "More than 25 reservations expired in the last hour: orders are not being paid in time (a failing payment path, or abandoned checkouts holding stock).",
        ),
        alert(
            "MercatoOutboxDeadLetters",
            format!("max(mercato_payment_outbox_dead_letters{{{sel}}}) > 0"),
            "5m",
            "warning",
            format!("Payment events of store {store} could not be delivered to the order service"),
            "Dead letters are payment outcomes the order service never accepted; their orders may still wait for payment. Inspect the payment database's outbox table.",
        ),
    ]);
    out
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The PrometheusRule holding [`rules`].
pub fn prometheus_rule(owner: &Owner, spec: &StoreSpec) -> PrometheusRule {
    let mut metadata = owner.child_meta(rule_name(&owner.name), &Role::store());
    extend_labels(&mut metadata.labels, &spec.monitoring.labels);
    PrometheusRule {
        metadata,
        spec: PrometheusRuleSpec {
            groups: vec![RuleGroup {
                name: format!("mercato.{}.{}", owner.namespace, owner.name),
                rules: rules(owner, spec),
            }],
        },
    }
}
