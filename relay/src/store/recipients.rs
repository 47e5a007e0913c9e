//! Patients: one row per phone number, enrolled or not.

use shared::bundle::KeyBundle;
use shared::ids::RecipientId;
use shared::kdf::{KdfParams, Salt, Verifier};
use shared::keys::PublicKey;
use sqlx::{AnyConnection, Row};

use super::Backend;
use crate::error::AppError;

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
    /// Failed unlocks since the last success or lockout.
    pub failed_unlocks: u32,
    /// Lockouts so far (each doubles the next).
    pub lockouts: u32,
    /// Unix seconds until which unlocking is refused.
    pub locked_until: i64,
}

const COLUMNS: &str = "id, enrolled_at, public_key, sealed_private_key, kdf_params, salt, verifier, \
                       failed_unlocks, lockouts, locked_until";

fn internal(what: &str) -> impl Fn(shared::Error) -> AppError + '_ {
    move |e| AppError::Internal(format!("stored {what}: {e}"))
}

fn parse(row: &sqlx::any::AnyRow) -> Result<Recipient, AppError> {
    let id: String = row.try_get("id")?;
    let enrolled_at: Option<i64> = row.try_get("enrolled_at")?;
    let enrollment = match enrolled_at {
        None => None,
        Some(enrolled_at) => {
            let public_key: Vec<u8> = row.try_get("public_key")?;
            let params: String = row.try_get("kdf_params")?;
            let salt: Vec<u8> = row.try_get("salt")?;
            let verifier: Vec<u8> = row.try_get("verifier")?;
            Some(Enrollment {
                bundle: KeyBundle {
                    public_key: PublicKey::from_spki_der(&public_key).map_err(internal("key"))?,
                    sealed_private_key: row.try_get("sealed_private_key")?,
                },
                kdf_params: serde_json::from_str(&params)
                    .map_err(|e| AppError::Internal(format!("stored KDF params: {e}")))?,
                salt: Salt::from_bytes(
                    salt.try_into()
                        .map_err(|_| AppError::Internal("stored salt length".into()))?,
                ),
                verifier: Verifier::from_bytes(
                    verifier
                        .try_into()
                        .map_err(|_| AppError::Internal("stored verifier length".into()))?,
                ),
                enrolled_at,
            })
        }
    };
    Ok(Recipient {
        id: RecipientId::parse(&id).map_err(internal("recipient id"))?,
        enrollment,
        failed_unlocks: u32::try_from(row.try_get::<i64, _>("failed_unlocks")?).unwrap_or(u32::MAX),
        lockouts: u32::try_from(row.try_get::<i64, _>("lockouts")?).unwrap_or(u32::MAX),
        locked_until: row.try_get("locked_until")?,
    })
}

/// The patient with this phone lookup hash.
pub async fn find_by_phone(
    conn: &mut AnyConnection,
    lookup: &[u8; 32],
) -> Result<Option<Recipient>, AppError> {
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
pub async fn lock(
    conn: &mut AnyConnection,
    backend: Backend,
    id: RecipientId,
) -> Result<(), AppError> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT id FROM recipients WHERE id = $1 FOR UPDATE")
            .bind(id.to_string())
            .fetch_optional(conn)
            .await?;
    }
    Ok(())
}

/// The patient with this id.
pub async fn get(conn: &mut AnyConnection, id: RecipientId) -> Result<Option<Recipient>, AppError> {
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
) -> Result<Recipient, AppError> {
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
        .ok_or_else(|| AppError::Internal("recipient vanished after insert".into()))
}

/// Records an enrollment; `false` if the patient was already enrolled.
pub async fn enroll(
    conn: &mut AnyConnection,
    id: RecipientId,
    enrollment: &Enrollment,
) -> Result<bool, AppError> {
    let params = serde_json::to_string(&enrollment.kdf_params)
        .map_err(|e| AppError::Internal(e.to_string()))?;
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
pub async fn reset_enrollment(conn: &mut AnyConnection, id: RecipientId) -> Result<bool, AppError> {
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

/// Stores the patient's failure counters.
pub async fn set_unlock_state(
    conn: &mut AnyConnection,
    id: RecipientId,
    failed_unlocks: u32,
    lockouts: u32,
    locked_until: i64,
) -> Result<(), AppError> {
    sqlx::query(
        "UPDATE recipients SET failed_unlocks = $1, lockouts = $2, locked_until = $3 WHERE id = $4",
    )
    .bind(i64::from(failed_unlocks))
    .bind(i64::from(lockouts))
    .bind(locked_until)
    .bind(id.to_string())
    .execute(conn)
    .await?;
    Ok(())
}
