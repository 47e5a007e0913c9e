//! Failure counters with growing lockouts (per patient, per client address) and the send-rate
//! windows of API keys.
//!
//! # Lockout rule (one place; `docs/API.md` describes it)
//! Each wrong password proof adds one to a counter. When the counter reaches the limit, a
//! lockout starts: the first lasts `first_lockout`, each further one twice the previous, at most
//! a day; the counter then restarts from zero. A correct proof clears the counter and the
//! lockout history.

use std::time::Duration;

use sqlx::{AnyConnection, Row};

use super::{StoreResult, Tx, row};
use crate::limits::seconds;

/// Longest lockout.
const MAX_LOCKOUT_SECONDS: i64 = 86_400;

/// A failure counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    /// Failures since the last success or lockout.
    pub count: u32,
    /// Lockouts so far (each doubles the next).
    pub lockouts: u32,
    /// Unix seconds until which the key is locked (0: never locked).
    pub locked_until: i64,
    /// Unix seconds of the last change (0 where not tracked).
    pub updated_at: i64,
}

/// How many failures start a lockout and how long the first one lasts.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    /// Failures that start a lockout.
    pub attempts: u32,
    /// Length of the first lockout.
    pub first_lockout: Duration,
}

impl LockoutPolicy {
    /// Length of the `lockouts`-th lockout (1-based) in seconds: doubles each time, at most a
    /// day.
    pub fn lockout_seconds(&self, lockouts: u32) -> i64 {
        seconds(self.first_lockout)
            .saturating_mul(1i64 << lockouts.saturating_sub(1).min(20))
            .min(MAX_LOCKOUT_SECONDS)
    }
}

impl Counter {
    /// Until when the key is locked at `now`, if it is.
    pub fn locked_at(&self, now: i64) -> Option<i64> {
        (self.locked_until > now).then_some(self.locked_until)
    }

    /// Counts one failure at `now`; a lockout starts when the policy's limit is reached.
    pub fn record_failure(&mut self, policy: &LockoutPolicy, now: i64) {
        self.count += 1;
        if self.count >= policy.attempts {
            self.lockouts += 1;
            self.locked_until = now + policy.lockout_seconds(self.lockouts);
            self.count = 0;
        }
        self.updated_at = now;
    }

    /// Failures left before the next lockout.
    pub fn attempts_left(&self, policy: &LockoutPolicy) -> u32 {
        policy.attempts.saturating_sub(self.count)
    }

    /// Forgets failures older than `window` without new ones (so that unrelated patients behind
    /// one carrier address do not add up over days).
    pub fn forget_if_quiet(&mut self, window: Duration, now: i64) {
        if self.updated_at < now.saturating_sub(seconds(window)) {
            self.count = 0;
        }
    }
}

/// Reads a counter for update: on PostgreSQL the row is created if missing and locked until
/// the transaction ends, so concurrent requests count one after another instead of each
/// adding one to the same stale value. (SQLite has a single writer.)
pub async fn get_for_update(tx: &mut Tx, key: &str, now: i64) -> StoreResult<Counter> {
    let lock = tx.for_update();
    if !lock.is_empty() {
        sqlx::query(
            "INSERT INTO throttles (key, count, updated_at) VALUES ($1, 0, $2) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    let found = sqlx::query(&format!(
        "SELECT count, lockouts, locked_until, updated_at FROM throttles WHERE key = $1{lock}"
    ))
    .bind(key)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(match found {
        None => Counter::default(),
        Some(found) => Counter {
            count: row::count(&found, "count")?,
            lockouts: row::count(&found, "lockouts")?,
            locked_until: found.try_get("locked_until")?,
            updated_at: found.try_get("updated_at")?,
        },
    })
}

/// Writes a counter.
pub async fn put(
    conn: &mut AnyConnection,
    key: &str,
    counter: Counter,
    now: i64,
) -> StoreResult<()> {
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

/// Grants up to `wanted` more counts under `limit`, atomically, and returns how many it
/// granted (`0` once the counter has reached the limit). The first statement locks the counter
/// on PostgreSQL, so concurrent relays grant one after another and never more than the limit.
pub async fn grant(
    conn: &mut AnyConnection,
    key: &str,
    wanted: u32,
    limit: u32,
    now: i64,
) -> StoreResult<u32> {
    let current = sqlx::query(
        "INSERT INTO throttles (key, count, updated_at) VALUES ($1, 0, $2) \
         ON CONFLICT (key) DO UPDATE SET updated_at = $2 RETURNING count",
    )
    .bind(key)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    let granted = wanted.min(limit.saturating_sub(row::count(&current, "count")?));
    if granted > 0 {
        sqlx::query("UPDATE throttles SET count = count + $1 WHERE key = $2")
            .bind(i64::from(granted))
            .bind(key)
            .execute(conn)
            .await?;
    }
    Ok(granted)
}

/// Deletes counters not touched since `before` (old rate windows, forgiven addresses).
pub async fn prune(conn: &mut AnyConnection, before: i64) -> StoreResult<u64> {
    Ok(
        sqlx::query("DELETE FROM throttles WHERE updated_at < $1 AND locked_until < $1")
            .bind(before)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: LockoutPolicy = LockoutPolicy {
        attempts: 3,
        first_lockout: Duration::from_secs(60),
    };

    #[test]
    fn lockouts_double_up_to_a_day() {
        assert_eq!(POLICY.lockout_seconds(1), 60);
        assert_eq!(POLICY.lockout_seconds(2), 120);
        assert_eq!(POLICY.lockout_seconds(3), 240);
        assert_eq!(POLICY.lockout_seconds(40), 86_400);
    }

    #[test]
    fn the_limit_starts_a_lockout_and_restarts_the_count() {
        let mut counter = Counter::default();
        counter.record_failure(&POLICY, 1000);
        counter.record_failure(&POLICY, 1000);
        assert_eq!(counter.attempts_left(&POLICY), 1);
        assert_eq!(counter.locked_at(1000), None);
        counter.record_failure(&POLICY, 1000);
        assert_eq!(counter.count, 0);
        assert_eq!(counter.locked_at(1000), Some(1060));
        assert_eq!(counter.locked_at(1060), None);
        for _ in 0..3 {
            counter.record_failure(&POLICY, 2000);
        }
        assert_eq!(counter.locked_at(2000), Some(2120));
    }

    #[test]
    fn quiet_counters_are_forgotten() {
        let mut counter = Counter::default();
        counter.record_failure(&POLICY, 1000);
        counter.forget_if_quiet(Duration::from_secs(3600), 2000);
        assert_eq!(counter.count, 1);
        counter.forget_if_quiet(Duration::from_secs(3600), 5000);
        assert_eq!(counter.count, 0);
    }
}
