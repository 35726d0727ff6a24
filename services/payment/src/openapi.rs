//! The OpenAPI 3.1 document of the payment service.

use mercato_kit::server::BearerAuth;
use utoipa::OpenApi;

use crate::routes::payments;

#[derive(OpenApi)]
#[openapi(
    info(title = "Mercato payment", description = "Payments that settle orders; amounts are integer minor units."),
    paths(payments::create, payments::get_one, payments::list),
    components(schemas(mercato_kit::Problem, mercato_kit::FieldError)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
