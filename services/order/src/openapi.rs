//! The OpenAPI 3.1 document of the order service.

use mercato_kit::openapi::{BearerAuth, ProblemResponses};
use utoipa::OpenApi;

use crate::routes::{internal, orders};

#[derive(OpenApi)]
#[openapi(
    info(title = "Mercato order", description = "Orders that reserve stock; amounts are integer minor units."),
    paths(orders::create, orders::list, orders::get_one, orders::cancel, internal::get_one, internal::payment_event),
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
    fn a_payment_event_that_does_not_fit_its_order_is_documented_as_a_422_problem() {
        let doc = serde_json::to_value(document()).unwrap_or_default();
        let op = &doc["paths"][mercato_contract::wire::paths::PAYMENT_EVENTS]["post"];
        assert!(
            op["responses"]["422"]["content"]["application/problem+json"].is_object(),
            "{op}"
        );
    }
}
