//! Runs in headless Chromium (`cargo test -p viewer --target wasm32-unknown-unknown`): the
//! protocol's test vectors decrypt inside the browser with the same code the viewer ships, the
//! storage helpers leave nothing behind, WebCrypto makes keys `shared` accepts, and the envelope
//! vectors open with the patient's key held by WebCrypto, non-extractable. Prints the
//! in-browser cost of the key derivation and key generation that the UI shows progress for.
#![cfg(target_arch = "wasm32")]

use securetext_viewer::flow::{self, Unlocked};
use securetext_viewer::vault::{self, StoredSession};
use securetext_viewer::webkey::SessionKey;
use serde_json::Value;
use shared::api::MessageView;
use shared::bundle::{KeyBundle, SealBinding};
use shared::envelope::{Envelope, Wrap, WrapRole};
use shared::ids::{RecipientId, SessionId};
use shared::kdf::{KdfParams, Password, Salt, derive_password_keys};
use shared::keys::PrivateKey;
use shared::session::{DeviceHalf, RelayHalf, SessionBlob};
use unicode_normalization::UnicodeNormalization;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

const VECTORS: &str = include_str!("../../shared/tests/vectors/v1.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).unwrap()
}

fn h(value: &Value) -> Vec<u8> {
    hex_decode(value.as_str().unwrap())
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn key(file: &Value, name: &str) -> PrivateKey {
    let entry = file["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap();
    PrivateKey::from_pkcs8_der(&h(&entry["private_key_pkcs8"])).unwrap()
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

#[wasm_bindgen_test]
fn kdf_vectors_match_in_the_browser() {
    for v in vectors()["kdf"].as_array().unwrap() {
        let params: KdfParams = serde_json::from_value(v["params"].clone()).unwrap();
        let salt = Salt::from_bytes(h(&v["salt"]).try_into().unwrap());
        let started = now_ms();
        // The viewer's own path: the browser's NFC, as the vectors include a password typed
        // in NFD.
        let keys = derive_password_keys(
            &flow::password(v["password"].as_str().unwrap()).unwrap(),
            &salt,
            &params,
        )
        .unwrap();
        console_log!(
            "Argon2id m={} KiB t={} p={}: {:.0} ms in this browser",
            params.memory_kib,
            params.iterations,
            params.parallelism,
            now_ms() - started
        );
        assert_eq!(keys.auth.verifier().as_bytes().to_vec(), h(&v["verifier"]));
    }
}

/// The browser's NFC (what the viewer derives keys from) as the `unicode-normalization` crate
/// computes it (what `shared::kdf::Password::new` uses natively and the vectors were made with).
fn assert_browser_nfc_is_the_crates(text: &str) {
    let browser: String = js_sys::JsString::from(text).normalize("NFC").into();
    let reference: String = text.nfc().collect();
    assert_eq!(browser, reference, "NFC of {text:?}");
}

#[wasm_bindgen_test]
fn the_browsers_nfc_is_the_crates_on_every_code_point() {
    let started = now_ms();
    for c in (0..=0x10_FFFF).filter_map(char::from_u32) {
        assert_browser_nfc_is_the_crates(c.encode_utf8(&mut [0; 4]));
    }
    console_log!("NFC of every code point: {:.0} ms", now_ms() - started);
}

/// Sequences where composition and canonical ordering decide: every combining mark of the
/// main blocks after each Latin, Greek and Cyrillic letter and after a decomposable
/// precomposed letter, two marks in both orders, and Hangul jamo.
#[wasm_bindgen_test]
fn the_browsers_nfc_is_the_crates_on_mark_sequences() {
    let marks = (0x300..0x370).chain(0x1dc0..0x1e00).chain(0x20d0..0x20f1);
    let marks: Vec<char> = marks.filter_map(char::from_u32).collect();
    let bases = (0x41..0x7b)
        .chain(0xc0..0x250)
        .chain(0x391..0x3ca)
        .chain(0x410..0x450);
    for base in bases.filter_map(char::from_u32) {
        for &mark in &marks {
            assert_browser_nfc_is_the_crates(&format!("{base}{mark}"));
        }
    }
    for &first in &marks {
        for &second in &marks {
            assert_browser_nfc_is_the_crates(&format!("a{first}{second}"));
            assert_browser_nfc_is_the_crates(&format!("\u{1e0b}{first}{second}"));
        }
    }
    for lead in 0x1100..0x1113 {
        for vowel in 0x1161..0x1176 {
            for tail in [0x11a7, 0x11a8, 0x11c2, 0x11c3] {
                let jamo = [lead, vowel, tail].map(|c| char::from_u32(c).unwrap());
                assert_browser_nfc_is_the_crates(&jamo.iter().collect::<String>());
            }
        }
    }
}

#[wasm_bindgen_test]
fn envelopes_bundles_and_blobs_open_in_the_browser() {
    let file = vectors();
    let bundle_vector = &file["key_bundle"][0];
    let kdf = file["kdf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == bundle_vector["kdf"])
        .unwrap();
    let params: KdfParams = serde_json::from_value(kdf["params"].clone()).unwrap();
    let salt = Salt::from_bytes(h(&kdf["salt"]).try_into().unwrap());
    let keys = derive_password_keys(
        &Password::new(kdf["password"].as_str().unwrap()).unwrap(),
        &salt,
        &params,
    )
    .unwrap();
    let recipient = RecipientId::parse(bundle_vector["recipient_id"].as_str().unwrap()).unwrap();
    let binding = SealBinding {
        recipient,
        salt,
        kdf_params: params,
    };
    let patient = key(&file, "recipient");
    let bundle = KeyBundle {
        public_key: patient.public_key().clone(),
        sealed_private_key: h(&bundle_vector["sealed_private_key"]),
    };
    let unsealed = bundle.unseal(&binding, &keys.sealing).unwrap();
    assert_eq!(unsealed.public_key(), patient.public_key());

    for v in file["envelope"].as_array().unwrap() {
        let envelope: Envelope = serde_json::from_value(v["envelope_json"].clone()).unwrap();
        let organisation = key(&file, "organisation");
        assert_eq!(
            envelope.open(&organisation, None).unwrap().body,
            v["body"].as_str().unwrap()
        );
        if v["recipient_key"].is_string() {
            let content = envelope
                .open(&unsealed, envelope.header.recipient_id)
                .unwrap();
            assert_eq!(content.body, v["body"].as_str().unwrap());
            assert_eq!(content.subject, v["subject"].as_str().unwrap());
        }
    }

    let rewrap = &file["rewrap"][0];
    let source = file["envelope"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == rewrap["envelope"])
        .unwrap();
    let mut envelope: Envelope = serde_json::from_value(source["envelope_json"].clone()).unwrap();
    let wrap: Wrap = serde_json::from_value(rewrap["recipient_wrap_json"].clone()).unwrap();
    envelope.set_recipient_wrap(wrap).unwrap();
    let reset = key(&file, "recipient-after-reset");
    assert_eq!(
        envelope.open(&reset, None).unwrap().body,
        source["body"].as_str().unwrap()
    );

    let blob_vector = &file["session_blob"][0];
    let b64 = |v: &Value| shared::encoding::b64u_encode(h(v));
    let blob = SessionBlob::from_base64url(&b64(&blob_vector["blob"])).unwrap();
    let opened = blob
        .open(
            SessionId::parse(blob_vector["session_id"].as_str().unwrap()).unwrap(),
            RecipientId::parse(blob_vector["recipient_id"].as_str().unwrap()).unwrap(),
            &DeviceHalf::from_base64url(&b64(&blob_vector["device_half"])).unwrap(),
            &RelayHalf::from_base64url(&b64(&blob_vector["relay_half"])).unwrap(),
        )
        .unwrap();
    assert_eq!(opened.public_key(), patient.public_key());
}

fn storage_dump() -> String {
    let window = web_sys::window().unwrap();
    let mut out = String::new();
    for storage in [
        window.session_storage().unwrap().unwrap(),
        window.local_storage().unwrap().unwrap(),
    ] {
        for i in 0..storage.length().unwrap() {
            let name = storage.key(i).unwrap().unwrap();
            out.push_str(&name);
            out.push('=');
            out.push_str(&storage.get_item(&name).unwrap().unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

#[wasm_bindgen_test]
fn the_vault_holds_only_sealed_data_and_clears_completely() {
    let file = vectors();
    let patient = key(&file, "recipient");
    let pkcs8 = patient.to_pkcs8_der().unwrap();
    let session = SessionId::random(&mut rand_core::OsRng);
    let recipient = RecipientId::random(&mut rand_core::OsRng);
    let device = DeviceHalf::random(&mut rand_core::OsRng);
    let relay = RelayHalf::random(&mut rand_core::OsRng);
    let blob = SessionBlob::seal(
        &patient,
        session,
        recipient,
        &device,
        &relay,
        &mut rand_core::OsRng,
    )
    .unwrap();
    assert!(vault::save(&StoredSession {
        session_id: session,
        recipient_id: recipient,
        device_half: device.to_base64url().to_string(),
        blob: blob.to_base64url(),
    }));
    let stored = storage_dump();
    assert!(stored.contains(vault::STORAGE_KEY));
    let tail = &pkcs8[pkcs8.len() - 48..];
    assert!(
        !stored.contains(&shared::encoding::b64u_encode(tail)[..32]),
        "private key bytes stored in clear"
    );
    assert!(
        !stored.contains(relay.to_base64url().as_str()),
        "the relay half is never stored"
    );
    assert_eq!(vault::load().unwrap().session_id, session);

    vault::clear();
    assert_eq!(
        storage_dump(),
        "",
        "nothing is left in sessionStorage or localStorage"
    );
    assert!(vault::load().is_none());
}

#[wasm_bindgen_test]
async fn webcrypto_generates_keys_shared_accepts() {
    let started = now_ms();
    let generated = securetext_viewer::keygen::generate().await.unwrap();
    console_log!(
        "RSA-{} key pair via WebCrypto: {:.0} ms",
        generated.public_key().bits(),
        now_ms() - started
    );
    assert_eq!(generated.public_key().bits(), shared::keys::RSA_BITS);
}

/// The unlocked key as the viewer holds it (issue 12, finding 12): a WebCrypto key that script
/// cannot read back, which opens the protocol's envelope vectors, through the same opening
/// path the page uses for listed messages.
#[wasm_bindgen_test]
async fn envelope_vectors_open_with_a_non_extractable_webcrypto_key() {
    let file = vectors();
    let subtle = web_sys::window().unwrap().crypto().unwrap().subtle();
    let envelopes: Vec<(Envelope, &Value)> = file["envelope"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                serde_json::from_value(v["envelope_json"].clone()).unwrap(),
                v,
            )
        })
        .collect();
    for name in ["organisation", "recipient"] {
        let key = SessionKey::import(key(&file, name)).await.unwrap();
        let crypto_key = key.crypto_key();
        assert!(!crypto_key.extractable(), "{name}: extractable");
        assert_eq!(crypto_key.type_(), "private");
        assert_eq!(
            crypto_key.usages().to_vec(),
            [wasm_bindgen::JsValue::from_str("decrypt")]
        );
        for format in ["pkcs8", "jwk"] {
            let exported = JsFuture::from(subtle.export_key(format, crypto_key).unwrap()).await;
            assert!(exported.is_err(), "{name}: exportKey({format}) succeeded");
        }
        for (envelope, v) in &envelopes {
            let recipient = match name {
                "organisation" => None,
                _ if v["recipient_key"] == name => envelope.header.recipient_id,
                _ => continue,
            };
            let unwrapping = envelope.unwrapping(key.public_key(), recipient).unwrap();
            let opened = key.open(unwrapping).await.unwrap();
            assert_eq!(opened.content.body, v["body"].as_str().unwrap());
            assert_eq!(opened.content.subject, v["subject"].as_str().unwrap());
        }
    }

    // The page's path: listed, checked, opened with the session's key.
    let (envelope, v) = envelopes
        .iter()
        .find(|(_, v)| v["recipient_key"] == "recipient")
        .unwrap();
    let recipient = envelope.header.recipient_id.unwrap();
    let unlocked = Unlocked {
        key: SessionKey::import(key(&file, "recipient")).await.unwrap(),
        recipient,
        idle_timeout_seconds: 300,
    };
    let mut altered = envelope.clone();
    altered.wraps.retain(|w| w.role == WrapRole::Organisation);
    let mut wrap = envelope.wrap_for(WrapRole::Recipient).unwrap().clone();
    wrap.wrapped_key[20] ^= 1;
    altered.set_recipient_wrap(wrap).unwrap();
    let listed = |envelope: &Envelope| MessageView {
        message_id: envelope.header.message_id,
        organisation_name: "Riverside Clinic".into(),
        created_at: 0,
        expires_at: i64::MAX,
        read_at: None,
        awaiting_key: false,
        envelope: Some(envelope.clone()),
    };
    let now = envelope.header.created_at + 1;
    for (item, expected) in [
        (listed(envelope), Ok(v["body"].as_str().unwrap())),
        (listed(&altered), Err(shared::Error::DecryptionFailed)),
    ] {
        let items = [item];
        let mut opened = flow::open_envelopes(&items, &[items[0].message_id], &unlocked, now).await;
        let result = opened.remove(&items[0].message_id).unwrap();
        assert_eq!(
            result
                .as_ref()
                .map(|o| o.content.body.as_str())
                .map_err(Clone::clone),
            expected
        );
    }
}
