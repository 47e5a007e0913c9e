//! AES-256-GCM, the one symmetric primitive, and the small "sealed box" layout built on it.
//!
//! # Wire format
//! A sealed box is `version (1) || nonce (12) || ciphertext || tag (16)`. The version byte is
//! also part of the associated data each caller builds, so changing it breaks authentication.
//!
//! # Invariants
//! - Every key used here is single-purpose (see the labels in `docs/PROTOCOL.md`); nonces are
//!   96 random bits drawn from the caller's CSPRNG.
//! - Any failure to open is [`Error::DecryptionFailed`].

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::{Error, FORMAT_VERSION};

/// AES-GCM nonce length in bytes.
pub(crate) const NONCE_LEN: usize = 12;
/// AES-GCM tag length in bytes.
pub(crate) const TAG_LEN: usize = 16;
/// AES-256 key length in bytes.
pub(crate) const KEY_LEN: usize = 32;

/// Encrypts `plaintext` under `key` with the given nonce and associated data.
pub(crate) fn encrypt(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    Aes256Gcm::new(key.into())
        .encrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        // Encryption only fails for inputs beyond GCM's 64 GiB limit, far above any size the
        // protocol lets through (messages are capped at 64 KiB, keys are a few KiB).
        .expect("AES-GCM input within size limits")
}

/// Decrypts and authenticates; the plaintext is zeroized when dropped.
pub(crate) fn decrypt(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    Aes256Gcm::new(key.into())
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| Error::DecryptionFailed)
}

/// Draws a fresh random nonce.
pub(crate) fn random_nonce(rng: &mut impl CryptoRngCore) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    nonce
}

/// Seals `plaintext` into the sealed-box layout.
pub(crate) fn seal_box(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&encrypt(key, nonce, aad, plaintext));
    out
}

/// Opens the sealed-box layout. A wrong version byte is reported as such (it is public, and the
/// caller needs to know to upgrade); everything else is an opaque failure.
pub(crate) fn open_box(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let (&version, rest) = sealed.split_first().ok_or(Error::DecryptionFailed)?;
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(Error::DecryptionFailed);
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| Error::DecryptionFailed)?;
    decrypt(key, nonce, aad, ciphertext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_box_round_trip_and_refusals() {
        let key = [7u8; KEY_LEN];
        let sealed = seal_box(&key, &[1u8; NONCE_LEN], b"aad", b"secret");
        assert_eq!(sealed.len(), 1 + NONCE_LEN + 6 + TAG_LEN);
        assert_eq!(&open_box(&key, b"aad", &sealed).unwrap()[..], b"secret");
        assert_eq!(
            open_box(&key, b"other", &sealed),
            Err(Error::DecryptionFailed)
        );
        assert_eq!(
            open_box(&[8u8; KEY_LEN], b"aad", &sealed),
            Err(Error::DecryptionFailed)
        );
        assert_eq!(
            open_box(&key, b"aad", &sealed[..20]),
            Err(Error::DecryptionFailed)
        );
        assert_eq!(open_box(&key, b"aad", &[]), Err(Error::DecryptionFailed));
        let mut future = sealed.clone();
        future[0] = 2;
        assert_eq!(
            open_box(&key, b"aad", &future),
            Err(Error::UnsupportedVersion(2))
        );
    }
}
