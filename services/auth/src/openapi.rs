//! The OpenAPI 3.1 document of the auth service's public API.

use mercato_kit::openapi::{BearerAuth, ProblemResponses};
use utoipa::OpenApi;

use crate::routes::{auth, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "Mercato auth", description = "Users, login, tokens and service credentials."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::verify, auth::token, auth::jwks,
        users::get_me, users::update_me, users::list, users::create, users::get_one, users::update_one,
        users::delete_one, auth::revocation_feed,
    ),
    modifiers(&BearerAuth, &ProblemResponses),
)]
struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
