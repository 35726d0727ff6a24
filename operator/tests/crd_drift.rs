//! `crds/store.yaml` and the Helm chart's copy are generated from the Rust types; this fails
//! when either is stale, and says how to regenerate both.

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
