//! The gateway's own OpenAPI document; the routed API is documented by each service's
//! `/openapi.json`.

use utoipa::OpenApi;

use crate::health;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Mercato gateway",
        description = "Routes /auth, /users, /products, /orders and /payments to the services."
    ),
    paths(health::health)
)]
struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
