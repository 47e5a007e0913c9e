//! Delivery reports from the SMS provider, recorded as audit events.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use shared::api::ErrorBody;
use shared::audit::AuditKind;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, AppError};
use crate::sms::twilio::{self, DeliveryStatus};
use crate::state::AppState;
use crate::store::audit::{self, Record};
use crate::store::outbox::{self, Delivery};

/// Path Twilio posts status callbacks to (also sent as `StatusCallback`).
pub const TWILIO_STATUS_PATH: &str = "/v1/sms/twilio/status";

/// The provider callback routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(twilio_status))
}

/// Twilio's status callback. The `X-Twilio-Signature` must verify against the configured auth
/// token over the public URL and the form parameters; otherwise the report is refused.
#[utoipa::path(post, path = "/v1/sms/twilio/status", tag = "provider",
    request_body(content_type = "application/x-www-form-urlencoded", description = "Twilio's status callback parameters (`MessageSid`, `MessageStatus`, `ErrorCode`, …)."),
    responses(
        (status = 204, description = "Recorded, or a repeat that changes nothing."),
        (status = 403, description = "Missing or bad `X-Twilio-Signature`.", body = ErrorBody),
        (status = 404, description = "Twilio is not the provider, or no SMS has this `MessageSid`.", body = ErrorBody),
        (status = 422, description = "`MessageSid` or `MessageStatus` missing.", body = ErrorBody),
    ))]
async fn twilio_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let token = state
        .settings()
        .twilio_auth_token
        .as_ref()
        .ok_or(AppError::NotFound("the Twilio provider is not configured"))?;
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or(AppError::Forbidden("missing X-Twilio-Signature"))?;
    let url = format!("{}{TWILIO_STATUS_PATH}", state.settings().public_url);
    if !twilio::verify_signature(token.expose(), &url, &params, signature) {
        tracing::warn!("refused a Twilio status callback with a bad signature");
        return Err(AppError::Forbidden("bad X-Twilio-Signature"));
    }
    let update = twilio::parse_status(&params)
        .ok_or_else(|| AppError::invalid("body", "MessageSid and MessageStatus are required"))?;
    let (kind, detail) = match &update.status {
        DeliveryStatus::Delivered => (AuditKind::SmsDelivered, String::new()),
        DeliveryStatus::Failed { error_code } => (
            AuditKind::SmsFailed,
            error_code
                .as_deref()
                .filter(|c| c.len() <= 16 && c.bytes().all(|b| b.is_ascii_alphanumeric()))
                .map(|c| format!("provider_error={c}"))
                .unwrap_or_default(),
        ),
        DeliveryStatus::Sent | DeliveryStatus::Other(_) => return Ok(StatusCode::NO_CONTENT),
    };
    let now = state.now();
    let mut tx = state.store().begin().await?;
    let (message, organisation) =
        match outbox::record_delivery(&mut tx, &update.provider_id, kind.as_str()).await? {
            Delivery::New(message, organisation) => (message, organisation),
            Delivery::UnknownSms => return Err(AppError::NotFound("no SMS with this MessageSid")),
            // Twilio retries callbacks; a repeated report changes nothing.
            Delivery::Repeat => return Ok(StatusCode::NO_CONTENT),
        };
    let record = Record {
        organisation,
        kind,
        message: Some(message),
        recipient: None,
        detail: &detail,
    };
    audit::append(&mut tx, record, now).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
