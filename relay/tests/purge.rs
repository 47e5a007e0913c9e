//! Purge is real (issue 12, finding 2): after a revoke, an expiry and a logout, and the purge
//! run that follows, what was purged cannot be recovered from the database files.
//!
//! - SQLite: the database file and its WAL are scanned for the envelope's ciphertext, the
//!   stored relay half and the row keys that sealed them. The relay runs with `secure_delete`
//!   and checkpoints (TRUNCATE) after each purge that deleted keys, so none may remain.
//! - PostgreSQL keeps old tuple versions the relay cannot overwrite, so the proof is
//!   crypto-shredding: the envelope's ciphertext is never in any file of the database in a form
//!   that opens without its row key, and after the purge run (`VACUUM FULL row_keys`) and a
//!   checkpoint the row keys are in no file of the database either. The files are read
//!   directly (`current_setting('data_directory')`); a test that cannot read them says so and
//!   skips that scan.
//!
//! The purge run is called directly ([`relay::jobs::purge_once`], the step the purge job runs
//! every `--purge-interval-seconds`), so the bound tested is "by the end of the next purge
//! run"; the background job is slowed to an hour so that it cannot race the test's own run.

use std::path::PathBuf;
use std::time::Duration;

use relay::limits::Limits;
use relay::store::Backend;
use relay::testkit::{POSTGRES_ADMIN_URL, Patient, TestDb, TestRelay, header, keys, seal};
use reqwest::Method;
use serde_json::json;
use shared::ids::MessageId;
use sqlx::{Connection, Row};

#[tokio::test]
async fn purged_data_leaves_the_sqlite_files() {
    purge_is_real(Backend::Sqlite).await;
}

#[tokio::test]
async fn purged_data_is_shredded_on_postgres() {
    purge_is_real(Backend::Postgres).await;
}

/// What must not survive a purge, as it could appear in the database files.
struct Secret {
    what: String,
    bytes: Vec<u8>,
    /// A value stored sealed under a row key: PostgreSQL may keep an old copy of it (a dead
    /// tuple), useless once the row key is gone, so it is scanned for on SQLite only.
    sealed_under_row_key: bool,
}

async fn purge_is_real(backend: Backend) {
    let relay = TestRelay::builder(backend)
        .limits(Limits {
            purge_interval: Duration::from_secs(3600),
            ..Limits::default()
        })
        .start()
        .await;
    let clinic = relay.registered_organisation("Purge Clinic").await;

    // Logout: a patient unlocks, then logs out.
    let phone = "+15557770101";
    submit(&relay, &clinic, phone, "session message").await;
    let link = relay.deliver_link_for(phone).await;
    let patient = Patient {
        key: keys().patient,
        password: "correct horse battery staple",
    };
    patient.enroll(&relay, &link).await;
    let session = patient.unlock(&relay, &link).await;
    let session_id = sole_live_session(&relay).await;
    let mut secrets = vec![
        Secret {
            what: "the stored relay half".into(),
            bytes: stored(
                &relay,
                "SELECT relay_half AS v FROM sessions WHERE id = $1",
                &session_id,
            )
            .await,
            sealed_under_row_key: true,
        },
        row_key(&relay, "session", &session_id).await,
    ];
    let response = relay
        .http
        .post(relay.url("/v1/viewer/logout"))
        .header("cookie", &session.cookie)
        .header(shared::api::VIEWER_REQUEST_HEADER, "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    relay::jobs::purge_once(relay.state()).await.unwrap();
    assert_unrecoverable(&relay, &secrets, "logout").await;

    // Revoke.
    let (revoked, ciphertext) = submit(&relay, &clinic, "+15557770102", "revoked message").await;
    secrets.push(ciphertext);
    secrets.push(row_key(&relay, "message", &revoked.to_string()).await);
    let (status, body) = relay
        .call(
            Method::POST,
            &format!("/v1/messages/{revoked}/revoke"),
            Some(&clinic.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    relay::jobs::purge_once(relay.state()).await.unwrap();
    assert_unrecoverable(&relay, &secrets, "revoke").await;

    // Expiry (of every message still live: they live a day).
    let (expiring, ciphertext) = submit(&relay, &clinic, "+15557770103", "expiring message").await;
    secrets.push(ciphertext);
    secrets.push(row_key(&relay, "message", &expiring.to_string()).await);
    relay.advance(86_401);
    relay::jobs::purge_once(relay.state()).await.unwrap();
    assert_unrecoverable(&relay, &secrets, "expiry").await;

    relay.finish().await;
}

/// Submits a first-contact message living a day; returns its id and its envelope's ciphertext
/// as stored in the envelope's JSON (base64url).
async fn submit(
    relay: &TestRelay,
    sender: &relay::testkit::Sender,
    phone: &str,
    body: &str,
) -> (MessageId, Secret) {
    let envelope = seal(
        header(sender.id, None, relay.now(), 86_400),
        body,
        &keys(),
        None,
    );
    let json = serde_json::to_value(&envelope).unwrap();
    let request = json!({ "to": phone, "envelope": envelope });
    let (status, answer) = relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(&sender.api_key),
            Some(request),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let id = envelope.header.message_id;
    let ciphertext = Secret {
        what: format!("the ciphertext of message {id}"),
        bytes: json["ciphertext"].as_str().unwrap().as_bytes().to_vec(),
        sealed_under_row_key: false,
    };
    (id, ciphertext)
}

/// The id of the only live session.
async fn sole_live_session(relay: &TestRelay) -> String {
    let mut conn = relay.state().store().conn().await.unwrap();
    let rows = sqlx::query("SELECT id FROM sessions WHERE ended_at IS NULL")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    rows[0].try_get("id").unwrap()
}

/// A stored byte value (`v`) of the row `id`, as the database holds it.
async fn stored(relay: &TestRelay, sql: &str, id: &str) -> Vec<u8> {
    let mut conn = relay.state().store().conn().await.unwrap();
    sqlx::query(sql)
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .try_get("v")
        .unwrap()
}

/// The row key that seals the purgeable field of row `id`.
async fn row_key(relay: &TestRelay, kind: &str, id: &str) -> Secret {
    let mut conn = relay.state().store().conn().await.unwrap();
    let key: Vec<u8> = sqlx::query("SELECT key FROM row_keys WHERE kind = $1 AND row_id = $2")
        .bind(kind)
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .try_get("key")
        .unwrap();
    assert_eq!(key.len(), 32);
    Secret {
        what: format!("the row key of {kind} {id}"),
        bytes: key,
        sealed_under_row_key: false,
    }
}

/// Asserts that no secret can be recovered from the database after `step` and its purge run.
async fn assert_unrecoverable(relay: &TestRelay, secrets: &[Secret], step: &str) {
    let mut conn = relay.state().store().conn().await.unwrap();
    let keys_left: i64 = sqlx::query("SELECT COUNT(*) AS n FROM row_keys WHERE kind = 'session'")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(
        keys_left, 0,
        "after {step}: a session's row key is still stored"
    );
    drop(conn);
    match &relay.db {
        TestDb::Sqlite(path) => {
            let files: Vec<PathBuf> = ["", "-wal", "-shm"]
                .iter()
                .map(|suffix| PathBuf::from(format!("{}{suffix}", path.display())))
                .collect();
            scan(&files, &secrets.iter().collect::<Vec<_>>(), step);
        }
        TestDb::Postgres(name) => {
            let Some(files) = postgres_files(name).await else {
                return;
            };
            let shredded: Vec<&Secret> =
                secrets.iter().filter(|s| !s.sealed_under_row_key).collect();
            scan(&files, &shredded, step);
        }
    }
}

/// Every file of the PostgreSQL database `name` (tables, TOAST, indexes), after a checkpoint
/// has written the shared buffers out; `None`, with a message, when they cannot be read (a
/// server on another machine, or a test not running as root or the server's user).
async fn postgres_files(name: &str) -> Option<Vec<PathBuf>> {
    let mut admin = sqlx::PgConnection::connect(POSTGRES_ADMIN_URL)
        .await
        .unwrap();
    sqlx::query("CHECKPOINT").execute(&mut admin).await.unwrap();
    let row = sqlx::query(
        "SELECT current_setting('data_directory') AS dir, oid::text AS oid \
         FROM pg_database WHERE datname = $1",
    )
    .bind(name)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    let dir: String = row.try_get("dir").unwrap();
    let oid: String = row.try_get("oid").unwrap();
    let base = PathBuf::from(dir).join("base").join(oid);
    match std::fs::read_dir(&base) {
        Ok(entries) => Some(entries.map(|e| e.unwrap().path()).collect()),
        Err(error) => {
            eprintln!(
                "SKIPPED the scan of PostgreSQL's files: cannot read {} ({error}); run the test \
                 as root or as the server's user on the server's machine",
                base.display()
            );
            None
        }
    }
}

fn scan(files: &[PathBuf], secrets: &[&Secret], step: &str) {
    for file in files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        for secret in secrets {
            assert!(
                !bytes
                    .windows(secret.bytes.len())
                    .any(|w| w == secret.bytes.as_slice()),
                "after {step} and a purge run, {} is still in {}",
                secret.what,
                file.display()
            );
        }
    }
}

#[tokio::test]
async fn an_upgraded_sqlite_database_is_carried_over_and_scrubbed() {
    upgrade(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_upgraded_postgres_database_is_carried_over_and_scrubbed() {
    upgrade(Backend::Postgres).await;
}

/// A database written by a relay from before row keys (migrations up to 0004 only, envelopes in
/// clear JSON, one of them purged the old way by setting it to NULL, and a live session) is
/// opened by this relay: the live envelope is sealed under a row key and still reads the same,
/// the session is ended, and neither the purged nor the live envelope in clear, nor the
/// session's relay half, is left in the database files.
async fn upgrade(backend: Backend) {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path()).await;
    let url = match backend {
        Backend::Sqlite => format!("{}?mode=rwc", db.url()),
        Backend::Postgres => db.url(),
    };
    let mut old = sqlx::AnyConnection::connect(&url).await.unwrap();
    let source = match backend {
        Backend::Sqlite => concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"),
        Backend::Postgres => concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"),
    };
    let mut migrator = sqlx::migrate::Migrator::new(std::path::Path::new(source))
        .await
        .unwrap();
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version < 5)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    migrator.run(&mut old).await.unwrap();

    let organisation = shared::ids::OrganisationId::random(&mut rand_core::OsRng);
    let recipient = shared::ids::RecipientId::random(&mut rand_core::OsRng).to_string();
    let session_id = shared::ids::SessionId::random(&mut rand_core::OsRng).to_string();
    let statements = [
        format!(
            "INSERT INTO organisations (id, display_name, created_at) VALUES ('{organisation}', 'Old Clinic', 1)"
        ),
        format!(
            "INSERT INTO recipients (id, phone_lookup, phone_sealed, created_at) \
             VALUES ('{recipient}', 'lookup', 'sealed', 1)"
        ),
    ];
    for statement in &statements {
        sqlx::query(statement).execute(&mut old).await.unwrap();
    }
    let now = relay::testkit::START;
    let live = seal(
        header(organisation, None, now, 86_400),
        "kept",
        &keys(),
        None,
    );
    let purged = seal(
        header(organisation, None, now, 86_400),
        "purged",
        &keys(),
        None,
    );
    for (envelope, status) in [(&live, "active"), (&purged, "revoked")] {
        sqlx::query(
            "INSERT INTO messages (id, organisation_id, recipient_id, envelope, status, \
             created_at, expires_at) VALUES ($1, $2, $7, $3, $4, $5, $6)",
        )
        .bind(envelope.header.message_id.to_string())
        .bind(organisation.to_string())
        .bind(serde_json::to_string(envelope).unwrap())
        .bind(status)
        .bind(now)
        .bind(now + 86_400)
        .bind(&recipient)
        .execute(&mut old)
        .await
        .unwrap();
    }
    // The earlier purge: the column set to NULL, the bytes left in free space or dead tuples.
    sqlx::query("UPDATE messages SET envelope = NULL WHERE status = 'revoked'")
        .execute(&mut old)
        .await
        .unwrap();
    let relay_half = b"an old data-key-sealed relay half, 60 bytes or so long......".to_vec();
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, recipient_id, relay_half, created_at, \
         last_seen_at, expires_at) VALUES ($5, $1, $6, $2, $3, $3, $4)",
    )
    .bind(b"token hash".to_vec())
    .bind(relay_half.clone())
    .bind(now)
    .bind(now + 3600)
    .bind(&session_id)
    .bind(&recipient)
    .execute(&mut old)
    .await
    .unwrap();
    old.close().await.unwrap();

    let store = relay::store::Store::open(&db.url()).await.unwrap();
    let mut conn = store.conn().await.unwrap();
    let carried = relay::store::messages::get(&mut conn, live.header.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::to_value(carried.envelope.unwrap()).unwrap(),
        serde_json::to_value(&live).unwrap()
    );
    let session = sqlx::query("SELECT relay_half, end_reason FROM sessions WHERE id = $1")
        .bind(&session_id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(
        session
            .try_get::<Option<Vec<u8>>, _>("relay_half")
            .unwrap()
            .is_none()
    );
    assert_eq!(
        session.try_get::<String, _>("end_reason").unwrap(),
        "upgrade"
    );
    drop(conn);

    let ciphertext = |envelope: &shared::envelope::Envelope, what: &str| Secret {
        what: what.into(),
        bytes: serde_json::to_value(envelope).unwrap()["ciphertext"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec(),
        sealed_under_row_key: false,
    };
    let secrets = [
        ciphertext(&live, "the live envelope in clear"),
        ciphertext(&purged, "the envelope purged before the upgrade"),
        Secret {
            what: "the relay half of the session ended at the upgrade".into(),
            bytes: relay_half,
            sealed_under_row_key: false,
        },
    ];
    let secrets: Vec<&Secret> = secrets.iter().collect();
    match &db {
        TestDb::Sqlite(path) => {
            let files: Vec<PathBuf> = ["", "-wal", "-shm"]
                .iter()
                .map(|suffix| PathBuf::from(format!("{}{suffix}", path.display())))
                .collect();
            scan(&files, &secrets, "the upgrade");
        }
        TestDb::Postgres(name) => {
            if let Some(files) = postgres_files(name).await {
                scan(&files, &secrets, "the upgrade");
            }
        }
    }
    store.close().await;
    db.drop_database().await;
}
