//! What the relay writes to disk is readable by its own user only (issue 12, finding 11): the
//! SQLite database with its WAL and shared-memory files, and the console provider's outbox
//! (phone numbers and links in clear). Other local users get nothing, whatever the umask.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use relay::store::Backend;
use relay::testkit::{TestDb, TestRelay};

fn assert_owner_only(path: &Path) {
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "{} is mode {:o}: readable beyond its owner",
        path.display(),
        mode & 0o777
    );
}

#[tokio::test]
async fn the_database_and_the_outbox_are_owner_only() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let clinic = relay.registered_organisation("Files Clinic").await;
    relay
        .submit_first_contact(&clinic, "+15557770002", "x")
        .await;
    relay.deliver_sms().await;
    let TestDb::Sqlite(database) = &relay.db else {
        unreachable!("a SQLite relay")
    };
    for suffix in ["", "-wal", "-shm"] {
        assert_owner_only(Path::new(&format!("{}{suffix}", database.display())));
    }
    assert_owner_only(&relay.outbox_file);
    relay.finish().await;
}

#[tokio::test]
async fn an_existing_world_readable_database_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = relay::store::Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.close().await;
    assert_owner_only(&path);
}
