//! `crds/store.yaml` is generated from the Rust types; this fails when it is stale.

#[test]
fn committed_crd_matches_the_rust_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/store.yaml");
    let committed = std::fs::read_to_string(path).expect("crds/store.yaml exists");
    let generated = mercato_operator::crd_yaml().expect("the CRD serializes");
    assert!(
        committed == generated,
        "crds/store.yaml is stale: run `cargo run -p mercato-operator -- crd > crds/store.yaml`"
    );
}
