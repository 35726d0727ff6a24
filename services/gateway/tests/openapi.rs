//! The OpenAPI documents tell the truth about the API's shape: every service's document
//! keeps the contract (declared path parameters, problem+json errors, 401/403 for bearer
//! operations), and the gateway's document is exactly the public API.

use std::collections::BTreeSet;

use mercato_gateway::openapi;
use mercato_kit::openapi::contract_violations;
use serde_json::Value;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn json(doc: &utoipa::openapi::OpenApi) -> Value {
    serde_json::to_value(doc).expect("a document serializes")
}

/// `(METHOD, path)` of every operation in a document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

fn op(method: &str, path: &str) -> (String, String) {
    (method.into(), path.into())
}

#[test]
fn every_services_document_keeps_the_contract() {
    let names = ["auth", "product", "order", "payment"];
    for (name, doc) in names.iter().zip(openapi::service_documents()) {
        assert_eq!(
            contract_violations(&json(&doc)),
            Vec::<String>::new(),
            "the {name} service's document"
        );
    }
    assert_eq!(
        contract_violations(&json(&openapi::document())),
        Vec::<String>::new(),
        "the gateway's document"
    );
}

#[test]
fn path_parameters_are_declared_as_uuids() {
    let gateway = json(&openapi::document());
    let get = &gateway["paths"]["/orders/{id}"]["get"];
    let id = get["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "id"))
        .expect("GET /orders/{id} declares id");
    assert_eq!(id["in"], "path");
    assert_eq!(id["required"], true);
    assert_eq!(id["schema"]["format"], "uuid");
}

#[test]
fn the_gateway_document_holds_every_public_operation_and_no_internal_one() {
    let gateway = operations(&json(&openapi::document()));
    let mut expected = BTreeSet::from([op("GET", "/health")]);
    for service in openapi::service_documents() {
        for (path, item) in &service.paths.paths {
            for (method, operation) in METHODS.iter().zip([
                &item.get,
                &item.put,
                &item.post,
                &item.delete,
                &item.options,
                &item.head,
                &item.patch,
                &item.trace,
            ]) {
                if operation
                    .as_ref()
                    .is_some_and(|o| openapi::is_public(path, o))
                {
                    expected.insert(op(&method.to_uppercase(), path));
                }
            }
        }
    }
    assert_eq!(gateway, expected);
    for public in [
        op("POST", "/auth/login"),
        op("POST", "/auth/register"),
        op("GET", "/users/me"),
        op("DELETE", "/users/{id}"),
        op("GET", "/products"),
        op("PATCH", "/products/{id}"),
        op("POST", "/orders"),
        op("POST", "/orders/{id}/cancel"),
        op("POST", "/payments"),
        op("GET", "/payments/{id}"),
    ] {
        assert!(gateway.contains(&public), "{public:?} is public");
    }
    for (_, path) in &gateway {
        assert!(!path.starts_with("/internal"), "{path} is internal");
        assert!(
            ![
                "/metrics",
                "/readyz",
                "/healthz",
                "/openapi.json",
                "/auth/token"
            ]
            .contains(&path.as_str()),
            "{path} is not part of the public API"
        );
    }
}

#[test]
fn every_routed_operation_documents_the_gateways_own_answers() {
    let gateway = json(&openapi::document());
    let health = &gateway["paths"]["/health"]["get"]["responses"];
    assert!(health["429"].is_null(), "/health is not rate-limited");
    assert_eq!(
        health["503"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Health"
    );
    for (method, path) in operations(&gateway) {
        if path == "/health" {
            continue;
        }
        let responses = &gateway["paths"][&path][method.to_lowercase()]["responses"];
        for status in ["429", "503", "504"] {
            assert!(
                responses[status].is_object(),
                "{method} {path} does not document {status}"
            );
        }
    }
}

#[test]
fn schemas_merged_into_the_gateway_document_are_the_services_own() {
    let gateway = json(&openapi::document());
    for service in openapi::service_documents() {
        let service = json(&service);
        for (name, schema) in service["components"]["schemas"]
            .as_object()
            .into_iter()
            .flatten()
        {
            if gateway["components"]["schemas"][name].is_object() {
                assert_eq!(
                    &gateway["components"]["schemas"][name], schema,
                    "two services define {name} differently"
                );
            }
        }
    }
}
