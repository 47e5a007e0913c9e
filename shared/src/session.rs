//! The session blob: how a viewer re-opens messages within a live session without the password,
//! while the device itself never holds anything readable.
//!
//! At unlock the viewer draws a *device half* and the relay draws a *relay half*. The unsealed
//! private key is sealed under a key derived from both and kept on the device (sessionStorage)
//! with the device half. The relay keeps its half with the session and hands it back only to a
//! request carrying the session cookie; it destroys it on logout, idle timeout, expiry or remote
//! wipe, after which the blob on the device is undecryptable noise.
//!
//! # Wire format
//! ```text
//! session_key = HKDF-SHA256(salt = session_id[16], ikm = device_half[32] || relay_half[32],
//!                           info = "securetext/v1/session-key", 32 bytes)
//! blob        = 0x01 || nonce[12] || AES-256-GCM(session_key, nonce, aad, PKCS#8 DER)
//! aad         = "securetext/v1/session-blob" || 0x01 || session_id[16] || recipient_id[16]
//! ```
//! Halves travel as unpadded base64url.
//!
//! # Invariants
//! - Neither half alone, nor the blob with one half, reveals anything about the private key.
//! - The relay never sees the device half or the blob; the device never stores the relay half.

use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::aead::{open_box, random_nonce, seal_box};
use crate::encoding::b64u_encode;
use crate::ids::{RecipientId, SessionId};
use crate::kdf::expand;
use crate::keys::PrivateKey;
use crate::secret::SecretBytes;
use crate::{Error, FORMAT_VERSION};

/// HKDF info label of the session key.
pub const SESSION_KEY_INFO: &[u8] = b"securetext/v1/session-key";
/// Prefix of the associated data of a session blob.
pub const SESSION_BLOB_AAD_PREFIX: &[u8] = b"securetext/v1/session-blob";

/// The half of the session key that stays on the device.
#[derive(Debug)]
pub struct DeviceHalf(SecretBytes<32>);

/// The half of the session key that the relay holds and destroys when the session ends.
#[derive(Debug)]
pub struct RelayHalf(SecretBytes<32>);

impl DeviceHalf {
    /// A fresh random half (drawn by the viewer at unlock).
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        Self(SecretBytes::random(rng))
    }

    /// The half as base64url, for the viewer's sessionStorage; wiped when dropped.
    pub fn to_base64url(&self) -> Zeroizing<String> {
        Zeroizing::new(b64u_encode(self.0.expose()))
    }

    /// Reads a half back from the viewer's sessionStorage.
    pub fn from_base64url(text: &str) -> Result<Self, Error> {
        SecretBytes::from_base64url(text, "device half").map(Self)
    }
}

impl RelayHalf {
    /// A fresh random half (drawn by the relay at unlock).
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        Self(SecretBytes::random(rng))
    }

    /// The half as base64url: the relay stores it with the session and returns it to the
    /// viewer that holds the session cookie. Wiped when dropped.
    pub fn to_base64url(&self) -> Zeroizing<String> {
        Zeroizing::new(b64u_encode(self.0.expose()))
    }

    /// Reads a half from the relay's response (viewer) or its database (relay).
    pub fn from_base64url(text: &str) -> Result<Self, Error> {
        SecretBytes::from_base64url(text, "relay half").map(Self)
    }
}

/// The private key sealed for re-opening within one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionBlob(Vec<u8>);

impl SessionBlob {
    /// Seals the private key for this session with a fresh nonce.
    pub fn seal(
        private: &PrivateKey,
        session: SessionId,
        recipient: RecipientId,
        device: &DeviceHalf,
        relay: &RelayHalf,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, Error> {
        Self::seal_with_nonce(
            private,
            session,
            recipient,
            device,
            relay,
            &random_nonce(rng),
        )
    }

    /// Deterministic sealing for test vectors; production code uses [`Self::seal`].
    #[doc(hidden)]
    pub fn seal_with_nonce(
        private: &PrivateKey,
        session: SessionId,
        recipient: RecipientId,
        device: &DeviceHalf,
        relay: &RelayHalf,
        nonce: &[u8; 12],
    ) -> Result<Self, Error> {
        let key = session_key(session, device, relay);
        let der = private.to_pkcs8_der()?;
        Ok(Self(seal_box(
            key.expose(),
            nonce,
            &aad(session, recipient),
            &der,
        )))
    }

    /// Opens the blob; fails with [`Error::DecryptionFailed`] once the relay half is gone or
    /// anything was altered.
    pub fn open(
        &self,
        session: SessionId,
        recipient: RecipientId,
        device: &DeviceHalf,
        relay: &RelayHalf,
    ) -> Result<PrivateKey, Error> {
        let key = session_key(session, device, relay);
        let der = open_box(key.expose(), &aad(session, recipient), &self.0)?;
        PrivateKey::from_pkcs8_der(&der).map_err(|_| Error::DecryptionFailed)
    }

    /// The blob as base64url, for sessionStorage.
    pub fn to_base64url(&self) -> String {
        b64u_encode(&self.0)
    }

    /// Reads the blob back from sessionStorage.
    pub fn from_base64url(text: &str) -> Result<Self, Error> {
        crate::encoding::b64u_decode(text, "session blob").map(Self)
    }

    /// The blob's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn session_key(session: SessionId, device: &DeviceHalf, relay: &RelayHalf) -> SecretBytes<32> {
    let mut ikm = SecretBytes::<64>::zeroed();
    ikm.expose_mut()[..32].copy_from_slice(device.0.expose());
    ikm.expose_mut()[32..].copy_from_slice(relay.0.expose());
    let hkdf = Hkdf::<Sha256>::new(Some(session.as_bytes()), ikm.expose());
    expand(&hkdf, SESSION_KEY_INFO)
}

/// The associated data of a session blob.
pub fn aad(session: SessionId, recipient: RecipientId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(SESSION_BLOB_AAD_PREFIX.len() + 33);
    aad.extend_from_slice(SESSION_BLOB_AAD_PREFIX);
    aad.push(FORMAT_VERSION);
    aad.extend_from_slice(session.as_bytes());
    aad.extend_from_slice(recipient.as_bytes());
    aad
}
