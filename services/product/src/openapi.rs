//! The OpenAPI 3.1 document of the product service.

use mercato_kit::openapi::{BearerAuth, ProblemResponses};
use utoipa::OpenApi;

use crate::routes::{products, reservations};

#[derive(OpenApi)]
#[openapi(
    info(title = "Mercato product", description = "Catalog and stock. Prices are integer minor units."),
    paths(
        products::list, products::get_one, products::create, products::replace, products::patch, products::delete,
        reservations::reserve, reservations::get_one, reservations::commit, reservations::release,
    ),
    modifiers(&BearerAuth, &ProblemResponses),
)]
struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
