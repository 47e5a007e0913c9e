//! Audit exports as the sender's tooling reads them (JSON lines from `relay audit export` or
//! `GET /v1/audit`): parsing and chain verification never panic, and parsed events write back
//! to lines that parse to the same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::audit::{from_json_lines, to_json_lines, verify_chain};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(events) = from_json_lines(text) else {
        return;
    };
    let _ = verify_chain(&events);
    assert!(from_json_lines(&to_json_lines(&events)).unwrap() == events);
});
