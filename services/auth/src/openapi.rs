//! The OpenAPI 3.1 document of the auth service's public API.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::routes::{auth, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "Mercato auth", description = "Users, login, tokens and service credentials."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::verify, auth::token, auth::jwks,
        users::get_me, users::update_me, users::list, users::create, users::get_one, users::update_one,
        users::delete_one,
    ),
    components(schemas(mercato_kit::Problem, mercato_kit::FieldError)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
        }
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
