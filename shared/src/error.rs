//! The one error type of the protocol crate.
//!
//! # Invariants
//! - Every failure to authenticate or decrypt anything (wrong password, wrong key, tampered
//!   byte, wrong associated data, bad padding after decryption) is [`Error::DecryptionFailed`],
//!   with no detail, so that an attacker probing with modified inputs learns nothing about which
//!   check failed.
//! - Other variants describe caller mistakes or malformed public data and are safe to show.

use thiserror::Error as ThisError;

/// Everything that can go wrong in the protocol crate.
#[derive(Debug, ThisError, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Authentication or decryption failed. Deliberately carries no detail.
    #[error("decryption failed: wrong password or key, or the data was altered")]
    DecryptionFailed,

    /// KDF parameters outside the accepted range (a relay offering weak parameters, or absurd
    /// ones that would exhaust a phone).
    #[error("key-derivation parameters refused: {0}")]
    KdfParamsRefused(&'static str),

    /// A structure announces a format version this build does not implement.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),

    /// A byte string or field does not follow the documented format.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which structure was being read.
        what: &'static str,
        /// What was wrong with it.
        reason: &'static str,
    },

    /// Text content larger than the protocol's largest padding bucket.
    #[error("message too large: {size} bytes of content, at most {max} allowed")]
    ContentTooLarge {
        /// Size of the encoded content.
        size: usize,
        /// The maximum accepted.
        max: usize,
    },

    /// An envelope carries no wrap for the key that tries to open it.
    #[error("this message is not addressed to this key")]
    NotAddressedToKey,

    /// The envelope names a different recipient than the one opening it.
    #[error("this message is addressed to another recipient")]
    WrongRecipient,

    /// The envelope's header names another message than the one the relay listed it as: the
    /// relay (or whoever wrote to its store) moved an envelope to another message.
    #[error("this envelope belongs to another message than the one listed")]
    WrongMessage,

    /// The envelope's authenticated header has expired by the opener's clock, whatever the
    /// relay says.
    #[error("this message has expired")]
    Expired,

    /// A public or private key could not be parsed or does not meet the protocol's requirements.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),

    /// The random-number generator or key generation failed.
    #[error("key generation failed")]
    KeyGeneration,
}

impl Error {
    pub(crate) const fn malformed(what: &'static str, reason: &'static str) -> Self {
        Self::Malformed { what, reason }
    }
}
