//! A submitted envelope, as the relay reads it from `POST /v1/messages`: JSON parsing and the
//! structural validation the relay runs without any key never panic, and a valid envelope
//! survives a JSON round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::envelope::{Envelope, WrapRole};

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(data) else {
        return;
    };
    if envelope.validate().is_ok() {
        let _ = envelope.wrap_for(WrapRole::Recipient);
        let json = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(serde_json::from_slice::<Envelope>(&json).unwrap(), envelope);
    }
});
