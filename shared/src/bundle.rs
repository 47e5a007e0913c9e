//! The recipient key bundle: the public key the relay publishes to senders, and the private key
//! sealed under the password-derived sealing key, which only the patient's browser can open.
//!
//! # Wire format
//! ```text
//! sealed_private_key = 0x01 || nonce[12] || AES-256-GCM(sealing key, nonce, aad, PKCS#8 DER)
//! aad                = "securetext/v1/sealed-private-key" || 0x02 || recipient_id[16]
//!                      || salt[16] || kdf_params (13 bytes, KdfParams::to_bytes)
//! ```
//! Bundles sealed before the salt and parameters were bound (format 1) used
//! `aad = "securetext/v1/sealed-private-key" || 0x01 || recipient_id[16]`; they still open, so
//! that patients enrolled then keep their messages. [`KeyBundle::seal`] writes only format 2.
//! JSON (enrollment and unlock): `{"public_key": b64u(SPKI), "sealed_private_key": b64u(...)}`.
//!
//! # Invariants
//! - The associated data binds the format version, the recipient, and the salt and KDF
//!   parameters the sealing key was derived with, so a relay cannot swap one patient's sealed key
//!   into another's record, nor pair it with a salt or parameters other than those it was
//!   sealed under: the viewer unseals with the salt and parameters it derived from, and a
//!   mismatch is refused as [`Error::DecryptionFailed`].
//! - Unsealing also checks that the private key matches the published public key, so a bundle
//!   whose halves were mixed is refused as [`Error::DecryptionFailed`].

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use crate::aead::{open_box, random_nonce, seal_box};
use crate::ids::RecipientId;
use crate::kdf::{KdfParams, Salt, SealingKey};
use crate::keys::{PrivateKey, PublicKey};
use crate::{Error, FORMAT_VERSION};

/// Prefix of the associated data of a sealed private key.
pub const SEALED_PRIVATE_KEY_AAD_PREFIX: &[u8] = b"securetext/v1/sealed-private-key";

/// The sealed-private-key format that binds salt and parameters (see the module docs).
const BOUND_FORMAT: u8 = 0x02;

/// What a sealed private key is bound to: its recipient and the derivation of its sealing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealBinding {
    /// The patient the key belongs to.
    pub recipient: RecipientId,
    /// The Argon2id salt the sealing key was derived with.
    pub salt: Salt,
    /// The Argon2id parameters the sealing key was derived with.
    pub kdf_params: KdfParams,
}

impl SealBinding {
    /// The associated data of a format-2 sealed private key.
    pub fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(SEALED_PRIVATE_KEY_AAD_PREFIX.len() + 1 + 16 + 16 + 13);
        aad.extend_from_slice(SEALED_PRIVATE_KEY_AAD_PREFIX);
        aad.push(BOUND_FORMAT);
        aad.extend_from_slice(self.recipient.as_bytes());
        aad.extend_from_slice(self.salt.as_bytes());
        aad.extend_from_slice(&self.kdf_params.to_bytes());
        aad
    }
}

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
    /// Seals `private` under the sealing key, bound to `binding`, with a fresh random nonce.
    pub fn seal(
        private: &PrivateKey,
        binding: &SealBinding,
        sealing: &SealingKey,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, Error> {
        Self::seal_with_nonce(private, binding, sealing, &random_nonce(rng))
    }

    /// Deterministic sealing for test vectors; production code uses [`Self::seal`].
    #[doc(hidden)]
    pub fn seal_with_nonce(
        private: &PrivateKey,
        binding: &SealBinding,
        sealing: &SealingKey,
        nonce: &[u8; 12],
    ) -> Result<Self, Error> {
        let der = private.to_pkcs8_der()?;
        Ok(Self {
            public_key: private.public_key().clone(),
            sealed_private_key: seal_box(sealing.0.expose(), nonce, &binding.aad(), &der),
        })
    }

    /// Opens the sealed private key under `binding` (or, for a bundle sealed before salt and
    /// parameters were bound, under its recipient alone) and checks it belongs to the bundle's
    /// public key.
    pub fn unseal(&self, binding: &SealBinding, sealing: &SealingKey) -> Result<PrivateKey, Error> {
        let key = sealing.0.expose();
        let der = open_box(key, &binding.aad(), &self.sealed_private_key).or_else(|_| {
            open_box(
                key,
                &legacy_aad(binding.recipient),
                &self.sealed_private_key,
            )
        })?;
        let private = PrivateKey::from_pkcs8_der(&der).map_err(|_| Error::DecryptionFailed)?;
        if private.public_key() != &self.public_key {
            return Err(Error::DecryptionFailed);
        }
        Ok(private)
    }
}

/// The associated data of a format-1 sealed private key, which bound only the recipient.
fn legacy_aad(recipient: RecipientId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(SEALED_PRIVATE_KEY_AAD_PREFIX.len() + 17);
    aad.extend_from_slice(SEALED_PRIVATE_KEY_AAD_PREFIX);
    aad.push(FORMAT_VERSION);
    aad.extend_from_slice(recipient.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use rand_core::OsRng;

    use super::*;
    use crate::kdf::{Password, derive_password_keys};

    fn fixture() -> (PrivateKey, SealBinding, SealingKey) {
        let private = PrivateKey::generate(&mut OsRng).unwrap();
        let binding = SealBinding {
            recipient: RecipientId::random(&mut OsRng),
            salt: Salt::random(&mut OsRng),
            kdf_params: KdfParams::MINIMUM,
        };
        let keys = derive_password_keys(
            &Password::new("pw").unwrap(),
            &binding.salt,
            &binding.kdf_params,
        )
        .unwrap();
        (private, binding, keys.sealing)
    }

    #[test]
    fn a_format_1_bundle_still_opens_for_its_recipient() {
        let (private, binding, sealing) = fixture();
        let legacy = KeyBundle {
            public_key: private.public_key().clone(),
            sealed_private_key: seal_box(
                sealing.0.expose(),
                &[9; 12],
                &legacy_aad(binding.recipient),
                &private.to_pkcs8_der().unwrap(),
            ),
        };
        assert_eq!(
            legacy.unseal(&binding, &sealing).unwrap().public_key(),
            private.public_key()
        );
        let elsewhere = SealBinding {
            recipient: RecipientId::random(&mut OsRng),
            ..binding
        };
        assert_eq!(
            legacy.unseal(&elsewhere, &sealing).err(),
            Some(Error::DecryptionFailed)
        );
    }

    #[test]
    fn a_format_2_bundle_opens_only_beside_its_own_salt_and_parameters() {
        let (private, binding, sealing) = fixture();
        let bundle = KeyBundle::seal(&private, &binding, &sealing, &mut OsRng).unwrap();
        assert!(bundle.unseal(&binding, &sealing).is_ok());
        let shared_salt = SealBinding {
            salt: Salt::from_bytes([0; 16]),
            ..binding
        };
        let other_params = SealBinding {
            kdf_params: KdfParams::DEFAULT,
            ..binding
        };
        for wrong in [shared_salt, other_params] {
            assert_eq!(
                bundle.unseal(&wrong, &sealing).err(),
                Some(Error::DecryptionFailed)
            );
        }
    }
}
