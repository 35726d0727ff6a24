//! The CRD's schema: defaults, ranges and CEL rules, checked with kube's client-side CEL
//! evaluator against the examples and against Stores the API server must refuse.

use kube::core::cel::{Validator, apply_defaults, compile_schema};
use mercato_contract::{Component, names};
use serde_json::{Value, json};

use crate::crd::{MAX_STORE_NAME_LEN, StoreSpec, crd};
use crate::render::parse_store;

fn schema() -> Value {
    let crd = crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

fn example(file: &str) -> Value {
    let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let yaml = std::fs::read_to_string(&path).unwrap();
    serde_yaml::from_str(&yaml).unwrap()
}

fn store(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "mercato.dev/v1alpha1", "kind": "Store", "metadata": {"name": name}, "spec": spec})
}

/// The messages of the rules `object` breaks (`old`: the object before an update): the CEL
/// rules, and the `pattern`s, which kube's evaluator leaves to the API server.
fn violations(object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = schema();
    let mut out = match Validator::new().validate(&schema, object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    };
    pattern_violations(&schema, object, "", &mut out);
    out
}

/// `value` as a CEL string literal.
fn cel_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Evaluates a CEL expression over `self` = `value` with the Kubernetes extension functions.
fn cel_holds(rule: &str, value: &Value) -> bool {
    let schema = json!({"x-kubernetes-int-or-string": true,
                        "x-kubernetes-validations": [{"rule": rule}]});
    Validator::new().validate(&schema, value, None).is_ok()
}

/// Whether `value` matches an OpenAPI `pattern`, with RE2 semantics (CEL's `matches`) as
/// in the API server.
fn matches_pattern(pattern: &str, value: &str) -> bool {
    cel_holds(
        &format!("self.matches({})", cel_string(pattern)),
        &json!(value),
    )
}

/// The string values below `value` that break their schema's `pattern`, as the API server
/// reports them.
fn pattern_violations(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if let (Some(pattern), Some(s)) = (schema["pattern"].as_str(), value.as_str())
        && !matches_pattern(pattern, s)
    {
        out.push(format!(
            "{path}: Invalid value: \"{s}\": should match '{pattern}'"
        ));
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            pattern_violations(&schema["items"], item, &format!("{path}[{i}]"), out);
        }
    }
    let Some(map) = value.as_object() else {
        return;
    };
    for (k, v) in map {
        let sub = schema
            .get("properties")
            .and_then(|p| p.get(k))
            .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
        if let Some(sub) = sub {
            pattern_violations(sub, v, &format!("{path}.{k}"), out);
        }
    }
}

#[test]
fn every_cel_rule_compiles() {
    let compiled = compile_schema(&schema());
    assert!(
        !compiled.has_errors(),
        "{:?}",
        compiled.compilation_errors()
    );
}

#[test]
fn the_schema_defaults_are_the_operators_defaults() {
    let minimal = example("store.yaml");
    assert!(
        minimal.get("spec").is_none(),
        "the minimal example is a name only"
    );
    let defaulted = apply_defaults(&schema(), &minimal);
    let spec: StoreSpec = serde_json::from_value(defaulted["spec"].clone()).unwrap();
    assert_eq!(spec, StoreSpec::default());
    assert_eq!(
        parse_store(&serde_yaml::to_string(&minimal).unwrap())
            .unwrap()
            .spec,
        StoreSpec::default()
    );
}

#[test]
fn every_example_is_valid() {
    for file in [
        "store.yaml",
        "store-full.yaml",
        "store-with-backups.yaml",
        "store-external-db.yaml",
        "store-with-bucket-backups.yaml",
    ] {
        assert_eq!(
            violations(&example(file), None),
            Vec::<String>::new(),
            "{file}"
        );
        let yaml =
            std::fs::read_to_string(format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        parse_store(&yaml).unwrap();
    }
}

/// Every property path of the spec schema.
fn schema_paths(schema: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let path = format!("{prefix}.{k}");
            out.push(path.clone());
            // requests/limits are free-form maps; the example sets them.
            if k != "requests" && k != "limits" {
                schema_paths(v, &path, out);
            }
        }
    }
}

/// Between them, the full example, the external-database one (whose `external` excludes
/// the full one's `restoreFrom`) and the bucket one (whose `s3` targets exclude the full
/// one's claims) set every field.
#[test]
fn the_full_examples_set_every_field() {
    let full = [
        example("store-full.yaml"),
        example("store-external-db.yaml"),
        example("store-with-bucket-backups.yaml"),
    ];
    let mut paths = Vec::new();
    schema_paths(&schema()["properties"]["spec"], "spec", &mut paths);
    assert!(paths.len() > 40, "{paths:?}");
    for path in paths {
        let pointer = format!("/{}", path.replace('.', "/"));
        assert!(
            full.iter().any(|f| f.pointer(&pointer).is_some()),
            "store-full.yaml, store-external-db.yaml and store-with-bucket-backups.yaml lack {path}"
        );
    }
}

#[test]
fn the_name_limit_keeps_every_derived_name_within_63() {
    let rules = schema()["x-kubernetes-validations"].to_string();
    assert!(
        rules.contains(&format!(
            "self.metadata.name.size() <= {MAX_STORE_NAME_LEN}"
        )),
        "{rules}"
    );
    let longest = "a".repeat(MAX_STORE_NAME_LEN);
    for c in Component::WITH_DATABASE {
        // StatefulSet pods carry controller-revision-hash = <sts>-<hash of up to 10>.
        assert!(names::database(&longest, c).len() + 1 + 10 <= 63, "{c}");
    }
    for c in Component::ALL {
        assert!(names::component(&longest, c).len() <= 63);
    }
    assert_eq!(
        violations(&store(&longest, json!({})), None),
        Vec::<String>::new()
    );
    let too_long = violations(&store(&format!("{longest}a"), json!({})), None);
    assert_eq!(too_long.len(), 1, "{too_long:?}");
    assert!(
        too_long[0].contains("at most 40 characters"),
        "{too_long:?}"
    );
}

#[test]
fn a_name_that_cannot_prefix_a_service_is_refused() {
    for bad in ["1shop", "shop.example", "shop-"] {
        let v = violations(&store(bad, json!({})), None);
        assert!(
            v.iter().any(|m| m.contains("must start with a letter")),
            "{bad}: {v:?}"
        );
    }
}

#[test]
fn a_node_port_needs_a_node_port_service() {
    let v = violations(
        &store("demo", json!({"gateway": {"service": {"nodePort": 30080}}})),
        None,
    );
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].contains("nodePort can only be set when gateway.service.type is NodePort"),
        "{v:?}"
    );
    for t in ["NodePort", "LoadBalancer"] {
        let ok = store(
            "demo",
            json!({"gateway": {"service": {"type": t, "nodePort": 30080}}}),
        );
        assert_eq!(violations(&ok, None), Vec::<String>::new(), "{t}");
    }
}

#[test]
fn refresh_tokens_must_outlive_access_tokens() {
    let v = violations(
        &store(
            "demo",
            json!({"tokens": {"accessTokenTtlSeconds": 3600, "refreshTokenTtlSeconds": 3600}}),
        ),
        None,
    );
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].contains("refreshTokenTtlSeconds must be greater"),
        "{v:?}"
    );
    // The default refresh lifetime applies when only the access lifetime is set.
    let ok = store("demo", json!({"tokens": {"accessTokenTtlSeconds": 3600}}));
    assert_eq!(violations(&ok, None), Vec::<String>::new());
}

#[test]
fn storage_cannot_change_once_the_store_exists() {
    let old = store(
        "demo",
        json!({"order": {"database": {"storageSize": "1Gi"}}}),
    );
    let bigger = store(
        "demo",
        json!({"order": {"database": {"storageSize": "5Gi"}}}),
    );
    let v = violations(&bigger, Some(&old));
    assert!(
        v.iter()
            .any(|m| m.contains("storageSize cannot be changed")),
        "{v:?}"
    );
    assert_eq!(
        violations(&bigger, None),
        Vec::<String>::new(),
        "any size on create"
    );

    let classed = store(
        "demo",
        json!({"order": {"database": {"storageClassName": "fast"}}}),
    );
    let v = violations(&classed, Some(&old));
    assert!(
        v.iter()
            .any(|m| m.contains("storageClassName cannot be changed")),
        "{v:?}"
    );
    assert_eq!(violations(&old, Some(&old)), Vec::<String>::new());
}

#[test]
fn ranges_and_enums_are_in_the_schema() {
    let s = schema();
    let spec = &s["properties"]["spec"]["properties"];
    let replicas = &spec["order"]["properties"]["replicas"];
    assert_eq!(
        (replicas["minimum"].as_f64(), replicas["maximum"].as_f64()),
        (Some(0.0), Some(50.0))
    );
    let node_port = &spec["gateway"]["properties"]["service"]["properties"]["nodePort"];
    assert_eq!(
        (node_port["minimum"].as_f64(), node_port["maximum"].as_f64()),
        (Some(30000.0), Some(32767.0))
    );
    assert_eq!(spec["deletionPolicy"]["enum"], json!(["Retain", "Delete"]));
    assert_eq!(
        spec["imagePullPolicy"]["enum"],
        json!(["Always", "IfNotPresent", "Never"])
    );
    assert_eq!(spec["imagePullPolicy"]["default"], "IfNotPresent");
    assert_eq!(
        spec["gateway"]["properties"]["service"]["properties"]["type"]["enum"],
        json!(["ClusterIP", "NodePort", "LoadBalancer"])
    );
    assert!(
        spec["auth"]["properties"]["database"]["properties"]["storageSize"]["pattern"].is_string()
    );
    let storefront = &spec["storefront"]["properties"];
    assert_eq!(
        (
            storefront["replicas"]["minimum"].as_f64(),
            storefront["replicas"]["maximum"].as_f64()
        ),
        (Some(0.0), Some(50.0))
    );
    assert_eq!(storefront["enabled"]["type"], "boolean");
    assert_eq!(
        storefront["secureCookies"]["enum"],
        json!(["Auto", "Always"])
    );
    assert_eq!(storefront["image"]["minLength"].as_f64(), Some(1.0));
    let access = &spec["tokens"]["properties"]["accessTokenTtlSeconds"];
    assert_eq!(
        (access["minimum"].as_f64(), access["maximum"].as_f64()),
        (Some(60.0), Some(86400.0))
    );
}

#[test]
fn the_crd_has_status_printer_columns_and_a_short_name() {
    let crd = crd();
    assert_eq!(crd.spec.group, "mercato.dev");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["mst".to_string()]));
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<&str> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Ready", "Phase", "Endpoint", "Age"]);
    let schema = schema();
    assert!(
        schema.get("required").is_none(),
        "a Store may leave out spec"
    );
}

#[test]
fn resources_must_be_kubernetes_quantities() {
    let with = |q: Value| {
        store(
            "demo",
            json!({
                "order": {"resources": {"limits": {"memory": q.clone()}},
                          "database": {"resources": {"requests": {"cpu": q.clone()}}}},
                "gateway": {"resources": {"requests": {"memory": q}}},
            }),
        )
    };
    for good in [
        json!("256Mi"),
        json!("0.5"),
        json!("500m"),
        json!("1Gi"),
        json!("1"),
        json!(".5"),
        json!("1.5Gi"),
        json!("1e3"),
        json!("100n"),
        json!("2k"),
        json!(2),
    ] {
        assert_eq!(
            violations(&with(good.clone()), None),
            Vec::<String>::new(),
            "{good}"
        );
    }
    for bad in [
        "256MB", "1GB", "1K", "1 Gi", "lots", "", "-1", "1Gi ", "0x10",
    ] {
        let v = violations(&with(json!(bad)), None);
        assert_eq!(v.len(), 3, "{bad:?} is refused at each place: {v:?}");
        assert!(
            v.iter()
                .any(|m| m.starts_with(".spec.order.resources.limits.memory")),
            "{v:?}"
        );
    }
}

#[test]
fn the_quantity_pattern_agrees_with_the_kubernetes_quantity_parser() {
    // Kubernetes' own parser (CEL's isQuantity, ported from apimachinery) as the reference;
    // the pattern refuses negative amounts on top, which no request or limit may be. (The
    // port trims blanks, which apimachinery's ParseQuantity does not: "1Gi " is left out.)
    for q in [
        "256Mi", "0.5", "500m", "1Gi", "1", ".5", "1.", "1.5Gi", "1e3", "1E-3", "100n", "5u", "2k",
        "3M", "4Ei", "+1", "256MB", "1GB", "1K", "1 Gi", "lots", "", "0x10", "Mi", "1ki", "1.2.3",
        "1e", "--1",
    ] {
        let parses = cel_holds(&format!("isQuantity({})", cel_string(q)), &json!(0));
        assert_eq!(
            matches_pattern(crate::crd::QUANTITY_PATTERN, q),
            parses,
            "{q:?}: Kubernetes says {parses}"
        );
    }
    assert!(!matches_pattern(crate::crd::QUANTITY_PATTERN, "-1"));
    assert!(cel_holds("isQuantity('-1')", &json!(0)));
}

#[test]
fn dns_settings_are_checked() {
    for (dns, expected) in [
        (json!({"namespace": "Kube_System"}), "namespace"),
        (json!({"cidrs": ["169.254.20.10"]}), "cidrs[0]"),
        (json!({"cidrs": ["dns.example.com/32"]}), "cidrs[0]"),
    ] {
        let object = store("demo", json!({"networkPolicies": {"dns": dns}}));
        let v = violations(&object, None);
        assert!(
            v.iter().any(|m| m.contains(expected)),
            "{dns}: expected a violation naming {expected}, got {v:?}"
        );
    }
    let fine = store(
        "demo",
        json!({"networkPolicies": {"dns": {"namespace": "dns-system", "podLabels": {"app": "coredns"},
                                           "cidrs": ["169.254.20.10/32", "fd00::a/128"]}}}),
    );
    assert_eq!(violations(&fine, None), Vec::<String>::new());
}

#[test]
fn a_store_gets_a_storefront_unless_it_turns_it_off() {
    let defaulted = apply_defaults(&schema(), &store("demo", json!({})));
    let storefront = &defaulted["spec"]["storefront"];
    assert_eq!(storefront["enabled"], true);
    assert_eq!(storefront["replicas"], 1);
    assert_eq!(storefront["resources"]["limits"]["memory"], "256Mi");
    assert!(storefront.get("image").is_none(), "the operator's image");
    assert_eq!(storefront["secureCookies"], "Auto");
    let spec: StoreSpec = serde_json::from_value(defaulted["spec"].clone()).unwrap();
    assert!(spec.enabled(Component::Storefront));
    assert_eq!(spec.components().count(), Component::ALL.len());
    assert_eq!(spec.workload(Component::Storefront).replicas, 1);
    assert!(spec.service(Component::Storefront).is_none(), "no database");

    // Turning it off keeps the other defaults and takes it out of the Store's components.
    let off = store("demo", json!({"storefront": {"enabled": false}}));
    assert_eq!(violations(&off, None), Vec::<String>::new());
    let spec: StoreSpec =
        serde_json::from_value(apply_defaults(&schema(), &off)["spec"].clone()).unwrap();
    assert!(!spec.enabled(Component::Storefront));
    assert_eq!(spec.storefront.replicas, 1);
    assert!(!spec.components().any(|c| c == Component::Storefront));
    assert!(spec.enabled(Component::Gateway));

    // (Its ranges are in `ranges_and_enums_are_in_the_schema`; the API server checks them.)
    let bad = store(
        "demo",
        json!({"storefront": {"resources": {"limits": {"memory": "256MB"}}}}),
    );
    let v = violations(&bad, None);
    assert!(
        v.iter()
            .any(|m| m.starts_with(".spec.storefront.resources.limits.memory")),
        "{v:?}"
    );
}

#[test]
fn a_backup_schedule_must_be_five_cron_fields_or_a_macro() {
    for ok in [
        "17 3 * * *",
        "*/15 * * * 1-5",
        "0 0 1,15 JAN-JUN MON",
        "@daily",
    ] {
        let v = violations(&store("demo", json!({"backup": {"schedule": ok}})), None);
        assert_eq!(v, Vec::<String>::new(), "{ok}");
    }
    for bad in ["17 3 * *", "0 0 * * * *", "every night", "@sometimes", ""] {
        let v = violations(&store("demo", json!({"backup": {"schedule": bad}})), None);
        assert!(
            v.iter().any(|m| m.contains(".spec.backup.schedule")),
            "{bad:?}: {v:?}"
        );
    }
}

#[test]
fn backup_defaults_and_ranges_are_in_the_schema() {
    let defaulted = apply_defaults(
        &schema(),
        &store("demo", json!({"backup": {"schedule": "@daily"}})),
    );
    let spec: StoreSpec = serde_json::from_value(defaulted["spec"].clone()).unwrap();
    let backup = spec.backup.unwrap();
    assert_eq!(backup.retention, 7);
    assert_eq!(backup.target.pvc.unwrap().size, "5Gi");
    let s = schema();
    let retention = &s["properties"]["spec"]["properties"]["backup"]["properties"]["retention"];
    assert_eq!(
        (retention["minimum"].as_f64(), retention["maximum"].as_f64()),
        (Some(1.0), Some(1000.0))
    );
    let v = violations(
        &store(
            "demo",
            json!({"backup": {"schedule": "@daily", "target": {"pvc": {"size": "5GB"}}}}),
        ),
        None,
    );
    assert!(v.iter().any(|m| m.contains("pvc.size")), "{v:?}");
    let v = violations(
        &store(
            "demo",
            json!({"backup": {"schedule": "@daily", "target": {}}}),
        ),
        None,
    );
    assert!(
        v.iter()
            .any(|m| m.contains("backup.target needs exactly one of pvc and s3")),
        "{v:?}"
    );
}

#[test]
fn a_store_with_backups_has_a_name_its_cron_job_names_fit() {
    let longest = "a".repeat(crate::crd::MAX_STORE_NAME_LEN_WITH_BACKUP);
    for c in Component::WITH_DATABASE {
        // A CronJob's name may have 52 characters, so that its Jobs' names fit in 63.
        assert!(
            crate::builders::backup::cron_job_name(&longest, c).len() <= 52,
            "{c}"
        );
    }
    let backup = json!({"backup": {"schedule": "@daily"}});
    assert_eq!(
        violations(&store(&longest, backup.clone()), None),
        Vec::<String>::new()
    );
    let v = violations(&store(&format!("{longest}a"), backup), None);
    assert!(
        v.iter().any(|m| m.contains("at most 34 characters")),
        "{v:?}"
    );
    assert_eq!(
        violations(&store(&format!("{longest}a"), json!({})), None),
        Vec::<String>::new(),
        "without backups the longer names stay allowed"
    );
}

#[test]
fn restore_from_is_checked_and_fixed_once_the_store_exists() {
    let restore = |file: &str| {
        store(
            "demo",
            json!({"order": {"database": {"restoreFrom": {"claimName": "old-backups", "file": file}}}}),
        )
    };
    for ok in ["latest", "20261203T165513Z.dump"] {
        assert_eq!(violations(&restore(ok), None), Vec::<String>::new(), "{ok}");
    }
    for bad in ["../20261203T165513Z.dump", "20261203.dump", "newest", ""] {
        let v = violations(&restore(bad), None);
        assert!(
            v.iter().any(|m| m.contains("restoreFrom.file")),
            "{bad:?}: {v:?}"
        );
    }
    let message = "restoreFrom cannot be set, changed or removed";
    let plain = store("demo", json!({"order": {"database": {}}}));
    let latest = restore("latest");
    for (old, new, what) in [
        (&plain, &latest, "added"),
        (&latest, &plain, "removed"),
        (&latest, &restore("20261203T165513Z.dump"), "changed"),
    ] {
        let v = violations(new, Some(old));
        assert!(v.iter().any(|m| m.contains(message)), "{what}: {v:?}");
    }
    assert_eq!(violations(&latest, Some(&latest)), Vec::<String>::new());
}

/// Images and the major version both `database::major_version` and the CRD's CEL find.
const IMAGE_MAJORS: &[(&str, Option<&str>)] = &[
    ("postgres:17", Some("17")),
    ("postgres:15.4", Some("15")),
    ("postgres:16-bookworm", Some("16")),
    ("bench/postgres:16", Some("16")),
    (
        "registry.example:5000/team/postgres:15.6-bookworm",
        Some("15"),
    ),
    ("postgres:15@sha256:0123456789abcdef", Some("15")),
    ("postgres", None),
    ("postgres:latest", None),
    ("registry.example:5000/postgres", None),
    ("postgres@sha256:0123456789abcdef", None),
];

#[test]
fn the_crd_and_the_reconciler_read_an_images_major_version_alike() {
    use crate::builders::database::major_version;
    use crate::crd::cel_major_version;
    for (image, major) in IMAGE_MAJORS {
        assert_eq!(major_version(image), *major, "{image}");
        let cel = format!(
            "{} == {}",
            cel_major_version("self"),
            cel_string(major.unwrap_or(""))
        );
        assert!(cel_holds(&cel, &json!(image)), "{image}: CEL disagrees");
    }
}

#[test]
fn the_database_image_cannot_change_major_version() {
    let with = |image: Option<&str>| {
        let db = image.map_or(json!({}), |i| json!({"image": i}));
        store("demo", json!({"order": {"database": db}}))
    };
    let message = "database.image cannot change PostgreSQL's major version";
    for (old, new) in [
        (Some("postgres:15"), Some("postgres:17")),
        (Some("bench/postgres:15"), Some("bench/postgres:16")),
        (Some("postgres:15.4"), Some("postgres:16.0-bookworm")),
        // Unset is the default, postgres:17.
        (None, Some("postgres:16")),
        (Some("postgres:16"), None),
    ] {
        let v = violations(&with(new), Some(&with(old)));
        assert!(
            v.iter().any(|m| m.contains(message)),
            "{old:?} -> {new:?}: {v:?}"
        );
        assert_eq!(
            violations(&with(new), None),
            Vec::<String>::new(),
            "{new:?} on create"
        );
    }
    for (old, new) in [
        (Some("postgres:15.4"), Some("postgres:15.6")),
        (
            Some("postgres:15"),
            Some("mirror.example/postgres:15-bookworm"),
        ),
        (None, Some("postgres:17.2")),
        (Some("postgres:17.2"), None),
        // Not compared: no tag, a tag without a number, a digest only.
        (Some("postgres:15"), Some("postgres")),
        (Some("postgres:15"), Some("postgres:latest")),
        (
            Some("postgres:15"),
            Some("postgres@sha256:0123456789abcdef"),
        ),
    ] {
        assert_eq!(
            violations(&with(new), Some(&with(old))),
            Vec::<String>::new(),
            "{old:?} -> {new:?}"
        );
    }
}

#[test]
fn the_major_version_rule_is_cheap_for_the_api_servers_cost_estimate() {
    use kube::core::cel::{ScopeContext, analyze_rule};
    let s = schema();
    let db = &s["properties"]["spec"]["properties"]["order"]["properties"]["database"];
    assert_eq!(db["properties"]["image"]["maxLength"], json!(512));
    let compiled = compile_schema(db);
    let rules = db["x-kubernetes-validations"].as_array().unwrap();
    let rule = rules
        .iter()
        .find(|r| r["rule"].as_str().unwrap().contains("find("))
        .unwrap()["rule"]
        .as_str()
        .unwrap();
    assert_eq!(
        analyze_rule(rule, &compiled, ScopeContext::CrdValidation),
        Vec::new()
    );
}

#[test]
fn an_external_database_is_fixed_once_the_store_exists_and_excludes_restore_from() {
    let external =
        |secret: &str| json!({"secretName": secret, "urlKey": "uri", "tlsMode": "require"});
    let with = |db: Value| store("demo", json!({"order": {"database": db}}));
    let plain = with(json!({}));
    let cnpg = with(json!({"external": external("shop-order-db-app")}));
    assert_eq!(violations(&cnpg, None), Vec::<String>::new());
    let message = "database.external cannot be set or removed";
    for (old, new, what) in [(&plain, &cnpg, "set"), (&cnpg, &plain, "removed")] {
        let v = violations(new, Some(old));
        assert!(v.iter().any(|m| m.contains(message)), "{what}: {v:?}");
    }
    let moved = with(json!({"external": external("shop-order-db-v2-app")}));
    assert_eq!(
        violations(&moved, Some(&cnpg)),
        Vec::<String>::new(),
        "another Secret may be named"
    );

    let both = with(json!({"external": external("shop-order-db-app"),
                          "restoreFrom": {"claimName": "old-backups", "file": "latest"}}));
    let v = violations(&both, None);
    assert!(
        v.iter()
            .any(|m| m.contains("external and database.restoreFrom cannot be set together")),
        "{v:?}"
    );

    let defaulted = apply_defaults(&schema(), &with(json!({"external": {"secretName": "db"}})));
    assert_eq!(
        defaulted["spec"]["order"]["database"]["external"],
        json!({"secretName": "db", "urlKey": "url", "tlsMode": "require"})
    );
    let s = schema();
    assert_eq!(
        s["properties"]["spec"]["properties"]["order"]["properties"]["database"]["properties"]["external"]
            ["properties"]["tlsMode"]["enum"],
        json!(["disable", "prefer", "require", "verify-ca", "verify-full"])
    );
    assert_eq!(
        s["properties"]["spec"]["properties"]["order"]["properties"]["database"]["properties"]["external"]
            ["required"],
        json!(["secretName"])
    );
    for bad in [
        json!({"secretName": "Not_A_Name"}),
        json!({"secretName": "db", "urlKey": "a/b"}),
    ] {
        assert_ne!(
            violations(&with(json!({"external": bad.clone()})), None),
            Vec::<String>::new(),
            "{bad}"
        );
    }
}

#[test]
fn a_backup_target_and_a_restore_name_exactly_one_place_and_a_bare_endpoint() {
    let bucket = |endpoint: &str| json!({"endpoint": endpoint, "bucket": "shop-backups", "credentialsSecret": "backup-bucket"});
    let backup = |target: Value| {
        store(
            "demo",
            json!({"backup": {"schedule": "17 3 * * *", "target": target}}),
        )
    };
    for ok in [
        json!({"s3": bucket("https://s3.eu-west-1.amazonaws.com")}),
        json!({"s3": bucket("http://minio.backups.svc:9000")}),
        json!({"pvc": {"size": "5Gi"}}),
    ] {
        assert_eq!(
            violations(&backup(ok.clone()), None),
            Vec::<String>::new(),
            "{ok}"
        );
    }
    let both = json!({"pvc": {"size": "5Gi"}, "s3": bucket("https://s3.example.com")});
    for bad in [both, json!({})] {
        let v = violations(&backup(bad.clone()), None);
        assert!(
            v.iter().any(|m| m.contains("exactly one of pvc and s3")),
            "{bad}: {v:?}"
        );
    }
    for endpoint in [
        "s3.example.com",
        "ftp://s3.example.com",
        "https://s3.example.com/bucket",
        "https://s3.example.com?x=1",
    ] {
        let v = violations(&backup(json!({"s3": bucket(endpoint)})), None);
        assert!(
            v.iter().any(|m| m.contains("endpoint")),
            "{endpoint}: {v:?}"
        );
    }
    let mut bad_bucket = bucket("https://s3.example.com");
    bad_bucket["bucket"] = json!("Shop_Backups");
    let v = violations(&backup(json!({"s3": bad_bucket})), None);
    assert!(v.iter().any(|m| m.contains("bucket")), "{v:?}");

    let restore = |from: Value| {
        store(
            "demo",
            json!({"order": {"database": {"restoreFrom": from}}}),
        )
    };
    let s3 = bucket("https://s3.example.com");
    assert_eq!(
        violations(&restore(json!({"s3": s3, "file": "latest"})), None),
        Vec::<String>::new()
    );
    for bad in [
        json!({"s3": s3, "claimName": "old-backups", "file": "latest"}),
        json!({"file": "latest"}),
    ] {
        let v = violations(&restore(bad.clone()), None);
        assert!(
            v.iter()
                .any(|m| m.contains("exactly one of claimName and s3")),
            "{bad}: {v:?}"
        );
    }
}
