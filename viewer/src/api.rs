//! Every call the viewer makes to the relay, typed. Requests go to the page's own origin, so the
//! `HttpOnly` session cookie travels with them and no token is ever visible to this code.

use gloo_net::http::{Request, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shared::bundle::KeyBundle;
use shared::envelope::Envelope;
use shared::ids::{MessageId, RecipientId, SessionId};
use shared::kdf::{KdfParams, Salt, Verifier};

/// What can go wrong talking to the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The relay could not be reached (offline, DNS, TLS).
    Network,
    /// The relay answered with an error body.
    Relay {
        /// HTTP status.
        status: u16,
        /// Machine code (`wrong_password`, `locked_out`, `message_revoked`, …).
        code: String,
        /// Attempts left before lockout (wrong password).
        attempts_left: Option<u32>,
        /// Seconds to wait (lockout).
        retry_after: Option<u64>,
    },
    /// The relay answered something this viewer does not understand.
    Unexpected,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    attempts_left: Option<u32>,
    #[serde(default)]
    retry_after: Option<u64>,
}

async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, ApiError> {
    if response.ok() {
        return response.json::<T>().await.map_err(|_| ApiError::Unexpected);
    }
    let status = response.status();
    match response.json::<ErrorBody>().await {
        Ok(body) => Err(ApiError::Relay {
            status,
            code: body.error,
            attempts_left: body.attempts_left,
            retry_after: body.retry_after,
        }),
        Err(_) => Err(ApiError::Unexpected),
    }
}

async fn empty(response: Response) -> Result<(), ApiError> {
    if response.ok() {
        Ok(())
    } else {
        decode::<serde_json::Value>(response).await.map(|_| ())
    }
}

async fn post<B: Serialize>(path: &str, body: &B) -> Result<Response, ApiError> {
    Request::post(path)
        .json(body)
        .map_err(|_| ApiError::Unexpected)?
        .send()
        .await
        .map_err(|_| ApiError::Network)
}

async fn get(path: &str) -> Result<Response, ApiError> {
    Request::get(path)
        .send()
        .await
        .map_err(|_| ApiError::Network)
}

/// Whether the patient has a password yet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PatientState {
    /// First time: enroll with these parameters (validated before use).
    New {
        /// Parameters the relay proposes.
        kdf_params: KdfParams,
    },
    /// Enrolled: derive with these.
    Enrolled {
        /// Stored parameters.
        kdf_params: KdfParams,
        /// Stored salt.
        salt: Salt,
    },
}

/// The relay's answer to opening a link.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OpenInfo {
    /// The message behind the link.
    pub message_id: MessageId,
    /// The patient.
    pub recipient_id: RecipientId,
    /// Who sent it.
    pub organisation_name: String,
    /// Sent (Unix seconds).
    pub created_at: i64,
    /// Expiry (Unix seconds).
    pub expires_at: i64,
    /// Idle timeout the relay enforces.
    pub idle_timeout_seconds: u64,
    /// New or enrolled.
    #[serde(flatten)]
    pub patient: PatientState,
}

/// Records the open and learns the patient's state.
pub async fn open(link: &str) -> Result<OpenInfo, ApiError> {
    decode(post("/v1/viewer/open", &serde_json::json!({ "link": link })).await?).await
}

/// Enrollment: the public and sealed keys, salt, parameters and verifier.
#[derive(Debug, Serialize)]
pub struct Enrollment<'a> {
    /// The link that authorises the enrollment.
    pub link: &'a str,
    /// Public key and sealed private key.
    pub bundle: &'a KeyBundle,
    /// KDF salt.
    pub salt: Salt,
    /// KDF parameters.
    pub kdf_params: KdfParams,
    /// Hash of the auth key.
    pub verifier: Verifier,
}

/// Enrolls the patient.
pub async fn enroll(enrollment: &Enrollment<'_>) -> Result<(), ApiError> {
    empty(post("/v1/viewer/enroll", enrollment).await?).await
}

/// A live session, as the relay describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SessionInfo {
    /// Session id (salts the session key).
    pub session_id: SessionId,
    /// The patient.
    pub recipient_id: RecipientId,
    /// The relay's half of the session key (base64url).
    pub relay_half: String,
    /// Hard end (Unix seconds).
    pub expires_at: i64,
    /// Idle timeout.
    pub idle_timeout_seconds: u64,
}

/// Proves the password; the relay sets the session cookie.
pub async fn unlock(link: &str, proof: &str) -> Result<SessionInfo, ApiError> {
    decode(
        post(
            "/v1/viewer/unlock",
            &serde_json::json!({ "link": link, "proof": proof }),
        )
        .await?,
    )
    .await
}

/// The live session behind the cookie (for re-opening without the password).
pub async fn session() -> Result<SessionInfo, ApiError> {
    decode(get("/v1/viewer/session").await?).await
}

/// The patient's key bundle.
pub async fn key_bundle() -> Result<KeyBundle, ApiError> {
    decode(get("/v1/viewer/key").await?).await
}

/// One of the patient's live messages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MessageItem {
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
    /// Not yet wrapped to this patient's key.
    pub awaiting_key: bool,
    /// The envelope, once wrapped.
    pub envelope: Option<Envelope>,
}

#[derive(Deserialize)]
struct MessageList {
    messages: Vec<MessageItem>,
}

/// The patient's live messages.
pub async fn messages() -> Result<Vec<MessageItem>, ApiError> {
    decode::<MessageList>(get("/v1/viewer/messages").await?)
        .await
        .map(|list| list.messages)
}

/// Sends the read receipt for a message shown to the patient.
pub async fn read_receipt(id: MessageId) -> Result<(), ApiError> {
    empty(
        post(
            &format!("/v1/viewer/messages/{id}/read"),
            &serde_json::json!({}),
        )
        .await?,
    )
    .await
}

/// Ends the session; the relay destroys its half of the session key.
pub async fn logout() -> Result<(), ApiError> {
    empty(post("/v1/viewer/logout", &serde_json::json!({})).await?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_responses_parse() {
        let enrolled = r#"{"message_id":"2b3a1f5e-8c4d-4e6f-9a7b-1c2d3e4f5a6b","recipient_id":"3c4b2a6f-9d5e-4f70-8b8c-2d3e4f5a6b7c","organisation_name":"Clinic","created_at":1,"expires_at":2,"idle_timeout_seconds":300,"state":"enrolled","kdf_params":{"algorithm":"argon2id-v19","memory_kib":65536,"iterations":3,"parallelism":1},"salt":"AAAAAAAAAAAAAAAAAAAAAA"}"#;
        let info: OpenInfo = serde_json::from_str(enrolled).unwrap();
        assert!(matches!(info.patient, PatientState::Enrolled { .. }));
        let new = enrolled
            .replace(r#""state":"enrolled""#, r#""state":"new""#)
            .replace(r#","salt":"AAAAAAAAAAAAAAAAAAAAAA""#, "");
        let info: OpenInfo = serde_json::from_str(&new).unwrap();
        assert!(matches!(info.patient, PatientState::New { .. }));
    }
}
