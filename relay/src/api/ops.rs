//! Operational endpoints: liveness, readiness, metrics and the API description.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::error::{ApiResult, AppError};
use crate::state::AppState;
use crate::store::outbox;

/// The OpenAPI description of the relay's HTTP API.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// The operational routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route(
            "/v1/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
}

/// Ready when the database answers.
async fn ready(State(state): State<AppState>) -> ApiResult<&'static str> {
    if state.store().ping().await {
        Ok("ready")
    } else {
        Err(AppError::Unavailable("database unreachable"))
    }
}

async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let mut conn = state.store().pool().acquire().await?;
    let pending = outbox::pending_count(&mut conn).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(pending),
    ))
}
