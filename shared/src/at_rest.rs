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

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::Error;
use crate::aead::{open_box, random_nonce, seal_box};
use crate::kdf::expand;
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
}
