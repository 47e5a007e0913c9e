//! The sender API under `/v1`: organisations post sealed envelopes and follow their audit trail.
//!
//! Every route takes `Authorization: Bearer <API key>`; the key scopes the caller to one
//! organisation, and any message, wrap or log of another organisation is invisible (404) or
//! refused (403).

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::api::{
    AuditQuery, ErrorBody, ErrorCode, LongPoll, LookupRequest, OrganisationView, PendingRewrap,
    PendingRewraps, RecipientView, RegisterKeyRequest, RevokeResponse, StatusView, SubmitRequest,
    SubmitResponse, UploadWrapRequest, UploadWrapResponse,
};
use shared::audit::AuditKind;
use shared::envelope::{Direction, Envelope, WrapRole};
use shared::ids::{MessageId, OrganisationId};
use shared::keys::PublicKey;
use shared::phone::PhoneNumber;
use shared::token::{Token, TokenKind};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::changes::{Look, Topic};
use crate::error::{ApiResult, AppError};
use crate::http::{ApiJson, ApiPath, LongPollWait};
use crate::limits::seconds;
use crate::state::AppState;
use crate::store::audit::{self, Record};
use crate::store::messages::{self, MessageStatus, StoredMessage};
use crate::store::notices;
use crate::store::orgs::{self, Organisation};
use crate::store::recipients;
use crate::submissions::{self, Accepted, Submission};

/// The sender API routes, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(organisation))
        .routes(routes!(register_key))
        .routes(routes!(lookup_recipient))
        .routes(routes!(submit))
        .routes(routes!(status))
        .routes(routes!(revoke))
        .routes(routes!(upload_wrap))
        .routes(routes!(pending_rewraps))
        .routes(routes!(audit_log))
}

/// Parses a phone number field with the shared E.164 rule, naming the field on failure.
fn phone_field(field: &'static str, text: &str) -> ApiResult<PhoneNumber> {
    PhoneNumber::parse(text).map_err(|e| AppError::invalid(field, e.to_string()))
}

/// The organisation behind the request's API key.
#[derive(Debug)]
pub struct Sender {
    /// The API key's id.
    pub key_id: String,
    /// Its organisation.
    pub organisation: Organisation,
}

impl FromRequestParts<AppState> for Sender {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(AppError::Unauthorized(
                "missing Authorization: Bearer <API key>",
            ))?;
        let key = value
            .strip_prefix("Bearer ")
            .and_then(|k| Token::from_base64url(k.trim()).ok())
            .ok_or(AppError::Unauthorized("malformed API key"))?;
        let mut conn = state.store().read().await?;
        let owner = orgs::api_key_owner(&mut conn, &key.hash(TokenKind::ApiKey))
            .await?
            .ok_or(AppError::Unauthorized("unknown or revoked API key"))?;
        Ok(Self {
            key_id: owner.key_id,
            organisation: owner.organisation,
        })
    }
}

fn organisation_view(org: Organisation) -> OrganisationView {
    OrganisationView {
        id: org.id,
        display_name: org.display_name,
        fingerprint: org.public_key.as_ref().map(PublicKey::fingerprint),
        public_key: org.public_key,
    }
}

/// The organisation behind the API key.
#[utoipa::path(get, path = "/v1/organisation", tag = "sender", security(("api_key" = [])),
    responses(
        (status = 200, description = "The organisation.", body = OrganisationView),
        (status = 401, description = "Missing, malformed, unknown or revoked API key.", body = ErrorBody),
    ))]
async fn organisation(sender: Sender) -> Json<OrganisationView> {
    Json(organisation_view(sender.organisation))
}

/// Registers (or replaces) the organisation's public key, to which every message is also
/// wrapped.
#[utoipa::path(put, path = "/v1/organisation/key", tag = "sender", security(("api_key" = [])),
    request_body = RegisterKeyRequest,
    responses(
        (status = 200, description = "The organisation with its key.", body = OrganisationView),
        (status = 401, description = "Bad API key.", body = ErrorBody),
        (status = 422, description = "Not an acceptable RSA key (`invalid`).", body = ErrorBody),
    ))]
async fn register_key(
    State(state): State<AppState>,
    sender: Sender,
    ApiJson(body): ApiJson<RegisterKeyRequest>,
) -> ApiResult<Json<OrganisationView>> {
    let now = state.now();
    let mut org = sender.organisation;
    let fingerprint = body.public_key.fingerprint();
    let mut tx = state.store().begin().await?;
    orgs::set_public_key(&mut tx, org.id, &body.public_key).await?;
    let detail = format!("fingerprint={fingerprint}");
    let record = Record {
        organisation: org.id,
        kind: AuditKind::OrganisationKeyRegistered,
        message: None,
        recipient: None,
        detail: &detail,
    };
    audit::append(&mut tx, record, now).await?;
    tx.commit().await?;
    tracing::info!(organisation = %org.id, %fingerprint, "organisation key registered");
    org.public_key = Some(body.public_key);
    Ok(Json(organisation_view(org)))
}

/// The key of the calling organisation's enrolled patient with this number. The phone number
/// travels in the body, not the URL, so it never lands in access logs. Only the caller's own
/// patients are found: the lookup hash includes the organisation, so a number enrolled with
/// another organisation is one indexed query that finds nothing, the same as an unknown number.
#[utoipa::path(post, path = "/v1/recipients/lookup", tag = "sender", security(("api_key" = [])),
    request_body = LookupRequest,
    responses(
        (status = 200, description = "The patient's key.", body = RecipientView),
        (status = 401, description = "Bad API key.", body = ErrorBody),
        (status = 404, description = "No enrolled patient of this organisation with this number (whether or not another organisation has one).", body = ErrorBody),
        (status = 422, description = "Not an E.164 number (`invalid`, field `phone`).", body = ErrorBody),
    ))]
async fn lookup_recipient(
    State(state): State<AppState>,
    sender: Sender,
    ApiJson(body): ApiJson<LookupRequest>,
) -> ApiResult<Json<RecipientView>> {
    let phone = phone_field("phone", &body.phone)?;
    let mut conn = state.store().read().await?;
    let lookup = phone.lookup(state.data_key(), sender.organisation.id);
    let recipient = recipients::find_by_phone(&mut conn, &lookup)
        .await?
        .and_then(|r| r.enrollment.map(|e| (r.id, e)))
        .ok_or(AppError::NotFound("no enrolled patient with this number"))?;
    let (id, enrollment) = recipient;
    Ok(Json(RecipientView {
        recipient_id: id,
        fingerprint: enrollment.public_key.fingerprint(),
        public_key: enrollment.public_key,
        enrolled_at: enrollment.enrolled_at,
    }))
}

/// Checks a submitted envelope against the caller and the clock; nothing is written yet.
fn check_envelope(
    envelope: &Envelope,
    org: &Organisation,
    now: i64,
    max_lifetime: i64,
) -> ApiResult<()> {
    envelope
        .validate()
        .map_err(|e| AppError::invalid("envelope", e.to_string()))?;
    let header = &envelope.header;
    if header.organisation_id != org.id {
        return Err(AppError::Forbidden(
            "the envelope names another organisation than this API key's",
        ));
    }
    if header.direction != Direction::ToRecipient {
        return Err(AppError::invalid(
            "envelope",
            "only organisation-to-patient messages can be submitted here",
        ));
    }
    let org_key = org.public_key.as_ref().ok_or(AppError::Refused {
        code: ErrorCode::OrganisationKeyMissing,
        message: "register the organisation's public key first (PUT /v1/organisation/key)",
    })?;
    let org_wrap = envelope
        .wrap_for(WrapRole::Organisation)
        .expect("validated envelopes have an organisation wrap");
    if org_wrap.key_fingerprint != org_key.fingerprint() {
        return Err(AppError::invalid(
            "envelope",
            "the organisation wrap is not for the organisation's registered key",
        ));
    }
    if header.is_expired(now) {
        return Err(AppError::invalid(
            "envelope",
            "the message has already expired",
        ));
    }
    if header.expires_at - now > max_lifetime {
        return Err(AppError::invalid(
            "envelope",
            format!("expiry is more than {max_lifetime} seconds away"),
        ));
    }
    if header.created_at > now + 300 {
        return Err(AppError::invalid("envelope", "created_at is in the future"));
    }
    Ok(())
}

/// Accepts a sealed message for a phone number and queues its SMS, in one transaction.
#[utoipa::path(post, path = "/v1/messages", tag = "sender", security(("api_key" = [])),
    request_body = SubmitRequest,
    responses(
        (status = 201, description = "Accepted and queued.", body = SubmitResponse),
        (status = 200, description = "An idempotent retry: the original answer.", body = SubmitResponse),
        (status = 401, description = "Bad API key.", body = ErrorBody),
        (status = 403, description = "The envelope names another organisation.", body = ErrorBody),
        (status = 409, description = "`organisation_key_missing`, `duplicate_message`, `idempotency_key_reused` or `recipient_key_changed`.", body = ErrorBody),
        (status = 413, description = "Body too large.", body = ErrorBody),
        (status = 422, description = "A field is not acceptable (`invalid`, see `field`).", body = ErrorBody),
        (status = 429, description = "`rate_limited`, with `retry_after`.", body = ErrorBody),
    ))]
async fn submit(
    State(state): State<AppState>,
    sender: Sender,
    ApiJson(body): ApiJson<SubmitRequest>,
) -> ApiResult<Response> {
    let now = state.now();
    let phone = phone_field("to", &body.to)?;
    if let Some(key) = &body.idempotency_key
        && (key.is_empty() || key.len() > 200 || !key.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(AppError::invalid(
            "idempotency_key",
            "1 to 200 printable ASCII characters",
        ));
    }
    // A retry of an accepted submission gets the original answer, even if the envelope would
    // no longer pass today's checks (it expired meanwhile, the organisation key rotated).
    if let Some(key) = &body.idempotency_key {
        let mut conn = state.store().read().await?;
        if let Some(existing) =
            messages::by_idempotency_key(&mut conn, sender.organisation.id, key).await?
        {
            let original = submissions::replay(&existing, body.envelope.header.message_id, now)?;
            return Ok((StatusCode::OK, Json(original)).into_response());
        }
    }
    let max_lifetime = seconds(state.settings().limits.message_max_lifetime);
    check_envelope(&body.envelope, &sender.organisation, now, max_lifetime)?;
    let first_contact = body.envelope.header.recipient_id.is_none();
    if body.identity_check.is_some() && !first_contact {
        // The check guards the first key a patient enrolls; an envelope sealed to a key the
        // sender already trusts has nothing left to check.
        return Err(AppError::invalid(
            "identity_check",
            "an identity check applies to a first-contact message only (no recipient in the header)",
        ));
    }
    let submission = Submission {
        organisation: sender.organisation,
        api_key_id: sender.key_id,
        phone,
        envelope: body.envelope,
        idempotency_key: body.idempotency_key,
        identity_check: body.identity_check,
        now,
    };
    let organisation = submission.organisation.id;
    match state.submissions().submit(submission).await? {
        Accepted::Replay(original) => Ok((StatusCode::OK, Json(original)).into_response()),
        Accepted::New(accepted) => {
            state.wake_outbox();
            crate::metrics::Metrics::inc(&state.metrics().messages_accepted);
            tracing::info!(
                organisation = %organisation,
                message = %accepted.message_id,
                first_contact,
                "message accepted"
            );
            Ok((StatusCode::CREATED, Json(accepted)).into_response())
        }
    }
}

/// The organisation's message with this id, or 404 (also for other organisations' messages).
async fn owned_message(
    state: &AppState,
    sender: &Sender,
    id: MessageId,
) -> ApiResult<StoredMessage> {
    let mut conn = state.store().read().await?;
    messages::get(&mut conn, id)
        .await?
        .filter(|m| m.organisation_id == sender.organisation.id)
        .ok_or(AppError::NotFound("no such message"))
}

const MESSAGE_ID: &str = "The message (hyphenated UUID).";

/// A message's state and its audit trail.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "sender", security(("api_key" = [])),
    params(("id" = MessageId, Path, description = MESSAGE_ID)),
    responses(
        (status = 200, description = "The message's state.", body = StatusView),
        (status = 401, description = "Bad API key.", body = ErrorBody),
        (status = 404, description = "No such message for this organisation.", body = ErrorBody),
        (status = 422, description = "Not a message id.", body = ErrorBody),
    ))]
async fn status(
    State(state): State<AppState>,
    sender: Sender,
    ApiPath(id): ApiPath<MessageId>,
) -> ApiResult<Json<StatusView>> {
    let message = owned_message(&state, &sender, id).await?;
    let mut conn = state.store().read().await?;
    let events = audit::for_message(&mut conn, sender.organisation.id, id).await?;
    Ok(Json(StatusView {
        message_id: message.id,
        recipient_id: message.recipient_id,
        status: message.status_at(state.now()),
        created_at: message.created_at,
        expires_at: message.expires_at,
        opened_at: message.opened_at,
        read_at: message.read_at,
        events,
    }))
}

/// Withdraws a message: its ciphertext is purged and a queued SMS is not sent.
#[utoipa::path(post, path = "/v1/messages/{id}/revoke", tag = "sender", security(("api_key" = [])),
    params(("id" = MessageId, Path, description = MESSAGE_ID)),
    responses(
        (status = 200, description = "Revoked.", body = RevokeResponse),
        (status = 401, description = "Bad API key.", body = ErrorBody),
        (status = 404, description = "No such message for this organisation.", body = ErrorBody),
        (status = 409, description = "`not_active`: already revoked or expired.", body = ErrorBody),
        (status = 422, description = "Not a message id.", body = ErrorBody),
    ))]
async fn revoke(
    State(state): State<AppState>,
    sender: Sender,
    ApiPath(id): ApiPath<MessageId>,
) -> ApiResult<Json<RevokeResponse>> {
    let message = owned_message(&state, &sender, id).await?;
    let now = state.now();
    let mut tx = state.store().begin().await?;
    if !messages::revoke(&mut tx, id, now).await? {
        return Err(AppError::Refused {
            code: ErrorCode::NotActive,
            message: "the message is already revoked or expired",
        });
    }
    let record = Record::message(
        message.organisation_id,
        AuditKind::Revoked,
        id,
        message.recipient_id,
    );
    audit::append(&mut tx, record, now).await?;
    tx.commit().await?;
    Ok(Json(RevokeResponse {
        message_id: id,
        status: MessageStatus::Revoked,
    }))
}

/// The organisation's live messages whose patient enrolled under a key they are not yet wrapped
/// to (first contact, re-enrollment), for its agent to re-wrap. With `wait`, a long-poll: when
/// nothing is pending, the answer waits for the next enrollment (see [`crate::changes`]).
#[utoipa::path(get, path = "/v1/rewraps", tag = "sender", security(("api_key" = [])),
    params(LongPoll),
    responses(
        (status = 200, description = "Messages waiting for a re-wrap, oldest first (empty when `wait` passed without one).", body = PendingRewraps),
        (status = 401, description = "Bad API key.", body = ErrorBody),
        (status = 422, description = "A bad query (`invalid`).", body = ErrorBody),
    ))]
async fn pending_rewraps(
    State(state): State<AppState>,
    sender: Sender,
    LongPollWait(wait): LongPollWait,
) -> ApiResult<Json<PendingRewraps>> {
    let organisation = sender.organisation.id;
    let pending = state
        .changes()
        .wait(Topic::Rewraps(organisation), wait, || async {
            let pending = list_rewraps(&state, organisation).await?;
            Ok::<_, AppError>(if pending.is_empty() {
                Look::Nothing(pending)
            } else {
                Look::Ready(pending)
            })
        })
        .await?;
    Ok(Json(PendingRewraps { pending }))
}

async fn list_rewraps(
    state: &AppState,
    organisation: OrganisationId,
) -> ApiResult<Vec<PendingRewrap>> {
    let mut conn = state.store().read().await?;
    let pending = messages::pending_rewraps(&mut conn, organisation, state.now()).await?;
    Ok(pending
        .into_iter()
        .filter_map(|p| {
            Some(PendingRewrap {
                message_id: p.message.id,
                recipient_id: p.message.recipient_id,
                recipient_fingerprint: p.recipient_key.fingerprint(),
                recipient_public_key: p.recipient_key,
                envelope: p.message.envelope?,
            })
        })
        .collect())
}

/// Stores the content key re-wrapped to the patient's current key.
#[utoipa::path(put, path = "/v1/messages/{id}/recipient-wrap", tag = "sender", security(("api_key" = [])),
    params(("id" = MessageId, Path, description = MESSAGE_ID)),
    request_body = UploadWrapRequest,
    responses(
        (status = 200, description = "Stored.", body = UploadWrapResponse),
        (status = 401, description = "Bad API key.", body = ErrorBody),
        (status = 404, description = "No such message for this organisation.", body = ErrorBody),
        (status = 409, description = "`recipient_not_enrolled` or `recipient_key_changed`.", body = ErrorBody),
        (status = 410, description = "`message_ended`.", body = ErrorBody),
        (status = 422, description = "A wrap that does not fit (`invalid`).", body = ErrorBody),
    ))]
async fn upload_wrap(
    State(state): State<AppState>,
    sender: Sender,
    ApiPath(id): ApiPath<MessageId>,
    ApiJson(body): ApiJson<UploadWrapRequest>,
) -> ApiResult<Json<UploadWrapResponse>> {
    let message = owned_message(&state, &sender, id).await?;
    let now = state.now();
    if message.status_at(now) != MessageStatus::Active {
        return Err(AppError::message_ended());
    }
    if body.wrap.role != WrapRole::Recipient {
        return Err(AppError::invalid("wrap", "role must be \"recipient\""));
    }
    let mut tx = state.store().begin().await?;
    let recipient = recipients::get(&mut tx, message.recipient_id)
        .await?
        .ok_or_else(|| AppError::Internal("message without recipient".into()))?;
    let current = recipient
        .enrollment
        .map(|e| e.public_key.fingerprint())
        .ok_or(AppError::Refused {
            code: ErrorCode::RecipientNotEnrolled,
            message: "the patient has not enrolled (or was reset); wait for enrollment",
        })?;
    if body.wrap.key_fingerprint != current {
        return Err(AppError::Refused {
            code: ErrorCode::RecipientKeyChanged,
            message: "the wrap is not for the patient's current key",
        });
    }
    let mut envelope: Envelope = message.envelope.ok_or_else(AppError::message_ended)?;
    envelope
        .set_recipient_wrap(body.wrap)
        .map_err(|e| AppError::invalid("wrap", e.to_string()))?;
    messages::set_envelope(&mut tx, id, &envelope, current).await?;
    let detail = format!("fingerprint={current}");
    let record = Record::message(
        message.organisation_id,
        AuditKind::Rewrapped,
        id,
        message.recipient_id,
    )
    .with_detail(&detail);
    audit::append(&mut tx, record, now).await?;
    let rewrapped = Topic::Wraps(message.recipient_id);
    notices::announce(&mut tx, &rewrapped).await?;
    tx.commit().await?;
    state.changes().wake(&rewrapped);
    Ok(Json(UploadWrapResponse {
        message_id: id,
        recipient_fingerprint: current,
    }))
}

/// The organisation's audit log as JSON lines, oldest first, from `after` (a sequence number).
#[utoipa::path(get, path = "/v1/audit", tag = "sender", security(("api_key" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "One `AuditEvent` JSON object per line.", content_type = "application/x-ndjson", body = Vec<shared::audit::AuditEvent>),
        (status = 401, description = "Bad API key.", body = ErrorBody),
        (status = 422, description = "A bad query parameter (`invalid`, field `query`).", body = ErrorBody),
    ))]
async fn audit_log(
    State(state): State<AppState>,
    sender: Sender,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| AppError::invalid("query", e.body_text()))?;
    let limit = query.limit.clamp(1, AuditQuery::MAX_LIMIT);
    let mut conn = state.store().read().await?;
    let events = audit::page(&mut conn, sender.organisation.id, query.after, limit).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        shared::audit::to_json_lines(&events),
    )
        .into_response())
}
