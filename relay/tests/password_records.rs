//! A copy of the database without the data key is no offline password oracle (issue 12,
//! finding 3): enrollments store a peppered verifier and a password record (salt, parameters,
//! sealed private key) sealed under the data key. Rows enrolled before that format are sealed
//! when a relay with the data key starts, and their patients still unlock with their password.
//! (`zero_knowledge.rs` checks that none of the three appears in the database after a flow.)

use rand_core::OsRng;
use relay::store::{Backend, Store};
use relay::testkit::{Patient, TestRelay, keys};
use shared::bundle::{KeyBundle, SealBinding};
use shared::kdf::{KdfParams, Password, Salt, derive_password_keys};
use sqlx::Row;

const PHONE: &str = "+15557770042";
const PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn earlier_plain_enrollments_are_sealed_at_start_and_still_unlock_on_sqlite() {
    earlier_plain_enrollments_are_sealed_at_start(Backend::Sqlite).await;
}

#[tokio::test]
async fn earlier_plain_enrollments_are_sealed_at_start_and_still_unlock_on_postgres() {
    earlier_plain_enrollments_are_sealed_at_start(Backend::Postgres).await;
}

async fn earlier_plain_enrollments_are_sealed_at_start(backend: Backend) {
    let mut relay = TestRelay::start(backend).await;
    let clinic = relay.registered_organisation("Legacy Clinic").await;
    relay.submit_first_contact(&clinic, PHONE, "hi").await;
    let link = relay.deliver_link_for(PHONE).await;
    let recipient = Patient::open(&relay, &link).await.recipient_id;

    // The enrollment as the relay stored it before migration 0004: salt, parameters, sealed
    // private key and the plain verifier in their own columns.
    let patient = Patient {
        key: keys().patient,
        password: PASSWORD,
    };
    let binding = SealBinding {
        recipient,
        salt: Salt::random(&mut OsRng),
        kdf_params: KdfParams::MINIMUM,
    };
    let password_keys = derive_password_keys(
        &Password::new(PASSWORD).unwrap(),
        &binding.salt,
        &binding.kdf_params,
    )
    .unwrap();
    let bundle =
        KeyBundle::seal(&patient.key, &binding, &password_keys.sealing, &mut OsRng).unwrap();
    let plain_verifier = password_keys.auth.verifier().as_bytes().to_vec();
    let store = Store::open(&relay.db.url()).await.unwrap();
    let mut conn = store.conn().await.unwrap();
    let updated = sqlx::query(
        "UPDATE recipients SET enrolled_at = $1, public_key = $2, fingerprint = $3, \
         sealed_private_key = $4, kdf_params = $5, salt = $6, verifier = $7 WHERE id = $8",
    )
    .bind(relay.now())
    .bind(bundle.public_key.spki_der().to_vec())
    .bind(bundle.public_key.fingerprint().to_string())
    .bind(bundle.sealed_private_key.clone())
    .bind(serde_json::to_string(&binding.kdf_params).unwrap())
    .bind(binding.salt.as_bytes().to_vec())
    .bind(plain_verifier.clone())
    .bind(recipient.to_string())
    .execute(&mut *conn)
    .await
    .unwrap();
    assert_eq!(updated.rows_affected(), 1);

    // A restart seals them.
    let limits = relay.state().settings().limits.clone();
    relay.stop().await;
    relay.boot(limits).await;
    let row = sqlx::query(
        "SELECT password_record, verifier, salt, kdf_params, sealed_private_key \
         FROM recipients WHERE id = $1",
    )
    .bind(recipient.to_string())
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let record: Option<Vec<u8>> = row.try_get("password_record").unwrap();
    let verifier: Vec<u8> = row.try_get("verifier").unwrap();
    assert!(record.is_some(), "the password record is sealed");
    assert_ne!(verifier, plain_verifier, "the verifier is peppered");
    for column in ["salt", "sealed_private_key"] {
        let left: Option<Vec<u8>> = row.try_get(column).unwrap();
        assert_eq!(left, None, "{column} is emptied");
    }
    let params: Option<String> = row.try_get("kdf_params").unwrap();
    assert_eq!(params, None, "kdf_params is emptied");
    drop(conn);
    store.close().await;

    // The patient unlocks with the same password, and a second start changes nothing.
    let unlocked = patient.unlock(&relay, &link).await;
    assert_eq!(unlocked.key.public_key(), patient.key.public_key());
    let again = relay::store::recipients::seal_plain_records(
        relay.state().store(),
        relay.state().data_key(),
    )
    .await
    .unwrap();
    assert_eq!(again, 0);
    relay.finish().await;
}
