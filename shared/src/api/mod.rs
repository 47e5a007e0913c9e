//! The relay's HTTP contract: every request and response body, written once and used by the
//! relay (to answer), the viewer (in the browser) and the sender tooling (to call).
//!
//! With the `openapi` feature each type also describes itself for the relay's generated
//! OpenAPI document (`GET /v1/openapi.json`); the feature is off in the viewer's build, so the
//! browser download carries none of it.
//!
//! Request bodies refuse unknown fields, so a misspelt field is an error rather than ignored.

mod error;
#[cfg(feature = "openapi")]
mod schema;

pub use error::{ErrorBody, ErrorCode};

use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;
use crate::bundle::KeyBundle;
use crate::envelope::{Envelope, Wrap};
pub use crate::identity_check::{CheckKind, Confirmation, PakeMessage};
use crate::ids::{CheckAttemptId, MessageId, OrganisationId, RecipientId, SessionId};
use crate::kdf::{KdfParams, Salt, Verifier};
use crate::keys::{Fingerprint, PublicKey};

// ---- sender API -------------------------------------------------------------------------------

/// The organisation behind an API key (`GET /v1/organisation`, `PUT /v1/organisation/key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrganisationView {
    /// The organisation's id.
    pub id: OrganisationId,
    /// Name shown to patients.
    pub display_name: String,
    /// Its registered public key, once registered.
    pub public_key: Option<PublicKey>,
    /// That key's fingerprint.
    pub fingerprint: Option<Fingerprint>,
}

/// `PUT /v1/organisation/key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterKeyRequest {
    /// The organisation's RSA public key.
    pub public_key: PublicKey,
}

/// `POST /v1/recipients/lookup`. The number travels in the body, never in a URL, so that it
/// does not reach access logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// The patient's number in E.164 form.
    pub phone: String,
}

/// An enrolled patient's key, as a sender needs it to encrypt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecipientView {
    /// The patient's id.
    pub recipient_id: RecipientId,
    /// The patient's public key.
    pub public_key: PublicKey,
    /// Its fingerprint (the sender pins it).
    pub fingerprint: Fingerprint,
    /// When the patient enrolled (Unix seconds).
    pub enrolled_at: i64,
}

/// `POST /v1/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The patient's number in E.164 form.
    pub to: String,
    /// The sealed message.
    pub envelope: Envelope,
    /// A retry with the same key gets the original answer (1 to 200 printable ASCII).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// What the patient must answer before enrolling from this message's link (first contact
    /// only): the sender's agent then trusts only a key bound to a correct answer
    /// (`docs/PROTOCOL.md`, "Enrollment check"). The answer itself never reaches the relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_check: Option<CheckKind>,
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Deliverable.
    Active,
    /// Withdrawn by the sender; ciphertext purged.
    Revoked,
    /// Past its expiry; ciphertext purged.
    Expired,
}

impl MessageStatus {
    /// The stored and wire form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// What a submission answers: `queued` for an active message, else its end state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SubmitStatus {
    /// Accepted; the SMS is queued.
    Queued,
    /// (Idempotent retry) the message was revoked since.
    Revoked,
    /// (Idempotent retry) the message expired since.
    Expired,
}

impl SubmitStatus {
    /// The wire form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

impl From<MessageStatus> for SubmitStatus {
    fn from(status: MessageStatus) -> Self {
        match status {
            MessageStatus::Active => Self::Queued,
            MessageStatus::Revoked => Self::Revoked,
            MessageStatus::Expired => Self::Expired,
        }
    }
}

/// The answer to `POST /v1/messages` (201 when new, 200 for an idempotent retry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmitResponse {
    /// The message id (from the envelope's header).
    pub message_id: MessageId,
    /// The patient's id.
    pub recipient_id: RecipientId,
    /// `queued`, or the end state of an earlier accepted submission.
    pub status: SubmitStatus,
    /// Expiry (Unix seconds).
    pub expires_at: i64,
}

/// `GET /v1/messages/{id}`: a message's state and its audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusView {
    /// The message id.
    pub message_id: MessageId,
    /// The patient's id.
    pub recipient_id: RecipientId,
    /// Life-cycle state.
    pub status: MessageStatus,
    /// Accepted (Unix seconds).
    pub created_at: i64,
    /// Expiry (Unix seconds).
    pub expires_at: i64,
    /// First open of the link.
    pub opened_at: Option<i64>,
    /// First read receipt.
    pub read_at: Option<i64>,
    /// The message's audit events, oldest first.
    pub events: Vec<AuditEvent>,
}

/// The answer to `POST /v1/messages/{id}/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokeResponse {
    /// The message id.
    pub message_id: MessageId,
    /// Always `revoked`.
    pub status: MessageStatus,
}

/// A message waiting for the sender's agent to wrap its content key to the patient's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingRewrap {
    /// The message id.
    pub message_id: MessageId,
    /// The patient's id.
    pub recipient_id: RecipientId,
    /// The patient's current public key.
    pub recipient_public_key: PublicKey,
    /// Its fingerprint.
    pub recipient_fingerprint: Fingerprint,
    /// The stored envelope (wrapped to the organisation).
    pub envelope: Envelope,
}

/// The query of the two long-polls, `GET /v1/rewraps` (the agent waits for an enrollment) and
/// `GET /v1/viewer/messages` (the viewer waits for a re-wrap): with `wait` above 0, a relay
/// that has nothing to report yet holds the answer until it has (or `wait` seconds pass, or the
/// relay shuts down), so that the first plaintext follows an enrollment without a polling delay.
/// Other query parameters (a client's cache-buster) are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct LongPoll {
    /// Seconds to wait for something to report (0, the default: answer at once; at most
    /// [`LongPoll::MAX_WAIT_SECONDS`]).
    #[serde(default)]
    pub wait: u32,
}

impl LongPoll {
    /// Longest wait a relay holds an answer for: well inside the relay's 30-second request
    /// deadline and the idle timeouts of common proxies (60 s).
    pub const MAX_WAIT_SECONDS: u32 = 20;

    /// The query string of a wait of `seconds` (clamped to the maximum), for clients.
    pub fn query(seconds: u32) -> String {
        format!("wait={}", seconds.min(Self::MAX_WAIT_SECONDS))
    }
}

/// `GET /v1/rewraps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingRewraps {
    /// Oldest first.
    pub pending: Vec<PendingRewrap>,
}

/// `PUT /v1/messages/{id}/recipient-wrap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UploadWrapRequest {
    /// The content key wrapped to the patient's current key (role `recipient`).
    pub wrap: Wrap,
}

/// The answer to an accepted re-wrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadWrapResponse {
    /// The message id.
    pub message_id: MessageId,
    /// The key the message is now wrapped to.
    pub recipient_fingerprint: Fingerprint,
}

/// An identity-check attempt waiting for the sender's agent: to answer (no `agent_message`
/// yet) or to decide (`patient_confirmation` present).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingCheck {
    /// The attempt.
    pub attempt_id: CheckAttemptId,
    /// The message whose link the patient opened.
    pub message_id: MessageId,
    /// The patient.
    pub recipient_id: RecipientId,
    /// The key the patient asks to enroll.
    pub recipient_public_key: PublicKey,
    /// Its fingerprint (bound into the confirmations).
    pub recipient_fingerprint: Fingerprint,
    /// The patient's exchange message.
    pub patient_message: PakeMessage,
    /// The agent's own exchange message, once it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_message: Option<PakeMessage>,
    /// The patient's confirmation, once sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_confirmation: Option<Confirmation>,
}

/// `GET /v1/enrollment-checks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingChecks {
    /// Oldest first.
    pub pending: Vec<PendingCheck>,
}

/// `PUT /v1/enrollment-checks/{id}/reply`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CheckReplyRequest {
    /// The agent's exchange message.
    pub agent_message: PakeMessage,
    /// The agent's confirmation.
    pub agent_confirmation: Confirmation,
}

/// `PUT /v1/enrollment-checks/{id}/verdict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CheckVerdictRequest {
    /// Whether the patient's confirmation matched (the answer was right, for this key).
    pub verified: bool,
}

/// The answer to a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckVerdictResponse {
    /// `verified` or `failed`.
    pub progress: CheckProgress,
    /// Answers the message still accepts.
    pub attempts_left: u32,
}

/// The query of `GET /v1/audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Return events with a sequence number above this one (0: from the start).
    #[serde(default)]
    pub after: u64,
    /// At most this many events (1 to 10,000; default 1,000).
    #[serde(default = "AuditQuery::default_limit")]
    pub limit: u32,
}

impl AuditQuery {
    /// Largest page the relay returns.
    pub const MAX_LIMIT: u32 = 10_000;

    const fn default_limit() -> u32 {
        1000
    }
}

// ---- viewer API -------------------------------------------------------------------------------

/// The header every viewer request that a session cookie authenticates and that changes state
/// (a POST) must carry, with any value. A cross-site form or image cannot set a custom header,
/// and a cross-site `fetch` that tries needs a CORS preflight the relay never grants, so a
/// request with the header comes from the viewer's own page.
pub const VIEWER_REQUEST_HEADER: &str = "x-securetext-viewer";

/// `POST /v1/viewer/open`: the link token from the SMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// The token of the SMS link (base64url).
    pub link: String,
}

/// Whether the patient has a password yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PatientState {
    /// Not enrolled: choose a password with these parameters and a fresh salt.
    New {
        /// Parameters the relay proposes (the viewer checks them before use).
        kdf_params: KdfParams,
        /// The identity check the sender asks for before it trusts the patient's first key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity_check: Option<CheckChallenge>,
    },
    /// Enrolled: derive with the stored salt and parameters, then unlock.
    Enrolled {
        /// Stored parameters.
        kdf_params: KdfParams,
        /// Stored salt.
        salt: Salt,
    },
}

/// The answer to opening a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "OpenResponseFields")]
pub struct OpenResponse {
    /// The message behind the link.
    pub message_id: MessageId,
    /// The patient.
    pub recipient_id: RecipientId,
    /// Who sent it: the organisation's id (an identity check binds it) and name.
    pub organisation_id: OrganisationId,
    /// The organisation's name.
    pub organisation_name: String,
    /// Sent (Unix seconds).
    pub created_at: i64,
    /// Expiry (Unix seconds).
    pub expires_at: i64,
    /// The idle timeout the relay enforces on sessions.
    pub idle_timeout_seconds: u64,
    /// New or enrolled (flattened: `state` and its fields).
    #[serde(flatten)]
    pub patient: PatientState,
}

/// [`OpenResponse`] as it is read: the same JSON object, as flat fields. The derived reading of a
/// flattened, internally tagged enum buffers the whole body in serde's generic `Content` first,
/// which brings serde_json's every number parser with it: the largest piece of JSON code in the
/// viewer's download. Written the same way (serialising is still derived, with `flatten`).
/// Unknown fields are ignored, as they were; a `salt` beside `"state": "new"` must be a valid
/// salt (it is not used).
#[derive(Deserialize)]
struct OpenResponseFields {
    message_id: MessageId,
    recipient_id: RecipientId,
    organisation_id: OrganisationId,
    organisation_name: String,
    created_at: i64,
    expires_at: i64,
    idle_timeout_seconds: u64,
    state: PatientStateName,
    kdf_params: KdfParams,
    #[serde(default)]
    salt: Option<Salt>,
    #[serde(default)]
    identity_check: Option<CheckChallenge>,
}

/// The `state` tag of [`PatientState`].
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum PatientStateName {
    New,
    Enrolled,
}

impl TryFrom<OpenResponseFields> for OpenResponse {
    type Error = &'static str;

    fn try_from(fields: OpenResponseFields) -> Result<Self, Self::Error> {
        let kdf_params = fields.kdf_params;
        let patient = match (fields.state, fields.salt) {
            (PatientStateName::New, _) => PatientState::New {
                kdf_params,
                identity_check: fields.identity_check,
            },
            (PatientStateName::Enrolled, Some(salt)) => PatientState::Enrolled { kdf_params, salt },
            (PatientStateName::Enrolled, None) => return Err("missing field `salt`"),
        };
        Ok(Self {
            message_id: fields.message_id,
            recipient_id: fields.recipient_id,
            organisation_id: fields.organisation_id,
            organisation_name: fields.organisation_name,
            created_at: fields.created_at,
            expires_at: fields.expires_at,
            idle_timeout_seconds: fields.idle_timeout_seconds,
            patient,
        })
    }
}

/// `POST /v1/viewer/enroll`: what the browser made from the new password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The link that authorises the enrollment.
    pub link: String,
    /// Public key and sealed private key.
    pub bundle: KeyBundle,
    /// KDF salt.
    pub salt: Salt,
    /// KDF parameters.
    pub kdf_params: KdfParams,
    /// Hash of the auth key.
    pub verifier: Verifier,
    /// The patient's first message of the identity check, when the message asks for one: the
    /// relay then holds the enrollment until the sender's agent verifies the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_check: Option<PakeMessage>,
}

/// What a new patient must answer before enrolling from a link, and how many answers are left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckChallenge {
    /// The questions.
    pub kind: CheckKind,
    /// Answers this message still accepts (0: ask the sender for a new message).
    pub attempts_left: u32,
}

/// The answer (202) to an enrollment that waits for its identity check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckStarted {
    /// This answer's attempt.
    pub attempt_id: CheckAttemptId,
    /// Answers left after this one.
    pub attempts_left: u32,
}

/// `POST /v1/viewer/check` (the attempt's state, a long-poll with `?wait=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The link token.
    pub link: String,
    /// The attempt.
    pub attempt_id: CheckAttemptId,
}

/// `POST /v1/viewer/check/confirm`: the patient's key confirmation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CheckConfirmRequest {
    /// The link token.
    pub link: String,
    /// The attempt.
    pub attempt_id: CheckAttemptId,
    /// MAC over the exchange and the enrolled key's fingerprint.
    pub confirmation: Confirmation,
}

/// Where an identity-check attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CheckProgress {
    /// The sender's agent has not answered yet.
    AwaitingSender,
    /// The agent answered (`agent_message`, `agent_confirmation`); the patient confirms next.
    Answered,
    /// The patient confirmed; the agent decides next.
    Confirmed,
    /// The answer verified: the patient is enrolled with this attempt's key.
    Verified,
    /// The answer did not verify; nothing was enrolled.
    Failed,
}

impl CheckProgress {
    /// The stored and wire form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingSender => "awaiting_sender",
            Self::Answered => "answered",
            Self::Confirmed => "confirmed",
            Self::Verified => "verified",
            Self::Failed => "failed",
        }
    }
}

/// The answer to `POST /v1/viewer/check`. A flat object rather than a tagged enum: the viewer
/// reads it, and a derived tagged reading would bring serde's buffering code into its download.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckStatus {
    /// Where the attempt is.
    pub progress: CheckProgress,
    /// Answers this message still accepts.
    pub attempts_left: u32,
    /// The agent's message, once answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_message: Option<PakeMessage>,
    /// The agent's confirmation, once answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_confirmation: Option<Confirmation>,
}

/// `POST /v1/viewer/unlock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UnlockRequest {
    /// The link token.
    pub link: String,
    /// The auth key, base64url (32 bytes).
    pub proof: String,
}

/// A live session (answer to unlock, and `GET /v1/viewer/session`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionResponse {
    /// Session id (salts the session key).
    pub session_id: SessionId,
    /// The patient.
    pub recipient_id: RecipientId,
    /// The relay's half of the session key, base64url.
    pub relay_half: String,
    /// Hard end (Unix seconds).
    pub expires_at: i64,
    /// Idle timeout.
    pub idle_timeout_seconds: u64,
}

/// One of the patient's live messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageView {
    /// Its id.
    pub message_id: MessageId,
    /// Sender.
    pub organisation_name: String,
    /// Sent.
    pub created_at: i64,
    /// Expiry.
    pub expires_at: i64,
    /// First read receipt.
    pub read_at: Option<i64>,
    /// `true` while the sender has not yet wrapped the message to this patient's key.
    pub awaiting_key: bool,
    /// The envelope, once wrapped to the patient's key.
    pub envelope: Option<Envelope>,
}

/// `GET /v1/viewer/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageList {
    /// Newest first.
    pub messages: Vec<MessageView>,
}

/// Why the viewer could not open a delivered message: a code for the sender's audit log,
/// derived from public data only (the one secret-dependent failure stays the opaque
/// `decryption_failed`), so reporting it tells the relay nothing it could not work out itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UnreadableReason {
    /// The envelope does not follow the format (refused before any key was used).
    Malformed,
    /// The envelope's header names another message than the one it was listed as.
    WrongMessage,
    /// The envelope's header names another recipient.
    WrongRecipient,
    /// The envelope has no wrap for the patient's key.
    NotAddressedToKey,
    /// Unwrapping or decryption failed: bytes altered, or a wrap that does not open.
    DecryptionFailed,
}

impl UnreadableReason {
    /// The reason for a failed [`Envelope::open_listed`](crate::envelope::Envelope::open_listed),
    /// or `None` for an expired header, which is not a failure to report but the message's end.
    pub fn of(error: &crate::Error) -> Option<Self> {
        use crate::Error;
        Some(match error {
            Error::Expired => return None,
            Error::WrongMessage => Self::WrongMessage,
            Error::WrongRecipient => Self::WrongRecipient,
            Error::NotAddressedToKey => Self::NotAddressedToKey,
            Error::DecryptionFailed => Self::DecryptionFailed,
            _ => Self::Malformed,
        })
    }

    /// The wire form, also the audit detail's value (`reason=<this>`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::WrongMessage => "wrong_message",
            Self::WrongRecipient => "wrong_recipient",
            Self::NotAddressedToKey => "not_addressed_to_key",
            Self::DecryptionFailed => "decryption_failed",
        }
    }
}

/// `POST /v1/viewer/messages/{id}/unreadable`: the viewer showed the patient a notice in place
/// of this message, because it did not open safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UnreadableRequest {
    /// Why it did not open.
    pub reason: UnreadableReason,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flat reading of an open answer takes what the derived (flattened) writing gives, in
    /// both states, ignores unknown fields, and refuses an enrolled state without its salt.
    #[test]
    fn open_responses_read_what_they_write() {
        let new = OpenResponse {
            message_id: MessageId::from_bytes([1; 16]),
            recipient_id: RecipientId::from_bytes([2; 16]),
            organisation_id: OrganisationId::from_bytes([4; 16]),
            organisation_name: "Clinic".to_owned(),
            created_at: 1,
            expires_at: 2,
            idle_timeout_seconds: 300,
            patient: PatientState::New {
                kdf_params: KdfParams::DEFAULT,
                identity_check: None,
            },
        };
        let checked = OpenResponse {
            patient: PatientState::New {
                kdf_params: KdfParams::DEFAULT,
                identity_check: Some(CheckChallenge {
                    kind: CheckKind::DateOfBirth,
                    attempts_left: 4,
                }),
            },
            ..new.clone()
        };
        let enrolled = OpenResponse {
            patient: PatientState::Enrolled {
                kdf_params: KdfParams::DEFAULT,
                salt: Salt::from_bytes([3; 16]),
            },
            ..new.clone()
        };
        for answer in [&new, &checked, &enrolled] {
            let mut json = serde_json::to_value(answer).unwrap();
            assert_eq!(
                &serde_json::from_value::<OpenResponse>(json.clone()).unwrap(),
                answer
            );
            json["later_field"] = serde_json::json!(true);
            assert_eq!(
                &serde_json::from_value::<OpenResponse>(json).unwrap(),
                answer
            );
        }
        let mut json = serde_json::to_value(&enrolled).unwrap();
        json.as_object_mut().unwrap().remove("salt");
        assert!(serde_json::from_value::<OpenResponse>(json.clone()).is_err());
        json["state"] = serde_json::json!("unknown");
        assert!(serde_json::from_value::<OpenResponse>(json).is_err());
    }

    #[test]
    fn unreadable_reasons_are_their_wire_form_and_expiry_is_none() {
        use crate::Error;
        for (error, reason) in [
            (Error::WrongMessage, "wrong_message"),
            (Error::WrongRecipient, "wrong_recipient"),
            (Error::NotAddressedToKey, "not_addressed_to_key"),
            (Error::DecryptionFailed, "decryption_failed"),
            (Error::UnsupportedVersion(2), "malformed"),
            (Error::InvalidKey("bad"), "malformed"),
        ] {
            let code = UnreadableReason::of(&error).unwrap();
            assert_eq!(code.as_str(), reason);
            assert_eq!(serde_json::to_value(code).unwrap(), reason);
        }
        assert_eq!(UnreadableReason::of(&Error::Expired), None);
        let parsed: UnreadableRequest =
            serde_json::from_str(r#"{"reason":"decryption_failed"}"#).unwrap();
        assert_eq!(parsed.reason, UnreadableReason::DecryptionFailed);
        assert!(serde_json::from_str::<UnreadableRequest>(r#"{"reason":"odd"}"#).is_err());
    }

    #[test]
    fn status_words_are_the_wire_form() {
        for status in [
            MessageStatus::Active,
            MessageStatus::Revoked,
            MessageStatus::Expired,
        ] {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                status.as_str(),
                "{status:?}"
            );
            let submitted = SubmitStatus::from(status);
            assert_eq!(
                serde_json::to_value(submitted).unwrap(),
                submitted.as_str(),
                "{submitted:?}"
            );
        }
    }
}
