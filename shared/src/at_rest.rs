//! The relay's own protection of the little PII it must hold: phone numbers (to text them) and
//! the SMS body while it waits in the outbox (it carries the link token).
//!
//! The relay never holds a key that opens message content; this key only protects routing data
//! at rest, so that a copy of the database alone does not list the patients' numbers.
//!
//! # Wire format
//! ```text
//! data key   = 32 bytes from the operator (base64url), never stored in the database
//! field key  = HKDF-SHA256(salt = "securetext/v1/at-rest", ikm = data key, info = "field-key")
//! lookup key = HKDF-SHA256(salt = "securetext/v1/at-rest", ikm = data key, info = "lookup-key")
//! sealed     = 0x01 || nonce[12] || AES-256-GCM(field key, nonce, aad = purpose, value)
//! lookup     = HMAC-SHA256(lookup key, purpose || 0x00 || value)
//! ```
//! `purpose` is a short ASCII label such as `"phone"` or `"sms-body"`.
//!
//! An enrolled patient's password material is kept so that a copy of the database without the
//! data key is no offline password oracle:
//! ```text
//! stored verifier  = lookup("verifier", verifier[32])                 (the pepper)
//! password record  = 0x01 || salt[16] || kdf_params[13] || sealed_private_key
//! sealed record    = seal("password-record/" || recipient id (hyphenated, lowercase), record)
//! ```
//! The salt, the parameters and the sealed private key (itself a password oracle: a guess that
//! opens it is right) are readable only with the data key, and the stored verifier cannot be
//! compared with a guess's verifier without it.
//!
//! # Row keys (crypto-shredding)
//! ```text
//! row key    = 32 random bytes, one per purgeable row, stored in the relay's row-key table
//! sealed     = 0x01 || nonce[12] || AES-256-GCM(row key, nonce,
//!                  aad = "securetext/v1/row-key" || 0x00 || purpose || 0x00 || row id, value)
//! ```
//! A database keeps old versions of a row in places the relay cannot overwrite (PostgreSQL's
//! dead tuples and free space, a SQLite WAL before its checkpoint). A field the relay must be
//! able to erase is therefore stored sealed under a key of its own, and erasing it means
//! deleting that small key row, which the relay can then scrub from the table's files; any
//! copy of the sealed field left behind is useless. The fields sealed this way are already
//! end-to-end ciphertext (envelopes) or already sealed with the data key (relay halves), so a
//! row key never opens message content.
//!
//! # Invariants
//! - A sealed field opens only under the purpose it was sealed for.
//! - Lookups are deterministic (so the relay can find a recipient by phone number) but useless
//!   without the data key (no dictionary attack over the small space of phone numbers).
//! - A password record opens only for the recipient it was sealed for, so rows cannot be swapped.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use subtle::ConstantTimeEq;

use crate::Error;
use crate::aead::{open_box, random_nonce, seal_box};
use crate::ids::RecipientId;
use crate::kdf::{AuthKey, KdfParams, Salt, Verifier, expand};
use crate::secret::SecretBytes;

const AT_REST_SALT: &[u8] = b"securetext/v1/at-rest";

/// The relay's data key, split into a field-encryption key and a lookup key.
#[derive(Debug)]
pub struct DataKey {
    field: SecretBytes<32>,
    lookup: SecretBytes<32>,
}

impl DataKey {
    /// A fresh random data key (first start of a single-machine relay).
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        Self::from_secret(&SecretBytes::random(rng))
    }

    /// Reads the operator-provided key (43 characters of base64url).
    pub fn from_base64url(text: &str) -> Result<Self, Error> {
        Ok(Self::from_secret(&SecretBytes::from_base64url(
            text.trim(),
            "data key",
        )?))
    }

    /// Generates a key and returns it with its base64url form, for writing a new key file.
    pub fn generate_encoded(rng: &mut impl CryptoRngCore) -> (Self, Zeroizing<String>) {
        let secret = SecretBytes::<32>::random(rng);
        let encoded = Zeroizing::new(crate::encoding::b64u_encode(secret.expose()));
        (Self::from_secret(&secret), encoded)
    }

    fn from_secret(secret: &SecretBytes<32>) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(AT_REST_SALT), secret.expose());
        Self {
            field: expand(&hkdf, b"field-key"),
            lookup: expand(&hkdf, b"lookup-key"),
        }
    }

    /// Seals `value` for storage under `purpose`.
    pub fn seal(&self, purpose: &str, value: &[u8], rng: &mut impl CryptoRngCore) -> Vec<u8> {
        seal_box(
            self.field.expose(),
            &random_nonce(rng),
            purpose.as_bytes(),
            value,
        )
    }

    /// Opens a value sealed under `purpose`.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        open_box(self.field.expose(), purpose.as_bytes(), sealed)
    }

    /// The deterministic keyed hash used to index `value` under `purpose`.
    pub fn lookup(&self, purpose: &str, value: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.lookup.expose())
            .expect("HMAC accepts 32-byte keys");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        mac.finalize().into_bytes().into()
    }
}

/// Version byte of a password record.
const PASSWORD_RECORD_VERSION: u8 = 0x01;

/// What the relay keeps of a patient's password besides the verifier: all of it needed before
/// or after an unlock, none of it to be readable from the database alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordRecord {
    /// The Argon2id salt, handed to the viewer at open.
    pub salt: Salt,
    /// The Argon2id parameters, handed to the viewer at open.
    pub kdf_params: KdfParams,
    /// The private key sealed under the password-derived sealing key, handed out after unlock.
    pub sealed_private_key: Vec<u8>,
}

/// The verifier as the relay stores it: keyed with the data key, so that it cannot be compared
/// with a guessed password's verifier without that key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PepperedVerifier([u8; 32]);

impl PepperedVerifier {
    /// The stored bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The bytes to store.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for PepperedVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PepperedVerifier([redacted])")
    }
}

fn password_record_purpose(recipient: RecipientId) -> String {
    format!("password-record/{recipient}")
}

impl DataKey {
    /// The verifier as stored.
    pub fn pepper(&self, verifier: &Verifier) -> PepperedVerifier {
        PepperedVerifier(self.lookup("verifier", verifier.as_bytes()))
    }

    /// Whether `presented` matches the stored verifier, in constant time.
    pub fn verify(&self, stored: &PepperedVerifier, presented: &AuthKey) -> bool {
        self.pepper(&presented.verifier()).0.ct_eq(&stored.0).into()
    }

    /// Seals a password record for `recipient`.
    pub fn seal_password_record(
        &self,
        recipient: RecipientId,
        record: &PasswordRecord,
        rng: &mut impl CryptoRngCore,
    ) -> Vec<u8> {
        let mut plain = Vec::with_capacity(30 + record.sealed_private_key.len());
        plain.push(PASSWORD_RECORD_VERSION);
        plain.extend_from_slice(record.salt.as_bytes());
        plain.extend_from_slice(&record.kdf_params.to_bytes());
        plain.extend_from_slice(&record.sealed_private_key);
        self.seal(&password_record_purpose(recipient), &plain, rng)
    }

    /// Opens a password record sealed for `recipient`.
    pub fn open_password_record(
        &self,
        recipient: RecipientId,
        sealed: &[u8],
    ) -> Result<PasswordRecord, Error> {
        let plain = self.open(&password_record_purpose(recipient), sealed)?;
        let (&version, rest) = plain.split_first().ok_or(Error::DecryptionFailed)?;
        if version != PASSWORD_RECORD_VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        if rest.len() < 16 + 13 {
            return Err(Error::malformed("password record", "too short"));
        }
        let (salt, rest) = rest.split_at(16);
        let (params, sealed_private_key) = rest.split_at(13);
        Ok(PasswordRecord {
            salt: Salt::from_bytes(salt.try_into().expect("16 bytes")),
            kdf_params: KdfParams::from_bytes(params.try_into().expect("13 bytes"))?,
            sealed_private_key: sealed_private_key.to_vec(),
        })
    }
}

/// Domain label of the associated data of fields sealed under a [`RowKey`].
const ROW_KEY_LABEL: &[u8] = b"securetext/v1/row-key";

/// Length of a [`RowKey`] in bytes.
pub const ROW_KEY_LEN: usize = 32;

/// The random key of one purgeable database row (see the module's "Row keys").
#[derive(Debug)]
pub struct RowKey(SecretBytes<ROW_KEY_LEN>);

impl RowKey {
    /// A fresh random key, for a new row.
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        Self(SecretBytes::random(rng))
    }

    /// The key as stored in the row-key table.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let bytes: [u8; ROW_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| Error::malformed("row key", "wrong length"))?;
        Ok(Self(SecretBytes::new(bytes)))
    }

    /// The bytes to store in the row-key table (and nowhere else).
    pub fn expose(&self) -> &[u8; ROW_KEY_LEN] {
        self.0.expose()
    }

    /// Seals `value`, the `purpose` field of the row `row_id`.
    pub fn seal(
        &self,
        purpose: &str,
        row_id: &str,
        value: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Vec<u8> {
        seal_box(
            self.0.expose(),
            &random_nonce(rng),
            &row_aad(purpose, row_id),
            value,
        )
    }

    /// Opens the `purpose` field of the row `row_id`; a field of another row or purpose, or
    /// an altered one, is [`Error::DecryptionFailed`].
    pub fn open(
        &self,
        purpose: &str,
        row_id: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        open_box(self.0.expose(), &row_aad(purpose, row_id), sealed)
    }
}

/// `"securetext/v1/row-key" || 0x00 || purpose || 0x00 || row id`: binds a sealed field to its
/// row and column, so a field copied into another row does not open there.
fn row_aad(purpose: &str, row_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(ROW_KEY_LABEL.len() + purpose.len() + row_id.len() + 2);
    aad.extend_from_slice(ROW_KEY_LABEL);
    aad.push(0);
    aad.extend_from_slice(purpose.as_bytes());
    aad.push(0);
    aad.extend_from_slice(row_id.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn row_keys_open_only_their_own_row_and_purpose() {
        let key = RowKey::random(&mut OsRng);
        let sealed = key.seal("envelope", "row-1", b"ciphertext", &mut OsRng);
        let again = RowKey::from_bytes(key.expose()).unwrap();
        assert_eq!(
            &again.open("envelope", "row-1", &sealed).unwrap()[..],
            b"ciphertext"
        );
        assert_eq!(
            key.open("envelope", "row-2", &sealed),
            Err(Error::DecryptionFailed)
        );
        assert_eq!(
            key.open("relay-half", "row-1", &sealed),
            Err(Error::DecryptionFailed)
        );
        let other = RowKey::random(&mut OsRng);
        assert_eq!(
            other.open("envelope", "row-1", &sealed),
            Err(Error::DecryptionFailed)
        );
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert_eq!(
            key.open("envelope", "row-1", &flipped),
            Err(Error::DecryptionFailed)
        );
        assert!(RowKey::from_bytes(&[0; 31]).is_err());
        assert!(format!("{key:?}").contains("[redacted]"));
    }

    #[test]
    fn seal_open_and_lookup() {
        let (key, encoded) = DataKey::generate_encoded(&mut OsRng);
        let again = DataKey::from_base64url(&encoded).unwrap();
        let sealed = key.seal("phone", b"+15551234567", &mut OsRng);
        assert_eq!(&again.open("phone", &sealed).unwrap()[..], b"+15551234567");
        assert_eq!(key.open("sms-body", &sealed), Err(Error::DecryptionFailed));
        assert_eq!(
            key.lookup("phone", b"+1555"),
            again.lookup("phone", b"+1555")
        );
        assert_ne!(key.lookup("phone", b"+1555"), key.lookup("phone", b"+1556"));
        let other = DataKey::random(&mut OsRng);
        assert_ne!(
            key.lookup("phone", b"+1555"),
            other.lookup("phone", b"+1555")
        );
        assert_eq!(other.open("phone", &sealed), Err(Error::DecryptionFailed));
        assert!(format!("{key:?}").contains("[redacted]"));
    }

    #[test]
    fn password_records_open_only_for_their_recipient_and_key() {
        let key = DataKey::random(&mut OsRng);
        let recipient = RecipientId::random(&mut OsRng);
        let record = PasswordRecord {
            salt: Salt::from_bytes([3; 16]),
            kdf_params: KdfParams::DEFAULT,
            sealed_private_key: vec![1, 2, 3],
        };
        let sealed = key.seal_password_record(recipient, &record, &mut OsRng);
        assert_eq!(
            key.open_password_record(recipient, &sealed).unwrap(),
            record
        );
        let other = RecipientId::random(&mut OsRng);
        assert_eq!(
            key.open_password_record(other, &sealed),
            Err(Error::DecryptionFailed)
        );
        assert_eq!(
            DataKey::random(&mut OsRng).open_password_record(recipient, &sealed),
            Err(Error::DecryptionFailed)
        );
        assert!(
            !sealed
                .windows(16)
                .any(|w| w == record.salt.as_bytes().as_slice()),
            "the salt is not in the clear"
        );
    }

    #[test]
    fn the_stored_verifier_needs_the_data_key() {
        use crate::kdf::{Password, derive_password_keys};
        let keys = derive_password_keys(
            &Password::new("pw").unwrap(),
            &Salt::from_bytes([1; 16]),
            &KdfParams::MINIMUM,
        )
        .unwrap();
        let key = DataKey::random(&mut OsRng);
        let stored = key.pepper(&keys.auth.verifier());
        assert_ne!(stored.as_bytes(), keys.auth.verifier().as_bytes());
        assert!(key.verify(&stored, &keys.auth));
        assert!(!DataKey::random(&mut OsRng).verify(&stored, &keys.auth));
        let wrong = derive_password_keys(
            &Password::new("pW").unwrap(),
            &Salt::from_bytes([1; 16]),
            &KdfParams::MINIMUM,
        )
        .unwrap();
        assert!(!key.verify(&stored, &wrong.auth));
        assert!(format!("{stored:?}").contains("[redacted]"));
    }
}
