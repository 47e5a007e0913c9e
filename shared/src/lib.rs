//! SecureText protocol core: the types every party exchanges and all of the cryptography.
//!
//! The relay only ever stores what this crate produces in sealed form; the patient's viewer (in
//! the browser, compiled to wasm32) and the sender tooling (native) are the only places where the
//! opening functions run. Keeping every derivation and format here, with no I/O, no clock and no
//! async runtime, lets the same code be audited once and run on both sides.
//!
//! The byte-level specification is `docs/PROTOCOL.md`; the vectors in `shared/tests/vectors/`
//! are checked against this code by `cargo test -p shared`.
//!
//! # Map
//! - [`api`]: the relay's HTTP contract (request/response bodies, error codes).
//! - [`kdf`]: password → sealing key, auth key, verifier (Argon2id + HKDF-SHA256).
//! - [`keys`]: RSA-3072 key pairs, fingerprints and OAEP content-key wrapping.
//! - [`bundle`]: the recipient's private key sealed under the password-derived sealing key.
//! - [`keyfile`]: the organisation's private key sealed under a passphrase, at rest on its host.
//! - [`envelope`]: message header, padded payload, content encryption, wraps and re-wrap.
//! - [`session`]: the two-half sealed blob that allows re-opening within a live session.
//! - [`at_rest`]: the relay's data key for phone numbers and queued SMS bodies at rest.
//! - [`phone`]: the E.164 rule and phone numbers sealed at rest.
//! - [`token`]: random bearer tokens (links, sessions, API keys) and their stored hashes.
//! - [`identity_check`]: the enrollment check (date of birth, enrollment code) run as SPAKE2
//!   between the patient's browser and the organisation's agent, bound to the enrolled key.
//! - [`audit`]: the per-organisation, hash-chained audit log (ids and codes only, no PHI).
//! - [`ids`], [`encoding`], [`error`]: identifiers, base64url transport helpers, the error type.
//!
//! # Invariants
//! - No function here performs I/O or reads the clock: callers pass times and randomness in.
//! - Every secret type zeroizes on drop, prints as `[redacted]` in `Debug`, and implements
//!   neither `Clone` nor `Serialize`; exporting secret bytes is an explicit, named call.
//! - Every failed decryption or authentication check surfaces as the single opaque
//!   [`Error::DecryptionFailed`], whatever the cause.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod at_rest;
pub mod audit;
pub mod bundle;
pub mod encoding;
pub mod envelope;
pub mod error;
pub mod identity_check;
pub mod ids;
pub mod kdf;
pub mod keyfile;
pub mod keys;
pub mod phone;
pub mod session;
pub mod token;

mod aead;
#[cfg(feature = "nfc")]
mod nfc;
mod secret;

pub use error::Error;

/// Version of the protocol formats defined by this crate. Every sealed structure carries it as
/// its first byte (or right after its magic), so a later version can be told apart and refused.
pub const FORMAT_VERSION: u8 = 1;
