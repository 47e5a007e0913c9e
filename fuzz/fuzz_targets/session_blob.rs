//! The session blob as the viewer reads it back from sessionStorage: base64url decoding and
//! opening under fixed halves never panic, and nothing forged opens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::ids::{RecipientId, SessionId};
use shared::session::{DeviceHalf, RelayHalf, SessionBlob};

const DEVICE: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
const RELAY: &str = "HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(blob) = SessionBlob::from_base64url(text) else {
        return;
    };
    let device = DeviceHalf::from_base64url(DEVICE).unwrap();
    let relay = RelayHalf::from_base64url(RELAY).unwrap();
    let session = SessionId::parse("0f0e0d0c-0b0a-4908-8706-050403020100").unwrap();
    let recipient = RecipientId::parse("00010203-0405-4607-8809-0a0b0c0d0e0f").unwrap();
    assert!(blob.open(session, recipient, &device, &relay).is_err());
});
