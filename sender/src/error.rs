//! The sender library's error types and the exit codes the `securetext` command maps them to.
//!
//! # Invariants
//! - No error message carries a secret or message content: passphrases, API keys, content keys
//!   and plaintext never reach a `Display` or `Debug` form. Phone numbers are not echoed either.
//! - Every error has exactly one [`ExitCode`], so scripts can tell "the relay said no" from "the
//!   relay is down" from "the local key is unusable" without parsing text.

use std::path::PathBuf;

use shared::api::ErrorBody;
use shared::ids::RecipientId;
use shared::keys::Fingerprint;
use shared::phone::PhoneError;

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

impl From<PhoneError> for Error {
    /// A phone number comes from the caller, so a bad one is an input error; the shared error's
    /// text names the rule and carries no part of the number.
    fn from(error: PhoneError) -> Self {
        Self::Input(error.to_string())
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

pub use shared::api::ErrorCode;

/// What the operator should do about a relay error code, in one sentence.
pub fn hint(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest | ErrorCode::MethodNotAllowed => {
            "the relay did not understand the request; check that this tool matches the \
             relay's version"
        }
        ErrorCode::Invalid => "a value was refused; see the field named above",
        ErrorCode::BodyTooLarge => "the message is larger than this relay accepts; shorten it",
        ErrorCode::RequestTimeout => {
            "the request reached the relay too slowly; check the network and retry"
        }
        ErrorCode::Unauthorized => {
            "the API key is missing, wrong or revoked; ask the relay operator for a new one"
        }
        ErrorCode::Forbidden => "the API key belongs to another organisation than the key file",
        ErrorCode::NotFound => "no such message for this organisation (or no such patient)",
        ErrorCode::OrganisationKeyMissing => {
            "the organisation has no registered public key; run `securetext init`"
        }
        ErrorCode::IdempotencyKeyReused => {
            "this idempotency key was already used for a different message"
        }
        ErrorCode::DuplicateMessage => "a message with this id already exists",
        ErrorCode::RecipientKeyChanged => {
            "the patient re-enrolled while sending; run the command again"
        }
        ErrorCode::RecipientNotEnrolled => {
            "the patient has not enrolled yet (or was reset); the agent will retry"
        }
        ErrorCode::NotActive
        | ErrorCode::MessageEnded
        | ErrorCode::MessageRevoked
        | ErrorCode::MessageExpired => "the message is already revoked or expired",
        ErrorCode::AlreadyEnrolled
        | ErrorCode::NotEnrolled
        | ErrorCode::LinkSuperseded
        | ErrorCode::AwaitingKey
        | ErrorCode::WrongPassword
        | ErrorCode::LockedOut
        | ErrorCode::IdentityCheckRequired
        | ErrorCode::CheckAttemptsExhausted => {
            "a viewer-side condition; not expected from the sender API"
        }
        ErrorCode::CheckClosed => {
            "the identity-check attempt was answered or decided already (another agent?); \
             the next pass sees its state"
        }
        ErrorCode::RateLimited => "too many requests; wait for the indicated time and retry",
        ErrorCode::Unavailable | ErrorCode::Internal => {
            "the relay has a problem; retry later or tell its operator"
        }
        ErrorCode::Unknown => UNKNOWN_CODE_HINT,
        // `ErrorCode` is `#[non_exhaustive]`: a code added to `shared` after this match was
        // written. The test below fails until it gets its own hint.
        _ => UNKNOWN_CODE_HINT,
    }
}

/// The hint of a code this tool has no advice for.
const UNKNOWN_CODE_HINT: &str = "unknown error code; see the message";

/// An error answer of the relay: its status and the fields of its JSON error body
/// (`{"error", "message", "field"?, "attempts_left"?, "retry_after"?}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("relay refused the request ({status} {code}): {message}{}; {}", field_text(.field), hint(*.code))]
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
    /// (a proxy's HTML page, say) becomes [`ErrorCode::Unknown`] with a short excerpt; the
    /// status is kept, so [`Self::is_transient`] still tells a failing gateway from a refusal.
    pub fn from_response(status: u16, body: &str, retry_after_header: Option<u64>) -> Self {
        match serde_json::from_str::<ErrorBody>(body) {
            Ok(parsed) => Self {
                status,
                code: parsed.error,
                message: parsed.message,
                field: parsed.field,
                attempts_left: parsed.attempts_left,
                retry_after: parsed.retry_after.or(retry_after_header),
            },
            Err(_) => Self {
                status,
                code: ErrorCode::Unknown,
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
    fn every_code_has_its_own_hint() {
        for code in ErrorCode::ALL {
            assert!(!hint(code).is_empty(), "{code}");
            assert_eq!(
                hint(code) == UNKNOWN_CODE_HINT,
                code == ErrorCode::Unknown,
                "{code}"
            );
        }
    }

    #[test]
    fn phone_errors_are_input_errors() {
        let error = Error::from(shared::phone::PhoneNumber::parse("5551234").unwrap_err());
        assert!(matches!(&error, Error::Input(text) if text.contains("E.164")));
        assert_eq!(error.exit_code(), ExitCode::Usage);
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
        assert_eq!(proxy.code, ErrorCode::Unknown);
        assert_eq!(proxy.status, 502);
        assert_eq!(proxy.message, "<html>");
        assert_eq!(proxy.retry_after, Some(3));
        assert_eq!(Error::from(proxy).exit_code(), ExitCode::RelayUnreachable);

        let newer = RelayError::from_response(409, r#"{"error":"brand_new","message":"m"}"#, None);
        assert_eq!(newer.code, ErrorCode::Unknown);
        assert_eq!(newer.message, "m");
    }
}
