//! The relay's one error type and its HTTP mapping.
//!
//! Every failure becomes a status and the shared JSON body `shared::api::ErrorBody`
//! (`{"error": code, "message": text, …}`); the status comes from the code
//! ([`ErrorCode::http_status`]), so the relay, its OpenAPI document and the clients agree.
//! Client errors say precisely what was wrong; server errors say only "internal error" and the
//! detail goes to the log (never to the client), tagged with the request id.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::api::{ErrorBody, ErrorCode};

use crate::store::StoreError;

/// Everything an API request can fail with. `Clone`, so that a failed batch of submissions
/// answers each of them ([`crate::submissions`]).
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The request was not complete within the request timeout (a stalled body).
    #[error("the request did not arrive in time")]
    RequestTimeout,
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
    /// The request conflicts with the resource's state (409), or the resource has ended (410);
    /// the code says which.
    #[error("{message}")]
    Refused {
        /// Machine code, e.g. `already_enrolled`, `message_revoked`.
        code: ErrorCode,
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
        /// `locked_out` or `rate_limited`.
        code: ErrorCode,
        /// Human text.
        message: &'static str,
        /// Seconds until a retry can succeed.
        retry_after: u64,
    },
    /// A dependency is not available (viewer not built, database down); retrying may succeed.
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

    /// The message is revoked or expired (sender API, read receipts).
    pub fn message_ended() -> Self {
        Self::Refused {
            code: ErrorCode::MessageEnded,
            message: "the message is revoked or expired",
        }
    }

    /// The wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::Invalid { .. } => ErrorCode::Invalid,
            Self::BodyTooLarge => ErrorCode::BodyTooLarge,
            Self::RequestTimeout => ErrorCode::RequestTimeout,
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::Refused { code, .. } | Self::TooMany { code, .. } => *code,
            Self::WrongPassword { .. } => ErrorCode::WrongPassword,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// The one place where storage failures meet HTTP: an unreachable database is a 503 the client
/// may retry; anything else is an internal error whose detail stays in the log.
impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(error) => {
                tracing::warn!(%error, "database unavailable");
                Self::Unavailable("the database is unavailable; retry shortly")
            }
            error => Self::Internal(error.to_string()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let code = self.code();
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = if let Self::Internal(_) = self {
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
                Self::Invalid { field, .. } => Some((*field).to_owned()),
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
