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
