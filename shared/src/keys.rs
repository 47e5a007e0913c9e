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
//! - [`PrivateKey`] zeroizes on drop (its PKCS#8 buffer, and the `rsa` crate wipes its limbs),
//!   prints redacted, is not `Clone`, and exports only as a wiped PKCS#8 buffer.
//! - Parsing is structural (DER, algorithm, exponent, modulus size, canonical encoding) and the
//!   same in every build; the `rsa` feature (default; off in the viewer) adds the arithmetic
//!   check of private keys and the RSA operations themselves (see [`PrivateKey`]).

use std::fmt;

use pkcs1::UintRef;
use pkcs8::der::asn1::{AnyRef, BitStringRef};
use pkcs8::der::{Decode, Encode};
use pkcs8::spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
#[cfg(feature = "rsa")]
use rand_core::CryptoRngCore;
#[cfg(feature = "rsa")]
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
#[cfg(feature = "rsa")]
use rsa::{BigUint, Oaep, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
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
///
/// Parsed and checked from its DER structure alone (no big-number arithmetic), the same way
/// with and without the `rsa` feature.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    spki: Vec<u8>,
    bits: usize,
}

impl PublicKey {
    /// Parses and checks an SPKI DER public key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        const NOT_SPKI: Error = Error::InvalidKey("not an RSA SubjectPublicKeyInfo");
        let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(|_| NOT_SPKI)?;
        check_algorithm(&spki.algorithm).map_err(|_| NOT_SPKI)?;
        let rsa =
            pkcs1::RsaPublicKey::from_der(spki.subject_public_key.as_bytes().ok_or(NOT_SPKI)?)
                .map_err(|_| NOT_SPKI)?;
        let bits = rsa_rules(rsa.modulus, rsa.public_exponent).ok_or(NOT_SPKI)?;
        check_public(bits, rsa.public_exponent)?;
        // Re-encode so that the fingerprint is over the canonical DER, not a lenient variant.
        let spki = encode_spki(rsa.modulus, rsa.public_exponent)?;
        if spki != der {
            return Err(Error::InvalidKey("public key DER is not canonical"));
        }
        Ok(Self { spki, bits })
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
        self.bits
    }

    /// The key for the `rsa` crate's OAEP encryption (wrapping content keys).
    #[cfg(feature = "rsa")]
    pub(crate) fn rsa(&self) -> Result<RsaPublicKey, Error> {
        RsaPublicKey::from_public_key_der(&self.spki)
            .map_err(|_| Error::InvalidKey("not an RSA SubjectPublicKeyInfo"))
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
///
/// Every build checks the structure: two-prime PKCS#8 `rsaEncryption` in canonical DER whose
/// public half meets [`PublicKey`]'s rules. With the `rsa` feature (the default) parsing also
/// checks the arithmetic (the `rsa` crate's `validate`: `n = p·q`, `d·e ≡ 1`, and that the CRT
/// values are the ones `p`, `q` and `d` give). The viewer builds without it: its keys come from
/// WebCrypto's `generateKey` or from its own AEAD-sealed bundle or session blob, and the
/// browser checks the key again when it imports it for decryption.
pub struct PrivateKey {
    /// The canonical PKCS#8 DER encoding.
    der: Zeroizing<Vec<u8>>,
    #[cfg(feature = "rsa")]
    key: RsaPrivateKey,
    public: PublicKey,
}

impl PrivateKey {
    /// Generates a fresh [`RSA_BITS`]-bit key pair. Takes a few hundred milliseconds natively
    /// and several seconds in a phone browser.
    #[cfg(feature = "rsa")]
    pub fn generate(rng: &mut impl CryptoRngCore) -> Result<Self, Error> {
        let key = RsaPrivateKey::new_with_exp(rng, RSA_BITS, &BigUint::from(PUBLIC_EXPONENT))
            .map_err(|_| Error::KeyGeneration)?;
        let der = key
            .to_pkcs8_der()
            .map_err(|_| Error::InvalidKey("cannot encode private key"))?;
        Self::from_pkcs8_der(der.as_bytes())
    }

    /// Parses and checks a PKCS#8 DER private key (for example one made by WebCrypto).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        const NOT_PKCS8: Error = Error::InvalidKey("not an RSA PKCS#8 private key");
        let info = pkcs8::PrivateKeyInfo::from_der(der).map_err(|_| NOT_PKCS8)?;
        check_algorithm(&info.algorithm).map_err(|_| NOT_PKCS8)?;
        let rsa = pkcs1::RsaPrivateKey::from_der(info.private_key).map_err(|_| NOT_PKCS8)?;
        if rsa.version() != pkcs1::Version::TwoPrime {
            return Err(NOT_PKCS8);
        }
        let bits = rsa_rules(rsa.modulus, rsa.public_exponent).ok_or(NOT_PKCS8)?;
        let canonical = encode_pkcs8(&rsa)?;
        // One encoding per key (PROTOCOL.md, "Requirements"): DER still admits others of the
        // same key, such as a PKCS#8 v2 structure that also carries the public key, or
        // attributes. The bytes are secret: compared in constant time.
        if canonical.len() != der.len() || !bool::from(canonical.ct_eq(der)) {
            return Err(Error::InvalidKey("not the canonical DER encoding"));
        }
        #[cfg(feature = "rsa")]
        let key = checked_arithmetic(der, &canonical)?;
        check_public(bits, rsa.public_exponent)?;
        let public = PublicKey {
            spki: encode_spki(rsa.modulus, rsa.public_exponent)?,
            bits,
        };
        Ok(Self {
            der: canonical,
            #[cfg(feature = "rsa")]
            key,
            public,
        })
    }

    /// The PKCS#8 DER encoding, in a buffer wiped on drop. Only for sealing (bundle, session
    /// blob, the organisation's key file): never store or send it in the clear.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        Ok(self.der.clone())
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}

/// The `rsa` crate's view of a structurally checked key, after its arithmetic checks; refused
/// unless it encodes back to the same canonical PKCS#8 (which also checks the CRT values).
#[cfg(feature = "rsa")]
fn checked_arithmetic(der: &[u8], canonical: &[u8]) -> Result<RsaPrivateKey, Error> {
    const INCONSISTENT: Error = Error::InvalidKey("inconsistent RSA private key");
    let mut key = RsaPrivateKey::from_pkcs8_der(der)
        .map_err(|_| Error::InvalidKey("not an RSA PKCS#8 private key"))?;
    key.validate().map_err(|_| INCONSISTENT)?;
    key.precompute().map_err(|_| INCONSISTENT)?;
    let encoded = key.to_pkcs8_der().map_err(|_| INCONSISTENT)?;
    if encoded.as_bytes() != canonical {
        return Err(INCONSISTENT);
    }
    Ok(key)
}

/// The `rsa` crate's OAEP decryption, which is not constant-time (RUSTSEC-2023-0071): used by
/// tests, test kits and vector checks, never by the viewer or the sender's agent, which
/// decrypt with WebCrypto and AWS-LC.
#[cfg(feature = "rsa")]
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

/// `rsaEncryption` with NULL parameters, the only algorithm identifier accepted.
fn check_algorithm(algorithm: &AlgorithmIdentifierRef<'_>) -> Result<(), Error> {
    let null = Some(AnyRef::NULL);
    if algorithm.oid != pkcs1::ALGORITHM_OID || algorithm.parameters != null {
        return Err(Error::InvalidKey("not rsaEncryption"));
    }
    Ok(())
}

/// The `rsa` crate's own rules on a public key (`RsaPublicKey::new`: modulus of at most 4096
/// bits, odd; exponent odd, from 3 to 2^33 - 1 and below the modulus), from its DER integers
/// (`UintRef` holds the minimal big-endian bytes of a non-negative integer). Returns the
/// modulus size in bits.
fn rsa_rules(modulus: UintRef<'_>, exponent: UintRef<'_>) -> Option<usize> {
    let (n, e) = (modulus.as_bytes(), exponent.as_bytes());
    let bits = match n.first() {
        Some(&top) => n.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    };
    let mut e64 = [0u8; 8];
    e64.get_mut(8usize.checked_sub(e.len())?..)?
        .copy_from_slice(e);
    let e64 = u64::from_be_bytes(e64);
    let odd = |bytes: &[u8]| bytes.last().is_some_and(|low| low & 1 == 1);
    let e_below_n = e.len() < n.len() || (e.len() == n.len() && e < n);
    (bits <= RSA_MAX_BITS && odd(n) && odd(e) && (2..=(1 << 33) - 1).contains(&e64) && e_below_n)
        .then_some(bits)
}

/// The protocol's rules on a public key that passed [`rsa_rules`]: exponent 65537, modulus of
/// [`RSA_BITS`] to [`RSA_MAX_BITS`] bits.
fn check_public(bits: usize, exponent: UintRef<'_>) -> Result<(), Error> {
    if exponent.as_bytes() != &PUBLIC_EXPONENT.to_be_bytes()[1..] {
        return Err(Error::InvalidKey("public exponent must be 65537"));
    }
    if !(RSA_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(Error::InvalidKey("modulus must be 3072 to 4096 bits"));
    }
    Ok(())
}

/// The canonical SPKI DER of `(n, e)`: `rsaEncryption`, NULL parameters, PKCS#1 key.
fn encode_spki(modulus: UintRef<'_>, exponent: UintRef<'_>) -> Result<Vec<u8>, Error> {
    const CANNOT: Error = Error::InvalidKey("cannot encode public key");
    let pkcs1 = pkcs1::RsaPublicKey {
        modulus,
        public_exponent: exponent,
    }
    .to_der()
    .map_err(|_| CANNOT)?;
    SubjectPublicKeyInfoRef {
        algorithm: rsa_encryption(),
        subject_public_key: BitStringRef::from_bytes(&pkcs1).map_err(|_| CANNOT)?,
    }
    .to_der()
    .map_err(|_| CANNOT)
}

/// The canonical PKCS#8 DER of a two-prime key (version 1, no attributes, no public key), as
/// the `rsa` crate and WebCrypto write it, in buffers allocated at their final size and wiped.
fn encode_pkcs8(key: &pkcs1::RsaPrivateKey<'_>) -> Result<Zeroizing<Vec<u8>>, Error> {
    let pkcs1 = encode_secret(key)?;
    encode_secret(&pkcs8::PrivateKeyInfo::new(rsa_encryption(), &pkcs1))
}

fn encode_secret(value: &impl Encode) -> Result<Zeroizing<Vec<u8>>, Error> {
    const CANNOT: Error = Error::InvalidKey("cannot encode private key");
    let len = value
        .encoded_len()
        .ok()
        .and_then(|len| usize::try_from(len).ok())
        .ok_or(CANNOT)?;
    let mut out = Zeroizing::new(vec![0u8; len]);
    value.encode_to_slice(&mut out).map_err(|_| CANNOT)?;
    Ok(out)
}

fn rsa_encryption() -> AlgorithmIdentifierRef<'static> {
    AlgorithmIdentifierRef {
        oid: pkcs1::ALGORITHM_OID,
        parameters: Some(AnyRef::NULL),
    }
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
    use rsa::pkcs8::EncodePublicKey;

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

    /// The structural parse takes exactly what the `rsa` crate writes, and the arithmetic check
    /// (with the `rsa` feature) refuses a key whose CRT values do not match its primes.
    #[test]
    fn private_keys_are_checked_structurally_and_arithmetically() {
        let private = PrivateKey::generate(&mut OsRng).unwrap();
        let der = private.to_pkcs8_der().unwrap();
        assert_eq!(*der, *private.key.to_pkcs8_der().unwrap().to_bytes());
        let info = pkcs8::PrivateKeyInfo::from_der(&der).unwrap();
        let mut rsa = pkcs1::RsaPrivateKey::from_der(info.private_key).unwrap();
        rsa.coefficient = rsa.exponent1;
        let altered = encode_pkcs8(&rsa).unwrap();
        assert_eq!(
            PrivateKey::from_pkcs8_der(&altered).err(),
            Some(Error::InvalidKey("inconsistent RSA private key"))
        );
        let spki = private.public_key().spki_der();
        assert_eq!(
            *spki,
            *private
                .key
                .to_public_key()
                .to_public_key_der()
                .unwrap()
                .as_bytes()
        );
    }

    /// A PKCS#8 v2 structure (RFC 5958) that also carries the public key holds the same key,
    /// in another encoding than the one a party re-encodes: refused, in every build.
    #[test]
    fn private_keys_in_another_encoding_are_refused() {
        let private = PrivateKey::generate(&mut OsRng).unwrap();
        let der = private.to_pkcs8_der().unwrap();
        let mut info = pkcs8::PrivateKeyInfo::from_der(&der).unwrap();
        let spki = private.public_key().spki_der();
        info.public_key = Some(spki);
        let v2 = info.to_der().unwrap();
        assert_eq!(
            PrivateKey::from_pkcs8_der(&v2).err(),
            Some(Error::InvalidKey("not the canonical DER encoding"))
        );
        assert!(PrivateKey::from_pkcs8_der(&der).is_ok());
    }
}
