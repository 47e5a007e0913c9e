//! The one error vocabulary of the relay's HTTP API, used by the relay to answer and by the
//! viewer and the sender tooling to branch.

use serde::{Deserialize, Serialize};

/// The machine-readable code in the `error` field of every error body.
///
/// Codes are `snake_case` on the wire. A code a client does not know yet (a newer relay)
/// deserializes as [`ErrorCode::Unknown`], so old clients keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not JSON, lacks the JSON content type, or the request is malformed.
    BadRequest,
    /// A field is well-formed but its value is not acceptable (see `field`).
    Invalid,
    /// The body exceeds the relay's limit.
    BodyTooLarge,
    /// The request (in practice its body) did not arrive within the relay's request timeout.
    RequestTimeout,
    /// Missing, malformed, unknown or revoked API key, or no live viewer session.
    Unauthorized,
    /// The API key may not touch this resource (e.g. the envelope names another organisation).
    Forbidden,
    /// No such resource for this caller, or no such endpoint.
    NotFound,
    /// The endpoint exists but not with this method.
    MethodNotAllowed,
    /// The organisation has not registered its public key.
    OrganisationKeyMissing,
    /// The idempotency key belongs to another message.
    IdempotencyKeyReused,
    /// A message with this id (or idempotency key) already exists.
    DuplicateMessage,
    /// The patient's current key is not the one the envelope or wrap is for.
    RecipientKeyChanged,
    /// The patient has not enrolled (or was reset).
    RecipientNotEnrolled,
    /// Revoking a message that is already revoked or expired.
    NotActive,
    /// The message is revoked or expired (sender API, read receipts).
    MessageEnded,
    /// The sender withdrew the message behind this link (viewer API).
    MessageRevoked,
    /// The message behind this link expired (viewer API).
    MessageExpired,
    /// A password is already set for this patient (viewer API).
    AlreadyEnrolled,
    /// No password is set yet, or the enrollment was reset (viewer API).
    NotEnrolled,
    /// The patient's enrollment was reset after this link was sent, so it cannot set a new
    /// password; the link of a message sent after the reset can (viewer API).
    LinkSuperseded,
    /// The message is not yet wrapped to the patient's current key (viewer API).
    AwaitingKey,
    /// The sender asks the patient to confirm their identity before enrolling from this link,
    /// and the enrollment came without an answer (viewer API).
    IdentityCheckRequired,
    /// Every attempt at this message's identity check is used up: only a new message from the
    /// sender can enroll the patient (viewer API).
    CheckAttemptsExhausted,
    /// The identity-check attempt is already decided, or waits for the other party (viewer and
    /// agent API).
    CheckClosed,
    /// The password proof is wrong; `attempts_left` says how many remain (viewer API).
    WrongPassword,
    /// Too many wrong passwords; `retry_after` says when to try again (viewer API).
    LockedOut,
    /// Too many requests from this API key; `retry_after` says when to try again.
    RateLimited,
    /// A dependency of the relay is down (database, viewer files).
    Unavailable,
    /// The relay failed; the detail is in its log, never in the answer.
    Internal,
    /// A code this build does not know (sent by a newer relay), or an answer without an
    /// error body.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code, for documentation and exhaustive tests.
    pub const ALL: [Self; 30] = [
        Self::BadRequest,
        Self::Invalid,
        Self::BodyTooLarge,
        Self::RequestTimeout,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::OrganisationKeyMissing,
        Self::IdempotencyKeyReused,
        Self::DuplicateMessage,
        Self::RecipientKeyChanged,
        Self::RecipientNotEnrolled,
        Self::NotActive,
        Self::MessageEnded,
        Self::MessageRevoked,
        Self::MessageExpired,
        Self::AlreadyEnrolled,
        Self::NotEnrolled,
        Self::LinkSuperseded,
        Self::AwaitingKey,
        Self::IdentityCheckRequired,
        Self::CheckAttemptsExhausted,
        Self::CheckClosed,
        Self::WrongPassword,
        Self::LockedOut,
        Self::RateLimited,
        Self::Unavailable,
        Self::Internal,
        Self::Unknown,
    ];

    /// The wire form (what serde writes), for logs and messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Invalid => "invalid",
            Self::BodyTooLarge => "body_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::OrganisationKeyMissing => "organisation_key_missing",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::DuplicateMessage => "duplicate_message",
            Self::RecipientKeyChanged => "recipient_key_changed",
            Self::RecipientNotEnrolled => "recipient_not_enrolled",
            Self::NotActive => "not_active",
            Self::MessageEnded => "message_ended",
            Self::MessageRevoked => "message_revoked",
            Self::MessageExpired => "message_expired",
            Self::AlreadyEnrolled => "already_enrolled",
            Self::NotEnrolled => "not_enrolled",
            Self::LinkSuperseded => "link_superseded",
            Self::AwaitingKey => "awaiting_key",
            Self::IdentityCheckRequired => "identity_check_required",
            Self::CheckAttemptsExhausted => "check_attempts_exhausted",
            Self::CheckClosed => "check_closed",
            Self::WrongPassword => "wrong_password",
            Self::LockedOut => "locked_out",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }

    /// The HTTP status the relay answers this code with. Written once here so that the relay,
    /// the generated API description and the clients agree.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized | Self::WrongPassword => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::OrganisationKeyMissing
            | Self::IdempotencyKeyReused
            | Self::DuplicateMessage
            | Self::RecipientKeyChanged
            | Self::RecipientNotEnrolled
            | Self::NotActive
            | Self::AlreadyEnrolled
            | Self::NotEnrolled
            | Self::LinkSuperseded
            | Self::AwaitingKey
            | Self::IdentityCheckRequired
            | Self::CheckAttemptsExhausted
            | Self::CheckClosed => 409,
            Self::MessageEnded | Self::MessageRevoked | Self::MessageExpired => 410,
            Self::BodyTooLarge => 413,
            Self::RequestTimeout => 408,
            Self::Invalid => 422,
            Self::LockedOut | Self::RateLimited => 429,
            Self::Internal | Self::Unknown => 500,
            Self::Unavailable => 503,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error answer: `{"error": code, "message": text, …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Machine-readable code.
    pub error: ErrorCode,
    /// Human-readable explanation; never a secret, a phone number or message content.
    pub message: String,
    /// The field at fault, for `invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Attempts left before a lockout, for `wrong_password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<u32>,
    /// Seconds to wait, for `locked_out` and `rate_limited` (also in `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_what_serde_writes() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            if code != ErrorCode::Unknown {
                assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
            }
            assert!((400..600).contains(&code.http_status()));
        }
        assert_eq!(
            serde_json::from_str::<ErrorCode>("\"brand_new_code\"").unwrap(),
            ErrorCode::Unknown
        );
    }

    #[test]
    fn optional_fields_are_omitted() {
        let body = ErrorBody {
            error: ErrorCode::NotFound,
            message: "unknown link".into(),
            field: None,
            attempts_left: None,
            retry_after: None,
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":"not_found","message":"unknown link"}"#
        );
    }
}
