//! The transactional SMS outbox: a row is written in the same transaction as its message, and
//! workers on any relay instance claim due rows with a lease, so an accepted message's SMS
//! survives restarts and provider outages and is sent once.

use shared::ids::{MessageId, OrganisationId};
use sqlx::{AnyConnection, Row};

use crate::error::AppError;

/// A claimed SMS, ready to send.
#[derive(Debug)]
pub struct OutboxRow {
    /// Outbox row id (also sent to the provider as our reference).
    pub id: String,
    /// The message the SMS announces.
    pub message_id: MessageId,
    /// Its sender.
    pub organisation_id: OrganisationId,
    /// Destination number, sealed with the data key.
    pub to_sealed: Vec<u8>,
    /// SMS text, sealed with the data key.
    pub body_sealed: Vec<u8>,
    /// Attempts including this one.
    pub attempts: u32,
}

/// Queues an SMS.
pub async fn enqueue(
    conn: &mut AnyConnection,
    id: &str,
    message: MessageId,
    organisation: OrganisationId,
    to_sealed: Vec<u8>,
    body_sealed: Vec<u8>,
    now: i64,
) -> Result<(), AppError> {
    sqlx::query(
        "INSERT INTO sms_outbox (id, message_id, organisation_id, to_sealed, body_sealed, status, \
         next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6)",
    )
    .bind(id)
    .bind(message.to_string())
    .bind(organisation.to_string())
    .bind(to_sealed)
    .bind(body_sealed)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Claims the oldest due SMS for `lease_seconds`. The conditional update is atomic on both
/// backends, so two relay instances never claim the same row.
pub async fn claim_due(
    conn: &mut AnyConnection,
    now: i64,
    lease_seconds: i64,
) -> Result<Option<OutboxRow>, AppError> {
    let row = sqlx::query(
        "UPDATE sms_outbox SET claimed_until = $2, attempts = attempts + 1 \
         WHERE id = (SELECT o.id FROM sms_outbox o JOIN messages m ON m.id = o.message_id \
                     WHERE o.status = 'pending' AND o.next_attempt_at <= $1 \
                     AND o.claimed_until <= $1 AND m.status = 'active' AND m.expires_at > $1 \
                     ORDER BY o.created_at, o.id LIMIT 1) \
         AND status = 'pending' AND claimed_until <= $1 \
         RETURNING id, message_id, organisation_id, to_sealed, body_sealed, attempts",
    )
    .bind(now)
    .bind(now + lease_seconds)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        let bad = |e: shared::Error| AppError::Internal(format!("stored outbox row: {e}"));
        Ok(OutboxRow {
            id: row.try_get("id")?,
            message_id: MessageId::parse(&row.try_get::<String, _>("message_id")?).map_err(bad)?,
            organisation_id: OrganisationId::parse(&row.try_get::<String, _>("organisation_id")?)
                .map_err(bad)?,
            to_sealed: row.try_get("to_sealed")?,
            body_sealed: row.try_get("body_sealed")?,
            attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        })
    })
    .transpose()
}

/// Records a successful hand-over to the provider and wipes the body (it carries the link).
pub async fn mark_sent(
    conn: &mut AnyConnection,
    id: &str,
    provider_id: &str,
) -> Result<(), AppError> {
    sqlx::query(
        "UPDATE sms_outbox SET status = 'sent', body_sealed = NULL, provider_id = $1, \
         last_error = NULL WHERE id = $2",
    )
    .bind(provider_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Schedules another attempt after a provider failure.
pub async fn mark_retry(
    conn: &mut AnyConnection,
    id: &str,
    next_attempt_at: i64,
    error: &str,
) -> Result<(), AppError> {
    sqlx::query(
        "UPDATE sms_outbox SET next_attempt_at = $1, claimed_until = 0, last_error = $2 WHERE id = $3",
    )
    .bind(next_attempt_at)
    .bind(error)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives up on an SMS and wipes its body.
pub async fn mark_failed(conn: &mut AnyConnection, id: &str, error: &str) -> Result<(), AppError> {
    sqlx::query(
        "UPDATE sms_outbox SET status = 'failed', body_sealed = NULL, last_error = $1 WHERE id = $2",
    )
    .bind(error)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Cancels the SMS still queued for messages that were revoked or expired (a withdrawn message
/// must not be texted), wiping their bodies; returns how many.
pub async fn cancel_for_ended_messages(
    conn: &mut AnyConnection,
    now: i64,
) -> Result<u64, AppError> {
    Ok(sqlx::query(
        "UPDATE sms_outbox SET status = 'cancelled', body_sealed = NULL \
         WHERE status = 'pending' AND message_id IN \
         (SELECT id FROM messages WHERE status <> 'active' OR expires_at <= $1)",
    )
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Records a delivery report. Returns the SMS's message and organisation when this report is
/// new (not a repeat of the last one recorded), `None` for a repeat, and an error for an
/// unknown `provider_id`.
pub async fn record_delivery(
    conn: &mut AnyConnection,
    provider_id: &str,
    status: &str,
) -> Result<Option<(MessageId, OrganisationId)>, AppError> {
    let sms = by_provider_id(&mut *conn, provider_id)
        .await?
        .ok_or(AppError::NotFound("no SMS with this MessageSid"))?;
    let changed = sqlx::query(
        "UPDATE sms_outbox SET delivery_status = $1 \
         WHERE provider_id = $2 AND (delivery_status IS NULL OR delivery_status <> $1)",
    )
    .bind(status)
    .bind(provider_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok((changed > 0).then_some(sms))
}

/// The message and organisation of the SMS the provider knows by `provider_id`.
pub async fn by_provider_id(
    conn: &mut AnyConnection,
    provider_id: &str,
) -> Result<Option<(MessageId, OrganisationId)>, AppError> {
    let row =
        sqlx::query("SELECT message_id, organisation_id FROM sms_outbox WHERE provider_id = $1")
            .bind(provider_id)
            .fetch_optional(conn)
            .await?;
    row.map(|row| {
        let bad = |e: shared::Error| AppError::Internal(format!("stored outbox row: {e}"));
        Ok((
            MessageId::parse(&row.try_get::<String, _>("message_id")?).map_err(bad)?,
            OrganisationId::parse(&row.try_get::<String, _>("organisation_id")?).map_err(bad)?,
        ))
    })
    .transpose()
}

/// SMS waiting to be sent (for metrics).
pub async fn pending_count(conn: &mut AnyConnection) -> Result<i64, AppError> {
    Ok(
        sqlx::query("SELECT COUNT(*) AS n FROM sms_outbox WHERE status = 'pending'")
            .fetch_one(conn)
            .await?
            .try_get("n")?,
    )
}
