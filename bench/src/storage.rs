//! The storage limit: how many message rows a second one connection commits, one row per
//! transaction, at the relay's durability — the rate a relay committing every submission on its
//! own could at best reach, and the rate group commit has to beat (issue 11, item 6).
//!
//! The database is a fresh one of the relay's schema, opened through `relay::store::Store` so
//! the connection is configured exactly as the relay configures it (SQLite: WAL,
//! `synchronous=FULL`, foreign keys on; PostgreSQL: the server's default `synchronous_commit`,
//! checked and printed). The row is the one the relay writes for a message, with every column
//! the relay fills (the same statement as `relay::store::messages::insert`, with the sealed
//! envelope of a real first-contact message's size in the same row), one `BEGIN`/`COMMIT` per
//! row: one durable sync each.

use std::time::{Duration, Instant};

use rand_core::OsRng;
use relay::store::{Backend, Store};
use relay::testkit::TestDb;
use shared::ids::{MessageId, OrganisationId, RecipientId};
use sqlx::Row as _;

use crate::load::{Timing, quantile_ms};

/// One backend's figures.
#[derive(Debug, Clone)]
pub struct InsertRate {
    /// Rows committed in the measured window.
    pub rows: u64,
    /// The window.
    pub elapsed: Duration,
    /// Commit latencies (statement + commit), sorted, microseconds.
    pub latencies_us: Vec<u32>,
    /// The durability setting in force, as the database reports it.
    pub durability: String,
    /// Bytes of the sealed envelope in each row.
    pub envelope_bytes: usize,
}

impl InsertRate {
    /// Rows per second.
    pub fn rate(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Latency quantile, ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies_us, q)
    }
}

/// Inserts message rows one per transaction for `timing` on a fresh `backend` database, with an
/// envelope blob of `envelope_bytes`.
pub async fn insert_loop(
    backend: Backend,
    timing: Timing,
    envelope_bytes: usize,
) -> anyhow::Result<InsertRate> {
    let dir = tempfile::tempdir()?;
    let db = TestDb::new(backend, dir.path()).await;
    let result = measure(&db, timing, envelope_bytes).await;
    db.drop_database().await;
    result
}

async fn measure(db: &TestDb, timing: Timing, envelope_bytes: usize) -> anyhow::Result<InsertRate> {
    let store = Store::open(&db.url()).await?;
    let durability = durability(&store).await?;
    let organisation = OrganisationId::random(&mut OsRng).to_string();
    let recipient = RecipientId::random(&mut OsRng).to_string();
    let now = now();
    {
        let mut conn = store.conn().await?;
        sqlx::query("INSERT INTO organisations (id, display_name, created_at) VALUES ($1, $2, $3)")
            .bind(&organisation)
            .bind("Bench Clinic")
            .bind(now)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO recipients (id, phone_lookup, phone_sealed, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&recipient)
        .bind(vec![7u8; 32])
        .bind(vec![9u8; 60])
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    // Content does not matter to the database; size does.
    let sealed: Vec<u8> = (0..envelope_bytes).map(|i| (i * 31 % 251) as u8).collect();
    let start = Instant::now();
    let measure_from = start + timing.warmup;
    let end = measure_from + timing.duration;
    let mut rows = 0u64;
    let mut latencies_us = Vec::new();
    let mut n = 0u64;
    let mut last = measure_from;
    loop {
        let began = Instant::now();
        if began >= end {
            break;
        }
        let mut tx = store.begin().await?;
        sqlx::query(
            "INSERT INTO messages (id, organisation_id, recipient_id, idempotency_key, \
             recipient_wrap_fingerprint, status, created_at, expires_at, enrollment_epoch, \
             envelope_sealed) \
             VALUES ($1, $2, $3, $4, NULL, 'active', $5, $6, \
             (SELECT enrollment_epoch FROM recipients WHERE id = $3), $7)",
        )
        .bind(MessageId::random(&mut OsRng).to_string())
        .bind(&organisation)
        .bind(&recipient)
        .bind(format!("bench-raw-{n}"))
        .bind(now)
        .bind(now + 86_400)
        .bind(&sealed)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        n += 1;
        let done = Instant::now();
        if began >= measure_from {
            rows += 1;
            last = done;
            latencies_us
                .push(u32::try_from(done.duration_since(began).as_micros()).unwrap_or(u32::MAX));
        }
    }
    store.close().await;
    latencies_us.sort_unstable();
    Ok(InsertRate {
        rows,
        elapsed: last.saturating_duration_since(measure_from),
        latencies_us,
        durability,
        envelope_bytes,
    })
}

/// What makes a commit durable here, as the database itself reports it.
async fn durability(store: &Store) -> anyhow::Result<String> {
    let mut conn = store.conn().await?;
    Ok(match store.backend() {
        Backend::Sqlite => {
            let journal: String = sqlx::query("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;
            let synchronous: i64 = sqlx::query("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;
            let level = match synchronous {
                0 => "OFF",
                1 => "NORMAL",
                2 => "FULL",
                3 => "EXTRA",
                _ => "?",
            };
            format!("journal_mode={journal}, synchronous={level}")
        }
        Backend::Postgres => {
            let commit: String = sqlx::query("SHOW synchronous_commit")
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;
            let fsync: String = sqlx::query("SHOW fsync")
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;
            let method: String = sqlx::query("SHOW wal_sync_method")
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;
            format!("synchronous_commit={commit}, fsync={fsync}, wal_sync_method={method}")
        }
    })
}

/// Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
