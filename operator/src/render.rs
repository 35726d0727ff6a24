//! `render`: every object the operator would apply for a Store, as a multi-document YAML
//! stream, for static checks (checkov, kubernetes-validate) without a cluster.

use anyhow::Context as _;
use kube::ResourceExt;
#[cfg(test)]
use serde::Deserialize;

use crate::builders::{self, secrets};
use crate::crd::Store;
use crate::images::ImageDefaults;
use crate::meta::Owner;

/// Stands in for the uid the API server would give the Store; owner references need one.
pub const RENDER_UID: &str = "00000000-0000-4000-8000-000000000000";

/// Renders the children of the Store in `yaml`, with freshly generated Secrets. The
/// namespace is `namespace`, else the manifest's, else `default`.
pub fn render(yaml: &str, namespace: Option<&str>) -> anyhow::Result<String> {
    let mut store = parse_store(yaml)?;
    let namespace = namespace
        .map(str::to_string)
        .or_else(|| store.namespace())
        .unwrap_or_else(|| "default".to_string());
    store.metadata.namespace = Some(namespace);
    store
        .metadata
        .uid
        .get_or_insert_with(|| RENDER_UID.to_string());
    let owner = Owner::of(&store).context("the Store has no metadata.name")?;

    let data = secrets::generate(&owner.name);
    // As in a cluster with the Prometheus Operator's CRDs (without them, the operator
    // leaves the PodMonitor and PrometheusRule out).
    let objects = builders::desired(&owner, &store.spec, &ImageDefaults::default(), &data)
        .into_iter()
        .chain(builders::monitoring(&owner, &store.spec))
        .map(|c| c.object);

    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&object)?);
    }
    Ok(out)
}

/// Parses a Store manifest as the API server would accept it: `spec` may be left out, and
/// every default applies.
pub fn parse_store(yaml: &str) -> anyhow::Result<Store> {
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(yaml).context("the file is not YAML")?;
    let field = |k: &str| {
        value
            .get(k)
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    anyhow::ensure!(
        kind == "Store" && api_version == "mercato.dev/v1alpha1",
        "expected apiVersion mercato.dev/v1alpha1 and kind Store, got {api_version:?} {kind:?}"
    );
    if let Some(map) = value.as_mapping_mut() {
        map.entry("spec".into())
            .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
    }
    let store: Store = serde_yaml::from_value(value).context("the file is not a valid Store")?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_child_of_the_minimal_example_in_the_given_namespace() {
        let yaml = include_str!("../../examples/store.yaml");
        let out = render(yaml, Some("shop")).unwrap();
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&out)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect();
        let store = parse_store(yaml).unwrap();
        let expected = builders::desired(
            &store_owner(&store),
            &store.spec,
            &ImageDefaults::default(),
            &secrets::generate("demo"),
        )
        .len()
            + builders::monitoring(&store_owner(&store), &store.spec).len();
        assert!(expected > secrets::specs("demo", &store.spec).len());
        assert_eq!(docs.len(), expected);
        for d in &docs {
            assert_eq!(d["metadata"]["namespace"].as_str(), Some("shop"));
            assert_eq!(
                d["metadata"]["ownerReferences"][0]["uid"].as_str(),
                Some(RENDER_UID)
            );
            assert!(d["apiVersion"].is_string() && d["kind"].is_string());
        }
        let admin = docs
            .iter()
            .find(|d| d["metadata"]["name"].as_str() == Some("demo-admin"))
            .unwrap();
        assert!(
            admin["data"]["password"].is_string(),
            "generated secrets are included"
        );
    }

    #[test]
    fn the_manifest_namespace_is_used_unless_overridden_and_other_kinds_are_refused() {
        let yaml = "apiVersion: mercato.dev/v1alpha1\nkind: Store\nmetadata: {name: demo, namespace: prod}\n";
        assert!(render(yaml, None).unwrap().contains("namespace: prod"));
        let err = render(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("kind Store"), "{err}");
    }

    fn store_owner(store: &Store) -> crate::meta::Owner {
        let mut s = store.clone();
        s.metadata.namespace = Some("shop".into());
        s.metadata.uid = Some(RENDER_UID.into());
        crate::meta::Owner::of(&s).unwrap()
    }
}
