//! The identity check of a first enrollment, as the relay relays it between the patient's
//! viewer and the sender's agent (issue 10, part 2; `docs/PROTOCOL.md`, "Enrollment check").
//!
//! 1. The viewer enrolls with its first exchange message (`POST /v1/viewer/enroll` with
//!    `identity_check`): the relay stores the attempt and holds the enrollment (202).
//! 2. The agent lists it (`GET /v1/enrollment-checks`) and answers with its own message and
//!    confirmation (`PUT /v1/enrollment-checks/{id}/reply`).
//! 3. The viewer reads the answer (`POST /v1/viewer/check`), learns whether the patient's answer
//!    was right, and sends its confirmation (`POST /v1/viewer/check/confirm`).
//! 4. The agent checks that confirmation, which binds the enrolled key's fingerprint, and gives
//!    its verdict (`PUT /v1/enrollment-checks/{id}/verdict`): only a verified attempt becomes the
//!    patient's enrollment.
//!
//! The relay sees only the exchange's public values, from which no guess can be tested; each
//! answer typed is one attempt of the message's
//! [`shared::identity_check::MAX_ATTEMPTS`], so guesses stay online and few.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::api::{
    CheckChallenge, CheckConfirmRequest, CheckProgress, CheckReplyRequest, CheckRequest,
    CheckStarted, CheckStatus, CheckVerdictRequest, CheckVerdictResponse, ErrorBody, ErrorCode,
    LongPoll, PakeMessage, PendingChecks,
};
use shared::audit::AuditKind;
use shared::ids::{CheckAttemptId, OrganisationId};
use sqlx::AnyConnection;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::changes::{Look, Topic};
use crate::error::{ApiResult, AppError};
use crate::http::{ApiJson, ApiPath, LongPollWait, no_content};
use crate::state::AppState;
use crate::store::audit::{self, Record};
use crate::store::checks::{self, Attempt, NewAttempt};
use crate::store::messages::StoredMessage;
use crate::store::notices;
use crate::store::recipients::{self, NewEnrollment};

use super::sender::Sender;
use super::viewer::resolve_link;

/// The identity-check routes of both sides, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(check_status))
        .routes(routes!(check_confirm))
        .routes(routes!(pending_checks))
        .routes(routes!(check_reply))
        .routes(routes!(check_verdict))
}

fn check_closed() -> AppError {
    AppError::Refused {
        code: ErrorCode::CheckClosed,
        message: "this answer is already decided, or waits for the other side",
    }
}

fn attempts_exhausted() -> AppError {
    AppError::Refused {
        code: ErrorCode::CheckAttemptsExhausted,
        message: "no answers are left for this message; ask the sender to send you a new one",
    }
}

/// What `open` tells a new patient about the message's check, if it has one.
pub async fn challenge(
    conn: &mut AnyConnection,
    message: &StoredMessage,
) -> ApiResult<Option<CheckChallenge>> {
    let Some(kind) = message.identity_check else {
        return Ok(None);
    };
    Ok(Some(CheckChallenge {
        kind,
        attempts_left: checks::attempts_left(conn, message.id).await?,
    }))
}

/// Holds an enrollment from a link whose message asks for a check, as a new attempt; the caller
/// has locked the patient (so that concurrent answers are counted one after another) and
/// checked that the patient may enroll from this link. Commits.
pub async fn start(
    state: &AppState,
    mut tx: crate::store::Tx,
    message: &StoredMessage,
    enrollment: &NewEnrollment,
    answer: Option<&PakeMessage>,
) -> ApiResult<Response> {
    let answer = answer.ok_or(AppError::Refused {
        code: ErrorCode::IdentityCheckRequired,
        message: "the sender asks you to confirm who you are before setting a password",
    })?;
    let left = checks::attempts_left(&mut tx, message.id).await?;
    if left == 0 {
        return Err(attempts_exhausted());
    }
    let id = CheckAttemptId::random(&mut rand_core::OsRng);
    let attempt = NewAttempt {
        id,
        message_id: message.id,
        organisation_id: message.organisation_id,
        recipient_id: message.recipient_id,
        enrollment_epoch: message.enrollment_epoch,
        enrollment,
        patient_message: answer,
    };
    checks::insert(&mut tx, state.data_key(), &attempt).await?;
    let topic = Topic::Checks(message.organisation_id);
    notices::announce(&mut tx, &topic).await?;
    tx.commit().await?;
    state.changes().wake(&topic);
    tracing::info!(recipient = %message.recipient_id, attempt = %id, "identity check started");
    let started = CheckStarted {
        attempt_id: id,
        attempts_left: left - 1,
    };
    Ok((StatusCode::ACCEPTED, Json(started)).into_response())
}

/// The attempt behind a viewer request: the link must be live and the attempt one of its
/// message's (anything else is the same 404).
async fn viewer_attempt(
    conn: &mut AnyConnection,
    link: &str,
    id: CheckAttemptId,
    now: i64,
) -> ApiResult<(StoredMessage, Attempt)> {
    let message = resolve_link(conn, link, now).await?;
    let attempt = checks::get(conn, id)
        .await?
        .filter(|attempt| attempt.message_id == message.id)
        .ok_or(AppError::NotFound("no such answer for this link"))?;
    Ok((message, attempt))
}

/// The state of one of the patient's answers. With `wait`, a long-poll that answers once the
/// sender's agent has replied or decided.
#[utoipa::path(post, path = "/v1/viewer/check", tag = "viewer", request_body = CheckRequest,
    params(LongPoll),
    responses(
        (status = 200, description = "Where the answer is; `answered` carries the agent's message and confirmation.", body = CheckStatus),
        (status = 404, description = "Unknown link, or no such answer for it.", body = ErrorBody),
        (status = 410, description = "`message_revoked` or `message_expired`.", body = ErrorBody),
        (status = 422, description = "Malformed body or query (`invalid`).", body = ErrorBody),
    ))]
async fn check_status(
    State(state): State<AppState>,
    LongPollWait(wait): LongPollWait,
    ApiJson(body): ApiJson<CheckRequest>,
) -> ApiResult<Json<CheckStatus>> {
    let status = state
        .changes()
        .wait(Topic::Check(body.attempt_id), wait, || async {
            let mut conn = state.store().conn().await?;
            let (message, attempt) =
                viewer_attempt(&mut conn, &body.link, body.attempt_id, state.now()).await?;
            let attempts_left = checks::attempts_left(&mut conn, message.id).await?;
            let answered = attempt.progress == CheckProgress::Answered;
            let status = CheckStatus {
                progress: attempt.progress,
                attempts_left,
                agent_message: attempt.agent_message.filter(|_| answered),
                agent_confirmation: attempt.agent_confirmation.filter(|_| answered),
            };
            Ok::<_, AppError>(match attempt.progress {
                CheckProgress::AwaitingSender | CheckProgress::Confirmed => Look::Nothing(status),
                CheckProgress::Answered | CheckProgress::Verified | CheckProgress::Failed => {
                    Look::Ready(status)
                }
            })
        })
        .await?;
    Ok(Json(status))
}

/// The patient's key confirmation, for the sender's agent to verify.
#[utoipa::path(post, path = "/v1/viewer/check/confirm", tag = "viewer", request_body = CheckConfirmRequest,
    responses(
        (status = 204, description = "Passed on to the sender's agent."),
        (status = 404, description = "Unknown link, or no such answer for it.", body = ErrorBody),
        (status = 409, description = "`check_closed`: the agent has not answered yet, or the answer is decided.", body = ErrorBody),
        (status = 410, description = "`message_revoked` or `message_expired`.", body = ErrorBody),
        (status = 422, description = "Malformed body (`invalid`).", body = ErrorBody),
    ))]
async fn check_confirm(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CheckConfirmRequest>,
) -> ApiResult<Response> {
    let mut tx = state.store().begin().await?;
    let (message, attempt) =
        viewer_attempt(&mut tx, &body.link, body.attempt_id, state.now()).await?;
    if !checks::confirm(&mut tx, attempt.id, &body.confirmation).await? {
        return Err(check_closed());
    }
    let topic = Topic::Checks(message.organisation_id);
    notices::announce(&mut tx, &topic).await?;
    tx.commit().await?;
    state.changes().wake(&topic);
    Ok(no_content())
}

/// The organisation's answers that wait for its agent: to reply to (no `agent_message` yet) or
/// to decide (`patient_confirmation` present). With `wait`, a long-poll that answers at the
/// next answer or confirmation.
#[utoipa::path(get, path = "/v1/enrollment-checks", tag = "sender", security(("api_key" = [])),
    params(LongPoll),
    responses(
        (status = 200, description = "Attempts waiting for the agent, oldest first.", body = PendingChecks),
        (status = 401, description = "Bad API key.", body = ErrorBody),
        (status = 422, description = "A bad query (`invalid`).", body = ErrorBody),
    ))]
async fn pending_checks(
    State(state): State<AppState>,
    sender: Sender,
    LongPollWait(wait): LongPollWait,
) -> ApiResult<Json<PendingChecks>> {
    let organisation = sender.organisation.id;
    let pending = state
        .changes()
        .wait(Topic::Checks(organisation), wait, || async {
            let mut conn = state.store().conn().await?;
            let pending: Vec<_> = checks::pending_for(&mut conn, organisation, state.now())
                .await?
                .iter()
                .map(Attempt::pending)
                .collect();
            Ok::<_, AppError>(if pending.is_empty() {
                Look::Nothing(pending)
            } else {
                Look::Ready(pending)
            })
        })
        .await?;
    Ok(Json(PendingChecks { pending }))
}

/// The organisation's attempt with this id (another organisation's is the same 404).
async fn owned_attempt(
    conn: &mut AnyConnection,
    organisation: OrganisationId,
    id: CheckAttemptId,
) -> ApiResult<Attempt> {
    checks::get(conn, id)
        .await?
        .filter(|attempt| attempt.organisation_id == organisation)
        .ok_or(AppError::NotFound(
            "no such identity check for this organisation",
        ))
}

/// The agent's exchange message and confirmation for an attempt.
#[utoipa::path(put, path = "/v1/enrollment-checks/{id}/reply", tag = "sender", security(("api_key" = [])),
    params(("id" = CheckAttemptId, Path, description = "The attempt.")),
    request_body = CheckReplyRequest,
    responses(
        (status = 204, description = "Stored; the patient's viewer reads it next."),
        (status = 401, description = "Bad API key.", body = ErrorBody),
        (status = 404, description = "No such attempt for this organisation.", body = ErrorBody),
        (status = 409, description = "`check_closed`: already answered or decided.", body = ErrorBody),
        (status = 422, description = "Malformed body (`invalid`).", body = ErrorBody),
    ))]
async fn check_reply(
    State(state): State<AppState>,
    sender: Sender,
    ApiPath(id): ApiPath<CheckAttemptId>,
    ApiJson(body): ApiJson<CheckReplyRequest>,
) -> ApiResult<Response> {
    let mut tx = state.store().begin().await?;
    owned_attempt(&mut tx, sender.organisation.id, id).await?;
    if !checks::answer(&mut tx, id, &body.agent_message, &body.agent_confirmation).await? {
        return Err(check_closed());
    }
    let topic = Topic::Check(id);
    notices::announce(&mut tx, &topic).await?;
    tx.commit().await?;
    state.changes().wake(&topic);
    Ok(no_content())
}

/// The agent's verdict on an attempt. `verified: true` enrolls the patient with the attempt's
/// key (audit `enrollment_verified`); `false` drops it (audit `enrollment_check_failed`). An
/// attempt the patient can no longer take (enrolled meanwhile, or reset since) fails.
#[utoipa::path(put, path = "/v1/enrollment-checks/{id}/verdict", tag = "sender", security(("api_key" = [])),
    params(("id" = CheckAttemptId, Path, description = "The attempt.")),
    request_body = CheckVerdictRequest,
    responses(
        (status = 200, description = "Decided.", body = CheckVerdictResponse),
        (status = 401, description = "Bad API key.", body = ErrorBody),
        (status = 404, description = "No such attempt for this organisation.", body = ErrorBody),
        (status = 409, description = "`check_closed`: already decided.", body = ErrorBody),
        (status = 422, description = "Malformed body (`invalid`).", body = ErrorBody),
    ))]
async fn check_verdict(
    State(state): State<AppState>,
    sender: Sender,
    ApiPath(id): ApiPath<CheckAttemptId>,
    ApiJson(body): ApiJson<CheckVerdictRequest>,
) -> ApiResult<Json<CheckVerdictResponse>> {
    let now = state.now();
    let mut tx = state.store().begin().await?;
    let attempt = owned_attempt(&mut tx, sender.organisation.id, id).await?;
    // The patient first, then the chain (the lock order of `audit::lock_chain`).
    recipients::lock(&mut tx, attempt.recipient_id).await?;
    let attempt = owned_attempt(&mut tx, sender.organisation.id, id).await?;
    if matches!(
        attempt.progress,
        CheckProgress::Verified | CheckProgress::Failed
    ) {
        return Err(check_closed());
    }
    let enrolled = checks::decide(&mut tx, &attempt, body.verified, now).await?;
    let attempts_left = checks::attempts_left(&mut tx, attempt.message_id).await?;
    let fingerprint = attempt.public_key.fingerprint();
    let (kind, detail) = if enrolled {
        (
            AuditKind::EnrollmentVerified,
            format!("fingerprint={fingerprint}"),
        )
    } else if body.verified {
        // Verified, but the patient enrolled through another link meanwhile, or was reset.
        (
            AuditKind::EnrollmentCheckFailed,
            format!("attempts_left={attempts_left} reason=not_enrollable"),
        )
    } else {
        (
            AuditKind::EnrollmentCheckFailed,
            format!("attempts_left={attempts_left}"),
        )
    };
    let record = Record::message(
        attempt.organisation_id,
        kind,
        attempt.message_id,
        attempt.recipient_id,
    )
    .with_detail(&detail);
    audit::append(&mut tx, record, now).await?;
    let mut topics = vec![Topic::Check(id)];
    if enrolled {
        topics.push(Topic::Rewraps(attempt.organisation_id));
    }
    for topic in &topics {
        notices::announce(&mut tx, topic).await?;
    }
    tx.commit().await?;
    for topic in &topics {
        state.changes().wake(topic);
    }
    tracing::info!(recipient = %attempt.recipient_id, attempt = %id, enrolled, "identity check decided");
    let progress = if enrolled {
        CheckProgress::Verified
    } else {
        CheckProgress::Failed
    };
    Ok(Json(CheckVerdictResponse {
        progress,
        attempts_left,
    }))
}
