//! The sender library's error types and the exit codes the `securetext` command maps them to.
//!
//! # Invariants
//! - No error message carries a secret or message content: passphrases, API keys, content keys
//!   and plaintext never reach a `Display` or `Debug` form. Phone numbers are not echoed either.
//! - Every error has exactly one [`ExitCode`], so scripts can tell "the relay said no" from "the
//!   relay is down" from "the local key is unusable" without parsing text.

use std::fmt;
use std::path::PathBuf;

use shared::ids::RecipientId;
use shared::keys::Fingerprint;

/// Everything the sender library can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The relay answered with an error body (after any retries).
    #[error(transparent)]
    Relay(#[from] RelayError),

    /// The relay could not be reached (connection refused, DNS, TLS, timeout), after retries.
    #[error("relay unreachable: {0}")]
    Unreachable(String),

    /// The relay answered something that is not what its API promises (bad JSON, a fingerprint
    /// that does not match the key it came with, an id that is not the one asked for). Treated
    /// as a verification failure: the relay is not trusted to be consistent.
    #[error("unexpected answer from the relay: {0}")]
    BadResponse(String),

    /// A protocol-level failure from the `shared` crate (content too large, invalid key, …).
    #[error(transparent)]
    Protocol(#[from] shared::Error),

    /// The passphrase does not open the key file, or the sealed key was altered. The two are
    /// indistinguishable by design.
    #[error("wrong passphrase, or the organisation key file was altered")]
    WrongPassphrase,

    /// The organisation key file is missing, unreadable or for another organisation.
    #[error("organisation key file {path}: {reason}")]
    KeyFile {
        /// Which file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A local file or directory is accessible to other users; refused like OpenSSH does.
    #[error(
        "{path} is accessible to other users (mode {mode:03o}); run `chmod {wanted:03o} {path}`"
    )]
    InsecurePermissions {
        /// Which file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// What they should be.
        wanted: u32,
    },

    /// Reading or writing a local file failed.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A local state file (config, pins, journal, audit anchor) does not parse.
    #[error("{path} is not a valid SecureText state file: {reason}")]
    StateFile {
        /// Which file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Configuration is missing or inconsistent.
    #[error("configuration: {0}")]
    Config(String),

    /// The caller's input is not acceptable (phone number, lifetime, message text, …).
    #[error("invalid input: {0}")]
    Input(String),

    /// The recipient's key differs from the pinned one. Nothing is encrypted to the new key
    /// until an operator approves it.
    #[error(
        "recipient {recipient_id} now has a different key (pinned {pinned}, relay offers \
         {offered}); nothing was sent. Verify the change with the patient, then run \
         `securetext keys approve {recipient_id}`"
    )]
    KeyChangeHeld {
        /// The recipient.
        recipient_id: RecipientId,
        /// The fingerprint pinned earlier.
        pinned: Fingerprint,
        /// The fingerprint the relay now offers.
        offered: Fingerprint,
    },

    /// The relay gives a phone number another recipient id than the one first seen for it, or
    /// says it is not enrolled. Nothing is sent until an operator approves the change.
    #[error(
        "the patient's number was bound to recipient {recipient_id}, but the relay now gives {}; \
         nothing was sent. Verify the change with the patient, then run \
         `securetext keys approve {recipient_id}`",
        match offered_recipient { Some(id) => format!("recipient {id}"), None => "no enrolled recipient".to_owned() }
    )]
    RecipientChangeHeld {
        /// The recipient first seen for the number.
        recipient_id: RecipientId,
        /// What the relay gives now (`None`: not enrolled).
        offered_recipient: Option<RecipientId>,
    },

    /// An exported audit log does not verify.
    #[error("audit log verification failed: {0}")]
    AuditVerification(String),
}

impl Error {
    /// The process exit code for this error (see [`ExitCode`]).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Relay(error) if error.is_transient() => ExitCode::RelayUnreachable,
            Self::Relay(_) => ExitCode::RelayRefused,
            Self::Unreachable(_) => ExitCode::RelayUnreachable,
            Self::BadResponse(_) | Self::AuditVerification(_) => ExitCode::VerificationFailed,
            Self::Protocol(shared::Error::DecryptionFailed)
            | Self::WrongPassphrase
            | Self::KeyFile { .. }
            | Self::InsecurePermissions { .. } => ExitCode::KeyProblem,
            Self::KeyChangeHeld { .. } | Self::RecipientChangeHeld { .. } => {
                ExitCode::KeyChangeHeld
            }
            Self::Protocol(_)
            | Self::Io { .. }
            | Self::StateFile { .. }
            | Self::Config(_)
            | Self::Input(_) => ExitCode::Usage,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// The documented exit codes of the `securetext` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// Bad usage, bad input or local configuration (flags, phone number, files).
    Usage = 1,
    /// The relay refused the request (a 4xx answer other than 429).
    RelayRefused = 2,
    /// The relay could not be reached, or stayed overloaded or failing (5xx, 429) after
    /// retries. Retrying later may succeed.
    RelayUnreachable = 3,
    /// The organisation key file or passphrase is unusable (missing, wrong passphrase,
    /// altered, permissions too open).
    KeyProblem = 4,
    /// Verification failed: an audit log does not verify or was rewritten, the relay answered
    /// inconsistently, or the agent raised an alarm.
    VerificationFailed = 5,
    /// A recipient's key changed and is held until `securetext keys approve`.
    KeyChangeHeld = 6,
}

impl ExitCode {
    /// The numeric code.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

/// A relay error code, as in the `error` field of the relay's error body. Every code the
/// relay's API can answer has a variant, so that callers can match on them; codes added later
/// arrive as [`ErrorCode::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `bad_request`: the body is not JSON or lacks the content type.
    BadRequest,
    /// `invalid`: a field has an unacceptable value (see `field`).
    Invalid,
    /// `body_too_large`: the request exceeds the relay's body limit.
    BodyTooLarge,
    /// `unauthorized`: missing, malformed, unknown or revoked API key.
    Unauthorized,
    /// `forbidden`: the envelope names another organisation.
    Forbidden,
    /// `not_found`: no such message (or recipient, or endpoint).
    NotFound,
    /// `method_not_allowed`: wrong HTTP method (a client bug).
    MethodNotAllowed,
    /// `organisation_key_missing`: the organisation has not registered its public key.
    OrganisationKeyMissing,
    /// `idempotency_key_reused`: the idempotency key belongs to another message.
    IdempotencyKeyReused,
    /// `duplicate_message`: the message id is already used.
    DuplicateMessage,
    /// `recipient_key_changed`: the patient's key is not the one wrapped to.
    RecipientKeyChanged,
    /// `recipient_not_enrolled`: the patient has not enrolled (or was reset).
    RecipientNotEnrolled,
    /// `not_active`: the message is already revoked or expired.
    NotActive,
    /// `message_ended`: the message is revoked or expired.
    MessageEnded,
    /// `message_revoked` (viewer API).
    MessageRevoked,
    /// `message_expired` (viewer API).
    MessageExpired,
    /// `already_enrolled` (viewer API).
    AlreadyEnrolled,
    /// `not_enrolled` (viewer API).
    NotEnrolled,
    /// `wrong_password` (viewer API).
    WrongPassword,
    /// `locked_out` (viewer API).
    LockedOut,
    /// `rate_limited`: too many requests from this API key.
    RateLimited,
    /// `unavailable`: a dependency of the relay is down.
    Unavailable,
    /// `internal`: the relay failed; details are in its log.
    Internal,
    /// A code this version does not know, or a response without an error body.
    Other(String),
}

impl ErrorCode {
    /// Parses the wire code.
    pub fn parse(code: &str) -> Self {
        match code {
            "bad_request" => Self::BadRequest,
            "invalid" => Self::Invalid,
            "body_too_large" => Self::BodyTooLarge,
            "unauthorized" => Self::Unauthorized,
            "forbidden" => Self::Forbidden,
            "not_found" => Self::NotFound,
            "method_not_allowed" => Self::MethodNotAllowed,
            "organisation_key_missing" => Self::OrganisationKeyMissing,
            "idempotency_key_reused" => Self::IdempotencyKeyReused,
            "duplicate_message" => Self::DuplicateMessage,
            "recipient_key_changed" => Self::RecipientKeyChanged,
            "recipient_not_enrolled" => Self::RecipientNotEnrolled,
            "not_active" => Self::NotActive,
            "message_ended" => Self::MessageEnded,
            "message_revoked" => Self::MessageRevoked,
            "message_expired" => Self::MessageExpired,
            "already_enrolled" => Self::AlreadyEnrolled,
            "not_enrolled" => Self::NotEnrolled,
            "wrong_password" => Self::WrongPassword,
            "locked_out" => Self::LockedOut,
            "rate_limited" => Self::RateLimited,
            "unavailable" => Self::Unavailable,
            "internal" => Self::Internal,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The wire code.
    pub fn as_str(&self) -> &str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Invalid => "invalid",
            Self::BodyTooLarge => "body_too_large",
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
            Self::WrongPassword => "wrong_password",
            Self::LockedOut => "locked_out",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::Other(code) => code,
        }
    }

    /// What the operator should do about it, in one sentence.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::BadRequest | Self::MethodNotAllowed => {
                "the relay did not understand the request; check that this tool matches the \
                 relay's version"
            }
            Self::Invalid => "a value was refused; see the field named above",
            Self::BodyTooLarge => "the message is larger than this relay accepts; shorten it",
            Self::Unauthorized => {
                "the API key is missing, wrong or revoked; ask the relay operator for a new one"
            }
            Self::Forbidden => "the API key belongs to another organisation than the key file",
            Self::NotFound => "no such message for this organisation (or no such patient)",
            Self::OrganisationKeyMissing => {
                "the organisation has no registered public key; run `securetext init`"
            }
            Self::IdempotencyKeyReused => {
                "this idempotency key was already used for a different message"
            }
            Self::DuplicateMessage => "a message with this id already exists",
            Self::RecipientKeyChanged => {
                "the patient re-enrolled while sending; run the command again"
            }
            Self::RecipientNotEnrolled => {
                "the patient has not enrolled yet (or was reset); the agent will retry"
            }
            Self::NotActive | Self::MessageEnded | Self::MessageRevoked | Self::MessageExpired => {
                "the message is already revoked or expired"
            }
            Self::AlreadyEnrolled | Self::NotEnrolled | Self::WrongPassword | Self::LockedOut => {
                "a viewer-side condition; not expected from the sender API"
            }
            Self::RateLimited => "too many requests; wait for the indicated time and retry",
            Self::Unavailable | Self::Internal => {
                "the relay has a problem; retry later or tell its operator"
            }
            Self::Other(_) => "unknown error code; see the message",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer of the relay: its status and the fields of its JSON error body
/// (`{"error", "message", "field"?, "attempts_left"?, "retry_after"?}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("relay refused the request ({status} {code}): {message}{}; {}", field_text(.field), .code.hint())]
pub struct RelayError {
    /// HTTP status.
    pub status: u16,
    /// The machine-readable code.
    pub code: ErrorCode,
    /// The relay's human-readable explanation (it never contains secrets; see the relay's
    /// error module).
    pub message: String,
    /// The field at fault, for `invalid`.
    pub field: Option<String>,
    /// Attempts left before a lockout (viewer API only).
    pub attempts_left: Option<u32>,
    /// Seconds to wait before retrying (429), from the body or the `Retry-After` header.
    pub retry_after: Option<u64>,
}

fn field_text(field: &Option<String>) -> String {
    field
        .as_deref()
        .map(|f| format!(" (field `{f}`)"))
        .unwrap_or_default()
}

impl RelayError {
    /// Builds the error from a non-success response. A body that is not the relay's error JSON
    /// (a proxy's HTML page, say) becomes [`ErrorCode::Other`] with a short excerpt.
    pub fn from_response(status: u16, body: &str, retry_after_header: Option<u64>) -> Self {
        #[derive(serde::Deserialize)]
        struct Body {
            error: String,
            message: String,
            #[serde(default)]
            field: Option<String>,
            #[serde(default)]
            attempts_left: Option<u32>,
            #[serde(default)]
            retry_after: Option<u64>,
        }
        match serde_json::from_str::<Body>(body) {
            Ok(parsed) => Self {
                status,
                code: ErrorCode::parse(&parsed.error),
                message: parsed.message,
                field: parsed.field,
                attempts_left: parsed.attempts_left,
                retry_after: parsed.retry_after.or(retry_after_header),
            },
            Err(_) => Self {
                status,
                code: ErrorCode::Other(format!("http_{status}")),
                message: excerpt(body),
                field: None,
                attempts_left: None,
                retry_after: retry_after_header,
            },
        }
    }

    /// Whether a retry may succeed: server errors and rate limits.
    pub fn is_transient(&self) -> bool {
        self.status >= 500 || self.status == 429
    }
}

/// The first line of a non-JSON body, printable ASCII only and short: enough to recognise a
/// proxy error page, too little to echo anything large back.
fn excerpt(body: &str) -> String {
    let line: String = body
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(120)
        .collect();
    if line.is_empty() {
        "no error body".to_owned()
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for code in [
            "bad_request",
            "invalid",
            "body_too_large",
            "unauthorized",
            "forbidden",
            "not_found",
            "method_not_allowed",
            "organisation_key_missing",
            "idempotency_key_reused",
            "duplicate_message",
            "recipient_key_changed",
            "recipient_not_enrolled",
            "not_active",
            "message_ended",
            "message_revoked",
            "message_expired",
            "already_enrolled",
            "not_enrolled",
            "wrong_password",
            "locked_out",
            "rate_limited",
            "unavailable",
            "internal",
        ] {
            let parsed = ErrorCode::parse(code);
            assert!(!matches!(parsed, ErrorCode::Other(_)), "{code}");
            assert_eq!(parsed.as_str(), code);
            assert!(!parsed.hint().is_empty());
        }
        assert_eq!(
            ErrorCode::parse("brand_new"),
            ErrorCode::Other("brand_new".into())
        );
    }

    #[test]
    fn error_bodies_parse_and_map_to_exit_codes() {
        let error = RelayError::from_response(
            422,
            r#"{"error":"invalid","message":"phone: bad","field":"phone"}"#,
            None,
        );
        assert_eq!(error.code, ErrorCode::Invalid);
        assert_eq!(error.field.as_deref(), Some("phone"));
        assert!(error.to_string().contains("(field `phone`)"));
        assert_eq!(Error::from(error).exit_code(), ExitCode::RelayRefused);

        let limited = RelayError::from_response(
            429,
            r#"{"error":"rate_limited","message":"slow down","retry_after":7}"#,
            Some(9),
        );
        assert_eq!(limited.retry_after, Some(7));
        assert_eq!(Error::from(limited).exit_code(), ExitCode::RelayUnreachable);

        let proxy = RelayError::from_response(502, "<html>\nBad gateway</html>", Some(3));
        assert_eq!(proxy.code, ErrorCode::Other("http_502".into()));
        assert_eq!(proxy.message, "<html>");
        assert_eq!(proxy.retry_after, Some(3));
    }
}
