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
