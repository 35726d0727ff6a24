//! The OpenAPI 3.1 document of the product service.

use mercato_kit::server::BearerAuth;
use utoipa::OpenApi;

use crate::routes::{products, reservations};

#[derive(OpenApi)]
#[openapi(
    info(title = "Mercato product", description = "Catalog and stock. Prices are integer minor units."),
    paths(
        products::list, products::get_one, products::create, products::replace, products::patch, products::delete,
        reservations::reserve, reservations::get_one, reservations::commit, reservations::release,
    ),
    components(schemas(mercato_kit::Problem, mercato_kit::FieldError)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
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
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == "If-Match" && p["in"] == "header"),
                "{method}"
            );
            assert!(
                op["responses"]["200"]["headers"]["ETag"].is_object(),
                "{method}"
            );
        }
        assert!(item["get"]["responses"]["200"]["headers"]["ETag"].is_object());
        let product = &doc["components"]["schemas"]["Product"]["properties"];
        assert!(product["version"].is_object());
    }
}
