//! SQLite's WAL checkpoints, run beside the writer instead of inside its commits.
//!
//! In WAL mode each commit appends to the log, and a checkpoint copies the logged pages back
//! into the database file (and syncs it) so that the log can start over. By default the
//! connection whose commit takes the log past 1,000 pages runs that checkpoint inside its
//! `COMMIT`. Here that connection is the single writer of every submission batch: measured
//! under load, a commit took about 2 ms, and 12 to 18 ms whenever it also checkpointed, which
//! set the submissions' p99 latency and held up every batch queued behind it.
//!
//! So the writer's connections run with `wal_autocheckpoint = 0`, and a connection of its own
//! runs a `PASSIVE` checkpoint every [`INTERVAL`]: it copies what it can without waiting for
//! readers or the writer, and with nothing logged since the previous one it returns without
//! touching the disk. Durability does not change: a commit is durable once its log frames are
//! synced (`synchronous = FULL`), checkpointed or not. The purge's scrub still runs its own
//! `TRUNCATE` checkpoint on the writer's connection ([`super::row_keys::scrub`]).

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};
use tokio::sync::watch;

use super::StoreError;

/// How often the checkpointer copies the log into the database file. At the relay's peak
/// (about 1,500 submissions a second on the benchmark machine) the log grows by a few hundred
/// pages in this time, about what one default auto-checkpoint copies.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// The running checkpointer; it stops when [`Checkpointer::stop`] is called or when the last
/// clone of its [`super::Store`] is dropped.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: watch::Sender<bool>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Checkpointer {
    /// Opens the checkpointer's connection and starts it. Must run inside a Tokio runtime.
    pub(super) async fn start(options: AnyConnectOptions) -> Result<Arc<Self>, StoreError> {
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(pool, stopped));
        Ok(Arc::new(Self {
            stop,
            task: tokio::sync::Mutex::new(Some(task)),
        }))
    }

    /// Stops the checkpointer and waits until its connection is closed.
    pub(super) async fn stop(&self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

async fn run(pool: AnyPool, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            // A stop, or every `Store` clone gone (the sender dropped).
            _ = stopped.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep(INTERVAL) => {}
        }
        if let Err(error) = checkpoint(&pool).await {
            tracing::warn!(%error, "WAL checkpoint failed; retrying at the next interval");
        }
    }
    pool.close().await;
}

/// One `PASSIVE` checkpoint. Its row says whether it was blocked and how much of the log it
/// copied; a partial copy (a reader still on older pages) is finished by a later one.
async fn checkpoint(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?;
    let (blocked, logged, copied) = (
        row.try_get::<i64, _>(0)?,
        row.try_get::<i64, _>(1)?,
        row.try_get::<i64, _>(2)?,
    );
    tracing::trace!(blocked, logged, copied, "WAL checkpoint");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::testkit::wait_until;

    /// The writer never checkpoints inside its commits, and what they log still reaches the
    /// database file, from the checkpointer, within a few intervals.
    #[tokio::test]
    async fn the_log_reaches_the_database_file_without_the_writer_checkpointing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.db");
        let store = Store::open(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        let mut conn = store.conn().await.unwrap();
        let autocheckpoint: i64 = sqlx::query("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(
            autocheckpoint, 0,
            "the writer's commits must not checkpoint"
        );
        conn.execute("CREATE TABLE filler (bytes BLOB)")
            .await
            .unwrap();
        let before = std::fs::metadata(&file).unwrap().len();
        // 800 KiB: well below the 1,000 pages at which SQLite would checkpoint by itself.
        for _ in 0..50 {
            conn.execute("INSERT INTO filler VALUES (zeroblob(16384))")
                .await
                .unwrap();
        }
        drop(conn);
        let after = wait_until(40 * INTERVAL, "the checkpointer to copy the log", || {
            let len = std::fs::metadata(&file).unwrap().len();
            async move { (len >= before + 50 * 16384).then_some(len) }
        })
        .await;
        assert!(after > before);
        store.close().await;
    }
}
