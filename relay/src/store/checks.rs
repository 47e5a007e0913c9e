//! Identity-check attempts: the enrollments that wait for the sender's agent to verify the
//! patient's answer (issue 10, part 2; `docs/PROTOCOL.md`, "Enrollment check").
//!
//! The relay relays a PAKE between the patient's browser and the agent and learns nothing that
//! tests a guess: it stores the exchange's public messages and confirmations, and holds the
//! candidate enrollment exactly as `recipients` would hold it (public key, password record
//! sealed under the data key, peppered verifier) until the agent decides.
//!
//! # Invariants
//! - A message accepts at most [`MAX_ATTEMPTS`] attempts, counted by its rows: every answer
//!   typed counts, whether it was ever confirmed or not.
//! - Nothing an attempt carries reaches the patient's record until the agent's verdict says it
//!   verified ([`decide`]); a failed attempt erases its candidate enrollment.
//! - The progress only moves forward: awaiting_sender → answered → confirmed → verified or
//!   failed (the agent may also fail an attempt at any undecided step).

use shared::api::{CheckProgress, Confirmation, PakeMessage, PendingCheck};
use shared::at_rest::DataKey;
use shared::identity_check::{CheckKind, MAX_ATTEMPTS};
use shared::ids::{CheckAttemptId, MessageId, OrganisationId, RecipientId};
use shared::keys::PublicKey;
use sqlx::{AnyConnection, Row};

use super::recipients::{self, NewEnrollment, SealedEnrollment};
use super::{StoreError, StoreResult, row};

/// How long an attempt may stay undecided: far longer than an exchange takes (seconds), and
/// longer than the viewer waits for the agent. After it, or once its message ended, the purge
/// fails the attempt and erases its held enrollment ([`abandon_stale`]).
pub const ATTEMPT_LIFETIME_SECONDS: i64 = 600;

/// A stored attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Its id.
    pub id: CheckAttemptId,
    /// The message whose link it answers.
    pub message_id: MessageId,
    /// The sender.
    pub organisation_id: OrganisationId,
    /// The patient.
    pub recipient_id: RecipientId,
    /// The patient's enrollment epoch when it was made (a reset meanwhile voids it).
    pub enrollment_epoch: i64,
    /// The key it asks to enroll.
    pub public_key: PublicKey,
    /// Where it is.
    pub progress: CheckProgress,
    /// The patient's exchange message.
    pub patient_message: PakeMessage,
    /// The agent's, once answered.
    pub agent_message: Option<PakeMessage>,
    /// The agent's confirmation, once answered.
    pub agent_confirmation: Option<Confirmation>,
    /// The patient's confirmation, once sent.
    pub patient_confirmation: Option<Confirmation>,
}

impl Attempt {
    /// The attempt as the agent is shown it.
    pub fn pending(&self) -> PendingCheck {
        PendingCheck {
            attempt_id: self.id,
            message_id: self.message_id,
            recipient_id: self.recipient_id,
            recipient_fingerprint: self.public_key.fingerprint(),
            recipient_public_key: self.public_key.clone(),
            patient_message: self.patient_message.clone(),
            agent_message: self.agent_message.clone(),
            patient_confirmation: self.patient_confirmation.clone(),
        }
    }
}

/// The stored form of a check kind (also `messages.identity_check`).
pub fn parse_kind(text: &str) -> StoreResult<CheckKind> {
    [
        CheckKind::DateOfBirth,
        CheckKind::Code,
        CheckKind::DateOfBirthAndCode,
    ]
    .into_iter()
    .find(|kind| kind.as_str() == text)
    .ok_or_else(|| StoreError::corrupt("identity check kind", text))
}

fn parse_progress(text: &str) -> StoreResult<CheckProgress> {
    [
        CheckProgress::AwaitingSender,
        CheckProgress::Answered,
        CheckProgress::Confirmed,
        CheckProgress::Verified,
        CheckProgress::Failed,
    ]
    .into_iter()
    .find(|progress| progress.as_str() == text)
    .ok_or_else(|| StoreError::corrupt("check progress", text))
}

/// A wire value that serialises as one JSON string (base64url), as stored text.
fn text<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    match serde_json::to_value(value).map_err(|e| StoreError::corrupt("check field", e))? {
        serde_json::Value::String(text) => Ok(text),
        _ => Err(StoreError::corrupt("check field", "not a string")),
    }
}

fn from_text<T: serde::de::DeserializeOwned>(text: Option<String>) -> StoreResult<Option<T>> {
    text.map(|text| {
        serde_json::from_value(serde_json::Value::String(text))
            .map_err(|e| StoreError::corrupt("check field", e))
    })
    .transpose()
}

const COLUMNS: &str = "id, message_id, organisation_id, recipient_id, enrollment_epoch, \
                       public_key, progress, patient_message, agent_message, \
                       agent_confirmation, patient_confirmation";

fn parse(row: &sqlx::any::AnyRow) -> StoreResult<Attempt> {
    let public_key: Vec<u8> = row.try_get("public_key")?;
    Ok(Attempt {
        id: row::parsed(row, "id")?,
        message_id: row::parsed(row, "message_id")?,
        organisation_id: row::parsed(row, "organisation_id")?,
        recipient_id: row::parsed(row, "recipient_id")?,
        enrollment_epoch: row.try_get("enrollment_epoch")?,
        public_key: PublicKey::from_spki_der(&public_key)
            .map_err(|e| StoreError::corrupt("public key", e))?,
        progress: parse_progress(&row.try_get::<String, _>("progress")?)?,
        patient_message: from_text(Some(row.try_get("patient_message")?))?
            .ok_or_else(|| StoreError::corrupt("check field", "missing"))?,
        agent_message: from_text(row.try_get("agent_message")?)?,
        agent_confirmation: from_text(row.try_get("agent_confirmation")?)?,
        patient_confirmation: from_text(row.try_get("patient_confirmation")?)?,
    })
}

/// Answers `message` still accepts.
pub async fn attempts_left(conn: &mut AnyConnection, message: MessageId) -> StoreResult<u32> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM enrollment_checks WHERE message_id = $1")
        .bind(message.to_string())
        .fetch_one(conn)
        .await?;
    Ok(MAX_ATTEMPTS.saturating_sub(row::count(&row, "n")?))
}

/// A new attempt.
#[derive(Debug)]
pub struct NewAttempt<'a> {
    /// Its id.
    pub id: CheckAttemptId,
    /// The message whose link it answers.
    pub message_id: MessageId,
    /// The sender.
    pub organisation_id: OrganisationId,
    /// The patient.
    pub recipient_id: RecipientId,
    /// The patient's enrollment epoch now.
    pub enrollment_epoch: i64,
    /// The enrollment it would make.
    pub enrollment: &'a NewEnrollment,
    /// The patient's exchange message.
    pub patient_message: &'a PakeMessage,
}

/// Stores an attempt (the caller has checked the attempts left, under the patient's lock).
pub async fn insert(
    conn: &mut AnyConnection,
    key: &DataKey,
    attempt: &NewAttempt<'_>,
) -> StoreResult<()> {
    let sealed = SealedEnrollment::seal(key, attempt.recipient_id, attempt.enrollment);
    sqlx::query(
        "INSERT INTO enrollment_checks (id, message_id, organisation_id, recipient_id, \
         enrollment_epoch, public_key, fingerprint, password_record, verifier, \
         patient_message, progress, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(attempt.id.to_string())
    .bind(attempt.message_id.to_string())
    .bind(attempt.organisation_id.to_string())
    .bind(attempt.recipient_id.to_string())
    .bind(attempt.enrollment_epoch)
    .bind(sealed.public_key)
    .bind(sealed.fingerprint)
    .bind(sealed.password_record)
    .bind(sealed.verifier)
    .bind(text(attempt.patient_message)?)
    .bind(CheckProgress::AwaitingSender.as_str())
    .bind(attempt.enrollment.enrolled_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The attempt with this id.
pub async fn get(conn: &mut AnyConnection, id: CheckAttemptId) -> StoreResult<Option<Attempt>> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM enrollment_checks WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(conn)
    .await?
    .map(|row| parse(&row))
    .transpose()
}

/// The organisation's attempts that wait for its agent (to answer, or to decide), oldest first,
/// of messages still live at `now`.
pub async fn pending_for(
    conn: &mut AnyConnection,
    organisation: OrganisationId,
    now: i64,
) -> StoreResult<Vec<Attempt>> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM enrollment_checks c WHERE c.organisation_id = $1 \
         AND c.progress IN ('awaiting_sender', 'confirmed') \
         AND EXISTS (SELECT 1 FROM messages m WHERE m.id = c.message_id \
                     AND m.status = 'active' AND m.expires_at > $2) \
         ORDER BY c.created_at, c.id LIMIT 100"
    ))
    .bind(organisation.to_string())
    .bind(now)
    .fetch_all(conn)
    .await?
    .iter()
    .map(parse)
    .collect()
}

/// Records the agent's answer; `false` if the attempt was not waiting for one.
pub async fn answer(
    conn: &mut AnyConnection,
    id: CheckAttemptId,
    message: &PakeMessage,
    confirmation: &Confirmation,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE enrollment_checks SET agent_message = $1, agent_confirmation = $2, \
         progress = 'answered' WHERE id = $3 AND progress = 'awaiting_sender'",
    )
    .bind(text(message)?)
    .bind(text(confirmation)?)
    .bind(id.to_string())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the patient's confirmation; `false` if the attempt was not waiting for one.
pub async fn confirm(
    conn: &mut AnyConnection,
    id: CheckAttemptId,
    confirmation: &Confirmation,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE enrollment_checks SET patient_confirmation = $1, progress = 'confirmed' \
         WHERE id = $2 AND progress = 'answered'",
    )
    .bind(text(confirmation)?)
    .bind(id.to_string())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the agent's verdict on an undecided attempt and erases its candidate enrollment.
/// A verified attempt first becomes the patient's enrollment; `Ok(false)` when the patient
/// cannot take it (enrolled meanwhile, or reset since the attempt), which then fails instead.
/// The caller holds the patient's lock.
pub async fn decide(
    conn: &mut AnyConnection,
    attempt: &Attempt,
    verified: bool,
    now: i64,
) -> StoreResult<bool> {
    let enrolled = verified
        && recipients::enroll_from_check(
            &mut *conn,
            attempt.recipient_id,
            attempt.enrollment_epoch,
            attempt.id,
            now,
        )
        .await?;
    let progress = if enrolled {
        CheckProgress::Verified
    } else {
        CheckProgress::Failed
    };
    sqlx::query(
        "UPDATE enrollment_checks SET progress = $1, decided_at = $2, password_record = NULL, \
         verifier = NULL WHERE id = $3",
    )
    .bind(progress.as_str())
    .bind(now)
    .bind(attempt.id.to_string())
    .execute(conn)
    .await?;
    Ok(enrolled)
}

/// An attempt the purge failed: nobody finished it in time, or its message ended.
#[derive(Debug, Clone)]
pub struct Abandoned {
    /// The message.
    pub message_id: MessageId,
    /// The sender.
    pub organisation_id: OrganisationId,
    /// The patient.
    pub recipient_id: RecipientId,
    /// Answers the message still accepts.
    pub attempts_left: u32,
}

/// Fails every undecided attempt older than [`ATTEMPT_LIFETIME_SECONDS`] or of a message no
/// longer live, and erases its held enrollment (the sealed private key and peppered verifier of
/// an answer never finished must not outlive it). Each is returned for the audit log: an
/// attempt whose agent reply the patient read but never confirmed was still a guess.
pub async fn abandon_stale(conn: &mut AnyConnection, now: i64) -> StoreResult<Vec<Abandoned>> {
    let rows = sqlx::query(
        "SELECT c.id, c.message_id, c.organisation_id, c.recipient_id FROM enrollment_checks c \
         WHERE c.progress IN ('awaiting_sender', 'answered', 'confirmed') \
         AND (c.created_at < $1 OR NOT EXISTS (SELECT 1 FROM messages m \
              WHERE m.id = c.message_id AND m.status = 'active' AND m.expires_at > $2)) \
         ORDER BY c.created_at, c.id",
    )
    .bind(now - ATTEMPT_LIFETIME_SECONDS)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let mut abandoned = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: String = row.try_get("id")?;
        sqlx::query(
            "UPDATE enrollment_checks SET progress = 'failed', decided_at = $1, \
             password_record = NULL, verifier = NULL WHERE id = $2",
        )
        .bind(now)
        .bind(&id)
        .execute(&mut *conn)
        .await?;
        let message_id: MessageId = row::parsed(row, "message_id")?;
        abandoned.push(Abandoned {
            message_id,
            organisation_id: row::parsed(row, "organisation_id")?,
            recipient_id: row::parsed(row, "recipient_id")?,
            attempts_left: attempts_left(&mut *conn, message_id).await?,
        });
    }
    Ok(abandoned)
}
