//! A key bundle as the viewer receives it, and the key encodings inside it: the JSON form, an
//! SPKI public key (checked on parse) and a PKCS#8 private key (what unsealing yields). None of
//! them panics on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::bundle::KeyBundle;
use shared::keys::{PrivateKey, PublicKey};

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = serde_json::from_slice::<KeyBundle>(data) {
        let json = serde_json::to_vec(&bundle).unwrap();
        assert_eq!(serde_json::from_slice::<KeyBundle>(&json).unwrap(), bundle);
    }
    if let Ok(key) = PublicKey::from_spki_der(data) {
        assert_eq!(key.spki_der(), data);
    }
    let _ = PrivateKey::from_pkcs8_der(data);
});
