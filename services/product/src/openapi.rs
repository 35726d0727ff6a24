//! The OpenAPI 3.1 document of the product service.

use mercato_kit::openapi::{BearerAuth, ProblemResponses};
use utoipa::OpenApi;
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, Object, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{Content, Ref, RefOr};

use crate::routes::{products, reservations};

#[derive(OpenApi)]
#[openapi(
    info(title = "Mercato product", description = "Catalog and stock. Prices are integer minor units."),
    paths(
        products::list, products::get_one, products::create, products::replace, products::patch, products::delete,
        reservations::reserve, reservations::get_one, reservations::commit, reservations::release,
    ),
    modifiers(&BearerAuth, &ProductBodies, &ProblemResponses),
)]
struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The fields a create or a full update must give (`ProductFields::parse(true)`).
const REQUIRED: [&str; 5] = ["name", "category", "price", "currency", "stock"];

/// Create, replace and patch share `ProductFields`, but not its rules: a create or a
/// replace needs every field but `description` (`NewProduct`); a patch needs at least one
/// field that is not null (`ProductChanges`). A null field means "not given".
#[derive(Debug)]
struct ProductBodies;

impl utoipa::Modify for ProductBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let Some(RefOr::T(Schema::Object(fields))) = components.schemas.get("ProductFields") else {
            return;
        };
        let mut complete = fields.clone();
        complete.description = Some("A product: every field but `description` is required.".into());
        for name in REQUIRED {
            if let Some(RefOr::T(Schema::Object(property))) = complete.properties.get_mut(name) {
                not_null(property);
            }
            complete.required.push(name.to_string());
        }
        let one_field = fields.properties.iter().map(|(name, property)| {
            let mut property = property.clone();
            if let RefOr::T(Schema::Object(p)) = &mut property {
                not_null(p);
            }
            ObjectBuilder::new().property(name, property).required(name)
        });
        let changes = AllOfBuilder::new()
            .description(Some(
                "Changes to a product: at least one field that is not null.",
            ))
            .item(Ref::from_schema_name("ProductFields"))
            .item(one_field.fold(AnyOfBuilder::new(), AnyOfBuilder::item))
            .build();
        components
            .schemas
            .insert("NewProduct".into(), Schema::Object(complete).into());
        components
            .schemas
            .insert("ProductChanges".into(), Schema::AllOf(changes).into());
        for (path, method, body) in [
            ("/products", "post", "NewProduct"),
            ("/products/{id}", "put", "NewProduct"),
            ("/products/{id}", "patch", "ProductChanges"),
        ] {
            let Some(item) = openapi.paths.paths.get_mut(path) else {
                continue;
            };
            let op = match method {
                "post" => item.post.as_mut(),
                "put" => item.put.as_mut(),
                _ => item.patch.as_mut(),
            };
            if let Some(request) = op.and_then(|op| op.request_body.as_mut()) {
                request.content.insert(
                    "application/json".into(),
                    Content::new(Some(Ref::from_schema_name(body))),
                );
            }
        }
    }
}

fn not_null(property: &mut Object) {
    if let SchemaType::Array(types) = &property.schema_type {
        let mut kept: Vec<Type> = types
            .iter()
            .filter(|t| **t != Type::Null)
            .cloned()
            .collect();
        if kept.len() == 1 {
            property.schema_type = SchemaType::Type(kept.remove(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_edits_document_if_match_the_etag_and_the_412() {
        let doc = serde_json::to_value(document()).unwrap_or_default();
        let item = &doc["paths"]["/products/{id}"];
        for method in ["put", "patch"] {
            let op = &item[method];
            let refused = &op["responses"]["412"]["content"]["application/problem+json"];
            assert!(refused.is_object(), "{method}: {op}");
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let if_match = params
                .iter()
                .find(|p| p["name"] == "If-Match" && p["in"] == "header")
                .unwrap_or_else(|| panic!("{method}: no If-Match"));
            // What the server accepts, and nothing else: a string (never null) of entity
            // tags or `*` (a malformed one is 422).
            assert_eq!(if_match["schema"]["type"], "string", "{method}: {if_match}");
            assert!(if_match["schema"]["pattern"].is_string(), "{method}");
            assert!(
                op["responses"]["200"]["headers"]["ETag"].is_object(),
                "{method}"
            );
        }
        assert!(item["get"]["responses"]["200"]["headers"]["ETag"].is_object());
        let product = &doc["components"]["schemas"]["Product"]["properties"];
        assert!(product["version"].is_object());
    }

    #[test]
    fn public_reads_document_if_none_match_the_304_and_their_validators() {
        let doc = serde_json::to_value(document()).unwrap_or_default();
        for path in ["/products", "/products/{id}"] {
            let op = &doc["paths"][path]["get"];
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let asked = params
                .iter()
                .find(|p| p["name"] == "If-None-Match" && p["in"] == "header")
                .unwrap_or_else(|| panic!("{path}: no If-None-Match"));
            assert_eq!(asked["schema"]["type"], "string", "{path}: {asked}");
            assert_ne!(asked["required"], true, "{path}");
            for status in ["200", "304"] {
                let headers = &op["responses"][status]["headers"];
                for header in ["ETag", "Cache-Control"] {
                    assert!(
                        headers[header].is_object(),
                        "{path} {status} {header}: {op}"
                    );
                }
            }
            assert!(
                op["responses"]["304"]["content"].is_null(),
                "{path}: a 304 has no body"
            );
        }
    }
}
