//! Viewer sessions and the relay's half of each session key.
//!
//! The relay half is stored sealed twice: with the data key (so that a copy of the database
//! alone does not hold live halves), then under the session's row key (see
//! [`super::row_keys`]), so that deleting that key when the session ends erases every copy the
//! database may keep.

use rand_core::OsRng;
use shared::ids::{OrganisationId, RecipientId, SessionId};
use shared::token::TokenHash;
use sqlx::{AnyConnection, Row};

use super::row_keys::{self, Kind};
use super::{StoreError, StoreResult, row};

/// Purpose label of relay halves sealed under a row key (see `docs/PROTOCOL.md`).
const RELAY_HALF: &str = "relay-half";

/// A live session.
#[derive(Debug)]
pub struct SessionRow {
    /// Session id (salts the session key).
    pub id: SessionId,
    /// Whose session.
    pub recipient_id: RecipientId,
    /// The organisation whose link opened it: the session lists only its messages.
    pub organisation_id: OrganisationId,
    /// The relay half, sealed with the data key.
    pub relay_half_sealed: Vec<u8>,
    /// Last request.
    pub last_seen_at: i64,
    /// Hard end.
    pub expires_at: i64,
}

/// A new session.
#[derive(Debug)]
pub struct NewSession<'a> {
    /// Its id.
    pub id: SessionId,
    /// Hash of the cookie token.
    pub token: TokenHash,
    /// Whose.
    pub recipient_id: RecipientId,
    /// The organisation whose link the patient unlocked through.
    pub organisation_id: OrganisationId,
    /// Relay half, sealed with the data key.
    pub relay_half_sealed: &'a [u8],
    /// Start.
    pub now: i64,
    /// Hard end.
    pub expires_at: i64,
}

/// Stores a new session with a new row key.
pub async fn create(conn: &mut AnyConnection, session: &NewSession<'_>) -> StoreResult<()> {
    let id = session.id.to_string();
    let key = row_keys::create(&mut *conn, Kind::Session, &id).await?;
    let stored = key.seal(RELAY_HALF, &id, session.relay_half_sealed, &mut OsRng);
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, recipient_id, organisation_id, relay_half, \
         created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
    )
    .bind(id)
    .bind(session.token.as_bytes().to_vec())
    .bind(session.recipient_id.to_string())
    .bind(session.organisation_id.to_string())
    .bind(stored)
    .bind(session.now)
    .bind(session.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The live session with this cookie token, if it has not ended, expired or idled out.
pub async fn live_by_token(
    conn: &mut AnyConnection,
    token: &TokenHash,
    now: i64,
    idle_seconds: i64,
) -> StoreResult<Option<SessionRow>> {
    let row = sqlx::query(
        "SELECT s.id, s.recipient_id, s.organisation_id, s.relay_half, k.key, s.last_seen_at, s.expires_at \
         FROM sessions s JOIN row_keys k ON k.kind = 'session' AND k.row_id = s.id \
         WHERE s.token_hash = $1 AND s.ended_at IS NULL AND s.relay_half IS NOT NULL \
         AND s.expires_at > $2 AND s.last_seen_at > $3",
    )
    .bind(token.as_bytes().to_vec())
    .bind(now)
    .bind(now - idle_seconds)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        let id: SessionId = row::parsed(&row, "id")?;
        let key = row_keys::decode(&row.try_get::<Vec<u8>, _>("key")?)?;
        let stored: Vec<u8> = row.try_get("relay_half")?;
        let relay_half_sealed = key
            .open(RELAY_HALF, &id.to_string(), &stored)
            .map_err(|e| StoreError::corrupt("relay half", e))?;
        Ok(SessionRow {
            id,
            recipient_id: row::parsed(&row, "recipient_id")?,
            organisation_id: row::parsed(&row, "organisation_id")?,
            relay_half_sealed: relay_half_sealed.to_vec(),
            last_seen_at: row.try_get("last_seen_at")?,
            expires_at: row.try_get("expires_at")?,
        })
    })
    .transpose()
}

/// Whether session `id` is still live (not ended, not expired): a long-poll asks again before
/// it answers, because the session may have ended while it waited.
pub async fn is_live(conn: &mut AnyConnection, id: SessionId, now: i64) -> StoreResult<bool> {
    let row = sqlx::query(
        "SELECT 1 FROM sessions WHERE id = $1 AND ended_at IS NULL AND relay_half IS NOT NULL \
         AND expires_at > $2",
    )
    .bind(id.to_string())
    .bind(now)
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}

/// Records activity on a session (pushes back the idle timeout).
pub async fn touch(conn: &mut AnyConnection, id: SessionId, now: i64) -> StoreResult<()> {
    sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Ends one session and destroys its relay half. (Its row key goes at the next purge run, by
/// [`row_keys::delete_ended`]; until then no request accepts the ended session.)
pub async fn end(
    conn: &mut AnyConnection,
    id: SessionId,
    now: i64,
    reason: &str,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE sessions SET relay_half = NULL, ended_at = $1, end_reason = $2 \
         WHERE id = $3 AND ended_at IS NULL",
    )
    .bind(now)
    .bind(reason)
    .bind(id.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends every session of a patient (remote wipe); returns how many were live.
pub async fn end_all_for_recipient(
    conn: &mut AnyConnection,
    recipient: RecipientId,
    now: i64,
    reason: &str,
) -> StoreResult<u64> {
    Ok(sqlx::query(
        "UPDATE sessions SET relay_half = NULL, ended_at = $1, end_reason = $2 \
         WHERE recipient_id = $3 AND ended_at IS NULL",
    )
    .bind(now)
    .bind(reason)
    .bind(recipient.to_string())
    .execute(conn)
    .await?
    .rows_affected())
}

/// Ends sessions past their hard end or idle timeout; returns how many.
pub async fn end_stale(conn: &mut AnyConnection, now: i64, idle_seconds: i64) -> StoreResult<u64> {
    Ok(sqlx::query(
        "UPDATE sessions SET relay_half = NULL, ended_at = $1, end_reason = 'timeout' \
         WHERE ended_at IS NULL AND (expires_at <= $1 OR last_seen_at <= $2)",
    )
    .bind(now)
    .bind(now - idle_seconds)
    .execute(conn)
    .await?
    .rows_affected())
}
