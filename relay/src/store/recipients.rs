//! Patients: one row per organisation and phone number, enrolled or not. The same number
//! texted by two organisations is two patients, with two passwords: a patient record answers
//! only to its own organisation, so no organisation learns that a number is another's patient
//! (issue 10, part 1).
//!
//! An enrollment's password material is stored so that a copy of the database without the data
//! key is no offline password oracle (see `shared::at_rest`): the verifier is peppered, and the
//! salt, the KDF parameters and the sealed private key are one record sealed under the data key.
//! Rows written before migration 0004 held those in the clear; [`seal_plain_records`] converts
//! them when a relay with the data key starts.

use std::collections::HashMap;

use rand_core::OsRng;
use shared::at_rest::{DataKey, PasswordRecord, PepperedVerifier};
use shared::bundle::KeyBundle;
use shared::ids::{CheckAttemptId, OrganisationId, RecipientId};
use shared::kdf::{AuthKey, KdfParams, Salt, Verifier};
use shared::keys::PublicKey;
use shared::phone::PhoneNumber;
use sqlx::{AnyConnection, Row};

use super::throttle::Counter;
use super::{ROWS_PER_STATEMENT, Store, StoreError, StoreResult, Tx, placeholders, row};

/// What the relay holds for an enrolled patient: the public key in the clear (senders look it
/// up), everything else peppered or sealed under the data key.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// Published to senders.
    pub public_key: PublicKey,
    /// When.
    pub enrolled_at: i64,
    /// Salt, parameters and sealed private key, sealed under the data key.
    sealed_record: Vec<u8>,
    /// The verifier, peppered with the data key.
    verifier: PepperedVerifier,
}

impl Enrollment {
    /// Opens the password record (salt, parameters, sealed private key).
    pub fn record(&self, key: &DataKey, recipient: RecipientId) -> StoreResult<PasswordRecord> {
        key.open_password_record(recipient, &self.sealed_record)
            .map_err(|e| StoreError::corrupt("password record", e))
    }

    /// The key bundle handed to the patient after unlock.
    pub fn bundle(&self, key: &DataKey, recipient: RecipientId) -> StoreResult<KeyBundle> {
        Ok(KeyBundle {
            public_key: self.public_key.clone(),
            sealed_private_key: self.record(key, recipient)?.sealed_private_key,
        })
    }

    /// Whether a presented proof matches the password, in constant time.
    pub fn verifies(&self, key: &DataKey, proof: &AuthKey) -> bool {
        key.verify(&self.verifier, proof)
    }
}

/// What the viewer sends at enrollment, as the store takes it.
#[derive(Debug)]
pub struct NewEnrollment {
    /// Public key and sealed private key.
    pub bundle: KeyBundle,
    /// KDF parameters chosen at enrollment.
    pub kdf_params: KdfParams,
    /// KDF salt.
    pub salt: Salt,
    /// Hash of the auth key, before peppering.
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
    /// Failed unlocks from unknown browsers and lockouts (see [`Counter`]); `updated_at` is
    /// the last such failure (0: none since the last success or clear).
    pub unlock: Counter,
    /// Raised by each reset: only links of messages accepted at the current epoch enroll.
    pub enrollment_epoch: i64,
}

impl Recipient {
    /// Whether the patient had a wrong proof from an unknown browser within `window` of
    /// `now`: only then does a locked client address hold the patient's unlocks back.
    pub fn failed_recently(&self, window: std::time::Duration, now: i64) -> bool {
        self.unlock.updated_at > 0
            && self.unlock.updated_at > now.saturating_sub(crate::limits::seconds(window))
    }
}

const COLUMNS: &str = "id, enrolled_at, public_key, password_record, verifier, \
                       failed_unlocks, lockouts, locked_until, failed_unlock_at, \
                       enrollment_epoch";

fn parse(row: &sqlx::any::AnyRow) -> StoreResult<Recipient> {
    let enrolled_at: Option<i64> = row.try_get("enrolled_at")?;
    let enrollment = match enrolled_at {
        None => None,
        Some(enrolled_at) => {
            let public_key: Vec<u8> = row.try_get("public_key")?;
            let verifier: Vec<u8> = row.try_get("verifier")?;
            let sealed_record: Option<Vec<u8>> = row.try_get("password_record")?;
            Some(Enrollment {
                public_key: PublicKey::from_spki_der(&public_key)
                    .map_err(|e| StoreError::corrupt("public key", e))?,
                enrolled_at,
                sealed_record: sealed_record.ok_or_else(|| {
                    StoreError::corrupt("password record", "not sealed yet (start the relay)")
                })?,
                verifier: PepperedVerifier::from_bytes(
                    verifier
                        .try_into()
                        .map_err(|_| StoreError::corrupt("verifier", "wrong length"))?,
                ),
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
            updated_at: row.try_get("failed_unlock_at")?,
        },
        enrollment_epoch: row.try_get("enrollment_epoch")?,
    })
}

/// The patient with this lookup hash ([`PhoneNumber::lookup`]: one organisation's patient).
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
/// writer), so that concurrent unlock attempts are counted one after another. A transaction
/// that also locks an organisation's audit chain takes the patient first (the lock order of
/// [`super::audit::lock_chain`]).
pub async fn lock(tx: &mut Tx, id: RecipientId) -> StoreResult<()> {
    tx.lock_row("recipients", &id.to_string()).await
}

/// Locks the rows of these patients, in id order (see [`lock`]).
pub async fn lock_all(tx: &mut Tx, ids: &[RecipientId]) -> StoreResult<()> {
    let mut ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    ids.sort();
    ids.dedup();
    tx.lock_rows("recipients", &ids).await
}

/// The patients with these lookup hashes, by lookup hash (those that exist).
pub async fn find_by_phones(
    conn: &mut AnyConnection,
    lookups: &[[u8; 32]],
) -> StoreResult<HashMap<[u8; 32], Recipient>> {
    let mut found = HashMap::new();
    for chunk in lookups.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT {COLUMNS}, phone_lookup FROM recipients WHERE phone_lookup IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for lookup in chunk {
            query = query.bind(lookup.to_vec());
        }
        for row in query.fetch_all(&mut *conn).await? {
            let lookup: Vec<u8> = row.try_get("phone_lookup")?;
            let lookup = lookup
                .try_into()
                .map_err(|_| StoreError::corrupt("phone lookup", "wrong length"))?;
            found.insert(lookup, parse(&row)?);
        }
    }
    Ok(found)
}

/// The patients with these ids, by id (those that exist).
pub async fn get_all(
    conn: &mut AnyConnection,
    ids: &[RecipientId],
) -> StoreResult<HashMap<RecipientId, Recipient>> {
    let mut found = HashMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT {COLUMNS} FROM recipients WHERE id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id.to_string());
        }
        for row in query.fetch_all(&mut *conn).await? {
            let recipient = parse(&row)?;
            found.insert(recipient.id, recipient);
        }
    }
    Ok(found)
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

/// The organisation's patient with this phone number (`lookup`, [`PhoneNumber::lookup`] for
/// `organisation`), created (not enrolled) if new.
pub async fn get_or_create(
    conn: &mut AnyConnection,
    new_id: RecipientId,
    organisation: OrganisationId,
    lookup: &[u8; 32],
    phone_sealed: Vec<u8>,
    now: i64,
) -> StoreResult<Recipient> {
    sqlx::query(
        "INSERT INTO recipients (id, organisation_id, phone_lookup, phone_sealed, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (phone_lookup) DO NOTHING",
    )
    .bind(new_id.to_string())
    .bind(organisation.to_string())
    .bind(lookup.to_vec())
    .bind(phone_sealed)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    find_by_phone(conn, lookup)
        .await?
        .ok_or_else(|| StoreError::corrupt("recipient", "vanished after insert"))
}

/// An enrollment as stored: the columns `recipients` (and a held identity-check attempt, see
/// [`super::checks`]) keep for it.
#[derive(Debug)]
pub struct SealedEnrollment {
    /// SPKI DER of the public key.
    pub public_key: Vec<u8>,
    /// Its fingerprint, as text.
    pub fingerprint: String,
    /// Salt, parameters and sealed private key, sealed under the data key for the patient.
    pub password_record: Vec<u8>,
    /// The verifier, peppered with the data key.
    pub verifier: Vec<u8>,
}

impl SealedEnrollment {
    /// Peppers the verifier and seals the password record of `recipient`'s enrollment.
    pub fn seal(key: &DataKey, recipient: RecipientId, enrollment: &NewEnrollment) -> Self {
        let record = PasswordRecord {
            salt: enrollment.salt,
            kdf_params: enrollment.kdf_params,
            sealed_private_key: enrollment.bundle.sealed_private_key.clone(),
        };
        Self {
            public_key: enrollment.bundle.public_key.spki_der().to_vec(),
            fingerprint: enrollment.bundle.public_key.fingerprint().to_string(),
            password_record: key.seal_password_record(recipient, &record, &mut OsRng),
            verifier: key.pepper(&enrollment.verifier).as_bytes().to_vec(),
        }
    }
}

/// The assignments that make a patient enrolled with fresh counters, after `SET`.
const ENROLLED: &str = "failed_unlocks = 0, lockouts = 0, locked_until = 0, \
                        failed_unlock_at = 0, wrong_guesses = 0";

/// Records an enrollment, peppering the verifier and sealing the password record; `false` if
/// the patient was already enrolled, or is no longer at `epoch` (reset meanwhile).
pub async fn enroll(
    conn: &mut AnyConnection,
    key: &DataKey,
    id: RecipientId,
    epoch: i64,
    enrollment: &NewEnrollment,
) -> StoreResult<bool> {
    let sealed = SealedEnrollment::seal(key, id, enrollment);
    let done = sqlx::query(&format!(
        "UPDATE recipients SET enrolled_at = $1, public_key = $2, fingerprint = $3, \
         password_record = $4, verifier = $5, {ENROLLED} \
         WHERE id = $6 AND enrolled_at IS NULL AND enrollment_epoch = $7"
    ))
    .bind(enrollment.enrolled_at)
    .bind(sealed.public_key)
    .bind(sealed.fingerprint)
    .bind(sealed.password_record)
    .bind(sealed.verifier)
    .bind(id.to_string())
    .bind(epoch)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Enrolls the patient with the enrollment an identity-check attempt holds (the agent verified
/// its answer); `false` if the patient was already enrolled or is no longer at `epoch`. The
/// password record was sealed for this patient, so it moves over as it is.
pub async fn enroll_from_check(
    conn: &mut AnyConnection,
    id: RecipientId,
    epoch: i64,
    attempt: CheckAttemptId,
    now: i64,
) -> StoreResult<bool> {
    let done = sqlx::query(&format!(
        "UPDATE recipients SET enrolled_at = $1, \
         public_key = (SELECT public_key FROM enrollment_checks WHERE id = $2), \
         fingerprint = (SELECT fingerprint FROM enrollment_checks WHERE id = $2), \
         password_record = (SELECT password_record FROM enrollment_checks WHERE id = $2), \
         verifier = (SELECT verifier FROM enrollment_checks WHERE id = $2), {ENROLLED} \
         WHERE id = $3 AND enrolled_at IS NULL AND enrollment_epoch = $4 \
         AND EXISTS (SELECT 1 FROM enrollment_checks WHERE id = $2 AND recipient_id = $3 \
                     AND password_record IS NOT NULL)"
    ))
    .bind(now)
    .bind(attempt.to_string())
    .bind(id.to_string())
    .bind(epoch)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What [`upgrade`] converted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upgraded {
    /// Password records sealed ([`seal_plain_records`]).
    pub sealed: u64,
    /// Patients given to their organisation ([`scope_to_organisations`]).
    pub scoped: u64,
}

/// Converts what earlier versions stored and SQL migrations cannot, for want of the data key;
/// every start that holds the data key runs it (`relay serve`, the `relay patient` commands).
pub async fn upgrade(store: &Store, key: &DataKey) -> StoreResult<Upgraded> {
    Ok(Upgraded {
        sealed: seal_plain_records(store, key).await?,
        scoped: scope_to_organisations(store, key).await?,
    })
}

/// Seals the password material of enrollments stored before migration 0004 (salt, parameters
/// and sealed private key in their own columns, an unpeppered verifier) and empties the old
/// columns. Idempotent; returns how many rows it converted.
pub async fn seal_plain_records(store: &Store, key: &DataKey) -> StoreResult<u64> {
    let mut tx = store.begin().await?;
    let rows = sqlx::query(
        "SELECT id, sealed_private_key, kdf_params, salt, verifier FROM recipients \
         WHERE enrolled_at IS NOT NULL AND password_record IS NULL",
    )
    .fetch_all(&mut *tx)
    .await?;
    for plain in &rows {
        let id: RecipientId = row::parsed(plain, "id")?;
        let salt: Vec<u8> = plain.try_get("salt")?;
        let verifier: Vec<u8> = plain.try_get("verifier")?;
        let record = PasswordRecord {
            salt: Salt::from_bytes(
                salt.try_into()
                    .map_err(|_| StoreError::corrupt("salt", "wrong length"))?,
            ),
            kdf_params: row::json(plain, "kdf_params")?,
            sealed_private_key: plain.try_get("sealed_private_key")?,
        };
        let verifier = Verifier::from_bytes(
            verifier
                .try_into()
                .map_err(|_| StoreError::corrupt("verifier", "wrong length"))?,
        );
        sqlx::query(
            "UPDATE recipients SET password_record = $1, verifier = $2, \
             sealed_private_key = NULL, kdf_params = NULL, salt = NULL \
             WHERE id = $3 AND password_record IS NULL",
        )
        .bind(key.seal_password_record(id, &record, &mut OsRng))
        .bind(key.pepper(&verifier).as_bytes().to_vec())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(rows.len() as u64)
}

/// Gives each patient stored before migration 0008 to the organisation that messaged it first
/// and rehashes its lookup for that organisation ([`PhoneNumber::lookup`]), which SQL cannot do
/// without the data key. Another organisation's earlier messages stay with the patient (they
/// are wrapped to its key); that organisation's next message creates a patient of its own.
/// A row no message names is left unscoped: no lookup finds it. Idempotent; returns how many
/// rows it converted.
pub async fn scope_to_organisations(store: &Store, key: &DataKey) -> StoreResult<u64> {
    let mut tx = store.begin().await?;
    let rows = sqlx::query(
        "SELECT r.id, r.phone_sealed, (SELECT m.organisation_id FROM messages m \
         WHERE m.recipient_id = r.id ORDER BY m.created_at, m.id LIMIT 1) AS first_sender \
         FROM recipients r WHERE r.organisation_id IS NULL",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut converted = 0;
    for unscoped in &rows {
        let Some(organisation) = row::parsed_opt::<OrganisationId>(unscoped, "first_sender")?
        else {
            continue;
        };
        let sealed: Vec<u8> = unscoped.try_get("phone_sealed")?;
        let phone =
            PhoneNumber::open(key, &sealed).map_err(|e| StoreError::corrupt("phone number", e))?;
        sqlx::query(
            "UPDATE recipients SET organisation_id = $1, phone_lookup = $2 \
             WHERE id = $3 AND organisation_id IS NULL",
        )
        .bind(organisation.to_string())
        .bind(phone.lookup(key, organisation).to_vec())
        .bind(unscoped.try_get::<String, _>("id")?)
        .execute(&mut *tx)
        .await?;
        converted += 1;
    }
    tx.commit().await?;
    Ok(converted)
}

/// Forgets the enrollment (forgotten password) and raises the enrollment epoch, so that no link
/// texted before now can set the new password; `false` if there was no enrollment.
pub async fn reset_enrollment(conn: &mut AnyConnection, id: RecipientId) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE recipients SET enrolled_at = NULL, public_key = NULL, fingerprint = NULL, \
         password_record = NULL, verifier = NULL, \
         failed_unlocks = 0, lockouts = 0, locked_until = 0, failed_unlock_at = 0, \
         wrong_guesses = 0, enrollment_epoch = enrollment_epoch + 1 \
         WHERE id = $1 AND enrolled_at IS NOT NULL",
    )
    .bind(id.to_string())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Counts one wrong proof against the patient's current password and returns the total so
/// far. Unlike the lockout counter it survives lockouts and successes (only a new password
/// resets it), so that the audit can show how many guesses a password has withstood.
pub async fn count_wrong_guess(conn: &mut AnyConnection, id: RecipientId) -> StoreResult<u32> {
    let counted = sqlx::query(
        "UPDATE recipients SET wrong_guesses = wrong_guesses + 1 WHERE id = $1 \
         RETURNING wrong_guesses",
    )
    .bind(id.to_string())
    .fetch_one(conn)
    .await?;
    row::count(&counted, "wrong_guesses")
}

/// Stores the patient's failure counter (for unknown browsers); [`Counter::default`] clears it.
pub async fn set_unlock_state(
    conn: &mut AnyConnection,
    id: RecipientId,
    unlock: &Counter,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE recipients SET failed_unlocks = $1, lockouts = $2, locked_until = $3, \
         failed_unlock_at = $4 WHERE id = $5",
    )
    .bind(i64::from(unlock.count))
    .bind(i64::from(unlock.lockouts))
    .bind(unlock.locked_until)
    .bind(unlock.updated_at)
    .bind(id.to_string())
    .execute(conn)
    .await?;
    Ok(())
}
