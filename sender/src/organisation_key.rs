//! The organisation's private key as the agent uses it: RSA-OAEP decryption by AWS-LC, which is
//! constant-time, instead of the `rsa` crate, which is not (RUSTSEC-2023-0071, the Marvin
//! attack; THREAT_MODEL.md, section 6.3).
//!
//! The agent runs unattended and decrypts wraps that the relay hands it, so its private-key
//! operation is the one an attacker is best placed to time. The key file is still opened by
//! `shared` (it parses and checks the PKCS#8, sealed under the passphrase); this module hands
//! the checked PKCS#8 to AWS-LC once and keeps only AWS-LC's key. `shared` decides what to
//! decrypt ([`shared::envelope::Unwrapping`]); this type only decrypts.
//!
//! Why here and not in `shared`: AWS-LC is C and assembly and does not build for
//! `wasm32-unknown-unknown`, and `shared` must; the viewer has its own constant-time backend
//! (WebCrypto). This is the only native host that decrypts wraps.
//!
//! # Invariants
//! - The AWS-LC key is the key of the checked [`PrivateKey`]: its public key's SPKI must equal
//!   the one `shared` derived, or construction fails.
//! - The PKCS#8 copy made for the import is wiped; the `rsa` crate's key is dropped (and wiped)
//!   right after; AWS-LC clears its private values when the key is freed (`BN_clear_free`).

use std::fmt;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey};
use shared::keys::{PrivateKey, PublicKey, WrapKey};
use zeroize::Zeroizing;

/// The organisation's private key, for decrypting its wraps in constant time.
pub struct OrganisationKey {
    decrypting: OaepPrivateDecryptingKey,
    public: PublicKey,
}

impl OrganisationKey {
    /// Moves a checked private key into AWS-LC. Fails only if AWS-LC refuses the key or sees
    /// another public key than `shared` did (neither happens with a key `shared` accepted).
    pub fn new(key: PrivateKey) -> Result<Self, shared::Error> {
        let refused = || shared::Error::InvalidKey("AWS-LC refuses the organisation key");
        let pkcs8 = key.to_pkcs8_der()?;
        let public = key.public_key().clone();
        drop(key);
        let private = PrivateDecryptingKey::from_pkcs8(&pkcs8).map_err(|_| refused())?;
        drop(pkcs8);
        let spki =
            AsDer::<PublicKeyX509Der>::as_der(&private.public_key()).map_err(|_| refused())?;
        if spki.as_ref() != public.spki_der() {
            return Err(refused());
        }
        let decrypting = OaepPrivateDecryptingKey::new(private).map_err(|_| refused())?;
        Ok(Self { decrypting, public })
    }

    /// The organisation's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}

impl WrapKey for OrganisationKey {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn decrypt_wrap(
        &self,
        wrapped: &[u8],
        label: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, shared::Error> {
        let mut out = Zeroizing::new(vec![0u8; self.decrypting.min_output_size()]);
        let len = self
            .decrypting
            .decrypt(&OAEP_SHA256_MGF1SHA256, wrapped, &mut out, Some(label))
            .map_err(|_| shared::Error::DecryptionFailed)?
            .len();
        out.truncate(len);
        Ok(out)
    }
}

impl fmt::Debug for OrganisationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OrganisationKey(aws-lc, [redacted], public {})",
            self.public.fingerprint()
        )
    }
}

#[cfg(test)]
mod tests {
    use shared::envelope::{ContentKey, Envelope, WrapRole};

    use super::*;

    const VECTORS: &str = include_str!("../../shared/tests/vectors/v1.json");

    fn vectors() -> serde_json::Value {
        serde_json::from_str(VECTORS).unwrap()
    }

    fn vector_key(file: &serde_json::Value, name: &str) -> PrivateKey {
        let entry = file["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap();
        PrivateKey::from_pkcs8_der(
            &hex::decode(entry["private_key_pkcs8"].as_str().unwrap()).unwrap(),
        )
        .unwrap()
    }

    /// The protocol's envelope vectors open with the organisation key in AWS-LC: the agent's
    /// unwrap is AWS-LC's constant-time RSA-OAEP, byte-compatible with the wrap format
    /// (issue 12, finding 12).
    #[test]
    fn envelope_vectors_open_with_the_aws_lc_key() {
        let file = vectors();
        let key = OrganisationKey::new(vector_key(&file, "organisation")).unwrap();
        let envelopes = file["envelope"].as_array().unwrap();
        assert!(!envelopes.is_empty());
        for v in envelopes {
            let envelope: Envelope = serde_json::from_value(v["envelope_json"].clone()).unwrap();
            let content_key: [u8; 32] = hex::decode(v["content_key"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            assert!(
                envelope
                    .unwrap_with(&key)
                    .unwrap()
                    .ct_eq(&ContentKey::from_bytes_for_vectors(content_key))
            );
            assert_eq!(
                envelope.open(&key, None).unwrap().body,
                v["body"].as_str().unwrap()
            );
        }
    }

    /// AWS-LC checks the label: a wrap moved to another message's envelope does not open.
    #[test]
    fn a_wrap_under_another_label_does_not_open() {
        let file = vectors();
        let key = OrganisationKey::new(vector_key(&file, "organisation")).unwrap();
        let envelope: Envelope =
            serde_json::from_value(file["envelope"][0]["envelope_json"].clone()).unwrap();
        let wrap = envelope.wrap_for(WrapRole::Organisation).unwrap();
        let label = "securetext/v1/content-key/00000000-0000-4000-8000-000000000000";
        assert_eq!(
            key.decrypt_wrap(&wrap.wrapped_key, label.as_bytes()),
            Err(shared::Error::DecryptionFailed)
        );
        let mut altered = wrap.wrapped_key.clone();
        altered[10] ^= 1;
        let unwrapping = envelope.unwrapping(key.public_key(), None).unwrap();
        assert_eq!(
            key.decrypt_wrap(&altered, unwrapping.label()),
            Err(shared::Error::DecryptionFailed)
        );
    }

    #[test]
    fn the_aws_lc_key_is_the_checked_key_and_prints_redacted() {
        let file = vectors();
        let private = vector_key(&file, "organisation");
        let public = private.public_key().clone();
        let key = OrganisationKey::new(private).unwrap();
        assert_eq!(key.public_key(), &public);
        let debug = format!("{key:?}");
        assert!(debug.contains("[redacted]") && debug.contains(&public.fingerprint().to_string()));
    }
}
