//! What every service's OpenAPI document shares: the bearer scheme, the problem+json
//! answers that kit's extractors and layers give (added to each operation from what it
//! declares, so no handler repeats them), and the contract check the tests run on every
//! document.
//!
//! The rules follow the code that answers: a bearer-token operation goes through `User`,
//! `Admin` or `Service<S>` (401 without a valid token, 403 with the wrong kind); a request
//! body goes through kit's `Json` (400 malformed, 413 too large, 415 not JSON, 422 bad
//! fields); a path parameter through kit's `Path` (404 when malformed); query and header
//! parameters are checked with 422; and the deadline layer answers 503 on any route.

use serde_json::Value;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{Content, OpenApi, PathItem, Ref, RefOr, Response};

use crate::error::{PROBLEM_JSON, Problem};

/// The name of the bearer security scheme that operations' `security(("bearer" = []))` use.
pub const BEARER: &str = "bearer";

/// Adds the `bearer` (JWT) security scheme.
#[derive(Debug)]
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Registers the `Problem` schema and gives every operation the problem+json answers of
/// kit's extractors and layers; every error response it finds is made problem+json.
#[derive(Debug)]
pub struct ProblemResponses;

impl utoipa::Modify for ProblemResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        register_problem(openapi);
        for_each_operation(openapi, |op| {
            for (status, why) in standard_answers(op) {
                add_problem(op, status, why);
            }
        });
        for_each_operation(openapi, problem_content);
    }
}

/// Adds `answers` (status, description) to every operation as problem+json responses:
/// for answers a layer in front of every operation gives, such as the gateway's 429.
pub fn add_to_every_operation(openapi: &mut OpenApi, answers: &[(u16, &str)]) {
    register_problem(openapi);
    for_each_operation(openapi, |op| {
        for (status, why) in answers {
            add_problem(op, *status, why);
        }
    });
}

fn register_problem(openapi: &mut OpenApi) {
    use utoipa::{PartialSchema, ToSchema};
    let components = openapi.components.get_or_insert_with(Default::default);
    let mut schemas = Vec::new();
    <Problem as ToSchema>::schemas(&mut schemas);
    components.schemas.extend(schemas);
    components
        .schemas
        .insert(Problem::name().into_owned(), Problem::schema());
}

/// The operations of a path item.
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn for_each_operation(openapi: &mut OpenApi, mut f: impl FnMut(&mut Operation)) {
    for item in openapi.paths.paths.values_mut() {
        for op in operations_mut(item) {
            f(op);
        }
    }
}

fn takes_bearer(op: &Operation) -> bool {
    op.security.iter().flatten().any(|requirement| {
        serde_json::to_value(requirement)
            .ok()
            .and_then(|v| v.as_object().map(|o| o.contains_key(BEARER)))
            .unwrap_or(false)
    })
}

fn standard_answers(op: &Operation) -> Vec<(u16, &'static str)> {
    let mut answers = Vec::new();
    let located = |place: ParameterIn| {
        op.parameters
            .iter()
            .flatten()
            .any(|p| p.parameter_in == place)
    };
    if takes_bearer(op) {
        answers.push((401, "No bearer token, or one that is invalid or expired"));
        answers.push((
            403,
            "The token may not call this operation (wrong role, or a user token where a \
             service token is needed, or the other way round)",
        ));
    }
    if op.request_body.is_some() {
        answers.push((400, "The body is malformed"));
        answers.push((413, "The body is too large"));
        answers.push((
            415,
            "The body's content type is not one this operation reads",
        ));
        answers.push((
            422,
            "A field is missing, unknown or invalid (named in `errors`); no string may \
             contain a NUL character",
        ));
    }
    if located(ParameterIn::Path) {
        answers.push((404, "Not found (also for a malformed identifier)"));
    }
    if located(ParameterIn::Query) || located(ParameterIn::Header) {
        answers.push((
            422,
            "A parameter is invalid (named in `errors`); none may contain a NUL character",
        ));
    }
    answers.push((
        503,
        "A dependency is unavailable, or the request took too long",
    ));
    answers
}

fn problem_response(description: &str) -> Response {
    let mut response = Response::new(description);
    response.content.insert(
        PROBLEM_JSON.to_string(),
        Content::new(Some(Ref::from_schema_name("Problem"))),
    );
    response
}

fn add_problem(op: &mut Operation, status: u16, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::T(problem_response(description)));
}

fn is_problem_ref(content: &Content) -> bool {
    matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"))
}

/// Makes every 4xx/5xx response without a body of its own problem+json.
fn problem_content(op: &mut Operation) {
    for (status, response) in op.responses.responses.iter_mut() {
        let error = status.parse::<u16>().is_ok_and(|s| s >= 400);
        let RefOr::T(response) = response else {
            continue;
        };
        if error && (response.content.is_empty() || response.content.values().any(is_problem_ref)) {
            response.content.clear();
            response.content.insert(
                PROBLEM_JSON.to_string(),
                Content::new(Some(Ref::from_schema_name("Problem"))),
            );
        }
    }
}

/// Everything in a document that breaks the contract every document keeps: each
/// `{param}` of a path declared as a path parameter, each 4xx/5xx answer problem+json
/// (unless it has a body of its own), each bearer-token operation documenting 401 and
/// 403, and each operation with parameters or a body documenting how it refuses them.
pub fn contract_violations(document: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let Some(paths) = document["paths"].as_object() else {
        return vec!["the document has no paths".into()];
    };
    let schemas = &document["components"]["schemas"];
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, op) in item {
            if !matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
            ) {
                continue;
            }
            let at = format!("{} {path}", method.to_uppercase());
            found.extend(operation_violations(&at, path, op, schemas));
        }
    }
    found
}

fn operation_violations(at: &str, path: &str, op: &Value, schemas: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let params: Vec<&Value> = op["parameters"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let declared =
        |name: &str, place: &str| params.iter().any(|p| p["name"] == name && p["in"] == place);
    for name in path
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split('}').next())
    {
        if !declared(name, "path") {
            found.push(format!("{at}: path parameter {{{name}}} is not declared"));
        }
    }
    for p in &params {
        if p["schema"].is_null() {
            found.push(format!("{at}: parameter {} has no schema", p["name"]));
        }
        let template = format!("{{{}}}", p["name"].as_str().unwrap_or_default());
        if p["in"] == "path" && !(path.contains(&template) && p["required"] == true) {
            found.push(format!(
                "{at}: parameter {} is in the path, but not a required part of it",
                p["name"]
            ));
        }
    }
    let responses = op["responses"].as_object().cloned().unwrap_or_default();
    for (status, response) in &responses {
        let Ok(code) = status.parse::<u16>() else {
            continue;
        };
        let content = response["content"].as_object().cloned().unwrap_or_default();
        // An error with a body of its own (the gateway's degraded `/health`) says so by
        // naming its schema; any other error is a problem.
        let own_body = !content.is_empty()
            && content.values().all(|c| {
                c["schema"]["$ref"]
                    .as_str()
                    .is_some_and(|r| !r.ends_with("/Problem"))
            });
        if code >= 400 && !content.contains_key(PROBLEM_JSON) && !own_body {
            found.push(format!("{at}: {status} is not {PROBLEM_JSON}"));
        }
        for (media, body) in &content {
            if media == PROBLEM_JSON && body["schema"]["$ref"] != "#/components/schemas/Problem" {
                found.push(format!("{at}: {status} is not a Problem"));
            }
            if let Some(r) = body["schema"]["$ref"].as_str() {
                let name = r.rsplit('/').next().unwrap_or_default();
                if schemas[name].is_null() {
                    found.push(format!(
                        "{at}: {status} refers to the missing schema {name}"
                    ));
                }
            }
        }
    }
    let documents = |status: &str| responses.contains_key(status);
    let bearer = op["security"]
        .as_array()
        .is_some_and(|s| s.iter().any(|r| r.get(BEARER).is_some()));
    if bearer && !(documents("401") && documents("403")) {
        found.push(format!(
            "{at}: takes a bearer token but does not document 401 and 403"
        ));
    }
    if !op["requestBody"].is_null() {
        for status in ["400", "413", "415", "422"] {
            if !documents(status) {
                found.push(format!("{at}: takes a body but does not document {status}"));
            }
        }
    }
    if !params.is_empty() && path.contains('{') && !documents("404") {
        found.push(format!(
            "{at}: has a path parameter but does not document 404"
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_undeclared_path_parameter_and_a_json_error_are_violations() {
        let doc = json!({
            "paths": {"/things/{id}": {"get": {
                "security": [{"bearer": []}],
                "responses": {
                    "200": {"description": "ok"},
                    "404": {"description": "no", "content": {"application/json": {}}}
                }
            }}},
            "components": {"schemas": {}}
        });
        let found = contract_violations(&doc);
        assert!(
            found.iter().any(|f| f.contains("{id} is not declared")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|f| f.contains("404 is not application/problem+json")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|f| f.contains("does not document 401")),
            "{found:?}"
        );
    }

    #[test]
    fn a_query_parameter_documented_in_the_path_is_a_violation() {
        let doc = json!({
            "paths": {"/things": {"get": {
                "parameters": [{"name": "limit", "in": "path", "required": true,
                                "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "ok"}}
            }}},
            "components": {"schemas": {}}
        });
        assert_eq!(
            contract_violations(&doc),
            vec!["GET /things: parameter \"limit\" is in the path, but not a required part of it"]
        );
    }

    #[test]
    fn the_standard_answers_follow_what_an_operation_declares() {
        #[utoipa::path(get, path = "/things/{id}", security(("bearer" = [])),
            params(("id" = uuid::Uuid, Path)),
            responses((status = 200, description = "A thing"), (status = 404, body = Problem)))]
        #[allow(dead_code)]
        async fn get_thing() {}

        #[derive(utoipa::OpenApi)]
        #[openapi(paths(get_thing), modifiers(&BearerAuth, &ProblemResponses))]
        struct Doc;

        let doc = serde_json::to_value(<Doc as utoipa::OpenApi>::openapi()).unwrap();
        assert_eq!(contract_violations(&doc), Vec::<String>::new());
        let responses = &doc["paths"]["/things/{id}"]["get"]["responses"];
        for status in ["401", "403", "404", "503"] {
            assert_eq!(
                responses[status]["content"][PROBLEM_JSON]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{status}"
            );
        }
        assert!(responses["422"].is_null(), "no body, no query: no 422");
        assert!(doc["components"]["schemas"]["FieldError"].is_object());
    }
}
