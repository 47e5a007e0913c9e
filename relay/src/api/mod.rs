//! The HTTP API: the sender API (Bearer API key), the viewer API (link, then session cookie),
//! provider callbacks and operational endpoints.
//!
//! Every route is registered through `utoipa_axum`, so the OpenAPI document served at
//! `/v1/openapi.json` is generated from the same handlers and the `shared::api` types: a route
//! cannot exist without being described.

pub mod checks;
pub mod client;
pub mod device;
pub mod ops;
pub mod sender;
pub mod sms_callback;
pub mod viewer;

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "SecureText relay API",
        description = "The relay stores only ciphertext. Senders authenticate with \
                       `Authorization: Bearer <API key>`; the viewer with the session cookie set \
                       by `POST /v1/viewer/unlock`. Every error answers \
                       `{\"error\": code, \"message\": text}` (see `ErrorBody`). Prose and \
                       examples: docs/API.md."
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "sender", description = "Organisations submit sealed messages and follow them."),
        (name = "viewer", description = "The patient's browser: open, enroll, unlock, read."),
        (name = "provider", description = "Callbacks from the SMS provider."),
        (name = "operations", description = "Health, readiness, metrics, this document."),
    )
)]
struct ApiDoc;

/// The two ways callers authenticate.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An organisation's API key (`relay api-key create`)."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                viewer::SESSION_COOKIE,
                "HttpOnly session cookie set by a successful unlock.",
            ))),
        );
    }
}

/// The answers any route can give without its handler running: a body the JSON extractor
/// refuses, one over the size limit, and a database outage. Added to every operation that does
/// not document them itself, so the document lists every status a client can see. It must run
/// on the merged document ([`routes`]): as an `ApiDoc` modifier it would see no paths yet.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description));
                };
                if has_body {
                    add(
                        "400",
                        "The body is not JSON or lacks its content type (`bad_request`).",
                    );
                    add(
                        "413",
                        "The body is larger than the relay accepts (`body_too_large`).",
                    );
                    add("422", "A field is not acceptable (`invalid`, see `field`).");
                }
                add(
                    "408",
                    "The request did not arrive within the request timeout (`request_timeout`).",
                );
                add(
                    "503",
                    "The database is unavailable; retry shortly (`unavailable`).",
                );
            }
        }
    }
}

/// Every API route, and the OpenAPI document that describes exactly those routes.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(sender::routes())
        .merge(viewer::routes())
        .merge(checks::routes())
        .merge(sms_callback::routes())
        .merge(ops::routes())
        .split_for_parts();
    CommonResponses.modify(&mut document);
    (router, document)
}

/// The OpenAPI document alone (for tests and `relay openapi`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}
