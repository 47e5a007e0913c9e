//! The viewer's Rust cryptography exported to JavaScript, for the browser benchmark
//! (`scripts/bench-browser`, `tests/src/bin/browser-bench.rs`). Built for wasm32 with the
//! viewer's own profile (`viewer-release`: opt-level `z`, LTO) and the same wasm-opt pass, so
//! that what is timed is what a phone runs. Nothing here is part of the viewer.
//!
//! - [`derive_verifier`]: `shared::kdf::derive_password_keys`, the viewer's Argon2id + HKDF.
//! - [`argon2id_raw`]: the raw Argon2id output, by the call `shared::kdf` makes, to compare
//!   byte for byte with another implementation.
//! - [`aes_gcm_seal`], [`aes_gcm_open`]: AES-256-GCM by the calls `shared::aead` makes (that
//!   module is crate-private; same crate, version and features).
//! - [`rsa_generate_pkcs8`], [`rsa_check_pkcs8`], [`RsaKey`]: the `rsa` crate through
//!   `shared::keys` (key generation, the PKCS#8 check the viewer runs on WebCrypto's key, and
//!   the OAEP decryption that the viewer does *not* ship: it decrypts with WebCrypto).

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use rand_core::OsRng;
use shared::kdf::{KdfParams, Password, Salt, derive_password_keys};
use shared::keys::{PrivateKey, WrapKey};
use wasm_bindgen::prelude::*;

fn fail(what: &str) -> impl Fn(shared::Error) -> JsError + '_ {
    move |error| JsError::new(&format!("{what}: {error}"))
}

/// Argon2id at `(m, t, p)` then HKDF, exactly as the viewer derives its keys; returns the
/// verifier (SHA-256 of the auth key), which depends on every bit of the Argon2id output.
#[wasm_bindgen]
pub fn derive_verifier(
    password: &str,
    salt: &[u8],
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
) -> Result<Vec<u8>, JsError> {
    let password = Password::new(password).map_err(fail("password"))?;
    let salt: [u8; 16] = salt
        .try_into()
        .map_err(|_| JsError::new("salt must be 16 bytes"))?;
    let params = KdfParams::argon2id(memory_kib, iterations, parallelism);
    let keys = derive_password_keys(&password, &Salt::from_bytes(salt), &params)
        .map_err(fail("derive"))?;
    Ok(keys.auth.verifier().as_bytes().to_vec())
}

/// The raw Argon2id v0x13 output (no secret, no associated data), by the call `shared::kdf`
/// makes.
#[wasm_bindgen]
pub fn argon2id_raw(
    password: &[u8],
    salt: &[u8],
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    output_len: usize,
) -> Result<Vec<u8>, JsError> {
    let params = argon2::Params::new(memory_kib, iterations, parallelism, Some(output_len))
        .map_err(|e| JsError::new(&e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = vec![0u8; output_len];
    argon
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| JsError::new(&e.to_string()))?;
    Ok(out)
}

fn cipher(key: &[u8], nonce: &[u8]) -> Result<(Aes256Gcm, [u8; 12]), JsError> {
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| JsError::new("key must be 32 bytes"))?;
    let nonce: [u8; 12] = nonce
        .try_into()
        .map_err(|_| JsError::new("nonce must be 12 bytes"))?;
    Ok((Aes256Gcm::new(&key.into()), nonce))
}

/// AES-256-GCM encryption; the 16-byte tag is appended, as in `shared::aead`.
#[wasm_bindgen]
pub fn aes_gcm_seal(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, JsError> {
    let (cipher, nonce) = cipher(key, nonce)?;
    cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| JsError::new("encryption failed"))
}

/// AES-256-GCM decryption and authentication.
#[wasm_bindgen]
pub fn aes_gcm_open(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, JsError> {
    let (cipher, nonce) = cipher(key, nonce)?;
    cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| JsError::new("decryption failed"))
}

/// A fresh RSA-3072 key pair from the `rsa` crate (`shared::keys::PrivateKey::generate`), as
/// PKCS#8 DER.
#[wasm_bindgen]
pub fn rsa_generate_pkcs8() -> Result<Vec<u8>, JsError> {
    let key = PrivateKey::generate(&mut OsRng).map_err(fail("generate"))?;
    Ok(key.to_pkcs8_der().map_err(fail("encode"))?.to_vec())
}

/// The parse and consistency check the viewer runs on the PKCS#8 key WebCrypto generated
/// (`shared::keys::PrivateKey::from_pkcs8_der`).
#[wasm_bindgen]
pub fn rsa_check_pkcs8(der: &[u8]) -> Result<(), JsError> {
    PrivateKey::from_pkcs8_der(der)
        .map(drop)
        .map_err(fail("check"))
}

/// A parsed private key for the `rsa` crate's OAEP-SHA-256 decryption (not what the viewer
/// ships: it is not constant-time, RUSTSEC-2023-0071).
#[wasm_bindgen]
#[derive(Debug)]
pub struct RsaKey(PrivateKey);

#[wasm_bindgen]
impl RsaKey {
    /// Parses and checks a PKCS#8 DER private key.
    #[wasm_bindgen(constructor)]
    pub fn new(der: &[u8]) -> Result<RsaKey, JsError> {
        PrivateKey::from_pkcs8_der(der)
            .map(Self)
            .map_err(fail("import"))
    }

    /// RSA-OAEP-SHA-256 decryption of `wrapped` under `label`.
    pub fn decrypt(&self, wrapped: &[u8], label: &[u8]) -> Result<Vec<u8>, JsError> {
        self.0
            .decrypt_wrap(wrapped, label)
            .map(|plain| plain.to_vec())
            .map_err(fail("decrypt"))
    }
}
