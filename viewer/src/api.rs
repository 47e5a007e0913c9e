//! Every call the viewer makes to the relay, with the request and response bodies of
//! [`shared::api`], the contract the relay answers with, so the two cannot drift apart.
//! Requests go to the page's own origin, so the `HttpOnly` session cookie travels with them and
//! no token is ever visible to this code.

use gloo_net::http::{Request, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::api::{
    CheckConfirmRequest, CheckRequest, CheckStarted, CheckStatus, Confirmation, EnrollRequest,
    ErrorBody, ErrorCode, LinkRequest, LongPoll, MessageList, MessageView, OpenResponse,
    SessionResponse, UnlockRequest, UnreadableReason, UnreadableRequest, VIEWER_REQUEST_HEADER,
};
use shared::bundle::KeyBundle;
use shared::ids::{CheckAttemptId, MessageId};
use wasm_bindgen::JsValue;
use zeroize::Zeroize;

/// What can go wrong talking to the relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The relay could not be reached (offline, DNS, TLS).
    #[error("the relay could not be reached")]
    Network,
    /// The relay refused with its error body.
    #[error("the relay refused: {code}")]
    Relay {
        /// What the relay refused for; the screens branch on it.
        code: ErrorCode,
        /// Attempts left before lockout (wrong password).
        attempts_left: Option<u32>,
        /// Seconds to wait (lockout).
        retry_after: Option<u64>,
    },
    /// The relay answered something this viewer does not understand.
    #[error("the relay's answer is not understood")]
    Unexpected,
}

/// The error a refusal carries; an answer without the relay's error body (a proxy's page, say)
/// is [`ApiError::Unexpected`].
async fn refusal(response: Response) -> ApiError {
    match response.json::<ErrorBody>().await {
        Ok(body) => ApiError::Relay {
            code: body.error,
            attempts_left: body.attempts_left,
            retry_after: body.retry_after,
        },
        Err(_) => ApiError::Unexpected,
    }
}

/// The body of a successful answer.
async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, ApiError> {
    if !response.ok() {
        return Err(refusal(response).await);
    }
    response.json::<T>().await.map_err(|_| ApiError::Unexpected)
}

/// Success for calls whose answer has no body (204).
async fn empty(response: Response) -> Result<(), ApiError> {
    if response.ok() {
        Ok(())
    } else {
        Err(refusal(response).await)
    }
}

async fn post_json<B: Serialize>(path: &str, body: &B) -> Result<Response, ApiError> {
    Request::post(path)
        .json(body)
        .map_err(|_| ApiError::Unexpected)?
        .send()
        .await
        .map_err(|_| ApiError::Network)
}

/// A `POST` without a body: read receipts and logout act on the session cookie alone. The
/// viewer's request header tells the relay the request comes from this page, not from a
/// cross-site form riding on the cookie.
async fn post(path: &str) -> Result<Response, ApiError> {
    Request::post(path)
        .header(VIEWER_REQUEST_HEADER, "1")
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

/// Records the open and learns the patient's state.
pub async fn open(link: &str) -> Result<OpenResponse, ApiError> {
    let request = LinkRequest {
        link: link.to_owned(),
    };
    decode(post_json("/v1/viewer/open", &request).await?).await
}

/// Enrolls the patient: the public and sealed keys, salt, parameters and verifier. With an
/// identity check, the relay holds the enrollment (202) and names the attempt to follow.
pub async fn enroll(request: &EnrollRequest) -> Result<Option<CheckStarted>, ApiError> {
    let response = post_json("/v1/viewer/enroll", request).await?;
    if response.status() == 202 {
        decode(response).await.map(Some)
    } else {
        empty(response).await.map(|()| None)
    }
}

/// Where an identity-check attempt is; with `wait_seconds` above 0, the relay holds the answer
/// until the sender's agent has replied or decided (a long-poll).
pub async fn check_status(
    link: &str,
    attempt_id: CheckAttemptId,
    wait_seconds: u32,
) -> Result<CheckStatus, ApiError> {
    let request = CheckRequest {
        link: link.to_owned(),
        attempt_id,
    };
    let path = format!("/v1/viewer/check?{}", LongPoll::query(wait_seconds));
    decode(post_json(&path, &request).await?).await
}

/// Sends the patient's key confirmation of an identity-check attempt.
pub async fn check_confirm(
    link: &str,
    attempt_id: CheckAttemptId,
    confirmation: Confirmation,
) -> Result<(), ApiError> {
    let request = CheckConfirmRequest {
        link: link.to_owned(),
        attempt_id,
        confirmation,
    };
    empty(post_json("/v1/viewer/check/confirm", &request).await?).await
}

/// Tells the sender that the patient never set the password this link asks for.
pub async fn disown(link: &str) -> Result<(), ApiError> {
    let request = LinkRequest {
        link: link.to_owned(),
    };
    empty(post_json("/v1/viewer/disown", &request).await?).await
}

/// Proves the password; the relay sets the session cookie.
pub async fn unlock(link: &str, proof: &str) -> Result<SessionResponse, ApiError> {
    let mut request = UnlockRequest {
        link: link.to_owned(),
        proof: proof.to_owned(),
    };
    let sent = post_json("/v1/viewer/unlock", &request).await;
    // The proof is the caller's wiped-on-drop auth key; this copy must not outlive it.
    request.proof.zeroize();
    decode(sent?).await
}

/// The live session behind the cookie (for re-opening without the password).
pub async fn session() -> Result<SessionResponse, ApiError> {
    decode(get("/v1/viewer/session").await?).await
}

/// The patient's key bundle.
pub async fn key_bundle() -> Result<KeyBundle, ApiError> {
    decode(get("/v1/viewer/key").await?).await
}

/// The patient's live messages; with `wait_seconds` above 0, the relay holds its answer while a
/// message still awaits its re-wrap, until the re-wrap lands or the time passes (a long-poll).
pub async fn messages(wait_seconds: u32) -> Result<Vec<MessageView>, ApiError> {
    let path = if wait_seconds == 0 {
        "/v1/viewer/messages".to_owned()
    } else {
        format!("/v1/viewer/messages?{}", LongPoll::query(wait_seconds))
    };
    decode::<MessageList>(get(&path).await?)
        .await
        .map(|list| list.messages)
}

/// Sends the read receipt for a message shown to the patient.
pub async fn read_receipt(id: MessageId) -> Result<(), ApiError> {
    empty(post(&format!("/v1/viewer/messages/{id}/read")).await?).await
}

/// Reports that a delivered message did not open safely, for the sender's audit log. A JSON
/// `POST` on the session cookie, so it carries the viewer's request header too.
pub async fn report_unreadable(id: MessageId, reason: UnreadableReason) -> Result<(), ApiError> {
    let response = Request::post(&format!("/v1/viewer/messages/{id}/unreadable"))
        .header(VIEWER_REQUEST_HEADER, "1")
        .json(&UnreadableRequest { reason })
        .map_err(|_| ApiError::Unexpected)?
        .send()
        .await
        .map_err(|_| ApiError::Network)?;
    empty(response).await
}

/// Ends the session; the relay destroys its half of the session key.
pub async fn logout() -> Result<(), ApiError> {
    empty(post("/v1/viewer/logout").await?).await
}

/// Ends the session while the page is going away (from `pagehide`): a `keepalive` request,
/// which the browser completes after the page is gone, where an ordinary one would be
/// cancelled with it. It is started synchronously, because a future spawned from `pagehide`
/// may never run; its answer is never read. Not `navigator.sendBeacon`: a beacon cannot carry
/// the viewer's request header, which the relay requires on every cookie-authenticated POST.
pub fn logout_on_exit() {
    let Some(window) = web_sys::window() else {
        return;
    };
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    let headers = js_sys::Object::new();
    let _ = js_sys::Reflect::set(
        &headers,
        &JsValue::from_str(VIEWER_REQUEST_HEADER),
        &JsValue::from_str("1"),
    );
    init.set_headers(&headers);
    // web-sys has no setter for `keepalive` yet; it is a plain member of the init dictionary.
    let _ = js_sys::Reflect::set(&init, &JsValue::from_str("keepalive"), &JsValue::TRUE);
    let _ = window.fetch_with_str_and_init("/v1/viewer/logout", &init);
}

#[cfg(test)]
mod tests {
    use shared::api::{OpenResponse, PatientState};

    /// The relay's answer to an open, as this viewer receives it, parses in both states.
    #[test]
    fn open_responses_parse() {
        let enrolled = r#"{"message_id":"2b3a1f5e-8c4d-4e6f-9a7b-1c2d3e4f5a6b","recipient_id":"3c4b2a6f-9d5e-4f70-8b8c-2d3e4f5a6b7c","organisation_id":"4d5c3b7a-0e6f-4a81-9c9d-3e4f5a6b7c8d","organisation_name":"Clinic","created_at":1,"expires_at":2,"idle_timeout_seconds":300,"state":"enrolled","kdf_params":{"algorithm":"argon2id-v19","memory_kib":65536,"iterations":3,"parallelism":1},"salt":"AAAAAAAAAAAAAAAAAAAAAA"}"#;
        let info: OpenResponse = serde_json::from_str(enrolled).unwrap();
        assert!(matches!(info.patient, PatientState::Enrolled { .. }));
        let new = enrolled
            .replace(r#""state":"enrolled""#, r#""state":"new""#)
            .replace(r#","salt":"AAAAAAAAAAAAAAAAAAAAAA""#, "");
        let info: OpenResponse = serde_json::from_str(&new).unwrap();
        assert!(matches!(
            info.patient,
            PatientState::New {
                identity_check: None,
                ..
            }
        ));
        let checked = new.replace(
            r#""state":"new""#,
            r#""state":"new","identity_check":{"kind":"code","attempts_left":3}"#,
        );
        let info: OpenResponse = serde_json::from_str(&checked).unwrap();
        let PatientState::New {
            identity_check: Some(challenge),
            ..
        } = info.patient
        else {
            panic!("the check is read");
        };
        assert_eq!(challenge.attempts_left, 3);
        assert!(challenge.kind.asks_code() && !challenge.kind.asks_date_of_birth());
    }
}
