//! The organisation key file: the organisation's RSA private key at rest on its own host,
//! sealed under a key derived from an operator's passphrase.
//!
//! The sender tooling needs the organisation private key for re-wrapping first-contact
//! messages. Keeping it sealed means a copied file (a backup, a stolen disk) is useless without
//! the passphrase, and the passphrase goes through the same Argon2id + HKDF derivation and the
//! same sealed-box layout as a patient's password, so a reviewer audits one construction.
//!
//! # Wire format
//! JSON, exactly these fields (unknown fields are refused):
//! ```text
//! {
//!   "version": 1,
//!   "organisation_id": uuid text,
//!   "kdf_params": {"algorithm": "argon2id-v19", "memory_kib": .., "iterations": .., "parallelism": ..},
//!   "salt": b64u (16 bytes),
//!   "public_key": b64u (SPKI DER),
//!   "sealed_private_key": b64u (sealed box)
//! }
//! sealing            = derive_password_keys(NFC(passphrase), salt, kdf_params).sealing
//! sealed_private_key = 0x01 || nonce[12] || AES-256-GCM(sealing, nonce, aad, PKCS#8 DER)
//! aad                = "securetext/v1/organisation-key-file" || 0x01 || organisation_id[16]
//! ```
//! The auth key that the same derivation produces is not used: nothing is proved to anyone.
//!
//! # Invariants
//! - The associated data binds the format version and the organisation, so a key file cannot be
//!   relabelled as another organisation's.
//! - Unsealing checks that the private key matches the file's `public_key`, so a file whose
//!   halves were mixed, like a wrong passphrase or any altered byte of the sealed key, fails as
//!   [`Error::DecryptionFailed`]. An altered `salt`, `kdf_params` or `organisation_id` derives
//!   another key or AAD and fails the same way; an altered `public_key` fails the match.
//! - KDF parameters are validated before any derivation (a planted file with absurd costs is
//!   refused rather than exhausting the host).
//! - The file holds no secret in the clear, but it is still written owner-only by the tooling:
//!   the passphrase is then the second of two barriers, not the only one.

use std::fmt;

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use crate::aead::{open_box, random_nonce, seal_box};
use crate::ids::OrganisationId;
use crate::kdf::{KdfParams, Password, Salt, derive_password_keys};
use crate::keys::{Fingerprint, PrivateKey, PublicKey};
use crate::{Error, FORMAT_VERSION};

/// Prefix of the associated data of an organisation key file's sealed private key.
pub const ORGANISATION_KEY_FILE_AAD_PREFIX: &[u8] = b"securetext/v1/organisation-key-file";

/// An organisation's key pair as stored on its host: the public key in the clear, the private
/// key sealed under a passphrase.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganisationKeyFile {
    /// Format version; 1 for everything this crate writes.
    pub version: u8,
    /// The organisation the key belongs to; bound into the associated data.
    pub organisation_id: OrganisationId,
    /// Argon2id costs for the passphrase.
    pub kdf_params: KdfParams,
    /// Random per file; a new one each time the file is sealed.
    pub salt: Salt,
    /// The organisation's public key, as registered with the relay.
    pub public_key: PublicKey,
    /// The PKCS#8 private key in the sealed-box layout.
    #[serde(with = "crate::encoding::b64u")]
    pub sealed_private_key: Vec<u8>,
}

impl OrganisationKeyFile {
    /// Seals `private` for `organisation_id` under `passphrase`, with a fresh salt and nonce.
    /// Fails if `params` are outside the accepted range.
    pub fn seal(
        private: &PrivateKey,
        organisation_id: OrganisationId,
        passphrase: &Password,
        params: KdfParams,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, Error> {
        let salt = Salt::random(rng);
        let keys = derive_password_keys(passphrase, &salt, &params)?;
        let der = private.to_pkcs8_der()?;
        let sealed_private_key = seal_box(
            keys.sealing.0.expose(),
            &random_nonce(rng),
            &aad(organisation_id),
            &der,
        );
        Ok(Self {
            version: FORMAT_VERSION,
            organisation_id,
            kdf_params: params,
            salt,
            public_key: private.public_key().clone(),
            sealed_private_key,
        })
    }

    /// Derives the sealing key from `passphrase`, opens the private key and checks that it
    /// belongs to [`Self::public_key`]. Every failure that depends on the passphrase or the
    /// sealed bytes is [`Error::DecryptionFailed`].
    pub fn unseal(&self, passphrase: &Password) -> Result<PrivateKey, Error> {
        self.check_version()?;
        let keys = derive_password_keys(passphrase, &self.salt, &self.kdf_params)?;
        let der = open_box(
            keys.sealing.0.expose(),
            &aad(self.organisation_id),
            &self.sealed_private_key,
        )?;
        let private = PrivateKey::from_pkcs8_der(&der).map_err(|_| Error::DecryptionFailed)?;
        if private.public_key() != &self.public_key {
            return Err(Error::DecryptionFailed);
        }
        Ok(private)
    }

    /// Parses the JSON form and checks its version. The sealed key is not opened here.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        let file: Self = serde_json::from_str(text)
            .map_err(|_| Error::malformed("organisation key file", "not the documented JSON"))?;
        file.check_version()?;
        file.kdf_params.validate()?;
        Ok(file)
    }

    /// The JSON form (pretty-printed, ending in a newline), as written to disk.
    pub fn to_json(&self) -> String {
        let mut text =
            serde_json::to_string_pretty(self).expect("a key file always serializes to JSON");
        text.push('\n');
        text
    }

    /// The fingerprint of the organisation's public key.
    pub fn fingerprint(&self) -> Fingerprint {
        self.public_key.fingerprint()
    }

    fn check_version(&self) -> Result<(), Error> {
        if self.version == FORMAT_VERSION {
            Ok(())
        } else {
            Err(Error::UnsupportedVersion(self.version))
        }
    }
}

impl fmt::Debug for OrganisationKeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The sealed key is ciphertext, but there is no reason to spread it through logs.
        f.debug_struct("OrganisationKeyFile")
            .field("version", &self.version)
            .field("organisation_id", &self.organisation_id)
            .field("kdf_params", &self.kdf_params)
            .field("fingerprint", &self.fingerprint())
            .field("sealed_private_key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The associated data of an organisation key file's sealed private key.
pub fn aad(organisation_id: OrganisationId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(ORGANISATION_KEY_FILE_AAD_PREFIX.len() + 17);
    aad.extend_from_slice(ORGANISATION_KEY_FILE_AAD_PREFIX);
    aad.push(FORMAT_VERSION);
    aad.extend_from_slice(organisation_id.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    /// The `organisation` key of the protocol vectors: no key generation in unit tests.
    fn organisation_key() -> PrivateKey {
        let file: serde_json::Value =
            serde_json::from_str(include_str!("../tests/vectors/v1.json")).unwrap();
        let entry = file["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == "organisation")
            .unwrap();
        PrivateKey::from_pkcs8_der(
            &hex::decode(entry["private_key_pkcs8"].as_str().unwrap()).unwrap(),
        )
        .unwrap()
    }

    fn org() -> OrganisationId {
        OrganisationId::from_bytes([0x42; 16])
    }

    fn sealed(key: &PrivateKey) -> OrganisationKeyFile {
        OrganisationKeyFile::seal(
            key,
            org(),
            &Password::new("correct horse battery staple").unwrap(),
            KdfParams::MINIMUM,
            &mut OsRng,
        )
        .unwrap()
    }

    #[test]
    fn round_trip_through_json() {
        let key = organisation_key();
        let file = sealed(&key);
        let text = file.to_json();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut fields: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "kdf_params",
                "organisation_id",
                "public_key",
                "salt",
                "sealed_private_key",
                "version"
            ]
        );
        let parsed = OrganisationKeyFile::from_json(&text).unwrap();
        assert_eq!(parsed, file);
        let opened = parsed
            .unseal(&Password::new("correct horse battery staple").unwrap())
            .unwrap();
        assert_eq!(opened.public_key(), key.public_key());
        assert_eq!(parsed.fingerprint(), key.public_key().fingerprint());
        // PKCS#8 (about 1794 bytes) plus version, nonce and tag.
        assert!((1_800..=1_830).contains(&file.sealed_private_key.len()));
    }

    #[test]
    fn aad_layout() {
        let aad = aad(org());
        assert_eq!(aad.len(), 35 + 1 + 16);
        assert_eq!(&aad[..35], b"securetext/v1/organisation-key-file");
        assert_eq!(aad[35], 1);
        assert_eq!(&aad[36..], &[0x42; 16]);
    }

    #[test]
    fn wrong_passphrase_is_decryption_failed() {
        let file = sealed(&organisation_key());
        assert_eq!(
            file.unseal(&Password::new("correct horse battery stapler").unwrap())
                .unwrap_err(),
            Error::DecryptionFailed
        );
    }

    #[test]
    fn any_tampering_fails() {
        let key = organisation_key();
        let file = sealed(&key);
        let passphrase = Password::new("correct horse battery staple").unwrap();
        for index in [0, 1, 13, 500, file.sealed_private_key.len() - 1] {
            let mut altered = file.clone();
            altered.sealed_private_key[index] ^= 0x01;
            let error = altered.unseal(&passphrase).unwrap_err();
            if index == 0 {
                assert_eq!(error, Error::UnsupportedVersion(0));
            } else {
                assert_eq!(error, Error::DecryptionFailed, "byte {index}");
            }
        }
        let mut relabelled = file.clone();
        relabelled.organisation_id = OrganisationId::from_bytes([0x43; 16]);
        assert_eq!(
            relabelled.unseal(&passphrase).unwrap_err(),
            Error::DecryptionFailed
        );
        let mut salted = file.clone();
        salted.salt = Salt::from_bytes([0; 16]);
        assert_eq!(
            salted.unseal(&passphrase).unwrap_err(),
            Error::DecryptionFailed
        );
        let mut swapped = file.clone();
        swapped.public_key = PrivateKey::generate(&mut OsRng)
            .unwrap()
            .public_key()
            .clone();
        assert_eq!(
            swapped.unseal(&passphrase).unwrap_err(),
            Error::DecryptionFailed
        );
        let mut future = file.clone();
        future.version = 2;
        assert_eq!(
            future.unseal(&passphrase).unwrap_err(),
            Error::UnsupportedVersion(2)
        );
        assert_eq!(
            OrganisationKeyFile::from_json(&future.to_json()).unwrap_err(),
            Error::UnsupportedVersion(2)
        );
    }

    #[test]
    fn strict_json_and_refused_params() {
        let file = sealed(&organisation_key());
        let mut value: serde_json::Value = serde_json::from_str(&file.to_json()).unwrap();
        value["comment"] = "x".into();
        assert!(OrganisationKeyFile::from_json(&value.to_string()).is_err());
        let mut weak = file.clone();
        weak.kdf_params = KdfParams::argon2id(1_024, 1, 1);
        assert!(matches!(
            OrganisationKeyFile::from_json(&weak.to_json()),
            Err(Error::KdfParamsRefused(_))
        ));
        assert!(matches!(
            weak.unseal(&Password::new("correct horse battery staple").unwrap()),
            Err(Error::KdfParamsRefused(_))
        ));
        assert!(OrganisationKeyFile::from_json("{}").is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let file = sealed(&organisation_key());
        let debug = format!("{file:?}");
        let sealed_text = crate::encoding::b64u_encode(&file.sealed_private_key);
        assert!(debug.contains("[redacted]"));
        assert!(debug.contains(&file.fingerprint().to_string()));
        assert!(!debug.contains(&sealed_text[..16]));
    }
}
