//! The transactional SMS outbox: a row is written in the same transaction as its message, and
//! workers on any relay instance claim due rows with a lease, so an accepted message's SMS
//! survives restarts and provider outages and is sent once.

use rand_core::OsRng;
use shared::at_rest::DataKey;
use shared::ids::{MessageId, OrganisationId};
use shared::phone::PhoneNumber;
use sqlx::{AnyConnection, Row};
use zeroize::Zeroizing;

use super::{StoreError, StoreResult, row};

/// Purpose label of sealed SMS bodies (see `docs/PROTOCOL.md`, relay data at rest).
const SMS_BODY: &str = "sms-body";

/// An SMS's number and text, sealed with the relay's data key: the only form in which either is
/// stored (the number is PHI, the text carries the link).
#[derive(Debug)]
pub struct SealedSms {
    to: Vec<u8>,
    body: Vec<u8>,
}

impl SealedSms {
    /// Seals a number and a text for the outbox.
    pub fn seal(key: &DataKey, to: &PhoneNumber, body: &str) -> Self {
        Self {
            to: to.seal(key, &mut OsRng),
            body: key.seal(SMS_BODY, body.as_bytes(), &mut OsRng),
        }
    }
}

/// A claimed SMS, ready to send.
#[derive(Debug)]
pub struct OutboxRow {
    /// Outbox row id (also sent to the provider as our reference).
    pub id: String,
    /// The message the SMS announces.
    pub message_id: MessageId,
    /// Its sender.
    pub organisation_id: OrganisationId,
    /// Number and text, sealed.
    pub sealed: SealedSms,
    /// Attempts including this one.
    pub attempts: u32,
}

impl OutboxRow {
    /// Opens the number and the text. Data that does not open (another data key, a damaged
    /// row) never will.
    pub fn open(&self, key: &DataKey) -> StoreResult<(PhoneNumber, Zeroizing<String>)> {
        let to = PhoneNumber::open(key, &self.sealed.to)
            .map_err(|e| StoreError::corrupt("outbox number", e))?;
        let body = key
            .open(SMS_BODY, &self.sealed.body)
            .map_err(|e| StoreError::corrupt("outbox body", e))?;
        let body =
            String::from_utf8(body.to_vec()).map_err(|e| StoreError::corrupt("outbox body", e))?;
        Ok((to, Zeroizing::new(body)))
    }
}

/// Queues an SMS.
pub async fn enqueue(
    conn: &mut AnyConnection,
    id: &str,
    message: MessageId,
    organisation: OrganisationId,
    sms: &SealedSms,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sms_outbox (id, message_id, organisation_id, to_sealed, body_sealed, status, \
         next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6)",
    )
    .bind(id)
    .bind(message.to_string())
    .bind(organisation.to_string())
    .bind(sms.to.clone())
    .bind(sms.body.clone())
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
) -> StoreResult<Option<OutboxRow>> {
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
        Ok(OutboxRow {
            id: row.try_get("id")?,
            message_id: row::parsed(&row, "message_id")?,
            organisation_id: row::parsed(&row, "organisation_id")?,
            sealed: SealedSms {
                to: row.try_get("to_sealed")?,
                body: row.try_get("body_sealed")?,
            },
            attempts: row::count(&row, "attempts")?,
        })
    })
    .transpose()
}

/// Records a successful hand-over to the provider and wipes the body (it carries the link).
pub async fn mark_sent(conn: &mut AnyConnection, id: &str, provider_id: &str) -> StoreResult<()> {
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
) -> StoreResult<()> {
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
pub async fn mark_failed(conn: &mut AnyConnection, id: &str, error: &str) -> StoreResult<()> {
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
pub async fn cancel_for_ended_messages(conn: &mut AnyConnection, now: i64) -> StoreResult<u64> {
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

/// What a delivery report changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// No SMS has this provider id.
    UnknownSms,
    /// The SMS has a final status already (a retried, replayed or contradicting report).
    Repeat,
    /// The first final status of the SMS of this message and organisation.
    New(MessageId, OrganisationId),
}

/// Records a final delivery report. The first one wins: Twilio retries callbacks, a captured
/// callback can be replayed, and a final status does not change, so a report for an SMS that
/// already has one — the same status or another — is a [`Delivery::Repeat`].
pub async fn record_delivery(
    conn: &mut AnyConnection,
    provider_id: &str,
    status: &str,
) -> StoreResult<Delivery> {
    let Some((message, organisation)) = by_provider_id(&mut *conn, provider_id).await? else {
        return Ok(Delivery::UnknownSms);
    };
    let changed = sqlx::query(
        "UPDATE sms_outbox SET delivery_status = $1 \
         WHERE provider_id = $2 AND delivery_status IS NULL",
    )
    .bind(status)
    .bind(provider_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(if changed > 0 {
        Delivery::New(message, organisation)
    } else {
        Delivery::Repeat
    })
}

/// The message and organisation of the SMS the provider knows by `provider_id`.
pub async fn by_provider_id(
    conn: &mut AnyConnection,
    provider_id: &str,
) -> StoreResult<Option<(MessageId, OrganisationId)>> {
    let row =
        sqlx::query("SELECT message_id, organisation_id FROM sms_outbox WHERE provider_id = $1")
            .bind(provider_id)
            .fetch_optional(conn)
            .await?;
    row.map(|row| {
        Ok((
            row::parsed(&row, "message_id")?,
            row::parsed(&row, "organisation_id")?,
        ))
    })
    .transpose()
}

/// SMS waiting to be sent (for metrics).
pub async fn pending_count(conn: &mut AnyConnection) -> StoreResult<i64> {
    Ok(
        sqlx::query("SELECT COUNT(*) AS n FROM sms_outbox WHERE status = 'pending'")
            .fetch_one(conn)
            .await?
            .try_get("n")?,
    )
}
