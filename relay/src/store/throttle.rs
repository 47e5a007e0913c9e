//! Counters for lockouts by client address and send-rate windows by API key.

use sqlx::{AnyConnection, Row};

use super::Backend;
use crate::error::AppError;

/// A throttle counter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter {
    /// Events counted.
    pub count: u32,
    /// Lockouts so far.
    pub lockouts: u32,
    /// Unix seconds until which the key is locked.
    pub locked_until: i64,
    /// Unix seconds of the last change.
    pub updated_at: i64,
}

/// Reads a counter for update: on PostgreSQL the row is created if missing and locked until
/// the transaction ends, so concurrent requests count one after another instead of each
/// adding one to the same stale value. (SQLite has a single writer.)
pub async fn get_for_update(
    conn: &mut AnyConnection,
    backend: Backend,
    key: &str,
    now: i64,
) -> Result<Counter, AppError> {
    let lock = match backend {
        Backend::Postgres => {
            sqlx::query(
                "INSERT INTO throttles (key, count, updated_at) VALUES ($1, 0, $2) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            " FOR UPDATE"
        }
        Backend::Sqlite => "",
    };
    let row = sqlx::query(&format!(
        "SELECT count, lockouts, locked_until, updated_at FROM throttles WHERE key = $1{lock}"
    ))
    .bind(key)
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        None => Counter::default(),
        Some(row) => Counter {
            count: u32::try_from(row.try_get::<i64, _>("count")?).unwrap_or(u32::MAX),
            lockouts: u32::try_from(row.try_get::<i64, _>("lockouts")?).unwrap_or(u32::MAX),
            locked_until: row.try_get("locked_until")?,
            updated_at: row.try_get("updated_at")?,
        },
    })
}

/// Writes a counter.
pub async fn put(
    conn: &mut AnyConnection,
    key: &str,
    counter: Counter,
    now: i64,
) -> Result<(), AppError> {
    sqlx::query(
        "INSERT INTO throttles (key, count, lockouts, locked_until, updated_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO UPDATE SET count = $2, lockouts = $3, \
         locked_until = $4, updated_at = $5",
    )
    .bind(key)
    .bind(i64::from(counter.count))
    .bind(i64::from(counter.lockouts))
    .bind(counter.locked_until)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds one to a counter atomically and returns the new count.
pub async fn increment(conn: &mut AnyConnection, key: &str, now: i64) -> Result<u32, AppError> {
    let row = sqlx::query(
        "INSERT INTO throttles (key, count, updated_at) VALUES ($1, 1, $2) \
         ON CONFLICT (key) DO UPDATE SET count = throttles.count + 1, updated_at = $2 \
         RETURNING count",
    )
    .bind(key)
    .bind(now)
    .fetch_one(conn)
    .await?;
    Ok(u32::try_from(row.try_get::<i64, _>("count")?).unwrap_or(u32::MAX))
}

/// Deletes counters not touched since `before` (old rate windows, forgiven addresses).
pub async fn prune(conn: &mut AnyConnection, before: i64) -> Result<u64, AppError> {
    Ok(
        sqlx::query("DELETE FROM throttles WHERE updated_at < $1 AND locked_until < $1")
            .bind(before)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
