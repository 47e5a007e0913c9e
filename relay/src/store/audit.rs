//! The append-only, hash-chained audit log (format in `shared::audit`).

use shared::audit::{AuditEvent, AuditKind};
use shared::ids::{MessageId, OrganisationId, RecipientId};
use sqlx::{AnyConnection, Row};

use super::Backend;
use crate::error::AppError;

/// One event to record.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Whose log.
    pub organisation: OrganisationId,
    /// What happened.
    pub kind: AuditKind,
    /// Which message, if any.
    pub message: Option<MessageId>,
    /// Which patient, if any (an id, never a phone number).
    pub recipient: Option<RecipientId>,
    /// A short machine code; no PHI, no secrets.
    pub detail: &'a str,
}

impl<'a> Record<'a> {
    /// An event about a message.
    pub fn message(
        organisation: OrganisationId,
        kind: AuditKind,
        message: MessageId,
        recipient: RecipientId,
    ) -> Self {
        Self {
            organisation,
            kind,
            message: Some(message),
            recipient: Some(recipient),
            detail: "",
        }
    }

    /// The same event with a detail code.
    pub fn with_detail(self, detail: &'a str) -> Self {
        Self { detail, ..self }
    }
}

/// Appends an event to its organisation's chain. Must run inside the transaction of the change
/// it records; on PostgreSQL the organisation row is locked so that concurrent relays append in
/// turn (SQLite has a single writer).
pub async fn append(
    conn: &mut AnyConnection,
    backend: Backend,
    record: Record<'_>,
    now: i64,
) -> Result<AuditEvent, AppError> {
    let org = record.organisation.to_string();
    if backend == Backend::Postgres {
        sqlx::query("SELECT id FROM organisations WHERE id = $1 FOR UPDATE")
            .bind(&org)
            .fetch_optional(&mut *conn)
            .await?;
    }
    let last = sqlx::query(
        "SELECT event FROM audit_events WHERE organisation_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(&org)
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| parse(&row))
    .transpose()?;
    let event = match &last {
        Some(last) => last.next(
            now,
            record.kind,
            record.message,
            record.recipient,
            record.detail,
        ),
        None => AuditEvent::first(
            record.organisation,
            now,
            record.kind,
            record.message,
            record.recipient,
            record.detail,
        ),
    }
    .map_err(|e| AppError::Internal(format!("audit event: {e}")))?;
    let json = serde_json::to_string(&event).map_err(|e| AppError::Internal(e.to_string()))?;
    sqlx::query(
        "INSERT INTO audit_events (organisation_id, seq, message_id, event) VALUES ($1, $2, $3, $4)",
    )
    .bind(&org)
    .bind(i64::try_from(event.seq).map_err(|_| AppError::Internal("audit seq overflow".into()))?)
    .bind(record.message.map(|m| m.to_string()))
    .bind(json)
    .execute(conn)
    .await?;
    Ok(event)
}

fn parse(row: &sqlx::any::AnyRow) -> Result<AuditEvent, AppError> {
    let json: String = row.try_get("event")?;
    serde_json::from_str(&json).map_err(|e| AppError::Internal(format!("stored audit event: {e}")))
}

/// An organisation's events after `after_seq`, oldest first, at most `limit`.
pub async fn page(
    conn: &mut AnyConnection,
    organisation: OrganisationId,
    after_seq: u64,
    limit: u32,
) -> Result<Vec<AuditEvent>, AppError> {
    sqlx::query(
        "SELECT event FROM audit_events WHERE organisation_id = $1 AND seq > $2 \
         ORDER BY seq LIMIT $3",
    )
    .bind(organisation.to_string())
    .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?
    .iter()
    .map(parse)
    .collect()
}

/// The events about one message, oldest first.
pub async fn for_message(
    conn: &mut AnyConnection,
    organisation: OrganisationId,
    message: MessageId,
) -> Result<Vec<AuditEvent>, AppError> {
    sqlx::query(
        "SELECT event FROM audit_events WHERE organisation_id = $1 AND message_id = $2 ORDER BY seq",
    )
    .bind(organisation.to_string())
    .bind(message.to_string())
    .fetch_all(conn)
    .await?
    .iter()
    .map(parse)
    .collect()
}
