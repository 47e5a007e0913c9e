//! A fresh database per test, on either backend the relay supports.

use std::path::{Path, PathBuf};

use crate::store::Backend;
use rand_core::{OsRng, RngCore};
use sqlx::Connection;

/// Where the PostgreSQL server of every development machine and of CI listens (trust auth).
pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh database of one backend.
#[derive(Debug)]
pub enum TestDb {
    /// A SQLite file in the test's temporary directory.
    Sqlite(PathBuf),
    /// A database created for this test on the local PostgreSQL server, named at random so
    /// that tests run in parallel.
    Postgres(String),
}

impl TestDb {
    /// Creates the database (for SQLite, names the file in `dir`; the relay creates it).
    pub async fn new(backend: Backend, dir: &Path) -> Self {
        match backend {
            Backend::Sqlite => Self::Sqlite(dir.join("relay.sqlite")),
            Backend::Postgres => {
                let name = format!("securetext_test_{:016x}", OsRng.next_u64());
                let mut admin = sqlx::PgConnection::connect(POSTGRES_ADMIN_URL)
                    .await
                    .expect("PostgreSQL at 127.0.0.1:5432 (see README)");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("CREATE DATABASE");
                Self::Postgres(name)
            }
        }
    }

    /// The URL the relay opens (`RELAY_DATABASE_URL`).
    pub fn url(&self) -> String {
        self.url_on_port(5432)
    }

    /// The URL through another port of the loopback address (a [`super::DatabaseProxy`]);
    /// SQLite ignores the port.
    pub fn url_on_port(&self, port: u16) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(name) => format!("postgres://postgres@127.0.0.1:{port}/{name}"),
        }
    }

    /// Every byte the database holds, to scan for what must not be there: the SQLite file with
    /// its WAL and shared-memory files, or a `pg_dump`.
    pub fn dump(&self) -> Vec<u8> {
        match self {
            Self::Sqlite(path) => ["", "-wal", "-shm"]
                .iter()
                .filter_map(|suffix| std::fs::read(format!("{}{suffix}", path.display())).ok())
                .flatten()
                .collect(),
            Self::Postgres(_) => {
                let output = std::process::Command::new("pg_dump")
                    .arg(self.url())
                    .output()
                    .expect("pg_dump runs (postgresql-client)");
                assert!(output.status.success(), "pg_dump failed");
                output.stdout
            }
        }
    }

    /// Drops a PostgreSQL database (SQLite files go with the temporary directory).
    pub async fn drop_database(&self) {
        if let Self::Postgres(name) = self
            && let Ok(mut admin) = sqlx::PgConnection::connect(POSTGRES_ADMIN_URL).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
    }
}
