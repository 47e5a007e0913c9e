//! The sender API under `/v1`: organisations post sealed envelopes and follow their audit trail.
//!
//! Every route takes `Authorization: Bearer <API key>`; the key scopes the caller to one
//! organisation, and any message, wrap or log of another organisation is invisible (404) or
//! refused (403).

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use shared::audit::{AuditEvent, AuditKind};
use shared::envelope::{Direction, Envelope, Wrap, WrapRole};
use shared::ids::{MessageId, RecipientId};
use shared::keys::{Fingerprint, PublicKey};
use shared::token::{Token, TokenKind};

use crate::error::{ApiResult, AppError};
use crate::http::{ApiJson, ApiPath};
use crate::phone::Phone;
use crate::state::AppState;
use crate::store::audit::{self, Record};
use crate::store::messages::{self, MessageStatus, NewMessage, StoredMessage};
use crate::store::orgs::{self, Organisation};
use crate::store::{outbox, recipients, throttle};

/// The sender API routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/organisation", get(organisation))
        .route("/v1/organisation/key", put(register_key))
        .route("/v1/recipients/lookup", post(lookup_recipient))
        .route("/v1/messages", post(submit))
        .route("/v1/messages/{id}", get(status))
        .route("/v1/messages/{id}/revoke", post(revoke))
        .route("/v1/messages/{id}/recipient-wrap", put(upload_wrap))
        .route("/v1/rewraps", get(pending_rewraps))
        .route("/v1/audit", get(audit_log))
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
        let mut conn = state.store().pool().acquire().await?;
        let owner = orgs::api_key_owner(&mut conn, &key.hash(TokenKind::ApiKey))
            .await?
            .ok_or(AppError::Unauthorized("unknown or revoked API key"))?;
        Ok(Self {
            key_id: owner.key_id,
            organisation: owner.organisation,
        })
    }
}

#[derive(Debug, Serialize)]
struct OrganisationView {
    id: String,
    display_name: String,
    public_key: Option<PublicKey>,
    fingerprint: Option<Fingerprint>,
}

async fn organisation(sender: Sender) -> Json<OrganisationView> {
    let org = sender.organisation;
    Json(OrganisationView {
        id: org.id.to_string(),
        display_name: org.display_name,
        fingerprint: org.public_key.as_ref().map(PublicKey::fingerprint),
        public_key: org.public_key,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterKey {
    public_key: PublicKey,
}

async fn register_key(
    State(state): State<AppState>,
    sender: Sender,
    ApiJson(body): ApiJson<RegisterKey>,
) -> ApiResult<Json<OrganisationView>> {
    let now = state.now();
    let org = &sender.organisation;
    let fingerprint = body.public_key.fingerprint();
    let mut tx = state.store().pool().begin().await?;
    orgs::set_public_key(&mut tx, org.id, &body.public_key).await?;
    let detail = format!("fingerprint={fingerprint}");
    let record = Record {
        organisation: org.id,
        kind: AuditKind::OrganisationKeyRegistered,
        message: None,
        recipient: None,
        detail: &detail,
    };
    audit::append(&mut tx, state.store().backend(), record, now).await?;
    tx.commit().await?;
    tracing::info!(organisation = %org.id, %fingerprint, "organisation key registered");
    Ok(Json(OrganisationView {
        id: org.id.to_string(),
        display_name: org.display_name.clone(),
        public_key: Some(body.public_key),
        fingerprint: Some(fingerprint),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupRequest {
    phone: String,
}

#[derive(Debug, Serialize)]
struct RecipientView {
    recipient_id: RecipientId,
    public_key: PublicKey,
    fingerprint: Fingerprint,
    enrolled_at: i64,
}

/// The phone number travels in the body, not the URL, so it never lands in access logs.
async fn lookup_recipient(
    State(state): State<AppState>,
    _sender: Sender,
    ApiJson(body): ApiJson<LookupRequest>,
) -> ApiResult<Json<RecipientView>> {
    let phone = Phone::parse(&body.phone).map_err(|_| {
        AppError::invalid(
            "phone",
            "phone number must be in E.164 form, e.g. +15551234567",
        )
    })?;
    let mut conn = state.store().pool().acquire().await?;
    let recipient = recipients::find_by_phone(&mut conn, &phone.lookup(state.data_key()))
        .await?
        .and_then(|r| r.enrollment.map(|e| (r.id, e)))
        .ok_or(AppError::NotFound("no enrolled patient with this number"))?;
    let (id, enrollment) = recipient;
    Ok(Json(RecipientView {
        recipient_id: id,
        fingerprint: enrollment.bundle.public_key.fingerprint(),
        public_key: enrollment.bundle.public_key,
        enrolled_at: enrollment.enrolled_at,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitRequest {
    to: String,
    envelope: Envelope,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Serialize)]
struct SubmitResponse {
    message_id: MessageId,
    recipient_id: RecipientId,
    status: &'static str,
    expires_at: i64,
}

impl SubmitResponse {
    fn of(message: &StoredMessage, now: i64) -> Self {
        Self {
            message_id: message.id,
            recipient_id: message.recipient_id,
            status: match message.status_at(now) {
                MessageStatus::Active => "queued",
                MessageStatus::Revoked => "revoked",
                MessageStatus::Expired => "expired",
            },
            expires_at: message.expires_at,
        }
    }
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
    let org_key = org.public_key.as_ref().ok_or(AppError::Conflict {
        code: "organisation_key_missing",
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
    if header.expires_at <= now {
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

/// Refuses the request once the API key has used its sends for this minute.
async fn check_send_rate(
    tx: &mut crate::store::Tx<'_>,
    state: &AppState,
    sender: &Sender,
    now: i64,
) -> ApiResult<()> {
    let limit = state.settings().limits.send_rate_per_minute;
    let key = format!("send:{}:{}", sender.key_id, now / 60);
    if throttle::increment(tx, &key, now).await? > limit {
        return Err(AppError::TooMany {
            code: "rate_limited",
            message: "too many messages from this API key; retry after the indicated time",
            retry_after: u64::try_from(60 - now.rem_euclid(60)).unwrap_or(60),
        });
    }
    Ok(())
}

/// The SMS text: who it is from and the link. No PHI, no key; one GSM segment.
pub fn sms_body(organisation_name: &str, link: &str) -> String {
    let name: String = organisation_name.chars().take(40).collect();
    format!("{name}: you have a secure message. Open {link}")
}

async fn submit(
    State(state): State<AppState>,
    sender: Sender,
    ApiJson(body): ApiJson<SubmitRequest>,
) -> ApiResult<Response> {
    let now = state.now();
    let org = &sender.organisation;
    let phone = Phone::parse(&body.to)?;
    if let Some(key) = &body.idempotency_key
        && (key.is_empty() || key.len() > 200 || !key.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(AppError::invalid(
            "idempotency_key",
            "1 to 200 printable ASCII characters",
        ));
    }
    let max_lifetime =
        i64::try_from(state.settings().limits.message_max_lifetime_seconds).unwrap_or(i64::MAX);
    let header = body.envelope.header;
    let mut tx = state.store().pool().begin().await?;
    // A retry of an accepted submission gets the original answer, even if the envelope would
    // no longer pass today's checks (it expired meanwhile, the organisation key rotated).
    if let Some(key) = &body.idempotency_key
        && let Some(existing) = messages::by_idempotency_key(&mut tx, org.id, key).await?
    {
        if existing.id != header.message_id {
            return Err(AppError::Conflict {
                code: "idempotency_key_reused",
                message: "this idempotency key was used for another message",
            });
        }
        return Ok((StatusCode::OK, Json(SubmitResponse::of(&existing, now))).into_response());
    }
    check_envelope(&body.envelope, org, now, max_lifetime)?;
    check_send_rate(&mut tx, &state, &sender, now).await?;
    if messages::exists(&mut tx, header.message_id).await? {
        return Err(AppError::Conflict {
            code: "duplicate_message",
            message: "a message with this id already exists",
        });
    }
    let recipient = recipients::get_or_create(
        &mut tx,
        RecipientId::random(&mut OsRng),
        &phone.lookup(state.data_key()),
        phone.seal(state.data_key()),
        now,
    )
    .await?;
    if let Some(named) = header.recipient_id {
        if named != recipient.id {
            return Err(AppError::invalid(
                "envelope",
                "the header's recipient_id is not the patient with this phone number",
            ));
        }
        let current = recipient
            .enrollment
            .as_ref()
            .map(|e| e.bundle.public_key.fingerprint());
        let wrapped_to = body
            .envelope
            .wrap_for(WrapRole::Recipient)
            .map(|w| w.key_fingerprint);
        if current.is_none() || current != wrapped_to {
            return Err(AppError::Conflict {
                code: "recipient_key_changed",
                message: "the patient's key is not the one this envelope is wrapped to; \
                          look the patient up again",
            });
        }
    }

    let link = Token::random(&mut OsRng);
    let link_url = format!(
        "{}/m/{}",
        state.settings().public_url,
        link.to_base64url().as_str()
    );
    messages::insert(
        &mut tx,
        &NewMessage {
            envelope: &body.envelope,
            recipient_id: recipient.id,
            idempotency_key: body.idempotency_key.as_deref(),
            link: link.hash(TokenKind::Link),
            now,
        },
    )
    .await?;
    let body_text = zeroize::Zeroizing::new(sms_body(&org.display_name, &link_url));
    let outbox_id = MessageId::random(&mut OsRng).to_string();
    outbox::enqueue(
        &mut tx,
        &outbox_id,
        header.message_id,
        org.id,
        phone.seal(state.data_key()),
        state
            .data_key()
            .seal(crate::jobs::SMS_BODY, body_text.as_bytes(), &mut OsRng),
        now,
    )
    .await?;
    let backend = state.store().backend();
    for kind in [AuditKind::MessageCreated, AuditKind::SmsQueued] {
        let record = Record::message(org.id, kind, header.message_id, recipient.id);
        audit::append(&mut tx, backend, record, now).await?;
    }
    tx.commit().await?;
    state.wake_outbox();
    crate::metrics::Metrics::inc(&state.metrics().messages_accepted);
    tracing::info!(
        organisation = %org.id,
        message = %header.message_id,
        first_contact = header.recipient_id.is_none(),
        "message accepted"
    );
    let accepted = SubmitResponse {
        message_id: header.message_id,
        recipient_id: recipient.id,
        status: "queued",
        expires_at: header.expires_at,
    };
    Ok((StatusCode::CREATED, Json(accepted)).into_response())
}

/// The organisation's message with this id, or 404 (also for other organisations' messages).
async fn owned_message(
    state: &AppState,
    sender: &Sender,
    id: MessageId,
) -> ApiResult<StoredMessage> {
    let mut conn = state.store().pool().acquire().await?;
    messages::get(&mut conn, id)
        .await?
        .filter(|m| m.organisation_id == sender.organisation.id)
        .ok_or(AppError::NotFound("no such message"))
}

#[derive(Debug, Serialize)]
struct StatusView {
    message_id: MessageId,
    recipient_id: RecipientId,
    status: MessageStatus,
    created_at: i64,
    expires_at: i64,
    opened_at: Option<i64>,
    read_at: Option<i64>,
    events: Vec<AuditEvent>,
}

async fn status(
    State(state): State<AppState>,
    sender: Sender,
    ApiPath(id): ApiPath<MessageId>,
) -> ApiResult<Json<StatusView>> {
    let message = owned_message(&state, &sender, id).await?;
    let mut conn = state.store().pool().acquire().await?;
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

async fn revoke(
    State(state): State<AppState>,
    sender: Sender,
    ApiPath(id): ApiPath<MessageId>,
) -> ApiResult<Json<serde_json::Value>> {
    let message = owned_message(&state, &sender, id).await?;
    let now = state.now();
    let mut tx = state.store().pool().begin().await?;
    if !messages::revoke(&mut tx, id, now).await? {
        return Err(AppError::Conflict {
            code: "not_active",
            message: "the message is already revoked or expired",
        });
    }
    let record = Record::message(
        message.organisation_id,
        AuditKind::Revoked,
        id,
        message.recipient_id,
    );
    audit::append(&mut tx, state.store().backend(), record, now).await?;
    tx.commit().await?;
    Ok(Json(
        serde_json::json!({ "message_id": id, "status": "revoked" }),
    ))
}

#[derive(Debug, Serialize)]
struct PendingView {
    message_id: MessageId,
    recipient_id: RecipientId,
    recipient_public_key: PublicKey,
    recipient_fingerprint: Fingerprint,
    envelope: Envelope,
}

async fn pending_rewraps(
    State(state): State<AppState>,
    sender: Sender,
) -> ApiResult<Json<serde_json::Value>> {
    let mut conn = state.store().pool().acquire().await?;
    let pending = messages::pending_rewraps(&mut conn, sender.organisation.id, state.now()).await?;
    let views: Vec<PendingView> = pending
        .into_iter()
        .filter_map(|p| {
            Some(PendingView {
                message_id: p.message.id,
                recipient_id: p.message.recipient_id,
                recipient_fingerprint: p.recipient_key.fingerprint(),
                recipient_public_key: p.recipient_key,
                envelope: p.message.envelope?,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "pending": views })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadWrap {
    wrap: Wrap,
}

async fn upload_wrap(
    State(state): State<AppState>,
    sender: Sender,
    ApiPath(id): ApiPath<MessageId>,
    ApiJson(body): ApiJson<UploadWrap>,
) -> ApiResult<Json<serde_json::Value>> {
    let message = owned_message(&state, &sender, id).await?;
    let now = state.now();
    if message.status_at(now) != MessageStatus::Active {
        return Err(AppError::Gone {
            code: "message_ended",
            message: "the message is revoked or expired",
        });
    }
    if body.wrap.role != WrapRole::Recipient {
        return Err(AppError::invalid("wrap", "role must be \"recipient\""));
    }
    let mut tx = state.store().pool().begin().await?;
    let recipient = recipients::get(&mut tx, message.recipient_id)
        .await?
        .ok_or_else(|| AppError::Internal("message without recipient".into()))?;
    let current = recipient
        .enrollment
        .map(|e| e.bundle.public_key.fingerprint())
        .ok_or(AppError::Conflict {
            code: "recipient_not_enrolled",
            message: "the patient has not enrolled (or was reset); wait for enrollment",
        })?;
    if body.wrap.key_fingerprint != current {
        return Err(AppError::Conflict {
            code: "recipient_key_changed",
            message: "the wrap is not for the patient's current key",
        });
    }
    let mut envelope = message.envelope.ok_or(AppError::Gone {
        code: "message_ended",
        message: "the message is revoked or expired",
    })?;
    envelope
        .set_recipient_wrap(body.wrap)
        .map_err(|e| AppError::invalid("wrap", e.to_string()))?;
    messages::set_envelope(&mut tx, &envelope, current).await?;
    let detail = format!("fingerprint={current}");
    let record = Record::message(
        message.organisation_id,
        AuditKind::Rewrapped,
        id,
        message.recipient_id,
    )
    .with_detail(&detail);
    audit::append(&mut tx, state.store().backend(), record, now).await?;
    tx.commit().await?;
    Ok(Json(
        serde_json::json!({ "message_id": id, "recipient_fingerprint": current }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_audit_limit")]
    limit: u32,
}

fn default_audit_limit() -> u32 {
    1000
}

/// The organisation's audit log as JSON lines, oldest first, from `after` (a sequence number).
async fn audit_log(
    State(state): State<AppState>,
    sender: Sender,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| AppError::invalid("query", e.body_text()))?;
    let limit = query.limit.clamp(1, 10_000);
    let mut conn = state.store().pool().acquire().await?;
    let events = audit::page(&mut conn, sender.organisation.id, query.after, limit).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        shared::audit::to_json_lines(&events),
    )
        .into_response())
}
