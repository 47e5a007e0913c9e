//! The layout of `shared/tests/vectors/v1.json`, shared by the generator
//! (`examples/make_vectors.rs`) and the checker (`tests/vectors.rs`). Every byte string is
//! lowercase hex; `docs/PROTOCOL.md` ("Test vectors") describes each field.

use serde::{Deserialize, Serialize};
use shared::kdf::KdfParams;

/// The whole file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorFile {
    pub description: String,
    pub format_version: u8,
    pub keys: Vec<RsaKeyVector>,
    pub kdf: Vec<KdfVector>,
    pub key_bundle: Vec<KeyBundleVector>,
    pub envelope: Vec<EnvelopeVector>,
    pub rewrap: Vec<RewrapVector>,
    pub session_blob: Vec<SessionBlobVector>,
    pub token_hash: Vec<TokenHashVector>,
}

/// A fixed RSA key pair the other vectors refer to by name.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RsaKeyVector {
    pub name: String,
    pub private_key_pkcs8: String,
    pub public_key_spki: String,
    pub fingerprint: String,
}

/// Password → master → sealing key, auth key, verifier.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfVector {
    pub name: String,
    /// The password as typed (may be non-NFC).
    pub password: String,
    /// UTF-8 bytes of its NFC form: what Argon2id receives.
    pub password_nfc: String,
    pub salt: String,
    pub params: KdfParams,
    pub master: String,
    pub sealing_key: String,
    pub auth_key: String,
    pub verifier: String,
}

/// A recipient private key sealed under a sealing key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBundleVector {
    pub name: String,
    /// Name of the KDF vector whose sealing key is used.
    pub kdf: String,
    /// Name of the RSA key that is sealed.
    pub key: String,
    pub recipient_id: String,
    pub nonce: String,
    pub aad: String,
    pub sealed_private_key: String,
}

/// A message sealed to an organisation and (optionally) a recipient.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeVector {
    pub name: String,
    pub header_json: serde_json::Value,
    pub header: String,
    pub subject: String,
    pub body: String,
    pub padded: String,
    pub content_key: String,
    pub nonce: String,
    pub ciphertext: String,
    pub oaep_label: String,
    /// Name of the organisation's RSA key.
    pub organisation_key: String,
    /// Name of the recipient's RSA key, absent for first contact.
    pub recipient_key: Option<String>,
    /// The full JSON transport form; its wraps were made with random OAEP seeds, so they are
    /// checked by decryption, not by comparison.
    pub envelope_json: serde_json::Value,
}

/// A first-contact envelope re-wrapped to a recipient who enrolled later.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewrapVector {
    pub name: String,
    /// Name of the first-contact envelope vector.
    pub envelope: String,
    /// Name of the recipient's RSA key.
    pub recipient_key: String,
    /// The recipient wrap the organisation's agent produced, as JSON.
    pub recipient_wrap_json: serde_json::Value,
}

/// A private key sealed for a session under the two halves.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionBlobVector {
    pub name: String,
    pub key: String,
    pub session_id: String,
    pub recipient_id: String,
    pub device_half: String,
    pub relay_half: String,
    pub session_key: String,
    pub nonce: String,
    pub aad: String,
    pub blob: String,
}

/// A token and its stored hash.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenHashVector {
    pub kind: String,
    pub token: String,
    pub token_base64url: String,
    pub hash: String,
}
