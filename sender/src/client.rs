//! The relay's sender API (`/v1/...`, `Authorization: Bearer <API key>`), typed.
//!
//! # Invariants
//! - Everything the relay returns is a claim: public keys are parsed and checked (size,
//!   exponent, canonical DER) by `shared`, and fingerprints are recomputed here and compared
//!   with the ones the relay sent ([`Error::BadResponse`] if they differ).
//! - Retries are bounded ([`RetryPolicy`]) and only happen where repeating the request is safe:
//!   every request of this API is either read-only, a replacement (`PUT`), or — for message
//!   submission — carries an idempotency key, so a retry after a lost answer cannot create a
//!   second message.
//! - Redirects are not followed, so the API key is never sent to another origin.
//! - The API key travels only in the `Authorization` header; phone numbers only in request
//!   bodies (never in URLs, which proxies log).

use std::time::Duration;

use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::api::{
    CheckKind, CheckReplyRequest, CheckVerdictRequest, CheckVerdictResponse, LongPoll,
    LookupRequest, OrganisationView, PendingChecks, PendingRewraps, RegisterKeyRequest,
    RevokeResponse, SubmitRequest, UploadWrapRequest, UploadWrapResponse,
};
use shared::audit::AuditEvent;
use shared::envelope::{Envelope, Wrap};
use shared::identity_check::AgentReply;
use shared::ids::{CheckAttemptId, MessageId, OrganisationId};
use shared::keys::{Fingerprint, PublicKey};

use crate::config::{ApiKey, RelayUrl};
use crate::{Error, RelayError};

/// The relay's answers as they are on the wire (`shared::api`), returned once checked: a
/// [`RecipientView`]'s fingerprint matches its key, a [`StatusView`] or [`SubmitResponse`] is
/// for the message asked about, every [`PendingRewrap`]'s fingerprint matches its key.
pub use shared::api::{
    MessageStatus, PendingCheck, PendingRewrap, RecipientView, StatusView, SubmitResponse,
    SubmitStatus,
};

/// How often and how long to retry a request that failed transiently (network error, 5xx,
/// 429).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts, including the first (at least 1).
    pub attempts: u32,
    /// Wait before the first retry; doubles for each further retry.
    pub initial_backoff: Duration,
    /// Upper bound of one wait.
    pub max_backoff: Duration,
    /// A 429 asking to wait longer than this is not retried but returned.
    pub max_retry_after: Duration,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            max_retry_after: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// A single attempt: for callers with their own retry loop (the agent).
    pub fn no_retries() -> Self {
        Self {
            attempts: 1,
            ..Self::default()
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        self.initial_backoff
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max_backoff)
    }
}

/// The organisation as the relay knows it (`GET /v1/organisation`), once its fingerprint was
/// checked against its key (so only the key is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganisationInfo {
    /// The organisation's id.
    pub id: OrganisationId,
    /// The name the relay puts in SMS.
    pub display_name: String,
    /// The registered public key, if any.
    pub public_key: Option<PublicKey>,
}

/// A client of one relay, acting as one organisation (its API key).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: RelayUrl,
    api_key: ApiKey,
    retry: RetryPolicy,
}

/// What a long-poll leaves of the request timeout for the answer itself to arrive.
const LONG_POLL_HEADROOM: Duration = Duration::from_secs(5);

/// Page size of audit exports.
const AUDIT_PAGE: usize = 1_000;

impl Client {
    /// A client for the relay at `base`, with the default [`RetryPolicy`].
    pub fn new(base: RelayUrl, api_key: ApiKey) -> Result<Self, Error> {
        Self::with_retry_policy(base, api_key, RetryPolicy::default())
    }

    /// A client with a given retry policy.
    pub fn with_retry_policy(
        base: RelayUrl,
        api_key: ApiKey,
        retry: RetryPolicy,
    ) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(retry.request_timeout)
            .user_agent(concat!("securetext/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            api_key,
            retry: RetryPolicy {
                attempts: retry.attempts.max(1),
                ..retry
            },
        })
    }

    /// The relay's base URL.
    pub fn relay_url(&self) -> &RelayUrl {
        &self.base
    }

    /// The organisation behind the API key, with its registered key (fingerprint checked).
    pub async fn organisation(&self) -> Result<OrganisationInfo, Error> {
        let view: OrganisationView = self.json(Method::GET, "/v1/organisation", None).await?;
        OrganisationInfo::checked(view)
    }

    /// Registers (or replaces) the organisation's public key.
    pub async fn register_key(&self, public_key: &PublicKey) -> Result<OrganisationInfo, Error> {
        let body = json_body(&RegisterKeyRequest {
            public_key: public_key.clone(),
        });
        let view: OrganisationView = self.json(Method::PUT, "/v1/organisation/key", body).await?;
        let info = OrganisationInfo::checked(view)?;
        if info.public_key.as_ref() != Some(public_key) {
            return Err(Error::BadResponse(
                "the relay did not confirm the registered key".into(),
            ));
        }
        Ok(info)
    }

    /// The enrolled key of the patient with this phone number (E.164), or `None` if the
    /// relay knows no enrolled patient with it (first contact). The fingerprint is checked
    /// against the key.
    pub async fn lookup_recipient(&self, phone: &str) -> Result<Option<RecipientView>, Error> {
        let body = json_body(&LookupRequest {
            phone: phone.to_owned(),
        });
        let view: RecipientView = match self.json(Method::POST, "/v1/recipients/lookup", body).await
        {
            Ok(view) => view,
            Err(Error::Relay(RelayError { status: 404, .. })) => return Ok(None),
            Err(error) => return Err(error),
        };
        if view.public_key.fingerprint() != view.fingerprint {
            return Err(Error::BadResponse(
                "the recipient's fingerprint does not match its public key".into(),
            ));
        }
        Ok(Some(view))
    }

    /// Submits a sealed envelope for `to` (E.164). `idempotency_key` makes retries safe: the
    /// relay answers a repeated submission with the message it already stored. With
    /// `identity_check` (first contact only), the patient must answer it before enrolling.
    pub async fn submit(
        &self,
        to: &str,
        envelope: &Envelope,
        idempotency_key: &str,
        identity_check: Option<CheckKind>,
    ) -> Result<SubmitResponse, Error> {
        let body = json_body(&SubmitRequest {
            to: to.to_owned(),
            envelope: envelope.clone(),
            idempotency_key: Some(idempotency_key.to_owned()),
            identity_check,
        });
        let receipt: SubmitResponse = self.json(Method::POST, "/v1/messages", body).await?;
        check_message_id(receipt.message_id, envelope.header.message_id)?;
        if let Some(named) = envelope.header.recipient_id
            && named != receipt.recipient_id
        {
            return Err(Error::BadResponse(
                "the relay stored the message for another recipient".into(),
            ));
        }
        Ok(receipt)
    }

    /// A message's status and its audit events.
    pub async fn status(&self, id: MessageId) -> Result<StatusView, Error> {
        let status: StatusView = self
            .json(Method::GET, &format!("/v1/messages/{id}"), None)
            .await?;
        check_message_id(status.message_id, id)?;
        Ok(status)
    }

    /// Withdraws a message: the relay stops serving it and purges the ciphertext.
    pub async fn revoke(&self, id: MessageId) -> Result<(), Error> {
        let answer: RevokeResponse = self
            .json(Method::POST, &format!("/v1/messages/{id}/revoke"), None)
            .await?;
        check_message_id(answer.message_id, id)
    }

    /// Messages waiting for a recipient wrap. Each item's fingerprint is checked against its
    /// public key; an inconsistent list is refused as a whole.
    pub async fn pending_rewraps(&self) -> Result<Vec<PendingRewrap>, Error> {
        self.wait_for_rewraps(Duration::ZERO).await
    }

    /// [`Self::pending_rewraps`] as a long-poll: when nothing is pending, the relay holds the
    /// answer until a patient enrolls or `wait` passes (whole seconds, at most
    /// [`LongPoll::MAX_WAIT_SECONDS`], and kept shorter than this client's request timeout).
    pub async fn wait_for_rewraps(&self, wait: Duration) -> Result<Vec<PendingRewrap>, Error> {
        let path = format!("/v1/rewraps?{}", self.long_poll_query(wait));
        let list: PendingRewraps = self.json(Method::GET, &path, None).await?;
        for item in &list.pending {
            if item.recipient_public_key.fingerprint() != item.recipient_fingerprint {
                return Err(Error::BadResponse(format!(
                    "pending re-wrap {}: fingerprint does not match the public key",
                    item.message_id
                )));
            }
        }
        Ok(list.pending)
    }

    /// The identity-check attempts waiting for this organisation's agent, as a long-poll like
    /// [`Self::wait_for_rewraps`]. Each item's fingerprint is checked against its public key.
    pub async fn wait_for_checks(&self, wait: Duration) -> Result<Vec<PendingCheck>, Error> {
        let path = format!("/v1/enrollment-checks?{}", self.long_poll_query(wait));
        let list: PendingChecks = self.json(Method::GET, &path, None).await?;
        for item in &list.pending {
            if item.recipient_public_key.fingerprint() != item.recipient_fingerprint {
                return Err(Error::BadResponse(format!(
                    "identity check {}: fingerprint does not match the public key",
                    item.attempt_id
                )));
            }
        }
        Ok(list.pending)
    }

    /// Sends the agent's side of an identity-check exchange.
    pub async fn reply_check(&self, id: CheckAttemptId, reply: &AgentReply) -> Result<(), Error> {
        let body = json_body(&CheckReplyRequest {
            agent_message: reply.message.clone(),
            agent_confirmation: reply.confirmation.clone(),
        });
        let path = format!("/v1/enrollment-checks/{id}/reply");
        self.text(Method::PUT, &path, body).await.map(drop)
    }

    /// Gives the agent's verdict on an identity-check attempt.
    pub async fn check_verdict(
        &self,
        id: CheckAttemptId,
        verified: bool,
    ) -> Result<CheckVerdictResponse, Error> {
        let body = json_body(&CheckVerdictRequest { verified });
        let path = format!("/v1/enrollment-checks/{id}/verdict");
        self.json(Method::PUT, &path, body).await
    }

    /// Uploads a recipient wrap made by the agent; returns the fingerprint the relay installed.
    pub async fn upload_wrap(&self, id: MessageId, wrap: &Wrap) -> Result<Fingerprint, Error> {
        let body = json_body(&UploadWrapRequest { wrap: wrap.clone() });
        let answer: UploadWrapResponse = self
            .json(
                Method::PUT,
                &format!("/v1/messages/{id}/recipient-wrap"),
                body,
            )
            .await?;
        check_message_id(answer.message_id, id)?;
        if answer.recipient_fingerprint != wrap.key_fingerprint {
            return Err(Error::BadResponse(
                "the relay installed a wrap for another key".into(),
            ));
        }
        Ok(answer.recipient_fingerprint)
    }

    /// One page of the organisation's audit log: up to `limit` events after sequence number
    /// `after`, oldest first. Hashes are not checked here (see [`crate::audit`]).
    pub async fn audit_page(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, Error> {
        let text = self
            .text(
                Method::GET,
                &format!("/v1/audit?after={after}&limit={limit}"),
                None,
            )
            .await?;
        shared::audit::from_json_lines(&text).map_err(|e| Error::BadResponse(e.to_string()))
    }

    /// The whole audit log, page by page. Hashes are not checked here (see [`crate::audit`]).
    pub async fn audit_export(&self) -> Result<Vec<AuditEvent>, Error> {
        let mut events: Vec<AuditEvent> = Vec::new();
        loop {
            let after = events.last().map_or(0, |e| e.seq);
            let page = self.audit_page(after, AUDIT_PAGE).await?;
            if page.first().is_some_and(|e| e.seq <= after) {
                return Err(Error::BadResponse(
                    "an audit page went backwards; the log is not in order".into(),
                ));
            }
            let last_page = page.len() < AUDIT_PAGE;
            events.extend(page);
            if last_page {
                return Ok(events);
            }
        }
    }

    /// The query of a long-poll of `wait`: whole seconds, at most
    /// [`LongPoll::MAX_WAIT_SECONDS`], and shorter than this client's request timeout.
    fn long_poll_query(&self, wait: Duration) -> String {
        let headroom = self
            .retry
            .request_timeout
            .saturating_sub(LONG_POLL_HEADROOM);
        let seconds = u32::try_from(wait.min(headroom).as_secs()).unwrap_or(u32::MAX);
        LongPoll::query(seconds)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, Error> {
        let text = self.text(method, path, body).await?;
        serde_json::from_str(&text)
            .map_err(|e| Error::BadResponse(format!("{path}: not the documented JSON: {e}")))
    }

    /// Sends a request with bounded retries and returns the success body.
    async fn text(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<String, Error> {
        let url = self.base.join(path);
        let mut retry = 0;
        loop {
            let outcome = self
                .attempt(method.clone(), url.clone(), body.clone())
                .await;
            let last = retry + 1 >= self.retry.attempts;
            let wait = match &outcome {
                Ok(_) => return outcome,
                Err(Error::Unreachable(_)) => self.retry.backoff(retry),
                Err(Error::Relay(error)) if error.is_transient() => {
                    match error.retry_after.map(Duration::from_secs) {
                        Some(asked) if asked > self.retry.max_retry_after => return outcome,
                        Some(asked) => asked,
                        None => self.retry.backoff(retry),
                    }
                }
                Err(_) => return outcome,
            };
            if last {
                return outcome;
            }
            tokio::time::sleep(wait).await;
            retry += 1;
        }
    }

    async fn attempt(
        &self,
        method: Method,
        url: url::Url,
        body: Option<Vec<u8>>,
    ) -> Result<String, Error> {
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.api_key.expose())
            .header(ACCEPT, "application/json, application/x-ndjson");
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| unreachable(&self.base, e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let text = response
            .text()
            .await
            .map_err(|e| unreachable(&self.base, e))?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(RelayError::from_response(status.as_u16(), &text, retry_after).into())
        }
    }
}

/// Describes a transport error with its causes (reqwest's own text is terse), without the URL
/// (the base is named instead; paths carry only message ids, but there is no need to print
/// them).
fn unreachable(base: &RelayUrl, error: reqwest::Error) -> Error {
    let error = error.without_url();
    let mut text = format!("{base}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    Error::Unreachable(text)
}

/// A request body, serialized once so that every retry sends the same bytes.
fn json_body(request: &impl Serialize) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(request).expect("request bodies serialize"))
}

/// Refuses an answer about another message than the one asked about.
fn check_message_id(answered: MessageId, asked: MessageId) -> Result<(), Error> {
    if answered == asked {
        Ok(())
    } else {
        Err(Error::BadResponse(
            "the relay answered for another message id".into(),
        ))
    }
}

impl OrganisationInfo {
    /// Checks the relay's view (the fingerprint must be the key's) and keeps the key.
    fn checked(view: OrganisationView) -> Result<Self, Error> {
        if view.public_key.as_ref().map(PublicKey::fingerprint) != view.fingerprint {
            return Err(Error::BadResponse(
                "the organisation's fingerprint does not match its public key".into(),
            ));
        }
        Ok(Self {
            id: view.id,
            display_name: view.display_name,
            public_key: view.public_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(0), Duration::from_millis(250));
        assert_eq!(policy.backoff(1), Duration::from_millis(500));
        assert_eq!(policy.backoff(10), Duration::from_secs(4));
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(4));
    }
}
