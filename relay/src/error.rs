//! The relay's one error type and its HTTP mapping.
//!
//! Every failure becomes a status and a JSON body `{"error": code, "message": text}`. Client
//! errors say precisely what was wrong; server errors say only "internal error" and the detail
//! goes to the log (never to the client), tagged with the request id.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Everything an API request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The body is not valid JSON or does not have the expected shape.
    #[error("{0}")]
    BadRequest(String),
    /// A field is well-formed JSON but its value is not acceptable.
    #[error("{field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The body exceeds the configured limit.
    #[error("request body too large")]
    BodyTooLarge,
    /// No or unknown API key / session.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The API key is valid but may not touch this resource.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The resource does not exist (or is not visible to the caller).
    #[error("{0}")]
    NotFound(&'static str),
    /// The endpoint exists but not with this method.
    #[error("this endpoint does not accept this method")]
    MethodNotAllowed,
    /// The resource is gone for good (revoked, expired).
    #[error("{message}")]
    Gone {
        /// Machine code, e.g. `message_revoked`.
        code: &'static str,
        /// Human text.
        message: &'static str,
    },
    /// The request conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// Machine code, e.g. `already_enrolled`.
        code: &'static str,
        /// Human text.
        message: &'static str,
    },
    /// Wrong password proof; `attempts_left` before lockout.
    #[error("wrong password")]
    WrongPassword {
        /// Attempts left before the patient is locked out.
        attempts_left: u32,
    },
    /// Too many attempts or requests; retry after the given number of seconds.
    #[error("{message}")]
    TooMany {
        /// Machine code: `locked_out` or `rate_limited`.
        code: &'static str,
        /// Human text.
        message: &'static str,
        /// Seconds until a retry can succeed.
        retry_after: u64,
    },
    /// A dependency is not available (viewer not built, database down for readiness).
    #[error("{0}")]
    Unavailable(&'static str),
    /// Anything unexpected; detail is logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// A field-level validation failure.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            Self::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Gone { code, .. } => (StatusCode::GONE, code),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::WrongPassword { .. } => (StatusCode::UNAUTHORIZED, "wrong_password"),
            Self::TooMany { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(format!("database: {error}"))
    }
}

impl From<shared::Error> for AppError {
    fn from(error: shared::Error) -> Self {
        Self::BadRequest(error.to_string())
    }
}

/// The JSON error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub error: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Field at fault, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    /// Attempts left before lockout, for a wrong password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<u32>,
    /// Seconds to wait, for lockouts and rate limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if status.is_server_error() && !matches!(self, Self::Unavailable(_)) {
            tracing::error!(error = %self, "request failed");
            "internal error".to_owned()
        } else {
            self.to_string()
        };
        let retry_after = match &self {
            Self::TooMany { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let body = ErrorBody {
            error: code,
            message,
            field: match &self {
                Self::Invalid { field, .. } => Some(field),
                _ => None,
            },
            attempts_left: match &self {
                Self::WrongPassword { attempts_left } => Some(*attempts_left),
                _ => None,
            },
            retry_after,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, AppError>;
