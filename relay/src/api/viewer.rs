//! The viewer API: what the patient's browser calls after opening an SMS link.
//!
//! `GET /m/{link}` only serves the viewer's page and changes nothing, because link-preview bots
//! and mail scanners fetch links. The page's JavaScript then POSTs the link to record the open,
//! enroll or unlock. A successful unlock returns a session cookie (`HttpOnly`,
//! `SameSite=Strict`, `Secure` under TLS) and the relay's half of the session key; the sealed
//! private key and the envelopes are only released to a live session.

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use shared::audit::AuditKind;
use shared::bundle::KeyBundle;
use shared::envelope::Envelope;
use shared::ids::{MessageId, OrganisationId, RecipientId, SessionId};
use shared::kdf::{AuthKey, KdfParams, Salt, Verifier};
use shared::session::RelayHalf;
use shared::token::{Token, TokenKind};

use crate::error::{ApiResult, AppError};
use crate::http::{ApiJson, ApiPath, no_content};
use crate::state::AppState;
use crate::store::audit::{self, Record};
use crate::store::messages::{self, MessageStatus, StoredMessage};
use crate::store::recipients::{self, Enrollment, Recipient};
use crate::store::sessions::{self, NewSession};
use crate::store::{Tx, orgs, throttle};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "securetext_session";
/// How long failed unlocks from one client address are remembered without new failures.
const ADDRESS_WINDOW_SECONDS: i64 = 3600;
/// Purpose label of relay halves sealed with the data key.
const RELAY_HALF: &str = "relay-half";

/// The viewer API routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/m/{link}", get(viewer_page))
        .route("/v1/viewer/open", post(open))
        .route("/v1/viewer/enroll", post(enroll))
        .route("/v1/viewer/unlock", post(unlock))
        .route("/v1/viewer/session", get(session_info))
        .route("/v1/viewer/key", get(sealed_key))
        .route("/v1/viewer/messages", get(live_messages))
        .route("/v1/viewer/messages/{id}/read", post(read_receipt))
        .route("/v1/viewer/logout", post(logout))
}

/// Serves the viewer's `index.html` for any link, valid or not, and records nothing.
async fn viewer_page(State(state): State<AppState>) -> ApiResult<Response> {
    let index = state.settings().viewer_dir.join("index.html");
    let html = tokio::fs::read(&index)
        .await
        .map_err(|_| AppError::Unavailable("the viewer is not installed on this relay"))?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkRequest {
    link: String,
}

/// The message a link leads to; refuses unknown, revoked and expired links.
async fn resolve_link(tx: &mut Tx<'_>, link: &str, now: i64) -> ApiResult<StoredMessage> {
    let token = Token::from_base64url(link).map_err(|_| AppError::NotFound("unknown link"))?;
    let message = messages::by_link(tx, &token.hash(TokenKind::Link))
        .await?
        .ok_or(AppError::NotFound("unknown link"))?;
    match message.status_at(now) {
        MessageStatus::Active => Ok(message),
        MessageStatus::Revoked => Err(AppError::Gone {
            code: "message_revoked",
            message: "the sender withdrew this message",
        }),
        MessageStatus::Expired => Err(AppError::Gone {
            code: "message_expired",
            message: "this message has expired",
        }),
    }
}

async fn recipient_of(tx: &mut Tx<'_>, message: &StoredMessage) -> ApiResult<Recipient> {
    recipients::get(tx, message.recipient_id)
        .await?
        .ok_or_else(|| AppError::Internal("message without recipient".into()))
}

async fn organisation_name(tx: &mut Tx<'_>, id: OrganisationId) -> ApiResult<String> {
    Ok(orgs::get(tx, id)
        .await?
        .map(|o| o.display_name)
        .unwrap_or_default())
}

#[derive(Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum PatientState {
    /// Not enrolled: choose a password with these parameters and a fresh salt.
    New { kdf_params: KdfParams },
    /// Enrolled: derive with the stored salt and parameters, then unlock.
    Enrolled { kdf_params: KdfParams, salt: Salt },
}

#[derive(Debug, Serialize)]
struct OpenResponse {
    message_id: MessageId,
    recipient_id: RecipientId,
    organisation_name: String,
    created_at: i64,
    expires_at: i64,
    idle_timeout_seconds: u64,
    #[serde(flatten)]
    patient: PatientState,
}

async fn open(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LinkRequest>,
) -> ApiResult<Json<OpenResponse>> {
    let now = state.now();
    let mut tx = state.store().pool().begin().await?;
    let message = resolve_link(&mut tx, &body.link, now).await?;
    let recipient = recipient_of(&mut tx, &message).await?;
    if messages::mark_opened(&mut tx, message.id, now).await? {
        let record = Record::message(
            message.organisation_id,
            AuditKind::LinkOpened,
            message.id,
            message.recipient_id,
        );
        audit::append(&mut tx, state.store().backend(), record, now).await?;
    }
    let organisation_name = organisation_name(&mut tx, message.organisation_id).await?;
    tx.commit().await?;
    Ok(Json(OpenResponse {
        message_id: message.id,
        recipient_id: recipient.id,
        organisation_name,
        created_at: message.created_at,
        expires_at: message.expires_at,
        idle_timeout_seconds: state.settings().limits.session_idle_seconds,
        patient: match recipient.enrollment {
            None => PatientState::New {
                kdf_params: KdfParams::DEFAULT,
            },
            Some(e) => PatientState::Enrolled {
                kdf_params: e.kdf_params,
                salt: e.salt,
            },
        },
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    link: String,
    bundle: KeyBundle,
    salt: Salt,
    kdf_params: KdfParams,
    verifier: Verifier,
}

/// Sealed private keys are PKCS#8 RSA-3072..4096 keys in a sealed box: refuse anything far off.
const SEALED_KEY_LEN: std::ops::RangeInclusive<usize> = 1_000..=4_096;

async fn enroll(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> ApiResult<axum::http::StatusCode> {
    body.kdf_params
        .validate()
        .map_err(|e| AppError::invalid("kdf_params", e.to_string()))?;
    if !SEALED_KEY_LEN.contains(&body.bundle.sealed_private_key.len()) {
        return Err(AppError::invalid(
            "bundle",
            "sealed_private_key has an impossible length",
        ));
    }
    let now = state.now();
    let mut tx = state.store().pool().begin().await?;
    let message = resolve_link(&mut tx, &body.link, now).await?;
    let enrollment = Enrollment {
        bundle: body.bundle,
        kdf_params: body.kdf_params,
        salt: body.salt,
        verifier: body.verifier,
        enrolled_at: now,
    };
    if !recipients::enroll(&mut tx, message.recipient_id, &enrollment).await? {
        return Err(AppError::Conflict {
            code: "already_enrolled",
            message: "a password is already set; unlock with it instead",
        });
    }
    let fingerprint = enrollment.bundle.public_key.fingerprint();
    let detail = format!("fingerprint={fingerprint}");
    let record = Record::message(
        message.organisation_id,
        AuditKind::Enrolled,
        message.id,
        message.recipient_id,
    )
    .with_detail(&detail);
    audit::append(&mut tx, state.store().backend(), record, now).await?;
    tx.commit().await?;
    tracing::info!(recipient = %message.recipient_id, %fingerprint, "patient enrolled");
    Ok(axum::http::StatusCode::CREATED)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnlockRequest {
    link: String,
    /// The auth key, base64url.
    proof: String,
}

#[derive(Debug, Serialize)]
struct SessionResponse {
    session_id: SessionId,
    recipient_id: RecipientId,
    /// The relay's half of the session key, base64url.
    relay_half: String,
    expires_at: i64,
    idle_timeout_seconds: u64,
}

/// Lock duration after the `lockouts`-th lockout: doubles each time, at most a day.
fn lockout_seconds(first: u64, lockouts: u32) -> i64 {
    let seconds = first.saturating_mul(1u64 << lockouts.saturating_sub(1).min(20));
    i64::try_from(seconds.min(86_400)).unwrap_or(86_400)
}

fn locked_out(until: i64, now: i64) -> AppError {
    AppError::TooMany {
        code: "locked_out",
        message: "too many wrong passwords; try again later",
        retry_after: u64::try_from(until - now).unwrap_or(1).max(1),
    }
}

/// A key identifying the client address in throttles, without storing the address itself.
fn address_key(state: &AppState, address: std::net::IpAddr) -> String {
    let lookup = state
        .data_key()
        .lookup("client-address", address.to_string().as_bytes());
    format!("address:{}", hex::encode(&lookup[..16]))
}

/// The client's address: the TCP peer, or — behind a trusted TLS proxy — the address that proxy
/// appended last to `X-Forwarded-For` (earlier entries are client-controlled and ignored).
fn client_address(
    state: &AppState,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
) -> std::net::IpAddr {
    if !state.settings().trust_forwarded_for {
        return peer.ip();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| last.trim().parse().ok())
        .unwrap_or(peer.ip())
}

async fn unlock(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UnlockRequest>,
) -> ApiResult<Response> {
    let now = state.now();
    let limits = &state.settings().limits;
    let proof = AuthKey::from_base64url(&body.proof)
        .map_err(|_| AppError::invalid("proof", "must be 32 bytes of base64url"))?;
    let address = address_key(&state, client_address(&state, peer, &headers));
    let mut tx = state.store().pool().begin().await?;
    let message = resolve_link(&mut tx, &body.link, now).await?;
    let backend = state.store().backend();
    recipients::lock(&mut tx, backend, message.recipient_id).await?;
    let recipient = recipient_of(&mut tx, &message).await?;
    let enrollment = recipient.enrollment.as_ref().ok_or(AppError::Conflict {
        code: "not_enrolled",
        message: "no password is set yet; enroll first",
    })?;
    if recipient.locked_until > now {
        return Err(locked_out(recipient.locked_until, now));
    }
    let mut address_counter = throttle::get_for_update(&mut tx, backend, &address, now).await?;
    // Failures from one address are forgotten after a quiet hour, so that unrelated patients
    // behind one carrier address do not add up over days.
    if address_counter.updated_at < now - ADDRESS_WINDOW_SECONDS {
        address_counter.count = 0;
    }
    if address_counter.locked_until > now {
        return Err(locked_out(address_counter.locked_until, now));
    }

    if !enrollment.verifier.matches(&proof) {
        crate::metrics::Metrics::inc(&state.metrics().unlock_failures);
        let mut failed = recipient.failed_unlocks + 1;
        let mut lockouts = recipient.lockouts;
        let mut locked_until = 0;
        if failed >= limits.unlock_attempts {
            lockouts += 1;
            locked_until = now + lockout_seconds(limits.lockout_seconds, lockouts);
            failed = 0;
        }
        recipients::set_unlock_state(&mut tx, recipient.id, failed, lockouts, locked_until).await?;
        address_counter.count += 1;
        if address_counter.count >= limits.address_unlock_attempts {
            address_counter.lockouts += 1;
            address_counter.locked_until =
                now + lockout_seconds(limits.lockout_seconds, address_counter.lockouts);
            address_counter.count = 0;
        }
        throttle::put(&mut tx, &address, address_counter, now).await?;
        let detail = format!("failures={}", recipient.failed_unlocks + 1);
        let record = Record::message(
            message.organisation_id,
            AuditKind::UnlockFailed,
            message.id,
            recipient.id,
        )
        .with_detail(&detail);
        audit::append(&mut tx, state.store().backend(), record, now).await?;
        tx.commit().await?;
        return Err(if locked_until > now {
            locked_out(locked_until, now)
        } else if address_counter.locked_until > now {
            locked_out(address_counter.locked_until, now)
        } else {
            AppError::WrongPassword {
                attempts_left: limits.unlock_attempts - failed,
            }
        });
    }

    recipients::set_unlock_state(&mut tx, recipient.id, 0, 0, 0).await?;
    let session_id = SessionId::random(&mut OsRng);
    let token = Token::random(&mut OsRng);
    let relay_half = RelayHalf::random(&mut OsRng);
    let relay_half_text = relay_half.to_base64url();
    let sealed_half = state
        .data_key()
        .seal(RELAY_HALF, relay_half_text.as_bytes(), &mut OsRng);
    let expires_at = now + i64::try_from(limits.session_max_seconds).unwrap_or(3600);
    sessions::create(
        &mut tx,
        &NewSession {
            id: session_id,
            token: token.hash(TokenKind::Session),
            recipient_id: recipient.id,
            relay_half_sealed: &sealed_half,
            now,
            expires_at,
        },
    )
    .await?;
    let record = Record::message(
        message.organisation_id,
        AuditKind::Unlocked,
        message.id,
        recipient.id,
    );
    audit::append(&mut tx, state.store().backend(), record, now).await?;
    tx.commit().await?;
    crate::metrics::Metrics::inc(&state.metrics().unlocks);

    let mut headers = HeaderMap::new();
    headers.insert(
        header::SET_COOKIE,
        session_cookie(
            &state,
            token.to_base64url().as_str(),
            limits.session_max_seconds,
        )?,
    );
    let body = SessionResponse {
        session_id,
        recipient_id: recipient.id,
        relay_half: relay_half_text.to_string(),
        expires_at,
        idle_timeout_seconds: limits.session_idle_seconds,
    };
    Ok((headers, Json(body)).into_response())
}

fn session_cookie(state: &AppState, value: &str, max_age: u64) -> ApiResult<HeaderValue> {
    let secure = if state.settings().tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/v1/viewer; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .map_err(|e| AppError::Internal(format!("cookie: {e}")))
}

/// A live viewer session, from the session cookie. Each request pushes back the idle timeout.
#[derive(Debug)]
pub struct ViewerSession {
    id: SessionId,
    recipient_id: RecipientId,
    relay_half: zeroize::Zeroizing<String>,
    expires_at: i64,
}

impl FromRequestParts<AppState> for ViewerSession {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        const NO_SESSION: AppError = AppError::Unauthorized("no live session; unlock again");
        let token = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .and_then(|(_, value)| Token::from_base64url(value).ok())
            .ok_or(NO_SESSION)?;
        let now = state.now();
        let idle = i64::try_from(state.settings().limits.session_idle_seconds).unwrap_or(300);
        let mut conn = state.store().pool().acquire().await?;
        let row = sessions::live_by_token(&mut conn, &token.hash(TokenKind::Session), now, idle)
            .await?
            .ok_or(NO_SESSION)?;
        sessions::touch(&mut conn, row.id, now).await?;
        let half = state
            .data_key()
            .open(RELAY_HALF, &row.relay_half_sealed)
            .map_err(|_| AppError::Internal("relay half does not open".into()))?;
        let relay_half = String::from_utf8(half.to_vec())
            .map_err(|_| AppError::Internal("relay half is not text".into()))?;
        Ok(Self {
            id: row.id,
            recipient_id: row.recipient_id,
            relay_half: zeroize::Zeroizing::new(relay_half),
            expires_at: row.expires_at,
        })
    }
}

/// The session's relay half again, for re-opening the device's sealed blob.
async fn session_info(
    State(state): State<AppState>,
    session: ViewerSession,
) -> Json<SessionResponse> {
    Json(SessionResponse {
        session_id: session.id,
        recipient_id: session.recipient_id,
        relay_half: session.relay_half.to_string(),
        expires_at: session.expires_at,
        idle_timeout_seconds: state.settings().limits.session_idle_seconds,
    })
}

/// The patient's key bundle (public key and sealed private key).
async fn sealed_key(
    State(state): State<AppState>,
    session: ViewerSession,
) -> ApiResult<Json<KeyBundle>> {
    let mut conn = state.store().pool().acquire().await?;
    let recipient = recipients::get(&mut conn, session.recipient_id)
        .await?
        .and_then(|r| r.enrollment)
        .ok_or(AppError::Conflict {
            code: "not_enrolled",
            message: "the enrollment was reset; enroll again from your link",
        })?;
    Ok(Json(recipient.bundle))
}

#[derive(Debug, Serialize)]
struct MessageView {
    message_id: MessageId,
    organisation_name: String,
    created_at: i64,
    expires_at: i64,
    read_at: Option<i64>,
    /// `true` while the sender has not yet wrapped the message to this patient's key.
    awaiting_key: bool,
    envelope: Option<Envelope>,
}

async fn live_messages(
    State(state): State<AppState>,
    session: ViewerSession,
) -> ApiResult<Json<serde_json::Value>> {
    let now = state.now();
    let mut tx = state.store().pool().begin().await?;
    let current = recipients::get(&mut tx, session.recipient_id)
        .await?
        .and_then(|r| r.enrollment)
        .map(|e| e.bundle.public_key.fingerprint());
    let mut views = Vec::new();
    for message in messages::live_for_recipient(&mut tx, session.recipient_id, now).await? {
        let wrapped = current.is_some() && message.recipient_wrap == current;
        views.push(MessageView {
            message_id: message.id,
            organisation_name: organisation_name(&mut tx, message.organisation_id).await?,
            created_at: message.created_at,
            expires_at: message.expires_at,
            read_at: message.read_at,
            awaiting_key: !wrapped,
            envelope: message.envelope.filter(|_| wrapped),
        });
    }
    tx.commit().await?;
    Ok(Json(serde_json::json!({ "messages": views })))
}

async fn read_receipt(
    State(state): State<AppState>,
    session: ViewerSession,
    ApiPath(id): ApiPath<MessageId>,
) -> ApiResult<Response> {
    let now = state.now();
    let mut tx = state.store().pool().begin().await?;
    let message = messages::get(&mut tx, id)
        .await?
        .filter(|m| m.recipient_id == session.recipient_id)
        .ok_or(AppError::NotFound("no such message"))?;
    if message.status_at(now) != MessageStatus::Active {
        return Err(AppError::Gone {
            code: "message_ended",
            message: "the message is revoked or expired",
        });
    }
    let current = recipients::get(&mut tx, session.recipient_id)
        .await?
        .and_then(|r| r.enrollment)
        .map(|e| e.bundle.public_key.fingerprint());
    if current.is_none() || message.recipient_wrap != current {
        return Err(AppError::Conflict {
            code: "awaiting_key",
            message: "this message is not yet readable on this device",
        });
    }
    if messages::mark_read(&mut tx, id, now).await? {
        let record = Record::message(
            message.organisation_id,
            AuditKind::Read,
            id,
            message.recipient_id,
        );
        audit::append(&mut tx, state.store().backend(), record, now).await?;
    }
    tx.commit().await?;
    Ok(no_content())
}

async fn logout(State(state): State<AppState>, session: ViewerSession) -> ApiResult<Response> {
    let mut conn = state.store().pool().acquire().await?;
    sessions::end(&mut conn, session.id, state.now(), "logout").await?;
    let mut response = no_content();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0)?);
    Ok(response)
}
