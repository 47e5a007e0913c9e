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

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

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
