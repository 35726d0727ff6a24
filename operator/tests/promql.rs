//! Every PromQL expression Mercato ships parses as Prometheus would parse it: the alerts the
//! operator writes into each Store's PrometheusRule, the operator's own alerts in the chart,
//! and every query of the Grafana dashboard. A typo would otherwise surface only as a rule
//! Prometheus refuses to load, or an empty panel.
#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::path::Path;

use mercato_operator::builders::monitoring;
use mercato_operator::crd::Store;
use mercato_operator::meta::Owner;

fn parses(what: &str, expr: &str) {
    if let Err(e) = promql_parser::parser::parse(expr) {
        panic!("{what}: {e}\n{expr}");
    }
}

fn chart_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/mercato-operator")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_alert_of_a_store_parses() {
    let mut store = Store::new("demo", Default::default());
    store.metadata.namespace = Some("shop".into());
    store.metadata.uid = Some("0000".into());
    let owner = Owner::of(&store).unwrap();
    let rules = monitoring::rules(&owner, &store.spec);
    assert!(rules.len() >= 8, "{} rules", rules.len());
    for rule in rules {
        parses(&rule.alert, &rule.expr);
    }
}

#[test]
fn the_operators_own_alerts_in_the_chart_parse() {
    // The template with its few template expressions filled in as helm would.
    let text = chart_file("templates/prometheusrule.yaml")
        .replace(r#"{{ "{{" }}"#, "{{")
        .replace(r#"{{ "}}" }}"#, "}}")
        .replace(
            "{{ .Values.metrics.prometheusRule.signingKeyMaxAgeDays }}",
            "90",
        )
        .replace("{{ .Release.Namespace }}", "mercato-system")
        .replace("{{ $fullname }}", "mercato-operator")
        .replace(
            "{{ mul .Values.metrics.prometheusRule.signingKeyMaxAgeDays 86400 }}",
            "7776000",
        );
    // The spec, without the template's control lines.
    let yaml: String = text
        .lines()
        .skip_while(|l| *l != "spec:")
        .filter(|l| !l.trim_start().starts_with("{{"))
        .collect::<Vec<_>>()
        .join("\n");
    let rule: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    let rules = rule["spec"]["groups"][0]["rules"].as_sequence().unwrap();
    assert!(rules.len() >= 4);
    for r in rules {
        let expr = r["expr"].as_str().unwrap();
        assert!(!expr.contains("{{"), "an unfilled template in {expr}");
        parses(r["alert"].as_str().unwrap(), expr);
    }
}

#[test]
fn every_dashboard_query_parses() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&chart_file("files/dashboard.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            // Grafana replaces its variables before Prometheus sees the query.
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$namespace", "shop")
                .replace("$store", "demo");
            parses(panel["title"].as_str().unwrap(), &expr);
        }
    }
}
