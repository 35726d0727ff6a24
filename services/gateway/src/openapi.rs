//! The gateway's OpenAPI document: the public operations of auth, product, order and
//! payment exactly as the gateway routes them, with the answers the gateway itself gives
//! in front of them (429, 503, 504), plus its own `/health`. Built from the
//! services' own documents, so it cannot drift from them; this is the document a client
//! generator should use.

use mercato_kit::openapi::{BearerAuth, ProblemResponses, add_to_every_operation};
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{Components, PathItem};

use crate::health;
use crate::routes::upstream_for;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Mercato",
        description = "The store's public API, as served by the gateway: accounts and \
                       users, the catalog, orders and payments. Amounts are integer minor \
                       units."
    ),
    paths(health::health),
    modifiers(&BearerAuth, &ProblemResponses)
)]
struct ApiDoc;

/// The answers the gateway gives for a routed request before, or instead of, the service's.
const GATEWAY_ANSWERS: &[(u16, &str)] = &[
    (429, "This client sent too many requests; see Retry-After"),
    (503, "The service behind this operation is unavailable"),
    (
        504,
        "The service behind this operation did not answer in time",
    ),
];

/// Tags of operations that only services call (internal routes, the client-credentials
/// grant): never part of the public document.
const NOT_PUBLIC_TAGS: &[&str] = &["internal", "service"];

/// Whether the gateway serves an operation to clients.
pub fn is_public(path: &str, op: &Operation) -> bool {
    upstream_for(path).is_some()
        && !op
            .tags
            .iter()
            .flatten()
            .any(|t| NOT_PUBLIC_TAGS.contains(&t.as_str()))
}

/// The services' documents, as each service serves it.
pub fn service_documents() -> [utoipa::openapi::OpenApi; 4] {
    [
        mercato_auth::openapi::document(),
        mercato_product::openapi::document(),
        mercato_order::openapi::document(),
        mercato_payment::openapi::document(),
    ]
}

pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for service in service_documents() {
        merge_public(&mut doc, service);
    }
    doc
}

/// Adds the public operations of a service's document, with the gateway's own answers.
fn merge_public(doc: &mut utoipa::openapi::OpenApi, mut service: utoipa::openapi::OpenApi) {
    for (path, mut item) in std::mem::take(&mut service.paths.paths) {
        keep_public(&path, &mut item);
        if mercato_kit::openapi::operations_mut(&mut item)
            .next()
            .is_some()
        {
            service.paths.paths.insert(path, item);
        }
    }
    add_to_every_operation(&mut service, GATEWAY_ANSWERS);
    doc.paths
        .paths
        .extend(std::mem::take(&mut service.paths.paths));
    let into = doc.components.get_or_insert_with(Components::default);
    if let Some(from) = service.components {
        into.schemas.extend(from.schemas);
        into.security_schemes.extend(from.security_schemes);
    }
    let tags = doc.tags.get_or_insert_with(Vec::new);
    for tag in service.tags.into_iter().flatten() {
        if !NOT_PUBLIC_TAGS.contains(&tag.name.as_str()) && !tags.iter().any(|t| t.name == tag.name)
        {
            tags.push(tag);
        }
    }
}

fn keep_public(path: &str, item: &mut PathItem) {
    for op in [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ] {
        if op.as_ref().is_some_and(|o| !is_public(path, o)) {
            *op = None;
        }
    }
}
