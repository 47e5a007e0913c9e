//! The container every fixed-size secret of the protocol is kept in.
//!
//! # Invariants
//! - Zeroized on drop; `Debug` prints `[redacted]`; neither `Clone` nor `Serialize`.
//! - Equality, where a caller needs it, goes through [`SecretBytes::ct_eq`] (constant time).

use std::fmt;

use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;
use crate::encoding::b64u_decode;

/// `N` secret bytes.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct SecretBytes<const N: usize>([u8; N]);

impl<const N: usize> SecretBytes<N> {
    pub(crate) const fn new(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// Fills the secret straight from the generator, without an intermediate copy.
    pub(crate) fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut secret = Self([0u8; N]);
        rng.fill_bytes(&mut secret.0);
        secret
    }

    /// Decodes base64url into a secret; the intermediate buffer is wiped.
    pub(crate) fn from_base64url(text: &str, what: &'static str) -> Result<Self, Error> {
        let decoded = zeroize::Zeroizing::new(b64u_decode(text, what)?);
        let bytes: [u8; N] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| Error::malformed(what, "wrong length"))?;
        Ok(Self(bytes))
    }

    /// A zeroed secret to be filled in place by a derivation, so no unwiped copy is left.
    pub(crate) const fn zeroed() -> Self {
        Self([0u8; N])
    }

    pub(crate) const fn expose(&self) -> &[u8; N] {
        &self.0
    }

    pub(crate) fn expose_mut(&mut self) -> &mut [u8; N] {
        &mut self.0
    }

    pub(crate) fn ct_eq(&self, other: &[u8; N]) -> bool {
        self.0.ct_eq(other).into()
    }
}

impl<const N: usize> fmt::Debug for SecretBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
