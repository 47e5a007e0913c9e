//! The patient's private key while a session is unlocked: a WebCrypto `CryptoKey`, imported
//! non-extractable, for RSA-OAEP decryption only.
//!
//! Why: the `rsa` crate's private-key operation is not constant-time (RUSTSEC-2023-0071, the
//! Marvin attack; THREAT_MODEL.md, section 6.3), and the relay chooses the wraps the viewer
//! decrypts. The browser's own RSA-OAEP (BoringSSL in Chromium, NSS in Firefox, CoreCrypto in
//! Safari) is constant-time, runs outside WebAssembly memory, and a non-extractable key cannot
//! be read back by script at all, not even by this page's: `exportKey` fails. It also leaves the
//! `rsa` crate's decryption out of the viewer's download.
//!
//! `shared` still decides what to decrypt and checks everything around it
//! ([`shared::envelope::Unwrapping`]); this module only decrypts.
//!
//! # Invariants
//! - The key is imported with `extractable = false` and the single usage `decrypt`.
//! - The PKCS#8 bytes exist only during the import: the WebAssembly copy is wiped on drop and
//!   the JavaScript copy is overwritten once `importKey` has copied it (which it does before
//!   returning its promise).
//! - Decrypted content keys are copied out of the JavaScript buffer, which is then zeroed.

use std::fmt;

use js_sys::{Array, Object, Reflect, Uint8Array};
use shared::envelope::{Opened, Unwrapping};
use shared::keys::{PrivateKey, PublicKey};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{CryptoKey, SubtleCrypto};
use zeroize::Zeroizing;

/// Why the key could not be moved into WebCrypto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// WebCrypto is missing (an old browser, or a page not served over HTTPS).
    #[error("the browser lacks WebCrypto")]
    Unsupported,
    /// The browser refused the key.
    #[error("the browser refused the private key")]
    Refused,
}

/// The browser's WebCrypto, if it has one.
pub(crate) fn subtle() -> Option<SubtleCrypto> {
    web_sys::window()
        .and_then(|w| w.crypto().ok())
        .map(|c| c.subtle())
}

/// A WebCrypto algorithm dictionary.
pub(crate) fn dictionary(entries: &[(&str, &JsValue)]) -> Result<Object, JsValue> {
    let object = Object::new();
    for (key, value) in entries {
        Reflect::set(&object, &JsValue::from_str(key), value)?;
    }
    Ok(object)
}

/// The RSA-OAEP parameters of the wrap format: SHA-256 for the label hash and for MGF1
/// (WebCrypto uses the key's hash for both).
fn rsa_oaep_sha256() -> Result<Object, JsValue> {
    dictionary(&[
        ("name", &JsValue::from_str("RSA-OAEP")),
        ("hash", &JsValue::from_str("SHA-256")),
    ])
}

/// The unlocked private key, held by the browser.
pub struct SessionKey {
    key: CryptoKey,
    public: PublicKey,
}

impl SessionKey {
    /// Moves a checked private key (unsealed, resumed or just generated, and already sealed for
    /// the session) into WebCrypto, non-extractable; the `PrivateKey` is dropped and wiped.
    pub async fn import(private: PrivateKey) -> Result<Self, ImportError> {
        let subtle = subtle().ok_or(ImportError::Unsupported)?;
        let public = private.public_key().clone();
        let der = private.to_pkcs8_der().map_err(|_| ImportError::Refused)?;
        drop(private);
        let data = Uint8Array::from(&der[..]);
        drop(der);
        let algorithm = rsa_oaep_sha256().map_err(|_| ImportError::Refused)?;
        let usages = Array::of1(&JsValue::from_str("decrypt"));
        let promise = subtle.import_key_with_object("pkcs8", &data, &algorithm, false, &usages);
        data.fill(0, 0, data.length());
        let key = JsFuture::from(promise.map_err(|_| ImportError::Refused)?)
            .await
            .map_err(|_| ImportError::Refused)?
            .unchecked_into();
        Ok(Self { key, public })
    }

    /// The matching public key: its fingerprint picks the wrap to decrypt and is shown to the
    /// patient for an out-of-band check.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The WebCrypto key, so that tests can check what the browser holds.
    pub fn crypto_key(&self) -> &CryptoKey {
        &self.key
    }

    /// Decrypts the wrap that `unwrapping` names with WebCrypto and finishes opening. Every
    /// failure is [`shared::Error::DecryptionFailed`], like `shared`'s own.
    pub async fn open(&self, unwrapping: Unwrapping<'_>) -> Result<Opened, shared::Error> {
        let failed = |_| shared::Error::DecryptionFailed;
        let subtle = subtle().ok_or(shared::Error::DecryptionFailed)?;
        let label = Uint8Array::from(unwrapping.label());
        let algorithm = dictionary(&[("name", &JsValue::from_str("RSA-OAEP")), ("label", &label)])
            .map_err(failed)?;
        let promise = subtle
            .decrypt_with_object_and_u8_array(&algorithm, &self.key, unwrapping.wrapped_key())
            .map_err(failed)?;
        let buffer = JsFuture::from(promise).await.map_err(failed)?;
        let view = Uint8Array::new(&buffer);
        let unwrapped = Zeroizing::new(view.to_vec());
        view.fill(0, 0, view.length());
        unwrapping.open(&unwrapped)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SessionKey(webcrypto, [redacted], public {})",
            self.public.fingerprint()
        )
    }
}
