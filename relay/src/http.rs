//! HTTP plumbing shared by every route: JSON and path extractors that answer with the relay's
//! error body, security headers, and request tracing that never records a URI (the viewer's
//! older `/m/{link}` links carry a bearer token in the path).

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use shared::api::LongPoll;
use shared::token::Token;

use crate::error::AppError;
use crate::state::AppState;

/// A JSON body whose rejections become [`AppError`]s: `400 bad_request` when the body is not
/// JSON or lacks the JSON content type, `413 body_too_large` over the limit, `422 invalid`
/// (`field` `body`) when it is JSON of the wrong shape.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// `application/json`, or any `application/...+json`, with or without parameters.
fn is_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(AppError::BadRequest(
                "expected Content-Type: application/json".into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::BodyTooLarge
                } else {
                    AppError::BadRequest(e.body_text())
                }
            })?;
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(JsonRejection::JsonDataError(e)) => Err(AppError::invalid("body", e.body_text())),
            // serde_json reports some type errors as syntax errors (an enum given a number,
            // say): a body that is valid JSON is of the wrong shape, not malformed.
            Err(JsonRejection::JsonSyntaxError(e))
                if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() =>
            {
                Err(AppError::invalid("body", e.body_text()))
            }
            Err(JsonRejection::JsonSyntaxError(_)) => {
                Err(AppError::BadRequest("body is not valid JSON".into()))
            }
            Err(other) => Err(AppError::BadRequest(other.body_text())),
        }
    }
}

/// A path parameter whose rejections become [`AppError`]s.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|e: PathRejection| AppError::invalid("path", e.body_text()))
    }
}

/// The wait a long-poll asks for (`?wait=SECONDS`, [`shared::api::LongPoll`]); more than
/// [`LongPoll::MAX_WAIT_SECONDS`] is refused (`422 invalid`, field `wait`) rather than cut
/// short, so that a client learns the limit instead of polling faster than it thinks. The wait
/// granted ends [`LONG_POLL_HEADROOM`] before the relay's request deadline, whatever that is
/// configured to, so a long-poll is answered, never timed out.
#[derive(Debug, Clone, Copy)]
pub struct LongPollWait(pub std::time::Duration);

/// What a long-poll leaves of the request deadline for its last look and its answer.
pub const LONG_POLL_HEADROOM: std::time::Duration = std::time::Duration::from_secs(10);

impl FromRequestParts<AppState> for LongPollWait {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(query) =
            axum::extract::Query::<LongPoll>::from_request_parts(parts, state)
                .await
                .map_err(|e| AppError::invalid("query", e.body_text()))?;
        if query.wait > LongPoll::MAX_WAIT_SECONDS {
            return Err(AppError::invalid(
                "wait",
                format!("at most {} seconds", LongPoll::MAX_WAIT_SECONDS),
            ));
        }
        let asked = std::time::Duration::from_secs(u64::from(query.wait));
        let deadline = state.settings().limits.request_timeout;
        Ok(Self(asked.min(deadline.saturating_sub(LONG_POLL_HEADROOM))))
    }
}

/// The JSON 404 for unknown routes.
pub async fn not_found() -> AppError {
    AppError::NotFound("no such endpoint")
}

/// What a `GET` or `HEAD` of a path that is neither a route nor a viewer file answers: under
/// `/m/` the viewer's page (see [`crate::api::viewer::page`]), elsewhere the JSON 404.
pub async fn unknown_path(State(state): State<AppState>, uri: Uri) -> Response {
    if uri.path().starts_with("/m/") {
        crate::api::viewer::page(&state).await.into_response()
    } else {
        not_found().await.into_response()
    }
}

/// The strict headers every response carries. The CSP allows exactly what the WASM viewer
/// needs: its own scripts and styles, WebAssembly compilation, and calls back to this origin.
pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let is_api = req.uri().path().starts_with("/v1/") || req.uri().path().starts_with("/m/");
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self'; font-src 'self'; connect-src 'self'; manifest-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    );
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(
        headers,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        headers,
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    set(
        headers,
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=(), interest-cohort=()",
    );
    if is_api {
        set(headers, header::CACHE_CONTROL, "no-store");
        set(headers, header::PRAGMA, "no-cache");
    }
    if state.settings().tls {
        set(
            headers,
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        );
    }
    response
}

/// Records each request as a span with its method, route template and request id — never the
/// concrete URI, which may hold a link token.
pub fn request_span(req: &Request) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %req.method(), route, request_id)
}

/// Cookies of one name tried per request: enough for a planted one or two beside the real one,
/// not a way to make one request cost many lookups.
const MAX_COOKIES_OF_A_NAME: usize = 4;

/// The tokens in every cookie called `name`, in order, the first few only. Every one is kept
/// (not just the first): a cookie of our name planted beside the real one (by a sibling
/// subdomain over plain HTTP, or an injected header) must not hide it.
pub fn cookie_tokens(headers: &HeaderMap, name: &str) -> Vec<Token> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(cookie, _)| *cookie == name)
        .filter_map(|(_, value)| Token::from_base64url(value).ok())
        .take(MAX_COOKIES_OF_A_NAME)
        .collect()
}

/// A plain 204 No Content.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let mut headers = axum::http::HeaderMap::new();
        assert!(!is_json_content_type(&headers));
        for (value, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/jsonx", false),
            ("text/json", false),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json_content_type(&headers), json, "{value}");
        }
    }
}
