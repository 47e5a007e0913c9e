//! The transactional SMS outbox: a row is written in the same transaction as its message, and
//! workers on any relay instance claim due rows with a lease, so an accepted message's SMS
//! survives restarts and provider outages and is sent once.
//!
//! # Claims
//! A worker claims a batch of due rows with one statement ([`claim_due`]) that sets their lease
//! (`claimed_until`) and counts the attempt. On PostgreSQL the rows are picked with
//! `FOR UPDATE SKIP LOCKED`, so that relays claiming at the same moment take disjoint batches
//! without waiting for each other; SQLite has one writer, so the statement is atomic as it is.
//! A claimed row is invisible to every other claim until its lease ends or its result is
//! recorded; [`release`] ends a lease early for rows never handed to the provider.

use rand_core::OsRng;
use shared::at_rest::DataKey;
use shared::ids::{MessageId, OrganisationId};
use shared::phone::PhoneNumber;
use sqlx::{AnyConnection, Row};
use zeroize::Zeroizing;

use super::{
    Backend, ROWS_PER_STATEMENT, StoreError, StoreResult, Tx, placeholders, row, value_rows,
};

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

/// An SMS to queue.
#[derive(Debug)]
pub struct NewSms {
    /// Its outbox id.
    pub id: String,
    /// The message it links to.
    pub message: MessageId,
    /// The sender.
    pub organisation: OrganisationId,
    /// Number and text, sealed.
    pub sms: SealedSms,
    /// When it was queued (due at once).
    pub now: i64,
}

/// Queues SMS, with one statement per [`ROWS_PER_STATEMENT`].
pub async fn enqueue(conn: &mut AnyConnection, queued: &[NewSms]) -> StoreResult<()> {
    for chunk in queued.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO sms_outbox (id, message_id, organisation_id, to_sealed, body_sealed, \
             status, next_attempt_at, created_at) VALUES {}",
            value_rows(chunk.len(), 8)
        );
        let mut query = sqlx::query(&sql);
        for new in chunk {
            query = query
                .bind(&new.id)
                .bind(new.message.to_string())
                .bind(new.organisation.to_string())
                .bind(new.sms.to.clone())
                .bind(new.sms.body.clone())
                .bind("pending")
                .bind(new.now)
                .bind(new.now);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Claims up to `limit` of the oldest due SMS for `lease_seconds`, counting an attempt for
/// each, in one statement. Rows locked by another relay's claim are skipped (PostgreSQL), and
/// the update re-checks every picked row, so two relay instances never claim the same row. Runs inside the caller's transaction, which commits before any SMS is sent.
pub async fn claim_due(
    tx: &mut Tx,
    now: i64,
    lease_seconds: i64,
    limit: usize,
) -> StoreResult<Vec<OutboxRow>> {
    let skip_locked = match tx.backend {
        Backend::Postgres => " FOR UPDATE OF o SKIP LOCKED",
        Backend::Sqlite => "",
    };
    // The picked ids are materialised first: as a plain `IN (subquery)`, PostgreSQL may run
    // the locking subquery again for each outer row and claim more rows than `limit`.
    //
    // Not prepared (`persistent(false)`): a prepared statement on the relay's long-lived
    // connections gets PostgreSQL's generic plan, made without the parameters' values, which
    // for a backlog of thousands took 2-19 s per claim (3 SMS/s, docs/BENCHMARKS.md) where the
    // planner's plan for the actual values takes tens of milliseconds.
    let rows = sqlx::query(&format!(
        "WITH due AS MATERIALIZED (\
             SELECT o.id FROM sms_outbox o JOIN messages m ON m.id = o.message_id \
             WHERE o.status = 'pending' AND o.next_attempt_at <= $1 \
             AND o.claimed_until <= $1 AND m.status = 'active' AND m.expires_at > $1 \
             ORDER BY o.created_at, o.id LIMIT $3{skip_locked}) \
         UPDATE sms_outbox SET claimed_until = $2, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM due) AND status = 'pending' AND claimed_until <= $1 \
         RETURNING id, message_id, organisation_id, to_sealed, body_sealed, attempts"
    ))
    .persistent(false)
    .bind(now)
    .bind(now + lease_seconds)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(OutboxRow {
                id: row.try_get("id")?,
                message_id: row::parsed(row, "message_id")?,
                organisation_id: row::parsed(row, "organisation_id")?,
                sealed: SealedSms {
                    to: row.try_get("to_sealed")?,
                    body: row.try_get("body_sealed")?,
                },
                attempts: row::count(row, "attempts")?,
            })
        })
        .collect()
}

/// Ends the lease of claimed rows that were never handed to the provider and uncounts their
/// attempt, so that any instance sends them at once.
pub async fn release(conn: &mut AnyConnection, ids: &[&str]) -> StoreResult<()> {
    let sql = format!(
        "UPDATE sms_outbox SET claimed_until = 0, attempts = attempts - 1 \
         WHERE status = 'pending' AND id IN ({})",
        placeholders(1, ids.len())
    );
    let mut query = sqlx::query(&sql);
    for id in ids {
        query = query.bind(*id);
    }
    query.execute(conn).await?;
    Ok(())
}

/// Records successful hand-overs to the provider, `(outbox id, provider id)` each, and wipes
/// their bodies (they carry the link), with one statement per 200 SMS.
pub async fn mark_sent(conn: &mut AnyConnection, sent: &[(&str, &str)]) -> StoreResult<()> {
    for chunk in sent.chunks(200) {
        let cases: Vec<String> = (0..chunk.len())
            .map(|n| format!("WHEN ${} THEN ${}", 2 * n + 1, 2 * n + 2))
            .collect();
        let ids: Vec<String> = (0..chunk.len())
            .map(|n| format!("${}", 2 * n + 1))
            .collect();
        let sql = format!(
            "UPDATE sms_outbox SET status = 'sent', body_sealed = NULL, last_error = NULL, \
             provider_id = CASE id {} END WHERE id IN ({})",
            cases.join(" "),
            ids.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for (id, provider_id) in chunk {
            query = query.bind(*id).bind(*provider_id);
        }
        query.execute(&mut *conn).await?;
    }
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
