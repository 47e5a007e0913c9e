//! Per-row keys, so that a purge is real (crypto-shredding; issue 12, finding 2).
//!
//! A database keeps old versions of a row where the relay cannot overwrite them: PostgreSQL in
//! dead tuples and in free space that VACUUM leaves as it was, SQLite in WAL frames until a
//! checkpoint. Each field the relay promises to erase (a message's envelope, a session's relay
//! half) is therefore sealed under a random key of its own row ([`RowKey`]), kept in the small
//! `row_keys` table. The purge job deletes the keys of ended rows and then [`scrub`]s that
//! table's files, after which any copy of the sealed field left anywhere in the database is
//! useless.
//!
//! # Invariants
//! - A row key only seals end-to-end ciphertext (envelopes) or a value already sealed with the
//!   data key (relay halves): holding every row key opens no message.
//! - A key is deleted only by [`delete_ended`], for a message that is no longer active or a
//!   session that has ended, in the purge job's transaction.

use std::time::{Duration, Instant};

use rand_core::OsRng;
use shared::at_rest::RowKey;
use sqlx::{AnyConnection, Executor, Row};

use super::{Backend, ROWS_PER_STATEMENT, Store, StoreError, StoreResult, value_rows};

/// Which table a row key belongs to (the `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `messages`: seals the envelope.
    Message,
    /// `sessions`: seals the relay half.
    Session,
}

impl Kind {
    /// The `kind` column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Session => "session",
        }
    }
}

/// Creates and stores the key of a new row.
pub async fn create(conn: &mut AnyConnection, kind: Kind, row_id: &str) -> StoreResult<RowKey> {
    let key = RowKey::random(&mut OsRng);
    sqlx::query("INSERT INTO row_keys (kind, row_id, key) VALUES ($1, $2, $3)")
        .bind(kind.as_str())
        .bind(row_id)
        .bind(key.expose().to_vec())
        .execute(conn)
        .await?;
    Ok(key)
}

/// Stores the keys of new rows, `(row id, key)` each, with one statement per
/// [`ROWS_PER_STATEMENT`].
pub async fn insert_all(
    conn: &mut AnyConnection,
    kind: Kind,
    keys: &[(String, &RowKey)],
) -> StoreResult<()> {
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO row_keys (kind, row_id, key) VALUES {}",
            value_rows(chunk.len(), 3)
        );
        let mut query = sqlx::query(&sql);
        for (row_id, key) in chunk {
            query = query
                .bind(kind.as_str())
                .bind(row_id.as_str())
                .bind(key.expose().to_vec());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The key of a row, if it has not been deleted.
pub async fn get(
    conn: &mut AnyConnection,
    kind: Kind,
    row_id: &str,
) -> StoreResult<Option<RowKey>> {
    let row = sqlx::query("SELECT key FROM row_keys WHERE kind = $1 AND row_id = $2")
        .bind(kind.as_str())
        .bind(row_id)
        .fetch_optional(conn)
        .await?;
    row.map(|row| decode(&row.try_get::<Vec<u8>, _>("key")?))
        .transpose()
}

/// A key read from the `key` column (also through a join, see `messages`).
pub fn decode(bytes: &[u8]) -> StoreResult<RowKey> {
    RowKey::from_bytes(bytes).map_err(|e| StoreError::corrupt("row key", e))
}

/// Deletes the keys of messages that are no longer active (revoked or expired, their envelopes
/// purged) and of sessions that have ended (logout, timeout, remote wipe, key reset); returns
/// how many. From then on their sealed fields open nowhere, wherever copies remain.
pub async fn delete_ended(conn: &mut AnyConnection) -> StoreResult<u64> {
    let messages = sqlx::query(
        "DELETE FROM row_keys WHERE kind = 'message' AND row_id IN \
         (SELECT id FROM messages WHERE status <> 'active')",
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let sessions = sqlx::query(
        "DELETE FROM row_keys WHERE kind = 'session' AND row_id IN \
         (SELECT id FROM sessions WHERE ended_at IS NOT NULL)",
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(messages + sessions)
}

/// How long a scrub waits for transactions older than it to end (see [`scrub`]).
const OLDER_TRANSACTIONS_WAIT: Duration = Duration::from_secs(5);

/// Removes the bytes of deleted rows from the database files, after the transaction that
/// deleted them has committed; `false` when it could not be sure to have done so, and the purge
/// job scrubs again at its next run.
///
/// - SQLite runs with `secure_delete`, so the committed pages already hold zeros where the
///   deleted keys and purged fields were; a `wal_checkpoint(TRUNCATE)` copies them into the
///   database file and empties the WAL, whose older frames still held the old pages. It is
///   incomplete while another process (an operator command) holds a read transaction.
/// - PostgreSQL: `VACUUM FULL row_keys` rewrites the key table into a new file and truncates
///   the old one (a plain VACUUM can leave a deleted tuple's bytes in the page's free space).
///   It cannot run inside a transaction, and holds the table's lock for the few milliseconds a
///   table of one small row per live message and session takes to copy. It copies deleted
///   rows that a transaction older than the deletion may still see, so it first waits (at most
///   5 s, `OLDER_TRANSACTIONS_WAIT`) for those to end, and is incomplete if one did not.
pub async fn scrub(store: &Store) -> StoreResult<bool> {
    let mut conn = store.conn().await?;
    match store.backend() {
        Backend::Sqlite => {
            let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut *conn)
                .await?;
            Ok(row.try_get::<i64, _>(0)? == 0)
        }
        Backend::Postgres => {
            let complete = wait_for_older_transactions(&mut conn).await?;
            conn.execute("VACUUM FULL row_keys").await?;
            Ok(complete)
        }
    }
}

/// Waits (at most [`OLDER_TRANSACTIONS_WAIT`]) until no transaction that began before now is
/// still open where it keeps rows deleted before now from being vacuumed; `false` if one still
/// is. Those are a snapshot in this database, and (as PostgreSQL 15 behaves, tested) a
/// transaction holding a transaction id in any database of the server. Sessions of other roles
/// are seen only by a role with `pg_read_all_stats`.
pub(super) async fn wait_for_older_transactions(conn: &mut AnyConnection) -> StoreResult<bool> {
    let since: String = sqlx::query("SELECT clock_timestamp()::text AS t")
        .fetch_one(&mut *conn)
        .await?
        .try_get("t")?;
    let deadline = Instant::now() + OLDER_TRANSACTIONS_WAIT;
    loop {
        let older: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND xact_start < $1::timestamptz \
             AND (backend_xid IS NOT NULL \
                  OR (backend_xmin IS NOT NULL AND datname = current_database()))",
        )
        .bind(&since)
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
        if older == 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                transactions = older,
                "transactions older than the purge are still open; scrubbing again at the next purge"
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
