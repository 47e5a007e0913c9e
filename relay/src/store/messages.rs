//! Messages (sealed envelopes) and the SMS links that lead to them.
//!
//! The envelope is stored sealed under the message's row key (see [`super::row_keys`]), so
//! that deleting that key when the message is revoked or expires erases every copy the
//! database may keep.

use std::collections::{HashMap, HashSet};

use rand_core::OsRng;
use shared::at_rest::RowKey;
use shared::envelope::Envelope;
use shared::identity_check::CheckKind;
use shared::ids::{MessageId, OrganisationId, RecipientId, SessionId};
use shared::keys::{Fingerprint, PublicKey};
use shared::token::TokenHash;
use sqlx::{AnyConnection, Row};

use super::row_keys::{self, Kind};
use super::{
    ROWS_PER_STATEMENT, Store, StoreError, StoreResult, placeholders, row, to_json, value_rows,
};

/// Purpose label of envelopes sealed under a row key (see `docs/PROTOCOL.md`).
const ENVELOPE: &str = "envelope";

pub use shared::api::MessageStatus;

fn parse_status(text: &str) -> StoreResult<MessageStatus> {
    [
        MessageStatus::Active,
        MessageStatus::Revoked,
        MessageStatus::Expired,
    ]
    .into_iter()
    .find(|status| status.as_str() == text)
    .ok_or_else(|| StoreError::corrupt("message status", text))
}

/// A stored message.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Its id (chosen by the sender, bound in the header).
    pub id: MessageId,
    /// Sender.
    pub organisation_id: OrganisationId,
    /// Patient.
    pub recipient_id: RecipientId,
    /// The envelope; `None` once purged.
    pub envelope: Option<Envelope>,
    /// Which recipient key the envelope is wrapped to, if any.
    pub recipient_wrap: Option<Fingerprint>,
    /// Life-cycle state.
    pub status: MessageStatus,
    /// When it was accepted.
    pub created_at: i64,
    /// When it expires.
    pub expires_at: i64,
    /// First time the viewer opened its link.
    pub opened_at: Option<i64>,
    /// First read receipt.
    pub read_at: Option<i64>,
    /// The patient's enrollment epoch when the message was accepted: its link may enroll only
    /// while the patient is still at that epoch (see `recipients::reset_enrollment`).
    pub enrollment_epoch: i64,
    /// What its link asks the patient before enrolling, if anything.
    pub identity_check: Option<CheckKind>,
}

impl StoredMessage {
    /// The status the patient and sender see at `now` (expiry may precede the purge job).
    pub fn status_at(&self, now: i64) -> MessageStatus {
        match self.status {
            MessageStatus::Active if shared::envelope::is_expired(self.expires_at, now) => {
                MessageStatus::Expired
            }
            status => status,
        }
    }
}

const COLUMNS: &str = "m.id, m.organisation_id, m.recipient_id, m.envelope_sealed, \
                       k.key AS envelope_key, m.recipient_wrap_fingerprint, m.status, \
                       m.created_at, m.expires_at, m.opened_at, m.read_at, \
                       m.enrollment_epoch, m.identity_check";

/// `messages m` with the row key of each message (absent once purged).
const MESSAGES: &str = "messages m LEFT JOIN row_keys k ON k.kind = 'message' AND k.row_id = m.id";

fn parse(row: &sqlx::any::AnyRow) -> StoreResult<StoredMessage> {
    let id: MessageId = row::parsed(row, "id")?;
    let sealed: Option<Vec<u8>> = row.try_get("envelope_sealed")?;
    let key: Option<Vec<u8>> = row.try_get("envelope_key")?;
    // Both are there for a live message and gone once it is purged; a sealed envelope without
    // its key is a purge that has not finished, which reads as purged.
    let envelope = match (sealed, key) {
        (Some(sealed), Some(key)) => Some(open_envelope(&row_keys::decode(&key)?, id, &sealed)?),
        _ => None,
    };
    Ok(StoredMessage {
        id,
        organisation_id: row::parsed(row, "organisation_id")?,
        recipient_id: row::parsed(row, "recipient_id")?,
        envelope,
        recipient_wrap: row::parsed_opt(row, "recipient_wrap_fingerprint")?,
        status: parse_status(&row.try_get::<String, _>("status")?)?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        opened_at: row.try_get("opened_at")?,
        read_at: row.try_get("read_at")?,
        enrollment_epoch: row.try_get("enrollment_epoch")?,
        identity_check: row
            .try_get::<Option<String>, _>("identity_check")?
            .as_deref()
            .map(super::checks::parse_kind)
            .transpose()?,
    })
}

/// The envelope JSON sealed under the message's row key.
fn seal_envelope(key: &RowKey, envelope: &Envelope) -> StoreResult<Vec<u8>> {
    let id = envelope.header.message_id.to_string();
    Ok(key.seal(ENVELOPE, &id, to_json(envelope)?.as_bytes(), &mut OsRng))
}

fn open_envelope(key: &RowKey, id: MessageId, sealed: &[u8]) -> StoreResult<Envelope> {
    let json = key
        .open(ENVELOPE, &id.to_string(), sealed)
        .map_err(|e| StoreError::corrupt("envelope", e))?;
    serde_json::from_slice(&json).map_err(|e| StoreError::corrupt("envelope", e))
}

/// A message about to be stored.
#[derive(Debug)]
pub struct NewMessage<'a> {
    /// The validated envelope.
    pub envelope: &'a Envelope,
    /// Patient.
    pub recipient_id: RecipientId,
    /// Sender's idempotency key.
    pub idempotency_key: Option<&'a str>,
    /// Hash of the SMS link token.
    pub link: TokenHash,
    /// Acceptance time.
    pub now: i64,
    /// What the link asks before enrolling.
    pub identity_check: Option<CheckKind>,
}

/// Stores messages and their links, with one statement per [`ROWS_PER_STATEMENT`] and table;
/// the ids written. A message whose id or idempotency key is taken (a concurrent submission
/// through another relay won the race) is left out, and nothing of it is written.
pub async fn insert_all(
    conn: &mut AnyConnection,
    messages: &[NewMessage<'_>],
) -> StoreResult<HashSet<MessageId>> {
    let mut inserted = HashSet::with_capacity(messages.len());
    let mut keys = HashMap::with_capacity(messages.len());
    for chunk in messages.chunks(ROWS_PER_STATEMENT) {
        // Nine parameters a row; the patient's epoch is read under the lock the batch holds.
        let rows: Vec<String> = (0..chunk.len())
            .map(|n| {
                let p = 9 * n;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, 'active', ${}, ${}, \
                     (SELECT enrollment_epoch FROM recipients WHERE id = ${}), ${}, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 7,
                    p + 3,
                    p + 8,
                    p + 9,
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO messages (id, organisation_id, recipient_id, idempotency_key, \
             recipient_wrap_fingerprint, status, created_at, expires_at, enrollment_epoch, \
             identity_check, envelope_sealed) VALUES {} ON CONFLICT DO NOTHING RETURNING id",
            rows.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for message in chunk {
            let header = &message.envelope.header;
            let wrap = message
                .envelope
                .wrap_for(shared::envelope::WrapRole::Recipient)
                .map(|w| w.key_fingerprint.to_string());
            // The row key is stored below only if the row is: a message left out leaves no key.
            let key = RowKey::random(&mut OsRng);
            query = query
                .bind(header.message_id.to_string())
                .bind(header.organisation_id.to_string())
                .bind(message.recipient_id.to_string())
                .bind(message.idempotency_key)
                .bind(wrap)
                .bind(message.now)
                .bind(header.expires_at)
                .bind(message.identity_check.map(CheckKind::as_str))
                .bind(seal_envelope(&key, message.envelope)?);
            keys.insert(header.message_id, key);
        }
        for row in query.fetch_all(&mut *conn).await? {
            inserted.insert(row::parsed::<MessageId>(&row, "id")?);
        }
    }
    let written: Vec<&NewMessage<'_>> = messages
        .iter()
        .filter(|m| inserted.contains(&m.envelope.header.message_id))
        .collect();
    let row_keys: Vec<(String, &RowKey)> = written
        .iter()
        .map(|m| {
            let id = m.envelope.header.message_id;
            (id.to_string(), &keys[&id])
        })
        .collect();
    row_keys::insert_all(&mut *conn, Kind::Message, &row_keys).await?;
    for chunk in written.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO links (token_hash, message_id) VALUES {}",
            value_rows(chunk.len(), 2)
        );
        let mut query = sqlx::query(&sql);
        for message in chunk {
            query = query
                .bind(message.link.as_bytes().to_vec())
                .bind(message.envelope.header.message_id.to_string());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(inserted)
}

/// Which of these message ids are taken (by any organisation).
pub async fn taken(conn: &mut AnyConnection, ids: &[MessageId]) -> StoreResult<HashSet<MessageId>> {
    let mut taken = HashSet::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT id FROM messages WHERE id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id.to_string());
        }
        for row in query.fetch_all(&mut *conn).await? {
            taken.insert(row::parsed(&row, "id")?);
        }
    }
    Ok(taken)
}

/// A message by id.
pub async fn get(conn: &mut AnyConnection, id: MessageId) -> StoreResult<Option<StoredMessage>> {
    sqlx::query(&format!("SELECT {COLUMNS} FROM {MESSAGES} WHERE m.id = $1"))
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?
        .map(|row| parse(&row))
        .transpose()
}

/// The messages an organisation already stored under any of these idempotency keys, by key.
pub async fn by_idempotency_keys(
    conn: &mut AnyConnection,
    organisation: OrganisationId,
    keys: &[&str],
) -> StoreResult<HashMap<String, StoredMessage>> {
    let mut found = HashMap::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT {COLUMNS}, m.idempotency_key FROM {MESSAGES} \
             WHERE m.organisation_id = $1 AND m.idempotency_key IN ({})",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(organisation.to_string());
        for key in chunk {
            query = query.bind(*key);
        }
        for row in query.fetch_all(&mut *conn).await? {
            found.insert(row.try_get("idempotency_key")?, parse(&row)?);
        }
    }
    Ok(found)
}

/// The message an organisation already stored under an idempotency key.
pub async fn by_idempotency_key(
    conn: &mut AnyConnection,
    organisation: OrganisationId,
    key: &str,
) -> StoreResult<Option<StoredMessage>> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {MESSAGES} WHERE m.organisation_id = $1 AND m.idempotency_key = $2"
    ))
    .bind(organisation.to_string())
    .bind(key)
    .fetch_optional(conn)
    .await?
    .map(|row| parse(&row))
    .transpose()
}

/// The message an SMS link leads to.
pub async fn by_link(
    conn: &mut AnyConnection,
    link: &TokenHash,
) -> StoreResult<Option<StoredMessage>> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {MESSAGES} JOIN links l ON l.message_id = m.id WHERE l.token_hash = $1"
    ))
    .bind(link.as_bytes().to_vec())
    .fetch_optional(conn)
    .await?
    .map(|row| parse(&row))
    .transpose()
}

/// The statement of [`live_for_recipient`] (`$1` patient, `$2` organisation, `$3` now): the
/// viewer's list, the relay's most frequent read. Public so that a test can hold SQLite's plan
/// for it to the patient index (migration 0010).
pub fn live_for_recipient_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM {MESSAGES} WHERE m.recipient_id = $1 AND m.organisation_id = $2 \
         AND m.status = 'active' AND m.expires_at > $3 ORDER BY m.created_at DESC, m.id"
    )
}

/// A patient's deliverable messages from `organisation`, newest first. A patient record is one
/// organisation's; only one stored before migration 0008 can hold other organisations'
/// messages, and a session opened through one organisation's link never lists those.
pub async fn live_for_recipient(
    conn: &mut AnyConnection,
    recipient: RecipientId,
    organisation: OrganisationId,
    now: i64,
) -> StoreResult<Vec<StoredMessage>> {
    sqlx::query(&live_for_recipient_sql())
        .bind(recipient.to_string())
        .bind(organisation.to_string())
        .bind(now)
        .fetch_all(conn)
        .await?
        .iter()
        .map(parse)
        .collect()
}

/// A message waiting for its sender to wrap the content key to the patient's current key.
#[derive(Debug)]
pub struct PendingRewrap {
    /// The message.
    pub message: StoredMessage,
    /// The patient's current public key.
    pub recipient_key: PublicKey,
}

/// An organisation's live messages whose patient is enrolled under a key the message is not
/// wrapped to (first contact, or re-enrollment).
pub async fn pending_rewraps(
    conn: &mut AnyConnection,
    organisation: OrganisationId,
    now: i64,
) -> StoreResult<Vec<PendingRewrap>> {
    sqlx::query(&format!(
        "SELECT {COLUMNS}, r.public_key AS recipient_key FROM {MESSAGES} \
         JOIN recipients r ON r.id = m.recipient_id \
         WHERE m.organisation_id = $1 AND m.status = 'active' AND m.expires_at > $2 \
         AND r.enrolled_at IS NOT NULL \
         AND (m.recipient_wrap_fingerprint IS NULL OR m.recipient_wrap_fingerprint <> r.fingerprint) \
         ORDER BY m.created_at, m.id"
    ))
    .bind(organisation.to_string())
    .bind(now)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|row| {
        let der: Vec<u8> = row.try_get("recipient_key")?;
        Ok(PendingRewrap {
            message: parse(row)?,
            recipient_key: PublicKey::from_spki_der(&der)
                .map_err(|e| StoreError::corrupt("recipient key", e))?,
        })
    })
    .collect()
}

/// Replaces the envelope of active message `id` after a re-wrap, sealed under the message's
/// row key. (Its id is given apart from the envelope's header so that a test can store an
/// envelope under another message, as a malicious relay could.)
pub async fn set_envelope(
    conn: &mut AnyConnection,
    id: MessageId,
    envelope: &Envelope,
    recipient_wrap: Fingerprint,
) -> StoreResult<()> {
    let id_text = id.to_string();
    let Some(key) = row_keys::get(&mut *conn, Kind::Message, &id_text).await? else {
        // Purged: nothing to replace, as for a message that is no longer active.
        return Ok(());
    };
    let json = to_json(envelope)?;
    let sealed = key.seal(ENVELOPE, &id_text, json.as_bytes(), &mut OsRng);
    sqlx::query(
        "UPDATE messages SET envelope_sealed = $1, recipient_wrap_fingerprint = $2 \
         WHERE id = $3 AND status = 'active'",
    )
    .bind(sealed)
    .bind(recipient_wrap.to_string())
    .bind(id_text)
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes an active message; `false` if it was not active.
pub async fn revoke(conn: &mut AnyConnection, id: MessageId, now: i64) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE messages SET status = 'revoked', ended_at = $1 WHERE id = $2 AND status = 'active'",
    )
    .bind(now)
    .bind(id.to_string())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Counts one open of the message's link (the first also sets `opened_at`) and returns how many
/// there have been.
pub async fn record_open(conn: &mut AnyConnection, id: MessageId, now: i64) -> StoreResult<u32> {
    let counted = sqlx::query(
        "UPDATE messages SET opens = opens + 1, opened_at = COALESCE(opened_at, $1) \
         WHERE id = $2 RETURNING opens",
    )
    .bind(now)
    .bind(id.to_string())
    .fetch_one(conn)
    .await?;
    row::count(&counted, "opens")
}

/// Records the first read receipt; `true` the first time.
pub async fn mark_read(conn: &mut AnyConnection, id: MessageId, now: i64) -> StoreResult<bool> {
    let done = sqlx::query("UPDATE messages SET read_at = $1 WHERE id = $2 AND read_at IS NULL")
        .bind(now)
        .bind(id.to_string())
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that viewer session `session` could not open message `id` safely; `true` the first
/// time for this message and session, so the audit event is written once however often the
/// page (or anyone holding the cookie) reports it.
pub async fn mark_unreadable(
    conn: &mut AnyConnection,
    id: MessageId,
    session: SessionId,
    now: i64,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "INSERT INTO unreadable_reports (message_id, session_id, reported_at) VALUES ($1, $2, $3) \
         ON CONFLICT (message_id, session_id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(session.to_string())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks due messages expired and purges their ciphertext; returns them for auditing. (Their
/// row keys go in the same purge run, by [`row_keys::delete_ended`].)
pub async fn expire_due(
    conn: &mut AnyConnection,
    now: i64,
) -> StoreResult<Vec<(MessageId, OrganisationId, RecipientId)>> {
    let rows = sqlx::query(
        "UPDATE messages SET status = 'expired', envelope_sealed = NULL, ended_at = $1 \
         WHERE status = 'active' AND expires_at <= $1 \
         RETURNING id, organisation_id, recipient_id",
    )
    .bind(now)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row::parsed(row, "id")?,
                row::parsed(row, "organisation_id")?,
                row::parsed(row, "recipient_id")?,
            ))
        })
        .collect()
}

/// Purges the ciphertext of revoked messages; returns how many. (Their row keys go in the same
/// purge run, by [`row_keys::delete_ended`].)
pub async fn purge_revoked(conn: &mut AnyConnection) -> StoreResult<u64> {
    Ok(sqlx::query(
        "UPDATE messages SET envelope_sealed = NULL \
         WHERE status = 'revoked' AND envelope_sealed IS NOT NULL",
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// The organisations that have messaged a patient (whose audit logs record patient events), in
/// id order: the order a transaction appending to several of their chains locks them in, so
/// that two such transactions cannot deadlock.
pub async fn organisations_of_recipient(
    conn: &mut AnyConnection,
    recipient: RecipientId,
) -> StoreResult<Vec<OrganisationId>> {
    sqlx::query(
        "SELECT DISTINCT organisation_id FROM messages WHERE recipient_id = $1 \
         ORDER BY organisation_id",
    )
    .bind(recipient.to_string())
    .fetch_all(conn)
    .await?
    .iter()
    .map(|row| row::parsed(row, "organisation_id"))
    .collect()
}

/// Seals the envelopes stored before row keys existed (migration 0005 moved them to
/// `legacy_envelope`) under fresh row keys and empties the old column; returns how many.
///
/// Done once, at start, in Rust because sealing needs the relay's cryptography, and eagerly so
/// that every other statement reads one format. Each message is converted in its own
/// transaction and only while its old column is still set, so relays starting together on one
/// PostgreSQL database convert each message once. A message revoked but not yet purged by the
/// earlier version is converted too, and erased by the next purge run like any other.
pub async fn seal_legacy_envelopes(store: &Store) -> StoreResult<u64> {
    let ids: Vec<String> = {
        let mut conn = store.conn().await?;
        sqlx::query("SELECT id FROM messages WHERE legacy_envelope IS NOT NULL")
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?
    };
    let mut converted = 0;
    for id in ids {
        let mut tx = store.begin().await?;
        tx.lock_row("messages", &id).await?;
        let row = sqlx::query("SELECT legacy_envelope FROM messages WHERE id = $1")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(json) = row
            .map(|row| row.try_get::<Option<String>, _>("legacy_envelope"))
            .transpose()?
            .flatten()
        else {
            continue;
        };
        let key = row_keys::create(&mut tx, Kind::Message, &id).await?;
        sqlx::query(
            "UPDATE messages SET envelope_sealed = $1, legacy_envelope = NULL WHERE id = $2",
        )
        .bind(key.seal(ENVELOPE, &id, json.as_bytes(), &mut OsRng))
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        converted += 1;
    }
    Ok(converted)
}
