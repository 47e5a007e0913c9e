//! The append-only, hash-chained audit log (format in `shared::audit`).

use std::collections::HashMap;

use shared::audit::{AuditEvent, AuditKind};
use shared::ids::{MessageId, OrganisationId, RecipientId};
use sqlx::AnyConnection;

use super::{ROWS_PER_STATEMENT, StoreError, StoreResult, Tx, row, to_json, value_rows};

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

/// Takes the lock of `organisation`'s chain until the transaction ends (PostgreSQL: its row,
/// `FOR UPDATE`; SQLite has a single writer), so that concurrent relays append in turn.
///
/// A transaction that inserts rows referencing the organisation (messages, outbox rows, API
/// keys) and then appends must call this *first*: PostgreSQL's foreign-key check of each insert
/// takes a `KEY SHARE` lock on the organisation row, and upgrading it to the append's
/// `FOR UPDATE` while another transaction already waits for that row is a deadlock, which
/// PostgreSQL resolves by failing one of them (seen under load as `500`s).
///
/// The lock order on PostgreSQL is therefore: the existing rows a transaction changes or
/// waits for (a patient, a message, an outbox row, a throttle counter) first, then the chains
/// of the organisations involved (in id order when several), then the inserts that reference an
/// organisation. A transaction taking a chain before a patient's row deadlocks with an unlock,
/// which changes the patient's row and then appends.
pub async fn lock_chain(tx: &mut Tx, organisation: OrganisationId) -> StoreResult<()> {
    tx.lock_row("organisations", &organisation.to_string())
        .await
}

/// Appends an event to its organisation's chain. Runs inside the transaction of the change it
/// records, and takes the chain's lock ([`lock_chain`]) unless the transaction holds it.
pub async fn append(tx: &mut Tx, record: Record<'_>, now: i64) -> StoreResult<AuditEvent> {
    Chains::default().append(tx, record, now).await
}

/// Appends many events, in order per organisation, with one read of each chain's end and
/// multi-row inserts: what one outbox turn records. The chains are locked in id order, the lock
/// order of [`lock_chain`].
pub async fn append_all(tx: &mut Tx, records: &[Record<'_>], now: i64) -> StoreResult<()> {
    let mut organisations: Vec<OrganisationId> = records.iter().map(|r| r.organisation).collect();
    organisations.sort();
    organisations.dedup();
    for organisation in organisations {
        lock_chain(tx, organisation).await?;
        let mut last = last_event(tx, organisation).await?;
        let mut events = Vec::new();
        for record in records.iter().filter(|r| r.organisation == organisation) {
            let event = chained(last.as_ref(), record, now)?;
            last = Some(event.clone());
            events.push(event);
        }
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            insert(tx, chunk).await?;
        }
    }
    Ok(())
}

/// The heads of the chains one transaction appends to, each read once: a batch of submissions
/// appends events one message at a time without re-reading the chain's end for each.
#[derive(Debug, Default)]
pub struct Chains {
    heads: HashMap<OrganisationId, Option<AuditEvent>>,
}

impl Chains {
    /// Appends an event to its organisation's chain (locking the chain on first use).
    pub async fn append(
        &mut self,
        tx: &mut Tx,
        record: Record<'_>,
        now: i64,
    ) -> StoreResult<AuditEvent> {
        let head = match self.heads.get(&record.organisation) {
            Some(head) => head.clone(),
            None => {
                lock_chain(tx, record.organisation).await?;
                last_event(tx, record.organisation).await?
            }
        };
        let event = chained(head.as_ref(), &record, now)?;
        insert(tx, std::slice::from_ref(&event)).await?;
        self.heads.insert(record.organisation, Some(event.clone()));
        Ok(event)
    }

    /// Appends events, each `(record, time)`, in order per organisation, with multi-row
    /// inserts: what a batch of submissions records. Chains not yet used by this transaction
    /// are locked in id order (the lock order of [`lock_chain`]).
    pub async fn append_many(
        &mut self,
        tx: &mut Tx,
        records: &[(Record<'_>, i64)],
    ) -> StoreResult<()> {
        let mut unread: Vec<OrganisationId> = records
            .iter()
            .map(|(record, _)| record.organisation)
            .filter(|organisation| !self.heads.contains_key(organisation))
            .collect();
        unread.sort();
        unread.dedup();
        for organisation in unread {
            lock_chain(tx, organisation).await?;
            let head = last_event(tx, organisation).await?;
            self.heads.insert(organisation, head);
        }
        let mut events = Vec::with_capacity(records.len());
        for (record, now) in records {
            let head = self.heads.entry(record.organisation).or_default();
            let event = chained(head.as_ref(), record, *now)?;
            *head = Some(event.clone());
            events.push(event);
        }
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            insert(tx, chunk).await?;
        }
        Ok(())
    }
}

/// The newest event of an organisation's chain.
async fn last_event(tx: &mut Tx, organisation: OrganisationId) -> StoreResult<Option<AuditEvent>> {
    sqlx::query(
        "SELECT event FROM audit_events WHERE organisation_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(organisation.to_string())
    .fetch_optional(&mut **tx)
    .await?
    .map(|row| row::json::<AuditEvent>(&row, "event"))
    .transpose()
}

/// The event recording `record` after `last` (or the chain's first).
fn chained(last: Option<&AuditEvent>, record: &Record<'_>, now: i64) -> StoreResult<AuditEvent> {
    match last {
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
    .map_err(|e| StoreError::corrupt("audit chain", e))
}

/// Inserts events in one statement.
async fn insert(tx: &mut Tx, events: &[AuditEvent]) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO audit_events (organisation_id, seq, message_id, event) VALUES {}",
        value_rows(events.len(), 4)
    );
    let mut query = sqlx::query(&sql);
    for event in events {
        let seq = i64::try_from(event.seq).map_err(|e| StoreError::corrupt("audit seq", e))?;
        query = query
            .bind(event.organisation_id.to_string())
            .bind(seq)
            .bind(event.message_id.map(|m| m.to_string()))
            .bind(to_json(event)?);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

/// An organisation's events after `after_seq`, oldest first, at most `limit`.
pub async fn page(
    conn: &mut AnyConnection,
    organisation: OrganisationId,
    after_seq: u64,
    limit: u32,
) -> StoreResult<Vec<AuditEvent>> {
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
    .map(|row| row::json(row, "event"))
    .collect()
}

/// The events about one message, oldest first.
pub async fn for_message(
    conn: &mut AnyConnection,
    organisation: OrganisationId,
    message: MessageId,
) -> StoreResult<Vec<AuditEvent>> {
    sqlx::query(
        "SELECT event FROM audit_events WHERE organisation_id = $1 AND message_id = $2 ORDER BY seq",
    )
    .bind(organisation.to_string())
    .bind(message.to_string())
    .fetch_all(conn)
    .await?
    .iter()
    .map(|row| row::json(row, "event"))
    .collect()
}
