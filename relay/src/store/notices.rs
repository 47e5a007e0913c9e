//! Change notices across relays on one PostgreSQL database (`LISTEN`/`NOTIFY`), for the
//! long-polls of [`crate::changes`].
//!
//! A notice is announced inside the transaction that makes the change, so PostgreSQL delivers
//! it at commit and drops it with a rollback: a relay is never woken for a change that did not
//! happen. SQLite serves one relay per database, whose handlers wake their waiters directly.

use sqlx::postgres::PgListener;

use super::{Backend, Store, StoreResult, Tx};
use crate::changes::Topic;

/// The channel every relay of a database listens on.
const CHANNEL: &str = "securetext_changes";

/// Announces `topic` to every relay of the database when `tx` commits (PostgreSQL only).
pub async fn announce(tx: &mut Tx, topic: &Topic) -> StoreResult<()> {
    if tx.backend == Backend::Postgres {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(topic.encode())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// A listener subscribed to the notices, on a connection of its own; `None` on SQLite.
pub async fn listener(store: &Store) -> StoreResult<Option<PgListener>> {
    let Some(url) = store.postgres_url() else {
        return Ok(None);
    };
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(Some(listener))
}
