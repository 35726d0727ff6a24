//! The OpenAPI 3.1 document of the payment service.

use mercato_kit::openapi::{BearerAuth, ProblemResponses};
use utoipa::OpenApi;

use crate::routes::payments;

#[derive(OpenApi)]
#[openapi(
    info(title = "Mercato payment", description = "Payments that settle orders; amounts are integer minor units."),
    paths(payments::create, payments::get_one, payments::list),
    modifiers(&BearerAuth, &ProblemResponses),
)]
struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_can_be_refunded_and_says_when() {
        let doc = serde_json::to_value(document()).unwrap_or_default();
        let schemas = &doc["components"]["schemas"];
        let statuses = schemas["PaymentStatus"]["enum"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            statuses.contains(&serde_json::json!("REFUNDED")),
            "{statuses:?}"
        );
        assert!(schemas["Payment"]["properties"]["refunded_at"].is_object());
    }
}
