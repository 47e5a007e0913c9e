//! Bearer tokens: SMS link ids, session tokens and sender API keys.
//!
//! # Wire format
//! ```text
//! token      = 32 random bytes, written as 43 characters of unpadded base64url
//! token_hash = SHA-256("securetext/v1/token/" || kind || 0x00 || token)
//!              kind = "link" | "session" | "api-key"
//! ```
//!
//! # Invariants
//! - The relay stores only token hashes, so a database breach yields no usable link, session or
//!   API key; the kind is hashed in, so a token of one kind never matches a hash of another.
//! - Hashes are compared in constant time.

use std::fmt;

use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::Error;
use crate::encoding::b64u_encode;
use crate::secret::SecretBytes;

/// Prefix of every token hash.
pub const TOKEN_HASH_PREFIX: &[u8] = b"securetext/v1/token/";

/// What a token grants; part of its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// The id in an SMS link: lets the viewer open and enroll for that message.
    Link,
    /// An unlocked viewer session (sent as an `HttpOnly` cookie).
    Session,
    /// A sender's API key.
    ApiKey,
    /// A browser that unlocked before (an `HttpOnly` cookie), whose proofs pass a patient's
    /// lockout for unknown browsers.
    Device,
}

impl TokenKind {
    const fn label(self) -> &'static [u8] {
        match self {
            Self::Link => b"link",
            Self::Session => b"session",
            Self::ApiKey => b"api-key",
            Self::Device => b"device",
        }
    }
}

/// A random bearer token (256 bits). Secret: shown once, then only its hash is kept.
#[derive(Debug)]
pub struct Token(SecretBytes<32>);

impl Token {
    /// A fresh random token.
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        Self(SecretBytes::random(rng))
    }

    /// Parses the 43-character text form.
    pub fn from_base64url(text: &str) -> Result<Self, Error> {
        SecretBytes::from_base64url(text, "token").map(Self)
    }

    /// The 43-character text form, wiped when dropped.
    pub fn to_base64url(&self) -> Zeroizing<String> {
        Zeroizing::new(b64u_encode(self.0.expose()))
    }

    /// The hash to store and look the token up by.
    pub fn hash(&self, kind: TokenKind) -> TokenHash {
        let mut hash = Sha256::new();
        hash.update(TOKEN_HASH_PREFIX);
        hash.update(kind.label());
        hash.update([0u8]);
        hash.update(self.0.expose());
        TokenHash(hash.finalize().into())
    }
}

/// The stored form of a token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash from its stored bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The bytes to store.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `token` of `kind` hashes to this value, in constant time.
    pub fn matches(&self, token: &Token, kind: TokenKind) -> bool {
        token.hash(kind).0.ct_eq(&self.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to correlate log lines and says nothing usable about the token.
        write!(f, "TokenHash({}…)", hex::encode(&self.0[..4]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn token_round_trips_and_hash_is_kind_bound() {
        let token = Token::random(&mut OsRng);
        let text = token.to_base64url();
        assert_eq!(text.len(), 43);
        let parsed = Token::from_base64url(&text).unwrap();
        let hash = token.hash(TokenKind::Link);
        assert!(hash.matches(&parsed, TokenKind::Link));
        assert!(!hash.matches(&parsed, TokenKind::Session));
        assert!(!hash.matches(&Token::random(&mut OsRng), TokenKind::Link));
        assert!(Token::from_base64url("too-short").is_err());
    }

    #[test]
    fn known_answer() {
        let token = Token(SecretBytes::new([0x42; 32]));
        let mut expected = Sha256::new();
        expected.update(b"securetext/v1/token/api-key\0");
        expected.update([0x42; 32]);
        assert_eq!(
            token.hash(TokenKind::ApiKey).as_bytes(),
            &<[u8; 32]>::from(expected.finalize())
        );
    }
}
