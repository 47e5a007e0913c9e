//! Patients: one row per phone number, enrolled or not.

use shared::bundle::KeyBundle;
use shared::ids::RecipientId;
use shared::kdf::{KdfParams, Salt, Verifier};
use shared::keys::PublicKey;
use sqlx::{AnyConnection, Row};

use super::throttle::Counter;
use super::{StoreError, StoreResult, Tx, row, to_json};

/// What the relay holds for an enrolled patient: all of it public or sealed.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// Public key and sealed private key.
    pub bundle: KeyBundle,
    /// KDF parameters chosen at enrollment.
    pub kdf_params: KdfParams,
    /// KDF salt.
    pub salt: Salt,
    /// Hash of the auth key.
    pub verifier: Verifier,
    /// When.
    pub enrolled_at: i64,
}

/// A patient.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// Its id.
    pub id: RecipientId,
    /// Its enrollment, if the patient has set a password.
    pub enrollment: Option<Enrollment>,
    /// Failed unlocks and lockouts (see [`Counter`]).
    pub unlock: Counter,
}

const COLUMNS: &str = "id, enrolled_at, public_key, sealed_private_key, kdf_params, salt, verifier, \
                       failed_unlocks, lockouts, locked_until";

fn parse(row: &sqlx::any::AnyRow) -> StoreResult<Recipient> {
    let enrolled_at: Option<i64> = row.try_get("enrolled_at")?;
    let enrollment = match enrolled_at {
        None => None,
        Some(enrolled_at) => {
            let public_key: Vec<u8> = row.try_get("public_key")?;
            let salt: Vec<u8> = row.try_get("salt")?;
            let verifier: Vec<u8> = row.try_get("verifier")?;
            Some(Enrollment {
                bundle: KeyBundle {
                    public_key: PublicKey::from_spki_der(&public_key)
                        .map_err(|e| StoreError::corrupt("public key", e))?,
                    sealed_private_key: row.try_get("sealed_private_key")?,
                },
                kdf_params: row::json(row, "kdf_params")?,
                salt: Salt::from_bytes(
                    salt.try_into()
                        .map_err(|_| StoreError::corrupt("salt", "wrong length"))?,
                ),
                verifier: Verifier::from_bytes(
                    verifier
                        .try_into()
                        .map_err(|_| StoreError::corrupt("verifier", "wrong length"))?,
                ),
                enrolled_at,
            })
        }
    };
    Ok(Recipient {
        id: row::parsed(row, "id")?,
        enrollment,
        unlock: Counter {
            count: row::count(row, "failed_unlocks")?,
            lockouts: row::count(row, "lockouts")?,
            locked_until: row.try_get("locked_until")?,
            updated_at: 0,
        },
    })
}

/// The patient with this phone lookup hash.
pub async fn find_by_phone(
    conn: &mut AnyConnection,
    lookup: &[u8; 32],
) -> StoreResult<Option<Recipient>> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM recipients WHERE phone_lookup = $1"
    ))
    .bind(lookup.to_vec())
    .fetch_optional(conn)
    .await?
    .map(|row| parse(&row))
    .transpose()
}

/// Locks the patient's row until the transaction ends (PostgreSQL; SQLite has a single
/// writer), so that concurrent unlock attempts are counted one after another.
pub async fn lock(tx: &mut Tx, id: RecipientId) -> StoreResult<()> {
    tx.lock_row("recipients", &id.to_string()).await
}

/// The patient with this id.
pub async fn get(conn: &mut AnyConnection, id: RecipientId) -> StoreResult<Option<Recipient>> {
    sqlx::query(&format!("SELECT {COLUMNS} FROM recipients WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?
        .map(|row| parse(&row))
        .transpose()
}

/// The patient with this phone number, created (not enrolled) if new.
pub async fn get_or_create(
    conn: &mut AnyConnection,
    new_id: RecipientId,
    lookup: &[u8; 32],
    phone_sealed: Vec<u8>,
    now: i64,
) -> StoreResult<Recipient> {
    sqlx::query(
        "INSERT INTO recipients (id, phone_lookup, phone_sealed, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (phone_lookup) DO NOTHING",
    )
    .bind(new_id.to_string())
    .bind(lookup.to_vec())
    .bind(phone_sealed)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    find_by_phone(conn, lookup)
        .await?
        .ok_or_else(|| StoreError::corrupt("recipient", "vanished after insert"))
}

/// Records an enrollment; `false` if the patient was already enrolled.
pub async fn enroll(
    conn: &mut AnyConnection,
    id: RecipientId,
    enrollment: &Enrollment,
) -> StoreResult<bool> {
    let params = to_json(&enrollment.kdf_params)?;
    let done = sqlx::query(
        "UPDATE recipients SET enrolled_at = $1, public_key = $2, fingerprint = $3, \
         sealed_private_key = $4, kdf_params = $5, salt = $6, verifier = $7, \
         failed_unlocks = 0, lockouts = 0, locked_until = 0 \
         WHERE id = $8 AND enrolled_at IS NULL",
    )
    .bind(enrollment.enrolled_at)
    .bind(enrollment.bundle.public_key.spki_der().to_vec())
    .bind(enrollment.bundle.public_key.fingerprint().to_string())
    .bind(enrollment.bundle.sealed_private_key.clone())
    .bind(params)
    .bind(enrollment.salt.as_bytes().to_vec())
    .bind(enrollment.verifier.as_bytes().to_vec())
    .bind(id.to_string())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets the enrollment (forgotten password); `false` if there was none.
pub async fn reset_enrollment(conn: &mut AnyConnection, id: RecipientId) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE recipients SET enrolled_at = NULL, public_key = NULL, fingerprint = NULL, \
         sealed_private_key = NULL, kdf_params = NULL, salt = NULL, verifier = NULL, \
         failed_unlocks = 0, lockouts = 0, locked_until = 0 \
         WHERE id = $1 AND enrolled_at IS NOT NULL",
    )
    .bind(id.to_string())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stores the patient's failure counter.
pub async fn set_unlock_state(
    conn: &mut AnyConnection,
    id: RecipientId,
    unlock: &Counter,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE recipients SET failed_unlocks = $1, lockouts = $2, locked_until = $3 WHERE id = $4",
    )
    .bind(i64::from(unlock.count))
    .bind(i64::from(unlock.lockouts))
    .bind(unlock.locked_until)
    .bind(id.to_string())
    .execute(conn)
    .await?;
    Ok(())
}
