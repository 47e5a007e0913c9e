//! SecureText relay: the thin server that stores only ciphertext and texts patients a link.
//!
//! It is a library (router, store, jobs) with a thin binary (`src/main.rs`), so integration
//! tests run the real server in-process on a loopback port: [`app`] builds the router,
//! [`run`] serves it with the background jobs until shutdown.
//!
//! # Invariants
//! - The relay never holds anything that opens a message: it stores envelopes, public keys,
//!   sealed private keys, salts, verifiers and token hashes. No decryption of message content
//!   exists in this crate.
//! - Logs and audit records carry ids and codes, never message text, tokens, keys, passwords
//!   or phone numbers.
#![deny(missing_docs)]

pub mod admin;
pub mod api;
pub mod changes;
pub mod config;
pub mod error;
pub mod http;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod server;
pub mod sms;
pub mod state;
pub mod store;
pub mod submissions;
#[cfg(feature = "test-util")]
pub mod testkit;

use std::future::Future;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

/// The relay's router: every route, the security headers, the metrics and the request tracing.
pub fn app(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    // The viewer's files, `/` included (ServeDir answers a directory with its index.html);
    // unknown paths under `/m/` get the viewer's page, others the JSON 404 (a `fallback`, not a
    // `not_found_service`, which would force 404 onto the page too).
    let viewer_assets = ServeDir::new(&state.settings().viewer_dir)
        .fallback(axum::routing::any(http::unknown_path).with_state(state.clone()));
    let request_timeout = state.settings().limits.request_timeout;
    let (routes, openapi) = api::routes();
    let openapi = openapi
        .to_json()
        .expect("the generated OpenAPI document serializes");
    routes
        .layer(axum::Extension(api::ops::OpenApiJson(openapi.into())))
        .fallback_service(viewer_assets)
        .method_not_allowed_fallback(|| async { error::AppError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(
            state.settings().limits.max_body_bytes,
        ))
        .layer(axum::middleware::from_fn(move |request, next| {
            server::request_deadline(request_timeout, request, next)
        }))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http::security_headers,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_responses,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(http::request_span))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Serves `state` on `listener` (and metrics on `metrics_listener`, when given) with the
/// background jobs until `shutdown` completes, then finishes in-flight requests, stops the jobs
/// and closes the database.
///
/// One signal stops everything at once: the listeners stop accepting and the jobs stop claiming
/// work at the same moment, so the outbox winds down (at most `jobs::SHUTDOWN_GRACE` for calls
/// in flight, then one commit) while the requests in flight drain, not after them.
pub async fn run(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop = std::sync::Arc::new(stop);
    let signal = tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down");
            stop.send_replace(true);
        }
    });
    // Long-polls answer at once when the relay stops, so they do not hold up the drain.
    let close_long_polls = tokio::spawn({
        let state = state.clone();
        let stopped = stopped.clone();
        async move {
            stopping(stopped).await;
            state.changes().close();
        }
    });
    let notices = tokio::spawn(changes::listen(state.clone(), stopped.clone()));
    let outbox = tokio::spawn(jobs::supervise(
        "outbox",
        state.clone(),
        stopped.clone(),
        jobs::run_outbox,
    ));
    let purge = tokio::spawn(jobs::supervise(
        "purge",
        state.clone(),
        stopped.clone(),
        jobs::run_purge,
    ));
    let metrics = metrics_listener.map(|listener| {
        tokio::spawn(serve_metrics(
            listener,
            state.clone(),
            stopping(stopped.clone()),
        ))
    });
    let served = serve_http(listener, state.clone(), stopping(stopped)).await;
    // Serving can also end on its own (an error): the jobs stop then too.
    stop.send_replace(true);
    signal.abort();
    let _ = tokio::join!(outbox, purge, close_long_polls, notices);
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    state.store().close().await;
    served
}

/// Completes once `stopped` holds `true` (or its sender is gone).
async fn stopping(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Serves the HTTP API only, without background jobs (tests drive the jobs step by step).
pub async fn serve_http(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.settings().limits.clone();
    server::serve(listener, app(state), &limits, shutdown).await
}

/// Serves `GET /metrics` on a listener of its own: Prometheus scrapes it on an internal address
/// while the API listener, which faces patients, does not answer it.
pub async fn serve_metrics(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.settings().limits.clone();
    server::serve(listener, api::ops::metrics_router(state), &limits, shutdown).await
}
