//! What the chart ships from Rust is generated: `crds/store.yaml` and the chart's copy from
//! the CRD types, the ClusterRole's rules from `rbac.rs`. These fail when a file is stale, and
//! say how to regenerate it.

/// The committed CRD files, relative to the workspace root; `make crds` writes both.
const COMMITTED: [&str; 2] = ["crds/store.yaml", "charts/mercato-operator/crds/store.yaml"];

/// Why `file` (holding `committed`) is stale, if it is.
fn staleness(file: &str, committed: Option<&str>, generated: &str) -> Option<String> {
    let why = match committed {
        None => "is missing",
        Some(c) if c != generated => "does not match operator/src/crd.rs",
        Some(_) => return None,
    };
    Some(format!(
        "{file} {why}: run `make crds` (it regenerates crds/store.yaml and \
         charts/mercato-operator/crds/store.yaml) and commit both"
    ))
}

#[test]
fn committed_crds_match_the_rust_types() {
    let generated = mercato_operator::crd_yaml().expect("the CRD serializes");
    let stale: Vec<String> = COMMITTED
        .iter()
        .filter_map(|file| {
            let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
            let committed = std::fs::read_to_string(path).ok();
            staleness(file, committed.as_deref(), &generated)
        })
        .collect();
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}

#[test]
fn a_stale_crd_tells_the_user_to_run_make_crds() {
    let generated = "kind: CustomResourceDefinition\n";
    assert_eq!(staleness(COMMITTED[1], Some(generated), generated), None);
    for committed in [Some("kind: Old\n"), None] {
        let message = staleness(COMMITTED[1], committed, generated).expect("stale");
        assert!(message.contains("run `make crds`"), "{message}");
        assert!(
            message.starts_with("charts/mercato-operator/crds/store.yaml"),
            "{message}"
        );
    }
}

/// The chart's ClusterRole rules, relative to the workspace root; `make crds` writes them.
const RBAC_RULES: &str = "charts/mercato-operator/files/operator-rules.yaml";

#[test]
fn the_charts_rbac_rules_are_the_rust_table() {
    let generated = mercato_operator::rbac::rules_yaml().expect("the rules serialize");
    let path = format!("{}/../{RBAC_RULES}", env!("CARGO_MANIFEST_DIR"));
    let committed = std::fs::read_to_string(path).ok();
    let why = match committed.as_deref() {
        None => "is missing",
        Some(c) if c != generated => "does not match operator/src/rbac.rs",
        Some(_) => return,
    };
    panic!("{RBAC_RULES} {why}: run `make crds` and commit it");
}
