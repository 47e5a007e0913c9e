//! The viewer API: what the patient's browser calls after opening an SMS link.
//!
//! The SMS link is `/m/#<token>`: the token rides in the fragment, which browsers keep to
//! themselves, so what reaches the relay — and every proxy's access log — is `GET /m/`.
//! `GET /m/` (and `GET /m/{link}`, the path form of older links) only serves the viewer's page
//! and changes nothing, because link-preview bots and mail scanners fetch links. The page's
//! JavaScript then POSTs the link to record the open,
//! enroll or unlock. A successful unlock returns a session cookie (`HttpOnly`,
//! `SameSite=Strict`, `Secure` under TLS), a device cookie (see [`super::device`]) and the
//! relay's half of the session key; the sealed private key and the envelopes are only released
//! to a live session.

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand_core::OsRng;
use shared::api::{
    CheckStarted, EnrollRequest, ErrorBody, ErrorCode, LinkRequest, LongPoll, MessageList,
    MessageView, OpenResponse, PatientState, SessionResponse, UnlockRequest, UnreadableRequest,
    VIEWER_REQUEST_HEADER,
};
use shared::audit::AuditKind;
use shared::bundle::KeyBundle;
use shared::ids::{MessageId, OrganisationId, RecipientId, SessionId};
use shared::kdf::{AuthKey, KdfParams};
use shared::session::RelayHalf;
use shared::token::{Token, TokenKind};
use sqlx::AnyConnection;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::changes::{Look, Topic};
use crate::error::{ApiResult, AppError};
use crate::http::{ApiJson, ApiPath, LongPollWait, cookie_tokens, no_content};
use crate::limits::seconds;
use crate::state::AppState;
use crate::store::audit::{self, Record};
use crate::store::messages::{self, MessageStatus, StoredMessage};
use crate::store::recipients::{self, NewEnrollment, Recipient};
use crate::store::sessions::{self, NewSession};
use crate::store::throttle::Counter;
use crate::store::{devices, notices, orgs, throttle};

use super::{client, device};

/// Name of the session cookie over plain HTTP (development, tests).
pub const SESSION_COOKIE: &str = "securetext_session";
/// Name of the session cookie over TLS: the `__Host-` prefix makes browsers accept it only
/// with `Secure`, `Path=/` and no `Domain`, so a sibling subdomain cannot set or shadow it.
pub const TLS_SESSION_COOKIE: &str = "__Host-securetext_session";

fn session_cookie_name(state: &AppState) -> &'static str {
    if state.settings().tls {
        TLS_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}
/// Purpose label of relay halves sealed with the data key.
const RELAY_HALF: &str = "relay-half";

/// The viewer API routes, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(viewer_home))
        .routes(routes!(viewer_page))
        .routes(routes!(open))
        .routes(routes!(enroll))
        .routes(routes!(disown))
        .routes(routes!(unlock))
        .routes(routes!(session_info))
        .routes(routes!(sealed_key))
        .routes(routes!(live_messages))
        .routes(routes!(read_receipt))
        .routes(routes!(unreadable))
        .routes(routes!(logout))
}

/// Serves the viewer's `index.html` at `/m/`, the address of every SMS link (the token follows
/// in the fragment) and the address the viewer leaves in the bar once it has read the token:
/// a reload or a back navigation lands here and must get the page again. Records nothing.
#[utoipa::path(get, path = "/m/", tag = "viewer",
    responses(
        (status = 200, description = "The viewer page.", content_type = "text/html"),
        (status = 503, description = "The viewer is not installed.", body = ErrorBody),
    ))]
async fn viewer_home(State(state): State<AppState>) -> ApiResult<Response> {
    page(&state).await
}

/// Serves the viewer's `index.html` for a link in the older path form, valid or not, and
/// records nothing: link previews and mail scanners fetch links, so opening is a separate
/// `POST`.
#[utoipa::path(get, path = "/m/{link}", tag = "viewer",
    params(("link" = String, Path, description = "The SMS link token (links texted before the token moved to the fragment).")),
    responses(
        (status = 200, description = "The viewer page.", content_type = "text/html"),
        (status = 503, description = "The viewer is not installed.", body = ErrorBody),
    ))]
async fn viewer_page(State(state): State<AppState>) -> ApiResult<Response> {
    page(&state).await
}

/// The viewer's page, whatever the path under `/m/`: the routes above, and the fallback for
/// deeper paths (a trailing slash or an extra segment an SMS app adds), so that no address of
/// the viewer ever answers the API's JSON.
pub async fn page(state: &AppState) -> ApiResult<Response> {
    let index = state.settings().viewer_dir.join("index.html");
    let html = tokio::fs::read(&index)
        .await
        .map_err(|_| AppError::Unavailable("the viewer is not installed on this relay"))?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}

/// The message a link leads to; refuses unknown, revoked and expired links.
pub(super) async fn resolve_link(
    tx: &mut AnyConnection,
    link: &str,
    now: i64,
) -> ApiResult<StoredMessage> {
    let token = Token::from_base64url(link).map_err(|_| AppError::NotFound("unknown link"))?;
    let message = messages::by_link(tx, &token.hash(TokenKind::Link))
        .await?
        .ok_or(AppError::NotFound("unknown link"))?;
    match message.status_at(now) {
        MessageStatus::Active => Ok(message),
        MessageStatus::Revoked => Err(AppError::Refused {
            code: ErrorCode::MessageRevoked,
            message: "the sender withdrew this message",
        }),
        MessageStatus::Expired => Err(AppError::Refused {
            code: ErrorCode::MessageExpired,
            message: "this message has expired",
        }),
    }
}

async fn recipient_of(tx: &mut AnyConnection, message: &StoredMessage) -> ApiResult<Recipient> {
    recipients::get(tx, message.recipient_id)
        .await?
        .ok_or_else(|| AppError::Internal("message without recipient".into()))
}

async fn organisation_name(tx: &mut AnyConnection, id: OrganisationId) -> ApiResult<String> {
    Ok(orgs::get(tx, id)
        .await?
        .map(|o| o.display_name)
        .unwrap_or_default())
}

/// Refuses a link whose message was accepted before the patient's enrollment was reset, while
/// the patient has no password: such a link must not set the new one (only the link of a
/// message sent after the reset may).
fn check_enrollment_epoch(message: &StoredMessage, recipient: &Recipient) -> ApiResult<()> {
    if recipient.enrollment.is_none() && message.enrollment_epoch != recipient.enrollment_epoch {
        return Err(AppError::Refused {
            code: ErrorCode::LinkSuperseded,
            message: "your password was reset after this link was sent; open the link in the \
                      newest message instead",
        });
    }
    Ok(())
}

/// Refuses the request once the client address has used its link opens for this minute: a
/// link holder may not poll `open` (for example to catch a reset the moment it happens). Only
/// opens of real links count (an unknown link writes nothing; guessing a 256-bit token is
/// hopeless anyway), and a refused open is not counted.
async fn check_open_rate(
    tx: &mut AnyConnection,
    state: &AppState,
    address: &str,
    message: MessageId,
    now: i64,
) -> ApiResult<()> {
    let limit = state.settings().limits.open_rate_per_minute;
    // Per address *and* link: whoever polls their own link behind a carrier's or a clinic's
    // shared address throttles that link only, never the other patients' links behind it.
    let key = format!("open:{address}:{message}:{}", now / 60);
    if throttle::grant(tx, &key, 1, limit, now).await? == 0 {
        return Err(AppError::TooMany {
            code: ErrorCode::RateLimited,
            message: "this link was opened too often from this address; retry after the indicated time",
            retry_after: u64::try_from(60 - now.rem_euclid(60)).unwrap_or(60),
        });
    }
    Ok(())
}

/// Records the open of a link (every one, audited as `link_opened` with `opens=<n>`) and tells
/// the viewer whether the patient has a password. Throttled per client address.
#[utoipa::path(post, path = "/v1/viewer/open", tag = "viewer", request_body = LinkRequest,
    responses(
        (status = 200, description = "The message behind the link and the patient's state.", body = OpenResponse),
        (status = 404, description = "Unknown link (`not_found`).", body = ErrorBody),
        (status = 409, description = "`link_superseded`: the patient's enrollment was reset after this link was sent.", body = ErrorBody),
        (status = 410, description = "`message_revoked` or `message_expired`.", body = ErrorBody),
        (status = 422, description = "Malformed body (`invalid`).", body = ErrorBody),
        (status = 429, description = "`rate_limited`, with `retry_after`: too many opens of this link from this address.", body = ErrorBody),
    ))]
async fn open(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LinkRequest>,
) -> ApiResult<Json<OpenResponse>> {
    let now = state.now();
    let address = client::throttle_key(&state, client::address(&state, peer, &headers));
    let mut tx = state.store().begin().await?;
    let message = resolve_link(&mut tx, &body.link, now).await?;
    check_open_rate(&mut tx, &state, &address, message.id, now).await?;
    let recipient = recipient_of(&mut tx, &message).await?;
    if let Err(superseded) = check_enrollment_epoch(&message, &recipient) {
        // Still counted against the address's rate: polling an old link is throttled too.
        tx.commit().await?;
        return Err(superseded);
    }
    let opens = messages::record_open(&mut tx, message.id, now).await?;
    let detail = format!("opens={opens}");
    let record = Record::message(
        message.organisation_id,
        AuditKind::LinkOpened,
        message.id,
        message.recipient_id,
    )
    .with_detail(&detail);
    audit::append(&mut tx, record, now).await?;
    let organisation_name = organisation_name(&mut tx, message.organisation_id).await?;
    let identity_check = match recipient.enrollment {
        None => super::checks::challenge(&mut tx, &message).await?,
        Some(_) => None,
    };
    tx.commit().await?;
    let patient = match recipient.enrollment {
        None => PatientState::New {
            kdf_params: KdfParams::DEFAULT,
            identity_check,
        },
        Some(e) => {
            let record = e.record(state.data_key(), recipient.id)?;
            PatientState::Enrolled {
                kdf_params: record.kdf_params,
                salt: record.salt,
            }
        }
    };
    Ok(Json(OpenResponse {
        message_id: message.id,
        recipient_id: recipient.id,
        organisation_id: message.organisation_id,
        organisation_name,
        created_at: message.created_at,
        expires_at: message.expires_at,
        idle_timeout_seconds: state.settings().limits.session_idle.as_secs(),
        patient,
    }))
}

/// Sealed private keys are PKCS#8 RSA-3072..4096 keys in a sealed box: refuse anything far off.
const SEALED_KEY_LEN: std::ops::RangeInclusive<usize> = 1_000..=4_096;

/// Sets the patient's first password: stores the public key, the sealed private key, the salt,
/// the parameters and the verifier (never the password or a usable key). When the message asks
/// for an identity check, the enrollment is held as an attempt until the sender's agent
/// verifies the answer (`202`, see [`super::checks`]); nothing is enrolled before.
#[utoipa::path(post, path = "/v1/viewer/enroll", tag = "viewer", request_body = EnrollRequest,
    responses(
        (status = 201, description = "Enrolled."),
        (status = 202, description = "Held until the sender's agent verifies the identity check.", body = CheckStarted),
        (status = 404, description = "Unknown link.", body = ErrorBody),
        (status = 409, description = "`already_enrolled`; `link_superseded`: the enrollment was reset after this link was sent; `identity_check_required`: the message asks for an identity check and the request has none; `check_attempts_exhausted`: none of the message's answers are left.", body = ErrorBody),
        (status = 410, description = "`message_revoked` or `message_expired`.", body = ErrorBody),
        (status = 422, description = "Refused KDF parameters or an impossible key (`invalid`).", body = ErrorBody),
    ))]
async fn enroll(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> ApiResult<Response> {
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
    let mut tx = state.store().begin().await?;
    let message = resolve_link(&mut tx, &body.link, now).await?;
    recipients::lock(&mut tx, message.recipient_id).await?;
    let recipient = recipient_of(&mut tx, &message).await?;
    if recipient.enrollment.is_some() {
        return Err(already_enrolled());
    }
    check_enrollment_epoch(&message, &recipient)?;
    let enrollment = NewEnrollment {
        bundle: body.bundle,
        kdf_params: body.kdf_params,
        salt: body.salt,
        verifier: body.verifier,
        enrolled_at: now,
    };
    if message.identity_check.is_some() {
        let answer = body.identity_check.as_ref();
        return super::checks::start(&state, tx, &message, &enrollment, answer).await;
    }
    if body.identity_check.is_some() {
        return Err(AppError::invalid(
            "identity_check",
            "this message asks for no identity check",
        ));
    }
    let epoch = message.enrollment_epoch;
    if !recipients::enroll(&mut tx, state.data_key(), recipient.id, epoch, &enrollment).await? {
        return Err(already_enrolled());
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
    audit::append(&mut tx, record, now).await?;
    // Every organisation with a message for the patient may now have a re-wrap to do.
    let rewraps: Vec<Topic> = messages::organisations_of_recipient(&mut tx, recipient.id)
        .await?
        .into_iter()
        .map(Topic::Rewraps)
        .collect();
    for topic in &rewraps {
        notices::announce(&mut tx, topic).await?;
    }
    tx.commit().await?;
    for topic in &rewraps {
        state.changes().wake(topic);
    }
    tracing::info!(recipient = %message.recipient_id, %fingerprint, "patient enrolled");
    Ok(StatusCode::CREATED.into_response())
}

/// "I never set a password": the patient, asked to unlock with a password they never chose,
/// tells the sender that someone else may have enrolled with their link. Recorded in the
/// sender's audit log (`password_disowned`), which the sender's tooling reports; nothing else
/// changes, because whoever holds the link can say this too. Throttled like `open`.
#[utoipa::path(post, path = "/v1/viewer/disown", tag = "viewer", request_body = LinkRequest,
    responses(
        (status = 204, description = "Recorded for the sender."),
        (status = 404, description = "Unknown link (`not_found`).", body = ErrorBody),
        (status = 409, description = "`not_enrolled`: no password is set for this patient.", body = ErrorBody),
        (status = 410, description = "`message_revoked` or `message_expired`.", body = ErrorBody),
        (status = 422, description = "Malformed body (`invalid`).", body = ErrorBody),
        (status = 429, description = "`rate_limited`, with `retry_after`.", body = ErrorBody),
    ))]
async fn disown(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LinkRequest>,
) -> ApiResult<Response> {
    let now = state.now();
    let address = client::throttle_key(&state, client::address(&state, peer, &headers));
    let mut tx = state.store().begin().await?;
    let message = resolve_link(&mut tx, &body.link, now).await?;
    check_open_rate(&mut tx, &state, &address, message.id, now).await?;
    let recipient = recipient_of(&mut tx, &message).await?;
    if recipient.enrollment.is_none() {
        tx.commit().await?;
        return Err(AppError::Refused {
            code: ErrorCode::NotEnrolled,
            message: "no password is set for you yet; choose one from this link",
        });
    }
    let record = Record::message(
        message.organisation_id,
        AuditKind::PasswordDisowned,
        message.id,
        message.recipient_id,
    );
    audit::append(&mut tx, record, now).await?;
    tx.commit().await?;
    tracing::warn!(recipient = %message.recipient_id, message = %message.id, "patient disowned the password");
    Ok(no_content())
}

fn already_enrolled() -> AppError {
    AppError::Refused {
        code: ErrorCode::AlreadyEnrolled,
        message: "a password is already set; unlock with it instead",
    }
}

fn locked_out(until: i64, now: i64) -> AppError {
    AppError::TooMany {
        code: ErrorCode::LockedOut,
        message: "too many wrong passwords; try again later",
        retry_after: u64::try_from(until - now).unwrap_or(1).max(1),
    }
}

/// What holds an unlock attempt back, and counts it when the proof is wrong (`docs/API.md`,
/// "Throttling of unlocks").
enum Guard {
    /// A browser that unlocked this patient before: only the device's own counter.
    KnownDevice(devices::Device),
    /// Any other browser: the patient's counter for unknown browsers and the client
    /// address's counter (keyed by [`client::throttle_key`]).
    Unknown {
        /// The address's throttle key.
        address: String,
        /// The address's counter, quiet failures forgotten.
        counter: Counter,
    },
}

/// The guard of this attempt, or the lockout that refuses it before the proof is looked at.
async fn guard(
    tx: &mut crate::store::Tx,
    state: &AppState,
    recipient: &Recipient,
    known: Option<devices::Device>,
    address: String,
    now: i64,
) -> ApiResult<Guard> {
    if let Some(device) = known {
        return match device.unlock.locked_at(now) {
            Some(until) => Err(locked_out(until, now)),
            None => Ok(Guard::KnownDevice(device)),
        };
    }
    if let Some(until) = recipient.unlock.locked_at(now) {
        return Err(locked_out(until, now));
    }
    let window = state.settings().limits.address_quiet_window;
    let mut counter = throttle::get_for_update(tx, &address, now).await?;
    counter.forget_if_quiet(window, now);
    // A locked address holds back only patients with a recent failure of their own, so that
    // guesses from one carrier address cannot lock out everyone behind it; an attacker there
    // still gets only one guess at each further patient before it holds that patient back too.
    if recipient.failed_recently(window, now)
        && let Some(until) = counter.locked_at(now)
    {
        return Err(locked_out(until, now));
    }
    Ok(Guard::Unknown { address, counter })
}

/// Counts a wrong proof against its guard, audits it and returns the refusal to answer.
async fn count_wrong_proof(
    tx: &mut crate::store::Tx,
    state: &AppState,
    message: &StoredMessage,
    recipient: &Recipient,
    guard: Guard,
    now: i64,
) -> ApiResult<AppError> {
    crate::metrics::Metrics::inc(&state.metrics().unlock_failures);
    let limits = &state.settings().limits;
    // `failures` restarts with each lockout and success; `total` does not (docs/API.md).
    let total = recipients::count_wrong_guess(tx, recipient.id).await?;
    let (detail, refusal) = match guard {
        Guard::KnownDevice(mut device) => {
            let failures = device.unlock.count + 1;
            let policy = limits.device_lockout();
            device.unlock.record_failure(&policy, now);
            devices::set_unlock_state(tx, &device, recipient.id).await?;
            let refusal = match device.unlock.locked_at(now) {
                Some(until) => locked_out(until, now),
                None => AppError::WrongPassword {
                    attempts_left: device.unlock.attempts_left(&policy),
                },
            };
            (
                format!("failures={failures} total={total} device=known"),
                refusal,
            )
        }
        Guard::Unknown {
            address,
            mut counter,
        } => {
            let failures = recipient.unlock.count + 1;
            let policy = limits.patient_lockout();
            let mut unlock = recipient.unlock;
            unlock.record_failure(&policy, now);
            recipients::set_unlock_state(tx, recipient.id, &unlock).await?;
            counter.record_failure(&limits.address_lockout(), now);
            throttle::put(tx, &address, counter, now).await?;
            // The patient has a recent failure now, so a locked address holds them back too.
            let refusal = match unlock.locked_at(now).or(counter.locked_at(now)) {
                Some(until) => locked_out(until, now),
                None => AppError::WrongPassword {
                    attempts_left: unlock.attempts_left(&policy),
                },
            };
            (format!("failures={failures} total={total}"), refusal)
        }
    };
    let record = Record::message(
        message.organisation_id,
        AuditKind::UnlockFailed,
        message.id,
        recipient.id,
    )
    .with_detail(&detail);
    audit::append(tx, record, now).await?;
    Ok(refusal)
}

/// Checks the password proof. A correct one opens a session (cookie), returns the relay's half
/// of the session key and makes the browser a known device (device cookie). Wrong ones are
/// counted, with growing lockouts: per known device, or per patient and per client address for
/// unknown browsers.
#[utoipa::path(post, path = "/v1/viewer/unlock", tag = "viewer", request_body = UnlockRequest,
    responses(
        (status = 200, description = "Unlocked; sets the session cookie and the device cookie.", body = SessionResponse),
        (status = 401, description = "`wrong_password`, with `attempts_left`.", body = ErrorBody),
        (status = 404, description = "Unknown link.", body = ErrorBody),
        (status = 409, description = "`not_enrolled`.", body = ErrorBody),
        (status = 410, description = "`message_revoked` or `message_expired`.", body = ErrorBody),
        (status = 422, description = "The proof is not 32 bytes of base64url (`invalid`).", body = ErrorBody),
        (status = 429, description = "`locked_out`, with `retry_after`.", body = ErrorBody),
    ))]
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
    let address = client::throttle_key(&state, client::address(&state, peer, &headers));
    let presented = device::presented(&state, &headers);
    let presented_hashes = device::hashes(&presented);
    let mut tx = state.store().begin().await?;
    let message = resolve_link(&mut tx, &body.link, now).await?;
    recipients::lock(&mut tx, message.recipient_id).await?;
    let recipient = recipient_of(&mut tx, &message).await?;
    let enrollment = recipient.enrollment.as_ref().ok_or(AppError::Refused {
        code: ErrorCode::NotEnrolled,
        message: "no password is set yet; enroll first",
    })?;
    let known = devices::find(&mut tx, recipient.id, &presented_hashes, now).await?;
    let guard = guard(&mut tx, &state, &recipient, known, address, now).await?;

    if !enrollment.verifies(state.data_key(), &proof) {
        let refusal = count_wrong_proof(&mut tx, &state, &message, &recipient, guard, now).await?;
        tx.commit().await?;
        return Err(refusal);
    }

    // A success from an unknown browser clears the patient's counter; one from a known device
    // leaves it, so that whoever locked the patient out gets no fresh guesses from it.
    let reused = match guard {
        Guard::KnownDevice(device) => presented_hashes.iter().position(|h| *h == device.token),
        Guard::Unknown { .. } => {
            recipients::set_unlock_state(&mut tx, recipient.id, &Counter::default()).await?;
            let live = devices::first_live(&mut tx, &presented_hashes, now).await?;
            live.and_then(|token| presented_hashes.iter().position(|h| *h == token))
        }
    };
    let new_device;
    let device_token = match reused {
        Some(index) => &presented[index],
        None => {
            new_device = Token::random(&mut OsRng);
            &new_device
        }
    };
    let device_expires_at = now.saturating_add(seconds(limits.device_lifetime));
    devices::bind(
        &mut tx,
        &device_token.hash(TokenKind::Device),
        recipient.id,
        now,
        device_expires_at,
    )
    .await?;
    let session_id = SessionId::random(&mut OsRng);
    let token = Token::random(&mut OsRng);
    let relay_half = RelayHalf::random(&mut OsRng);
    let relay_half_text = relay_half.to_base64url();
    let sealed_half = state
        .data_key()
        .seal(RELAY_HALF, relay_half_text.as_bytes(), &mut OsRng);
    let expires_at = now.saturating_add(seconds(limits.session_max));
    sessions::create(
        &mut tx,
        &NewSession {
            id: session_id,
            token: token.hash(TokenKind::Session),
            recipient_id: recipient.id,
            organisation_id: message.organisation_id,
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
    audit::append(&mut tx, record, now).await?;
    tx.commit().await?;
    crate::metrics::Metrics::inc(&state.metrics().unlocks);

    // The session cookie first: clients that read one `Set-Cookie` read that one.
    let mut headers = HeaderMap::new();
    headers.insert(
        header::SET_COOKIE,
        session_cookie(&state, Some(token.to_base64url().as_str()))?,
    );
    headers.append(
        header::SET_COOKIE,
        device::set_cookie(&state, device_token)?,
    );
    let body = SessionResponse {
        session_id,
        recipient_id: recipient.id,
        relay_half: relay_half_text.to_string(),
        expires_at,
        idle_timeout_seconds: limits.session_idle.as_secs(),
    };
    Ok((headers, Json(body)).into_response())
}

/// The `Set-Cookie` value that sets the session token, or (`None`) clears the cookie. It has no
/// `Max-Age`: it ends with the browser session, and the relay ends the session itself after
/// the idle timeout or `session_max`.
fn session_cookie(state: &AppState, token: Option<&str>) -> ApiResult<HeaderValue> {
    let name = session_cookie_name(state);
    let secure = if state.settings().tls { "; Secure" } else { "" };
    let (value, clear) = match token {
        Some(token) => (token, ""),
        None => ("", "; Max-Age=0"),
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict{secure}{clear}"
    ))
    .map_err(|e| AppError::Internal(format!("cookie: {e}")))
}

/// A live viewer session, from the session cookie. Requests push back the idle timeout (recorded
/// at most once per tenth of it, and a minute).
#[derive(Debug)]
pub struct ViewerSession {
    id: SessionId,
    recipient_id: RecipientId,
    /// The organisation whose link opened the session: the only one whose messages it sees.
    organisation_id: OrganisationId,
    relay_half: zeroize::Zeroizing<String>,
    expires_at: i64,
}

impl FromRequestParts<AppState> for ViewerSession {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        const NO_SESSION: AppError = AppError::Unauthorized("no live session; unlock again");
        let changes_state = !matches!(parts.method, Method::GET | Method::HEAD);
        if changes_state && !parts.headers.contains_key(VIEWER_REQUEST_HEADER) {
            return Err(AppError::Forbidden(
                "a viewer request that changes state must carry the X-SecureText-Viewer header",
            ));
        }
        let tokens = cookie_tokens(&parts.headers, session_cookie_name(state));
        if tokens.is_empty() {
            return Err(NO_SESSION);
        }
        let now = state.now();
        let idle = seconds(state.settings().limits.session_idle);
        let mut conn = state.store().read().await?;
        let mut live = None;
        for token in &tokens {
            live = sessions::live_by_token(&mut conn, &token.hash(TokenKind::Session), now, idle)
                .await?;
            if live.is_some() {
                break;
            }
        }
        drop(conn);
        let row = live.ok_or(NO_SESSION)?;
        // Activity is recorded at most once per tenth of the idle timeout (and a minute): a
        // write per request would be a durable commit per list refresh, while the idle timeout
        // moves by at most that tenth.
        if now - row.last_seen_at >= (idle / 10).min(60) {
            sessions::touch(&mut *state.store().conn().await?, row.id, now).await?;
        }
        let half = state
            .data_key()
            .open(RELAY_HALF, &row.relay_half_sealed)
            .map_err(|_| AppError::Internal("relay half does not open".into()))?;
        let relay_half = String::from_utf8(half.to_vec())
            .map_err(|_| AppError::Internal("relay half is not text".into()))?;
        Ok(Self {
            id: row.id,
            recipient_id: row.recipient_id,
            organisation_id: row.organisation_id,
            relay_half: zeroize::Zeroizing::new(relay_half),
            expires_at: row.expires_at,
        })
    }
}

/// The session's relay half again, for re-opening the device's sealed blob.
#[utoipa::path(get, path = "/v1/viewer/session", tag = "viewer", security(("session" = [])),
    responses(
        (status = 200, description = "The live session.", body = SessionResponse),
        (status = 401, description = "No live session (`unauthorized`).", body = ErrorBody),
    ))]
async fn session_info(
    State(state): State<AppState>,
    session: ViewerSession,
) -> Json<SessionResponse> {
    Json(SessionResponse {
        session_id: session.id,
        recipient_id: session.recipient_id,
        relay_half: session.relay_half.to_string(),
        expires_at: session.expires_at,
        idle_timeout_seconds: state.settings().limits.session_idle.as_secs(),
    })
}

/// The patient's key bundle (public key and sealed private key), only to a live session.
#[utoipa::path(get, path = "/v1/viewer/key", tag = "viewer", security(("session" = [])),
    responses(
        (status = 200, description = "The key bundle.", body = KeyBundle),
        (status = 401, description = "No live session.", body = ErrorBody),
        (status = 409, description = "`not_enrolled`: the enrollment was reset.", body = ErrorBody),
    ))]
async fn sealed_key(
    State(state): State<AppState>,
    session: ViewerSession,
) -> ApiResult<Json<KeyBundle>> {
    let mut conn = state.store().read().await?;
    let enrollment = recipients::get(&mut conn, session.recipient_id)
        .await?
        .and_then(|r| r.enrollment)
        .ok_or(AppError::Refused {
            code: ErrorCode::NotEnrolled,
            message: "the enrollment was reset; enroll again from your link",
        })?;
    Ok(Json(
        enrollment.bundle(state.data_key(), session.recipient_id)?,
    ))
}

/// The patient's live messages, newest first; envelopes only once wrapped to the current key.
/// With `wait`, a long-poll: while messages await their re-wrap, the answer waits until one of
/// them is re-wrapped (see [`crate::changes`]).
#[utoipa::path(get, path = "/v1/viewer/messages", tag = "viewer", security(("session" = [])),
    params(LongPoll),
    responses(
        (status = 200, description = "The live messages.", body = MessageList),
        (status = 401, description = "No live session.", body = ErrorBody),
        (status = 422, description = "A bad query (`invalid`).", body = ErrorBody),
    ))]
async fn live_messages(
    State(state): State<AppState>,
    session: ViewerSession,
    LongPollWait(wait): LongPollWait,
) -> ApiResult<Json<MessageList>> {
    // What awaited a re-wrap at the first look: the answer is due as soon as any of it is
    // re-wrapped (another organisation's message may still wait).
    let awaiting_at_first: std::sync::Mutex<Option<Vec<MessageId>>> = std::sync::Mutex::new(None);
    let messages = state
        .changes()
        .wait(Topic::Wraps(session.recipient_id), wait, || async {
            let messages = list_messages(&state, &session).await?;
            let awaiting: Vec<MessageId> = messages
                .iter()
                .filter(|m| m.awaiting_key)
                .map(|m| m.message_id)
                .collect();
            let mut first = awaiting_at_first
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let first = first.get_or_insert_with(|| awaiting.clone());
            let rewrapped = first.iter().any(|id| !awaiting.contains(id));
            Ok::<_, AppError>(if awaiting.is_empty() || rewrapped {
                Look::Ready(messages)
            } else {
                Look::Nothing(messages)
            })
        })
        .await?;
    Ok(Json(MessageList { messages }))
}

async fn list_messages(state: &AppState, session: &ViewerSession) -> ApiResult<Vec<MessageView>> {
    let now = state.now();
    let recipient = session.recipient_id;
    let mut tx = state.store().begin_read().await?;
    // A long-poll looks again after waiting: the session may have ended meanwhile.
    if !sessions::is_live(&mut tx, session.id, now).await? {
        return Err(AppError::Unauthorized("no live session; unlock again"));
    }
    let current = recipients::get(&mut tx, recipient)
        .await?
        .and_then(|r| r.enrollment)
        .map(|e| e.public_key.fingerprint());
    let mut views = Vec::new();
    for message in
        messages::live_for_recipient(&mut tx, recipient, session.organisation_id, now).await?
    {
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
    Ok(views)
}

/// Records that the patient saw a message (first time only).
#[utoipa::path(post, path = "/v1/viewer/messages/{id}/read", tag = "viewer", security(("session" = [])),
    params(("id" = MessageId, Path, description = "The message.")),
    responses(
        (status = 204, description = "Recorded."),
        (status = 401, description = "No live session.", body = ErrorBody),
        (status = 403, description = "No `X-SecureText-Viewer` header (`forbidden`).", body = ErrorBody),
        (status = 404, description = "Not this patient's message.", body = ErrorBody),
        (status = 409, description = "`awaiting_key`: not yet readable on this device.", body = ErrorBody),
        (status = 410, description = "`message_ended`.", body = ErrorBody),
        (status = 422, description = "Not a message id (`invalid`).", body = ErrorBody),
    ))]
async fn read_receipt(
    State(state): State<AppState>,
    session: ViewerSession,
    ApiPath(id): ApiPath<MessageId>,
) -> ApiResult<Response> {
    let now = state.now();
    let mut tx = state.store().begin().await?;
    let message = delivered_message(&mut tx, &session, id, now).await?;
    if messages::mark_read(&mut tx, id, now).await? {
        let record = Record::message(
            message.organisation_id,
            AuditKind::Read,
            id,
            message.recipient_id,
        );
        audit::append(&mut tx, record, now).await?;
    }
    tx.commit().await?;
    Ok(no_content())
}

/// The session's patient's live message `id`, as delivered to the patient's current key: what
/// a read receipt or an unreadable report may concern. A message that is another patient's,
/// has ended, or was not yet wrapped to this key gets the refusal the viewer branches on.
async fn delivered_message(
    tx: &mut AnyConnection,
    session: &ViewerSession,
    id: MessageId,
    now: i64,
) -> ApiResult<StoredMessage> {
    let message = messages::get(tx, id)
        .await?
        .filter(|m| {
            m.recipient_id == session.recipient_id && m.organisation_id == session.organisation_id
        })
        .ok_or(AppError::NotFound("no such message"))?;
    if message.status_at(now) != MessageStatus::Active {
        return Err(AppError::message_ended());
    }
    let current = recipients::get(tx, session.recipient_id)
        .await?
        .and_then(|r| r.enrollment)
        .map(|e| e.public_key.fingerprint());
    if current.is_none() || message.recipient_wrap != current {
        return Err(AppError::Refused {
            code: ErrorCode::AwaitingKey,
            message: "this message is not yet readable on this device",
        });
    }
    Ok(message)
}

/// Records, for the sender, that the patient's viewer received a message but could not open
/// it safely and showed a notice in its place (`open_failed`, with the reason): once per
/// message and session, however often it is reported.
#[utoipa::path(post, path = "/v1/viewer/messages/{id}/unreadable", tag = "viewer", security(("session" = [])),
    params(("id" = MessageId, Path, description = "The message.")),
    request_body = UnreadableRequest,
    responses(
        (status = 204, description = "Recorded (or already recorded for this session)."),
        (status = 401, description = "No live session.", body = ErrorBody),
        (status = 403, description = "No `X-SecureText-Viewer` header (`forbidden`).", body = ErrorBody),
        (status = 404, description = "Not this patient's message.", body = ErrorBody),
        (status = 409, description = "`awaiting_key`: nothing was delivered to this key yet.", body = ErrorBody),
        (status = 410, description = "`message_ended`.", body = ErrorBody),
        (status = 422, description = "Not a message id, or an unknown reason (`invalid`).", body = ErrorBody),
    ))]
async fn unreadable(
    State(state): State<AppState>,
    session: ViewerSession,
    ApiPath(id): ApiPath<MessageId>,
    ApiJson(body): ApiJson<UnreadableRequest>,
) -> ApiResult<Response> {
    let now = state.now();
    let mut tx = state.store().begin().await?;
    let message = delivered_message(&mut tx, &session, id, now).await?;
    if messages::mark_unreadable(&mut tx, id, session.id, now).await? {
        let detail = format!("reason={}", body.reason.as_str());
        let record = Record::message(
            message.organisation_id,
            AuditKind::OpenFailed,
            id,
            message.recipient_id,
        )
        .with_detail(&detail);
        audit::append(&mut tx, record, now).await?;
        tracing::warn!(message = %id, reason = body.reason.as_str(), "viewer could not open a message");
    }
    tx.commit().await?;
    Ok(no_content())
}

/// Ends the session: the relay destroys its half of the session key, so the device's sealed
/// blob can no longer be opened.
#[utoipa::path(post, path = "/v1/viewer/logout", tag = "viewer", security(("session" = [])),
    responses(
        (status = 204, description = "Ended; clears the cookie."),
        (status = 401, description = "No live session.", body = ErrorBody),
        (status = 403, description = "No `X-SecureText-Viewer` header (`forbidden`).", body = ErrorBody),
    ))]
async fn logout(State(state): State<AppState>, session: ViewerSession) -> ApiResult<Response> {
    let mut conn = state.store().conn().await?;
    sessions::end(&mut conn, session.id, state.now(), "logout").await?;
    let mut response = no_content();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, None)?);
    Ok(response)
}
