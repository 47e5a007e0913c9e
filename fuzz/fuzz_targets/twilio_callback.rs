//! A Twilio status callback as the relay reads it: the form body, the signature check and the
//! status parser never panic, and no unsigned or wrongly signed callback is accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::sms::twilio::{parse_status, sign, verify_signature};

const TOKEN: &str = "fuzzing-auth-token";
const URL: &str = "https://relay.example/v1/sms/twilio/status";

fuzz_target!(|data: &[u8]| {
    // The first line is the X-Twilio-Signature header, the rest the form body.
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let params: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let header = String::from_utf8_lossy(header);
    if verify_signature(TOKEN, URL, &params, &header) {
        assert_eq!(header.trim(), sign(TOKEN, URL, &params));
    }
    assert!(verify_signature(
        TOKEN,
        URL,
        &params,
        &sign(TOKEN, URL, &params)
    ));
    assert!(!verify_signature("", URL, &params, &header));
    let _ = parse_status(&params);
});
