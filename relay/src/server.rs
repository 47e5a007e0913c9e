//! The HTTP/1.1 listener: the router served with limits that `axum::serve` does not offer, so
//! that slow or idle clients cannot hold the relay — a deadline for the request head, a
//! deadline for the whole request (a stalled body), and a cap on open connections.
//!
//! Behind a TLS-terminating proxy these are the relay's own last line; the proxy should enforce
//! its own (docs/API.md, "Behind a proxy").

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::error::AppError;
use crate::limits::Limits;

/// After `shutdown`, how long in-flight requests get to finish before their connections are
/// dropped.
const DRAIN: Duration = Duration::from_secs(5);

/// How long to pause after a failed `accept` (for example, out of file descriptors) before
/// trying again, so that the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Answers `408 request_timeout` when a request is not answered within `limit` of its head
/// arriving — in practice, when its body stalls (handlers read the body inside this future).
pub async fn request_deadline(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => AppError::RequestTimeout.into_response(),
    }
}

/// The largest request head (request line and headers) the relay reads: a few cookies and an
/// `Authorization` header need well under 1 KiB, so 16 KiB leaves room for proxies' headers.
/// A longer head is answered `431 Request Header Fields Too Large` (by hyper, without a JSON
/// body) and the connection is closed; hyper's default would buffer about 400 KiB per
/// connection.
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// Serves `router` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish (for at most 5 seconds).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Take a slot before accepting: beyond the cap, clients wait in the listen backlog
        // instead of costing a file descriptor each.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(
            router
                .clone()
                .layer(axum::Extension(ConnectInfo::<SocketAddr>(peer))),
        );
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that vanishes or breaks the protocol ends its own connection only.
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {DRAIN:?}; dropping them");
    }
    Ok(())
}
