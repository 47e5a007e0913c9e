//! Password keys: from the patient's password to a sealing key, an auth key and a verifier.
//!
//! The password never leaves the browser. Argon2id makes each guess expensive; HKDF then splits
//! the result into two independent keys, so the key the relay sees at every unlock (the auth key)
//! reveals nothing about the key that seals the patient's private key (the sealing key).
//!
//! # Wire format
//! ```text
//! password' = NFC(password) as UTF-8
//! master    = Argon2id v0x13 (password', salt[16], m = memory_kib, t = iterations,
//!                             p = parallelism, no secret, no associated data) -> 32 bytes
//! prk       = HKDF-SHA256-Extract(salt = "securetext/v1/password-keys", ikm = master)
//! sealing   = HKDF-SHA256-Expand(prk, info = "securetext/v1/seal-key", 32)
//! auth      = HKDF-SHA256-Expand(prk, info = "securetext/v1/auth-key", 32)
//! verifier  = SHA-256("securetext/v1/verifier" || auth)
//! ```
//! JSON: `{"algorithm":"argon2id-v19","memory_kib":65536,"iterations":3,"parallelism":1}`, the
//! salt, verifier and auth key as unpadded base64url.
//!
//! # Invariants
//! - Parameters are validated by the *client* before any derivation: a relay that offers less
//!   than [`KdfParams::MINIMUM`] (OWASP's Argon2id floor) is refused, because a weak derivation
//!   would hand it a cheaply guessable auth key. Parameters above [`KdfParams::MAXIMUM`] are
//!   refused too, so a hostile relay cannot exhaust a phone's memory.
//! - The relay stores only the verifier; checking a presented auth key against it is constant
//!   time.

use std::fmt;

use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::Error;
use crate::encoding::{b64u_decode_array, b64u_encode};
#[cfg(feature = "nfc")]
use crate::nfc::nfc;
use crate::secret::SecretBytes;

/// HKDF-Extract salt that domain-separates password keys from every other derivation.
pub const PASSWORD_KEYS_SALT: &[u8] = b"securetext/v1/password-keys";
/// HKDF info label of the sealing key.
pub const SEAL_KEY_INFO: &[u8] = b"securetext/v1/seal-key";
/// HKDF info label of the auth key.
pub const AUTH_KEY_INFO: &[u8] = b"securetext/v1/auth-key";
/// Prefix hashed with the auth key to form the verifier.
pub const VERIFIER_PREFIX: &[u8] = b"securetext/v1/verifier";
/// Length of a KDF salt in bytes.
pub const SALT_LEN: usize = 16;

/// The password-hashing algorithm. Only one exists in format version 1; the field is there so
/// that a later version can move on without ambiguity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum KdfAlgorithm {
    /// Argon2id, version 0x13 (RFC 9106).
    #[serde(rename = "argon2id-v19")]
    Argon2idV19,
}

/// Argon2id cost parameters, stored per recipient so that costs can rise for new enrollments
/// without breaking old ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Which algorithm the numbers below are for.
    pub algorithm: KdfAlgorithm,
    /// Memory cost in KiB (Argon2 `m`).
    pub memory_kib: u32,
    /// Number of passes (Argon2 `t`).
    pub iterations: u32,
    /// Lanes (Argon2 `p`). The browser computes lanes sequentially, so more lanes give the
    /// patient no speed-up while an attacker's hardware still runs them in parallel.
    pub parallelism: u32,
}

impl KdfParams {
    /// The weakest parameters a client accepts: OWASP's Argon2id floor (19 MiB, t = 2, p = 1).
    pub const MINIMUM: Self = Self::argon2id(19_456, 2, 1);

    /// The strongest parameters a client accepts: beyond these, an older phone runs out of
    /// memory or takes minutes.
    pub const MAXIMUM: Self = Self::argon2id(262_144, 16, 8);

    /// What new enrollments use: 64 MiB, t = 3, p = 1 — RFC 9106's second recommended option
    /// (64 MiB, t = 3) with a single lane, because a browser computes lanes one after another.
    /// See `docs/PROTOCOL.md` for the measured cost.
    pub const DEFAULT: Self = Self::argon2id(65_536, 3, 1);

    /// Argon2id v0x13 with the given costs (not yet validated).
    pub const fn argon2id(memory_kib: u32, iterations: u32, parallelism: u32) -> Self {
        Self {
            algorithm: KdfAlgorithm::Argon2idV19,
            memory_kib,
            iterations,
            parallelism,
        }
    }

    /// Checks the parameters as [`Self::validate`] does and that they cost at least `floor` in
    /// memory and in passes. The viewer calls this with [`Self::DEFAULT`], the parameters every
    /// genuine enrollment uses, so a relay that serves anything cheaper — at enrollment or at
    /// unlock — is refused before the password is touched.
    pub fn validate_at_least(&self, floor: &Self) -> Result<(), Error> {
        self.validate()?;
        if self.memory_kib < floor.memory_kib {
            return Err(Error::KdfParamsRefused(
                "memory cost below the viewer's default",
            ));
        }
        if self.iterations < floor.iterations {
            return Err(Error::KdfParamsRefused(
                "fewer passes than the viewer's default",
            ));
        }
        Ok(())
    }

    /// The parameters' fixed-length encoding, bound into the associated data of a sealed
    /// private key: `0x01` (Argon2id v0x13) `|| u32be(memory_kib) || u32be(iterations) ||
    /// u32be(parallelism)`.
    pub fn to_bytes(&self) -> [u8; 13] {
        let KdfAlgorithm::Argon2idV19 = self.algorithm;
        let mut out = [0u8; 13];
        out[0] = 0x01;
        out[1..5].copy_from_slice(&self.memory_kib.to_be_bytes());
        out[5..9].copy_from_slice(&self.iterations.to_be_bytes());
        out[9..13].copy_from_slice(&self.parallelism.to_be_bytes());
        out
    }

    /// Parses [`Self::to_bytes`] (not yet validated).
    pub fn from_bytes(bytes: &[u8; 13]) -> Result<Self, Error> {
        if bytes[0] != 0x01 {
            return Err(Error::malformed("kdf_params", "unknown algorithm"));
        }
        let word = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        Ok(Self::argon2id(word(1), word(5), word(9)))
    }

    /// Checks the parameters against [`Self::MINIMUM`] and [`Self::MAXIMUM`].
    pub fn validate(&self) -> Result<(), Error> {
        let (min, max) = (Self::MINIMUM, Self::MAXIMUM);
        if self.memory_kib < min.memory_kib {
            return Err(Error::KdfParamsRefused("memory cost below 19 MiB"));
        }
        if self.iterations < min.iterations {
            return Err(Error::KdfParamsRefused("fewer than 2 passes"));
        }
        if self.parallelism < min.parallelism {
            return Err(Error::KdfParamsRefused("parallelism below 1"));
        }
        if self.memory_kib > max.memory_kib {
            return Err(Error::KdfParamsRefused("memory cost above 256 MiB"));
        }
        if self.iterations > max.iterations {
            return Err(Error::KdfParamsRefused("more than 16 passes"));
        }
        if self.parallelism > max.parallelism {
            return Err(Error::KdfParamsRefused("parallelism above 8"));
        }
        if self.memory_kib < 8 * self.parallelism {
            return Err(Error::KdfParamsRefused("memory below 8 KiB per lane"));
        }
        Ok(())
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The per-recipient random salt. Public: the relay stores it and hands it to the viewer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Salt([u8; SALT_LEN]);

impl Salt {
    /// A fresh random salt for a new enrollment.
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut salt = [0u8; SALT_LEN];
        rng.fill_bytes(&mut salt);
        Self(salt)
    }

    /// The salt from its bytes.
    pub const fn from_bytes(bytes: [u8; SALT_LEN]) -> Self {
        Self(bytes)
    }

    /// The salt's bytes.
    pub const fn as_bytes(&self) -> &[u8; SALT_LEN] {
        &self.0
    }
}

impl fmt::Debug for Salt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Salt({})", hex::encode(self.0))
    }
}

impl Serialize for Salt {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&b64u_encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Salt {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        b64u_decode_array(&text, "salt")
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// The patient's password, Unicode-normalised (NFC) so that the same visible password typed on
/// different keyboards derives the same keys.
pub struct Password(Zeroizing<String>);

impl Password {
    /// Takes the password as typed and normalises it to NFC. Refuses the empty password.
    #[cfg(feature = "nfc")]
    pub fn new(typed: &str) -> Result<Self, Error> {
        Self::from_nfc(nfc(typed))
    }

    /// Takes a password its caller has already normalised to NFC (UAX #15), for a platform
    /// that provides the normalisation itself: the viewer uses the browser's
    /// `String.prototype.normalize("NFC")` rather than ship Unicode's tables (the `nfc`
    /// feature). Text that is not NFC derives other keys than `Password::new` would.
    /// Refuses the empty password.
    pub fn from_nfc(normalised: Zeroizing<String>) -> Result<Self, Error> {
        if normalised.is_empty() {
            return Err(Error::malformed("password", "empty"));
        }
        Ok(Self(normalised))
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// The key that seals the recipient's private key. Never leaves the device.
#[derive(Debug)]
pub struct SealingKey(pub(crate) SecretBytes<32>);

/// The key whose possession proves the password to the relay. It is sent to the relay at
/// unlock (over TLS), which is why it can be exported and parsed; HKDF separation means it
/// reveals nothing about the [`SealingKey`].
#[derive(Debug)]
pub struct AuthKey(SecretBytes<32>);

impl AuthKey {
    /// The proof the viewer sends at unlock (unpadded base64url), wiped when dropped.
    pub fn to_base64url(&self) -> Zeroizing<String> {
        Zeroizing::new(b64u_encode(self.0.expose()))
    }

    /// Parses a proof received by the relay.
    pub fn from_base64url(text: &str) -> Result<Self, Error> {
        SecretBytes::from_base64url(text, "auth proof").map(Self)
    }

    /// The verifier the relay stores for this auth key.
    pub fn verifier(&self) -> Verifier {
        let mut hash = Sha256::new();
        hash.update(VERIFIER_PREFIX);
        hash.update(self.0.expose());
        Verifier(hash.finalize().into())
    }
}

/// The relay's record of the password: a hash of the auth key. Knowing it does not let anyone
/// produce an auth key that matches (SHA-256 preimage resistance).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Verifier([u8; 32]);

impl Verifier {
    /// The verifier from its stored bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The verifier's bytes, for storage.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether the presented auth key matches, in constant time.
    pub fn matches(&self, presented: &AuthKey) -> bool {
        presented.verifier().0.ct_eq(&self.0).into()
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier([redacted])")
    }
}

impl Serialize for Verifier {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&b64u_encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Verifier {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        b64u_decode_array(&text, "verifier")
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// The two keys derived from one password.
#[derive(Debug)]
pub struct PasswordKeys {
    /// Seals and unseals the recipient's private key.
    pub sealing: SealingKey,
    /// Proves the password to the relay.
    pub auth: AuthKey,
}

/// Derives the password keys, after refusing parameters outside the accepted range.
pub fn derive_password_keys(
    password: &Password,
    salt: &Salt,
    params: &KdfParams,
) -> Result<PasswordKeys, Error> {
    params.validate()?;
    let master = argon2id(password, salt, params)?;
    let hkdf = Hkdf::<Sha256>::new(Some(PASSWORD_KEYS_SALT), master.expose());
    Ok(PasswordKeys {
        sealing: SealingKey(expand(&hkdf, SEAL_KEY_INFO)),
        auth: AuthKey(expand(&hkdf, AUTH_KEY_INFO)),
    })
}

fn argon2id(
    password: &Password,
    salt: &Salt,
    params: &KdfParams,
) -> Result<SecretBytes<32>, Error> {
    let KdfAlgorithm::Argon2idV19 = params.algorithm;
    let argon_params = argon2::Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|_| Error::KdfParamsRefused("not accepted by Argon2"))?;
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon_params,
    );
    let mut master = SecretBytes::zeroed();
    argon
        .hash_password_into(password.as_bytes(), salt.as_bytes(), master.expose_mut())
        .map_err(|_| Error::KdfParamsRefused("not accepted by Argon2"))?;
    Ok(master)
}

/// HKDF-Expand to a 32-byte secret. Expanding 32 bytes from SHA-256 cannot fail.
pub(crate) fn expand(hkdf: &Hkdf<Sha256>, info: &[u8]) -> SecretBytes<32> {
    let mut out = SecretBytes::zeroed();
    hkdf.expand(info, out.expose_mut())
        .expect("32 bytes is within HKDF-SHA256's output limit");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_bounds_validate() {
        assert_eq!(KdfParams::default(), KdfParams::argon2id(65_536, 3, 1));
        KdfParams::DEFAULT.validate().unwrap();
        KdfParams::MINIMUM.validate().unwrap();
        KdfParams::MAXIMUM.validate().unwrap();
    }

    #[test]
    fn weak_or_absurd_params_are_refused() {
        for (m, t, p) in [
            (19_455, 2, 1),
            (4_096, 3, 1),
            (65_536, 1, 1),
            (65_536, 3, 0),
            (262_145, 3, 1),
            (65_536, 17, 1),
            (65_536, 3, 9),
        ] {
            let params = KdfParams::argon2id(m, t, p);
            assert!(
                matches!(params.validate(), Err(Error::KdfParamsRefused(_))),
                "{params:?} must be refused"
            );
            let password = Password::new("correct horse").unwrap();
            assert!(derive_password_keys(&password, &Salt::from_bytes([0; 16]), &params).is_err());
        }
    }

    #[test]
    fn the_viewer_floor_refuses_anything_cheaper_than_the_default() {
        let floor = KdfParams::DEFAULT;
        KdfParams::DEFAULT.validate_at_least(&floor).unwrap();
        KdfParams::argon2id(131_072, 4, 2)
            .validate_at_least(&floor)
            .unwrap();
        for weaker in [
            KdfParams::MINIMUM,
            KdfParams::argon2id(65_535, 3, 1),
            KdfParams::argon2id(65_536, 2, 1),
            KdfParams::argon2id(262_145, 3, 1),
        ] {
            assert!(
                matches!(
                    weaker.validate_at_least(&floor),
                    Err(Error::KdfParamsRefused(_))
                ),
                "{weaker:?} must be refused"
            );
        }
    }

    #[test]
    fn params_bytes_round_trip() {
        let params = KdfParams::argon2id(65_536, 3, 1);
        let bytes = params.to_bytes();
        assert_eq!(hex::encode(bytes), "01000100000000000300000001");
        assert_eq!(KdfParams::from_bytes(&bytes).unwrap(), params);
        let mut unknown = bytes;
        unknown[0] = 2;
        assert!(KdfParams::from_bytes(&unknown).is_err());
    }

    #[test]
    fn params_json_is_stable_and_strict() {
        let json = serde_json::to_string(&KdfParams::DEFAULT).unwrap();
        assert_eq!(
            json,
            r#"{"algorithm":"argon2id-v19","memory_kib":65536,"iterations":3,"parallelism":1}"#
        );
        assert!(
            serde_json::from_str::<KdfParams>(
                r#"{"algorithm":"argon2i","memory_kib":65536,"iterations":3,"parallelism":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn password_is_nfc_normalised_and_non_empty() {
        let composed = Password::new("contrase\u{00f1}a").unwrap();
        let decomposed = Password::new("contrasen\u{0303}a").unwrap();
        assert_eq!(composed.as_bytes(), decomposed.as_bytes());
        assert!(Password::new("").is_err());
    }

    #[test]
    fn different_passwords_or_salts_give_unrelated_keys() {
        let params = KdfParams::MINIMUM;
        let salt = Salt::from_bytes([1; 16]);
        let a = derive_password_keys(&Password::new("one").unwrap(), &salt, &params).unwrap();
        let b = derive_password_keys(&Password::new("two").unwrap(), &salt, &params).unwrap();
        let c = derive_password_keys(
            &Password::new("one").unwrap(),
            &Salt::from_bytes([2; 16]),
            &params,
        )
        .unwrap();
        assert_ne!(a.auth.verifier(), b.auth.verifier());
        assert_ne!(a.auth.verifier(), c.auth.verifier());
        assert_ne!(a.sealing.0.expose(), a.auth.0.expose());
    }

    #[test]
    fn verifier_matches_only_its_auth_key() {
        let salt = Salt::from_bytes([3; 16]);
        let keys = derive_password_keys(&Password::new("pw").unwrap(), &salt, &KdfParams::MINIMUM)
            .unwrap();
        let verifier = keys.auth.verifier();
        let sent = AuthKey::from_base64url(&keys.auth.to_base64url()).unwrap();
        assert!(verifier.matches(&sent));
        let wrong = derive_password_keys(&Password::new("pW").unwrap(), &salt, &KdfParams::MINIMUM)
            .unwrap();
        assert!(!verifier.matches(&wrong.auth));
        assert!(AuthKey::from_base64url("c2hvcnQ").is_err());
    }
}
