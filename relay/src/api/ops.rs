//! Operational endpoints: liveness, readiness and the API description on the API listener;
//! metrics on their own listener (`--metrics-listen`), so they are not public by default.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use shared::api::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, AppError};
use crate::state::AppState;
use crate::store::outbox;

/// The generated OpenAPI document as JSON, rendered once when the router is built.
#[derive(Debug, Clone)]
pub struct OpenApiJson(pub Arc<str>);

/// The operational routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(openapi_json))
}

/// The metrics listener's router: `GET /metrics` only. Not part of the API document, which
/// describes the public listener.
pub fn metrics_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(state)
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)))]
async fn live() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "`ready`", content_type = "text/plain", body = String),
        (status = 503, description = "The database is unreachable (`unavailable`).", body = ErrorBody),
    ))]
async fn ready(State(state): State<AppState>) -> ApiResult<&'static str> {
    if state.store().ping().await {
        Ok("ready")
    } else {
        Err(AppError::Unavailable("database unreachable"))
    }
}

/// Prometheus counters and the outbox backlog.
async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let mut conn = state.store().conn().await?;
    let pending = outbox::pending_count(&mut conn).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(pending, state.changes().waiting()),
    ))
}

/// This API's OpenAPI document, generated from the handlers and the `shared::api` types.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json")))]
async fn openapi_json(Extension(OpenApiJson(json)): Extension<OpenApiJson>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        json.to_string(),
    )
}
