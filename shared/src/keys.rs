//! RSA key pairs of recipients and organisations, and their fingerprints.
//!
//! # Wire format
//! - Public key: DER `SubjectPublicKeyInfo` (RFC 5280, `rsaEncryption`), as WebCrypto's
//!   `exportKey("spki")` produces; base64url in JSON.
//! - Private key: DER PKCS#8 `PrivateKeyInfo` (RFC 5208), as `exportKey("pkcs8")` produces; it
//!   only ever travels sealed (see [`crate::bundle`] and [`crate::session`]).
//! - Fingerprint: SHA-256 over the SPKI DER bytes, written as 64 lowercase hex digits.
//!
//! # Invariants
//! - Keys are RSA with public exponent 65537 and a modulus of 3072 to 4096 bits; anything else
//!   is refused on parse, so a relay cannot hand a sender a weak key to encrypt to.
//! - Unwrapping a content key is the only RSA private-key operation whose input another party
//!   chooses, so it goes through [`WrapKey`]: `shared` says *what* to decrypt (ciphertext and
//!   label, see [`crate::envelope::Unwrapping`]) and the holder of the key says *who* decrypts.
//!   The viewer decrypts with a non-extractable WebCrypto key and the sender's agent with
//!   AWS-LC, both constant-time; [`PrivateKey`]'s own implementation uses the `rsa` crate, which
//!   is not (RUSTSEC-2023-0071), and serves tests and vector checks only.
//! - [`PrivateKey`] zeroizes on drop (the `rsa` crate wipes its limbs), prints redacted, is not
//!   `Clone`, and exports only as a wiped PKCS#8 buffer.

use std::fmt;

use rand_core::CryptoRngCore;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Oaep, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Error;
use crate::encoding::{b64u_decode, b64u_encode};

/// Modulus size of every key this crate generates. 3072 bits gives about 128-bit security
/// (NIST SP 800-57), matching AES-256-GCM's and SHA-256's margins better than 2048.
pub const RSA_BITS: usize = 3072;
/// Largest modulus accepted from elsewhere.
pub const RSA_MAX_BITS: usize = 4096;
const PUBLIC_EXPONENT: u32 = 65_537;

/// SHA-256 of a public key's SPKI encoding: what senders pin and patients can compare.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The fingerprint's bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 lowercase hex digits, the one form [`fmt::Display`] writes (upper case is
    /// refused, so that a fingerprint compared or stored as text has one spelling).
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Error::malformed(
                "fingerprint",
                "not 64 lowercase hex digits",
            ));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| Error::malformed("fingerprint", "not 64 hex digits"))?;
        Ok(Self(bytes))
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        Self::parse(text)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An RSA public key that meets the protocol's requirements.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: RsaPublicKey,
    spki: Vec<u8>,
}

impl PublicKey {
    /// Parses and checks an SPKI DER public key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        let key = RsaPublicKey::from_public_key_der(der)
            .map_err(|_| Error::InvalidKey("not an RSA SubjectPublicKeyInfo"))?;
        check_public(&key)?;
        // Re-encode so that the fingerprint is over the canonical DER, not a lenient variant.
        let spki = encode_spki(&key)?;
        if spki != der {
            return Err(Error::InvalidKey("public key DER is not canonical"));
        }
        Ok(Self { key, spki })
    }

    /// The SPKI DER bytes.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// SHA-256 of the SPKI DER bytes.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(Sha256::digest(&self.spki).into())
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.n().bits()
    }

    pub(crate) fn rsa(&self) -> &RsaPublicKey {
        &self.key
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(rsa-{}, {})", self.bits(), self.fingerprint())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&b64u_encode(&self.spki))
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        b64u_decode(&text, "public key")
            .and_then(|der| Self::from_spki_der(&der))
            .map_err(serde::de::Error::custom)
    }
}

/// Who decrypts a content-key wrap: the holder of an RSA private key, through whichever
/// implementation it trusts. The wrap format is fixed (RSA-OAEP with SHA-256 for the label hash
/// and MGF1, see [`crate::envelope`]); an implementation only decrypts.
pub trait WrapKey {
    /// The matching public key: its fingerprint picks the wrap to decrypt.
    fn public_key(&self) -> &PublicKey;

    /// RSA-OAEP-SHA-256 decryption of `wrapped` under `label`, into a buffer wiped on drop. Any
    /// failure is [`Error::DecryptionFailed`], with no detail (an oracle on padding must not
    /// exist at this level either).
    fn decrypt_wrap(&self, wrapped: &[u8], label: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error>;
}

/// An RSA private key (a recipient's or an organisation's), parsed and checked. The viewer and
/// the sender hold one only to seal it (bundle, session blob, key file) and to hand its PKCS#8
/// to a constant-time backend; its own [`WrapKey`] implementation is for tests.
pub struct PrivateKey {
    key: RsaPrivateKey,
    public: PublicKey,
}

impl PrivateKey {
    /// Generates a fresh [`RSA_BITS`]-bit key pair. Takes a few hundred milliseconds natively
    /// and several seconds in a phone browser.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Result<Self, Error> {
        let key = RsaPrivateKey::new_with_exp(rng, RSA_BITS, &BigUint::from(PUBLIC_EXPONENT))
            .map_err(|_| Error::KeyGeneration)?;
        Self::from_rsa(key)
    }

    /// Parses and checks a PKCS#8 DER private key (for example one made by WebCrypto).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let key = RsaPrivateKey::from_pkcs8_der(der)
            .map_err(|_| Error::InvalidKey("not an RSA PKCS#8 private key"))?;
        Self::from_rsa(key)
    }

    fn from_rsa(mut key: RsaPrivateKey) -> Result<Self, Error> {
        key.validate()
            .map_err(|_| Error::InvalidKey("inconsistent RSA private key"))?;
        key.precompute()
            .map_err(|_| Error::InvalidKey("inconsistent RSA private key"))?;
        let public_rsa = key.to_public_key();
        check_public(&public_rsa)?;
        let spki = encode_spki(&public_rsa)?;
        Ok(Self {
            key,
            public: PublicKey {
                key: public_rsa,
                spki,
            },
        })
    }

    /// The PKCS#8 DER encoding, in a buffer wiped on drop. Only for sealing (bundle, session
    /// blob, the organisation's key file): never store or send it in the clear.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let document = self
            .key
            .to_pkcs8_der()
            .map_err(|_| Error::InvalidKey("cannot encode private key"))?;
        Ok(Zeroizing::new(document.as_bytes().to_vec()))
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}

/// The `rsa` crate's OAEP decryption, which is not constant-time (RUSTSEC-2023-0071): used by
/// tests, test kits and vector checks, never by the viewer or the sender's agent, which
/// decrypt with WebCrypto and AWS-LC.
impl WrapKey for PrivateKey {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn decrypt_wrap(&self, wrapped: &[u8], label: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let label = std::str::from_utf8(label).map_err(|_| Error::DecryptionFailed)?;
        self.key
            .decrypt(Oaep::new_with_label::<Sha256, _>(label), wrapped)
            .map(Zeroizing::new)
            .map_err(|_| Error::DecryptionFailed)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PrivateKey([redacted], public {})",
            self.public.fingerprint()
        )
    }
}

fn check_public(key: &RsaPublicKey) -> Result<(), Error> {
    if *key.e() != BigUint::from(PUBLIC_EXPONENT) {
        return Err(Error::InvalidKey("public exponent must be 65537"));
    }
    let bits = key.n().bits();
    if !(RSA_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(Error::InvalidKey("modulus must be 3072 to 4096 bits"));
    }
    Ok(())
}

fn encode_spki(key: &RsaPublicKey) -> Result<Vec<u8>, Error> {
    key.to_public_key_der()
        .map(|document| document.as_bytes().to_vec())
        .map_err(|_| Error::InvalidKey("cannot encode public key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One text form only (issue 12, finding 14): lowercase hex, as written.
    #[test]
    fn fingerprints_are_lowercase_hex_only() {
        let text = "bc31c2bf2950500e3d5bc76e5d9da5f23f9fb0e3feb2a287b8bd97c5352fe321";
        assert_eq!(Fingerprint::parse(text).unwrap().to_string(), text);
        assert!(Fingerprint::parse(&text.to_uppercase()).is_err());
        assert!(
            serde_json::from_str::<Fingerprint>(&format!("\"{}\"", text.to_uppercase())).is_err()
        );
    }
    use rand_core::OsRng;

    #[test]
    fn generated_key_is_3072_bits_and_round_trips() {
        let private = PrivateKey::generate(&mut OsRng).unwrap();
        assert_eq!(private.public_key().bits(), RSA_BITS);
        let reparsed = PrivateKey::from_pkcs8_der(&private.to_pkcs8_der().unwrap()).unwrap();
        assert_eq!(reparsed.public_key(), private.public_key());
        let public = PublicKey::from_spki_der(private.public_key().spki_der()).unwrap();
        assert_eq!(public.fingerprint(), private.public_key().fingerprint());
        let json = serde_json::to_string(&public.fingerprint()).unwrap();
        assert_eq!(json.len(), 66);
        assert_eq!(
            serde_json::from_str::<Fingerprint>(&json).unwrap(),
            public.fingerprint()
        );
    }

    #[test]
    fn weak_keys_are_refused() {
        let small = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let der = small.to_public_key().to_public_key_der().unwrap();
        assert_eq!(
            PublicKey::from_spki_der(der.as_bytes()),
            Err(Error::InvalidKey("modulus must be 3072 to 4096 bits"))
        );
        let der = small.to_pkcs8_der().unwrap();
        assert!(PrivateKey::from_pkcs8_der(der.as_bytes()).is_err());
        assert!(PublicKey::from_spki_der(b"garbage").is_err());
    }
}
