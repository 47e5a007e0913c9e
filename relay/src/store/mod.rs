//! Persistence: one SQL implementation over sqlx's `Any` driver, with a dialect per backend.
//!
//! SQLite (one machine, embedded) and PostgreSQL (several relays) run the same statements with
//! `$n` placeholders; each has its own migration set (`migrations/sqlite`, `migrations/postgres`)
//! for the column types, and the few statements that differ are chosen by [`Backend`].
//!
//! # Invariants
//! - A request that answers success has committed its transaction first: SQLite runs with
//!   `synchronous = FULL` in WAL mode, PostgreSQL with its default synchronous commit.
//! - Everything one request changes is written in one transaction, so a failure never leaves
//!   a partial write.
//! - What the relay purges (envelopes, relay halves) is sealed under per-row keys that the purge
//!   job deletes and scrubs from the files ([`row_keys`]); SQLite also runs with
//!   `secure_delete`, so that deleted content is overwritten with zeros rather than left in
//!   free space.

pub mod audit;
pub mod checkpoint;
pub mod checks;
pub mod devices;
pub mod messages;
pub mod notices;
pub mod orgs;
pub mod outbox;
pub mod recipients;
pub mod row_keys;
pub mod sessions;
pub mod throttle;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Executor, Row};

/// Which database the relay runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend named by a database URL's scheme.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }
}

/// Everything the store can fail with. Mapped to the HTTP error once, in `crate::error`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is neither `sqlite:` nor `postgres:`.
    #[error("database URL must start with sqlite:// or postgres://")]
    UnsupportedUrl,
    /// The database cannot be reached right now (connection lost, pool exhausted or closed);
    /// retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// The database refused a statement.
    #[error("database: {0}")]
    Database(sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The SQLite files' permissions could not be restricted to the relay's user.
    #[error("restricting {path} to its owner: {source}")]
    Permissions {
        /// The database file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A stored value does not decode (a damaged row, or a row written by another version).
    #[error("stored {what}: {reason}")]
    Corrupt {
        /// Which column or value.
        what: &'static str,
        /// Why it does not decode.
        reason: String,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(error)
            }
            error => Self::Database(error),
        }
    }
}

impl StoreError {
    /// A stored value that does not decode.
    pub fn corrupt(what: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Corrupt {
            what,
            reason: reason.to_string(),
        }
    }
}

/// A store result.
pub type StoreResult<T> = Result<T, StoreError>;

/// A database URL, which may hold a password: never printed.
#[derive(Clone)]
struct ConnectUrl(Arc<str>);

impl std::fmt::Debug for ConnectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectUrl(..)")
    }
}

/// The relay's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// Connections for reads outside any transaction ([`Store::read`]): on SQLite a pool of its
    /// own, so that reads run beside the single writer instead of queueing for its connection;
    /// on PostgreSQL the same pool.
    readers: AnyPool,
    backend: Backend,
    /// PostgreSQL's connection URL, for the change-notice listener's own connection.
    postgres_url: Option<ConnectUrl>,
    /// Set while deleted row keys may still be in the database files (a scrub that failed or
    /// could not be sure), so that the next purge run scrubs even if it deletes nothing.
    scrub_pending: Arc<AtomicBool>,
    /// SQLite database files only: the WAL checkpoints the writer leaves out of its commits.
    checkpointer: Option<Arc<checkpoint::Checkpointer>>,
}

impl Store {
    /// Connects (creating a SQLite file if needed) without migrating.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        if backend == Backend::Sqlite {
            owner_only_sqlite_files(url)?;
        }
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            // SQLite has one writer; a single connection avoids lock-upgrade deadlocks between
            // the relay's own transactions. PostgreSQL gets a small pool per relay instance.
            .max_connections(match backend {
                Backend::Sqlite => 1,
                Backend::Postgres => 10,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        // Zero deleted content (and freed pages) instead of leaving it in free
                        // space, so a purge reaches the database file at the next checkpoint.
                        conn.execute("PRAGMA secure_delete = ON").await?;
                        // Checkpoints run beside the writer ([`checkpoint`]), not in its commits.
                        conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        let on_file = backend == Backend::Sqlite && !sqlite_in_memory(&url);
        // An in-memory database exists once per connection: reads must use the writer's, and
        // it has no log to checkpoint.
        let (readers, checkpointer) = if on_file {
            (
                Self::sqlite_readers(options.clone()).await?,
                Some(checkpoint::Checkpointer::start(options).await?),
            )
        } else {
            (pool.clone(), None)
        };
        Ok(Self {
            pool,
            readers,
            backend,
            postgres_url: (backend == Backend::Postgres).then(|| ConnectUrl(url.into())),
            scrub_pending: Arc::new(AtomicBool::new(false)),
            checkpointer,
        })
    }

    /// Applies the backend's migrations, then carries data stored by earlier versions over to
    /// row keys ([`messages::seal_legacy_envelopes`]).
    ///
    /// The first start that applies migration 0005 on a database already in use also rewrites
    /// the database once (SQLite `VACUUM`, PostgreSQL `VACUUM FULL` of the tables that held
    /// purged data): earlier versions purged without `secure_delete` or row keys, so their
    /// purged envelopes and relay halves may still sit in free space and dead tuples.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let upgrading = self.in_use_without_row_keys().await?;
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        let converted = messages::seal_legacy_envelopes(self).await?;
        if upgrading {
            let mut conn = self.conn().await?;
            match self.backend {
                Backend::Sqlite => conn.execute("VACUUM").await?,
                Backend::Postgres => {
                    row_keys::wait_for_older_transactions(&mut conn).await?;
                    conn.execute("VACUUM FULL messages, sessions, sms_outbox")
                        .await?
                }
            };
            drop(conn);
            self.scrub_if_needed(1).await?;
            tracing::info!(
                converted,
                "moved stored envelopes to row keys and rewrote the database"
            );
        }
        Ok(())
    }

    /// Whether the database has a schema from before migration 0005 (row keys): an upgrade,
    /// as opposed to a fresh database or one already migrated.
    async fn in_use_without_row_keys(&self) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        let applied = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&mut *conn)
            .await;
        // No migration table yet: a fresh database.
        let Ok(applied) = applied else {
            return Ok(false);
        };
        let versions = applied
            .iter()
            .map(|row| row.try_get::<i64, _>("version"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(!versions.is_empty() && !versions.contains(&5))
    }

    /// Connects and migrates.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Starts a transaction. Everything one request changes goes through one.
    ///
    /// On SQLite the transaction takes the write lock at once (`BEGIN IMMEDIATE`), waiting for
    /// another process's writer (an operator command beside the relay) under `busy_timeout`. A
    /// deferred transaction that read first and then wrote would instead fail at once with
    /// "database is locked" whenever the other process had committed since its read.
    pub async fn begin(&self) -> StoreResult<Tx> {
        let inner = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(Tx {
            inner,
            backend: self.backend,
        })
    }

    /// SQLite's read-only connections. In WAL mode readers never wait for the writer nor it
    /// for them, and a connection that cannot write cannot take part in the lock-upgrade
    /// deadlock that keeps the writer to one connection.
    async fn sqlite_readers(options: AnyConnectOptions) -> Result<AnyPool, StoreError> {
        Ok(AnyPoolOptions::new()
            .max_connections(SQLITE_READERS)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA query_only = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?)
    }

    /// A connection for reads outside a transaction, each statement seeing what was committed
    /// when it started. On SQLite it cannot write (`query_only`): anything that writes goes
    /// through [`Store::conn`] or [`Store::begin`].
    pub async fn read(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.readers.acquire().await?)
    }

    /// A transaction that only reads, for several reads from one snapshot; on SQLite it runs
    /// beside the writer (see [`Store::read`]).
    pub async fn begin_read(&self) -> StoreResult<Tx> {
        Ok(Tx {
            inner: self.readers.begin().await?,
            backend: self.backend,
        })
    }

    /// A connection for reads and single statements outside a transaction.
    pub async fn conn(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.pool.acquire().await?)
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The PostgreSQL URL this store connected with (`None` on SQLite).
    fn postgres_url(&self) -> Option<&str> {
        self.postgres_url.as_ref().map(|url| &*url.0)
    }

    /// Scrubs the database files of deleted row keys ([`row_keys::scrub`]) if `deleted` keys
    /// were just deleted or an earlier scrub is still owed; an unfinished scrub is owed to the
    /// next call.
    pub async fn scrub_if_needed(&self, deleted: u64) -> StoreResult<()> {
        if deleted == 0 && !self.scrub_pending.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.scrub_pending.store(true, Ordering::SeqCst);
        if row_keys::scrub(self).await? {
            self.scrub_pending.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.stop().await;
        }
        self.readers.close().await;
        self.pool.close().await;
    }
}

/// Whether a SQLite URL names an in-memory database (no file): `sqlite::memory:`, or any URL
/// with `mode=memory`. (sqlx gives each such connection a generated name, so the parsed
/// options' file name cannot tell.)
fn sqlite_in_memory(url: &str) -> bool {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    path.ends_with(":memory:") || query.split('&').any(|pair| pair == "mode=memory")
}

/// Creates the SQLite database file readable by its owner only before SQLite creates it, or
/// tightens an existing one (and its WAL and shared-memory files). SQLite gives the WAL and
/// shared-memory files it creates the database file's permissions, so all three end up owner-only
/// whatever the process umask: other local users cannot read ciphertext, sealed keys or
/// verifiers.
fn owner_only_sqlite_files(url: &str) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if sqlite_in_memory(url) {
        return Ok(());
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    let database = options.get_filename();
    let failed = |source| StoreError::Permissions {
        path: database.to_path_buf(),
        source,
    };
    // `mode` applies only when the file is created; an existing file keeps its mode until
    // tightened below.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(database)
        .map_err(failed)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", database.display()));
        let Ok(metadata) = std::fs::metadata(&file) else {
            continue;
        };
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %file.display(), "database file was readable beyond its owner; restricting it");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(failed)?;
        }
    }
    Ok(())
}

/// A transaction that knows its backend, so the few statements that differ (row locks on
/// PostgreSQL; SQLite has a single writer) are chosen inside the store, not by callers.
/// Dereferences to the connection, so every store function taking `&mut AnyConnection` also
/// runs inside it.
#[derive(Debug)]
pub struct Tx {
    inner: sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
}

impl Tx {
    /// Commits. A request answers success only after this returns.
    pub async fn commit(self) -> StoreResult<()> {
        Ok(self.inner.commit().await?)
    }

    /// `" FOR UPDATE"` on PostgreSQL (row locks serialise concurrent relays), empty on SQLite
    /// (one writer at a time already).
    fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// Locks the row of `table` with this `id` until the transaction ends (PostgreSQL; SQLite
    /// has a single writer), so that concurrent relays change it one after another.
    async fn lock_row(&mut self, table: &'static str, id: &str) -> StoreResult<()> {
        self.lock_rows(table, &[id.to_owned()]).await
    }

    /// Locks many rows of `table` (PostgreSQL), in the order of `ids`, which must be sorted:
    /// `ORDER BY id` makes PostgreSQL lock the rows in that order, so two transactions locking
    /// overlapping sets wait for each other in one order, never in a cycle.
    async fn lock_rows(&mut self, table: &'static str, ids: &[String]) -> StoreResult<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        debug_assert!(ids.is_sorted(), "rows are locked in id order");
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT id FROM {table} WHERE id IN ({}) ORDER BY id FOR UPDATE",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            query.fetch_all(&mut **self).await?;
        }
        Ok(())
    }
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }
}

/// Row decoding shared by every table: columns holding ids, fingerprints and counters.
mod row {
    use std::str::FromStr;

    use sqlx::Row as _;
    use sqlx::any::AnyRow;

    use super::{StoreError, StoreResult};

    /// A text column holding a value with a `FromStr` form (ids, fingerprints).
    pub fn parsed<T: FromStr>(row: &AnyRow, column: &'static str) -> StoreResult<T>
    where
        T::Err: std::fmt::Display,
    {
        let text: String = row.try_get(column)?;
        text.parse().map_err(|e| StoreError::corrupt(column, e))
    }

    /// A nullable text column holding a value with a `FromStr` form.
    pub fn parsed_opt<T: FromStr>(row: &AnyRow, column: &'static str) -> StoreResult<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        let text: Option<String> = row.try_get(column)?;
        text.map(|t| t.parse().map_err(|e| StoreError::corrupt(column, e)))
            .transpose()
    }

    /// A non-negative integer column that fits a `u32` (counters); larger values saturate.
    pub fn count(row: &AnyRow, column: &'static str) -> StoreResult<u32> {
        let value: i64 = row.try_get(column)?;
        u32::try_from(value.max(0)).map_or(Ok(u32::MAX), Ok)
    }

    /// A JSON text column.
    pub fn json<T: serde::de::DeserializeOwned>(
        row: &AnyRow,
        column: &'static str,
    ) -> StoreResult<T> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text).map_err(|e| StoreError::corrupt(column, e))
    }
}

/// SQLite connections for reads beside the writer: one per core of the machine class the relay
/// is sized for (two) and two more for reads waiting on the disk.
const SQLITE_READERS: u32 = 4;

/// Most rows one multi-row statement writes or names: far below either backend's limit on
/// parameters (SQLite 32,766, PostgreSQL 65,535) at the widest row the relay writes.
pub const ROWS_PER_STATEMENT: usize = 200;

/// `$first, $first+1, ...`: `count` placeholders for an `IN (...)` list. The `Any` driver binds
/// no arrays, so a list of ids is as many parameters.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, ..., $columns), (...)`: the `VALUES` of a multi-row insert of `rows` rows.
fn value_rows(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| format!("({})", placeholders(row * columns + 1, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// JSON text for a column.
fn to_json(value: &impl serde::Serialize) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::corrupt("json", e))
}

#[cfg(test)]
mod tests {
    use super::{placeholders, value_rows};

    #[test]
    fn placeholders_number_from_the_first() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(placeholders(1, 0), "");
    }

    /// An in-memory database exists once per connection: reads go through the writer's, or
    /// they would find an empty database without the migrated tables.
    #[tokio::test]
    async fn an_in_memory_database_reads_what_it_migrated() {
        let store = super::Store::open("sqlite::memory:").await.unwrap();
        let mut conn = store.read().await.unwrap();
        sqlx::query("SELECT COUNT(*) FROM messages")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    }

    #[test]
    fn value_rows_number_row_by_row() {
        assert_eq!(value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
