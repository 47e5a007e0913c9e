//! The recipient key bundle: the public key the relay publishes to senders, and the private key
//! sealed under the password-derived sealing key, which only the patient's browser can open.
//!
//! # Wire format
//! ```text
//! sealed_private_key = 0x01 || nonce[12] || AES-256-GCM(sealing key, nonce, aad, PKCS#8 DER)
//! aad                = "securetext/v1/sealed-private-key" || 0x01 || recipient_id[16]
//! ```
//! JSON (enrollment and unlock): `{"public_key": b64u(SPKI), "sealed_private_key": b64u(...)}`.
//!
//! # Invariants
//! - The associated data binds the format version and the recipient, so a relay cannot swap one
//!   patient's sealed key into another's record.
//! - Unsealing also checks that the private key matches the published public key, so a bundle
//!   whose halves were mixed is refused as [`Error::DecryptionFailed`].

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use crate::aead::{open_box, random_nonce, seal_box};
use crate::ids::RecipientId;
use crate::kdf::SealingKey;
use crate::keys::{PrivateKey, PublicKey};
use crate::{Error, FORMAT_VERSION};

/// Prefix of the associated data of a sealed private key.
pub const SEALED_PRIVATE_KEY_AAD_PREFIX: &[u8] = b"securetext/v1/sealed-private-key";

/// What the relay stores for an enrolled recipient (besides salt, KDF parameters and verifier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyBundle {
    /// Published to senders so they can wrap content keys to the patient.
    pub public_key: PublicKey,
    /// The private key, sealed: opaque to everyone without the password.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    #[serde(with = "crate::encoding::b64u")]
    pub sealed_private_key: Vec<u8>,
}

impl KeyBundle {
    /// Seals `private` for `recipient` under the sealing key, with a fresh random nonce.
    pub fn seal(
        private: &PrivateKey,
        recipient: RecipientId,
        sealing: &SealingKey,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, Error> {
        Self::seal_with_nonce(private, recipient, sealing, &random_nonce(rng))
    }

    /// Deterministic sealing for test vectors; production code uses [`Self::seal`].
    #[doc(hidden)]
    pub fn seal_with_nonce(
        private: &PrivateKey,
        recipient: RecipientId,
        sealing: &SealingKey,
        nonce: &[u8; 12],
    ) -> Result<Self, Error> {
        let der = private.to_pkcs8_der()?;
        Ok(Self {
            public_key: private.public_key().clone(),
            sealed_private_key: seal_box(sealing.0.expose(), nonce, &aad(recipient), &der),
        })
    }

    /// Opens the sealed private key and checks it belongs to the bundle's public key.
    pub fn unseal(
        &self,
        recipient: RecipientId,
        sealing: &SealingKey,
    ) -> Result<PrivateKey, Error> {
        let der = open_box(
            sealing.0.expose(),
            &aad(recipient),
            &self.sealed_private_key,
        )?;
        let private = PrivateKey::from_pkcs8_der(&der).map_err(|_| Error::DecryptionFailed)?;
        if private.public_key() != &self.public_key {
            return Err(Error::DecryptionFailed);
        }
        Ok(private)
    }
}

/// The associated data of a sealed private key.
pub fn aad(recipient: RecipientId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(SEALED_PRIVATE_KEY_AAD_PREFIX.len() + 17);
    aad.extend_from_slice(SEALED_PRIVATE_KEY_AAD_PREFIX);
    aad.push(FORMAT_VERSION);
    aad.extend_from_slice(recipient.as_bytes());
    aad
}
