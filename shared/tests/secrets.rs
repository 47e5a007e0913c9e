//! Secret types print as redacted, cannot be cloned or serialized by accident, and export only
//! through named calls.

mod common;

use rand_core::OsRng;
use shared::envelope::{Content, ContentKey};
use shared::identity_check::{CheckAnswer, EnrollmentCode, ExpectedConfirmation, PatientCheck};
use shared::kdf::{
    AuthKey, KdfParams, Password, PasswordKeys, Salt, SealingKey, Verifier, derive_password_keys,
};
use shared::keys::PrivateKey;
use shared::session::{DeviceHalf, RelayHalf};
use shared::token::Token;
use static_assertions::assert_not_impl_any;

assert_not_impl_any!(Password: Clone, serde::Serialize);
assert_not_impl_any!(SealingKey: Clone, serde::Serialize);
assert_not_impl_any!(AuthKey: Clone, serde::Serialize);
assert_not_impl_any!(PasswordKeys: Clone, serde::Serialize);
assert_not_impl_any!(PrivateKey: Clone, serde::Serialize);
assert_not_impl_any!(ContentKey: Clone, serde::Serialize);
assert_not_impl_any!(Content: Clone, serde::Serialize);
assert_not_impl_any!(DeviceHalf: Clone, serde::Serialize);
assert_not_impl_any!(RelayHalf: Clone, serde::Serialize);
assert_not_impl_any!(Token: Clone, serde::Serialize);
assert_not_impl_any!(CheckAnswer: Clone, serde::Serialize);
assert_not_impl_any!(EnrollmentCode: Clone, serde::Serialize);
assert_not_impl_any!(ExpectedConfirmation: Clone, serde::Serialize);
assert_not_impl_any!(PatientCheck: Clone, serde::Serialize);

/// Asserts that `debug` shows none of the secret's encodings.
fn assert_redacted(debug: &str, secret_encodings: &[&str]) {
    assert!(debug.contains("[redacted]"), "{debug}");
    for encoding in secret_encodings {
        assert!(!encoding.is_empty());
        assert!(
            !debug.contains(encoding),
            "Debug output leaks {encoding}: {debug}"
        );
    }
}

#[test]
fn debug_output_of_every_secret_is_redacted() {
    let typed = "hunter2-correct-horse";
    let password = Password::new(typed).unwrap();
    assert_redacted(&format!("{password:?}"), &[typed]);

    let keys: PasswordKeys =
        derive_password_keys(&password, &Salt::random(&mut OsRng), &KdfParams::MINIMUM).unwrap();
    let auth = keys.auth.to_base64url();
    assert_redacted(&format!("{keys:?}"), &[&auth]);
    assert_redacted(&format!("{:?}", keys.sealing), &[]);
    assert_redacted(&format!("{:?}", keys.auth), &[&auth]);
    let verifier: Verifier = keys.auth.verifier();
    assert_redacted(
        &format!("{verifier:?}"),
        &[&shared::encoding::b64u_encode(verifier.as_bytes())],
    );

    let private = common::keys().recipient;
    let pkcs8 = private.to_pkcs8_der().unwrap();
    // Any 16-byte window of the private encoding, in hex or base64url, must not appear.
    let hex = hex::encode(&pkcs8[pkcs8.len() - 64..]);
    assert_redacted(
        &format!("{private:?}"),
        &[&hex[..32], &shared::encoding::b64u_encode(&pkcs8[..48])],
    );

    let content_key = ContentKey::random(&mut OsRng);
    assert_redacted(&format!("{content_key:?}"), &[]);

    let content = Content {
        subject: "HIV test".into(),
        body: "Your result is negative".into(),
    };
    assert_redacted(&format!("{content:?}"), &["HIV", "negative"]);

    let device = DeviceHalf::random(&mut OsRng);
    assert_redacted(&format!("{device:?}"), &[&device.to_base64url()]);
    let relay = RelayHalf::random(&mut OsRng);
    assert_redacted(&format!("{relay:?}"), &[&relay.to_base64url()]);

    let token = Token::random(&mut OsRng);
    assert_redacted(&format!("{token:?}"), &[&token.to_base64url()]);
}

/// Byte secrets whose bytes are all one value would print that value if `Debug` were derived
/// naively; check no decimal or hex rendering of an array leaks through any wrapper.
#[test]
fn debug_never_renders_byte_arrays() {
    let device = DeviceHalf::from_base64url(&shared::encoding::b64u_encode([0xab; 32])).unwrap();
    let relay = RelayHalf::from_base64url(&shared::encoding::b64u_encode([0xab; 32])).unwrap();
    let token = Token::from_base64url(&shared::encoding::b64u_encode([0xab; 32])).unwrap();
    let auth = AuthKey::from_base64url(&shared::encoding::b64u_encode([0xab; 32])).unwrap();
    for debug in [
        format!("{device:?}"),
        format!("{relay:?}"),
        format!("{token:?}"),
        format!("{auth:?}"),
    ] {
        assert_redacted(&debug, &["171", "ab", "AB", "q6ur"]);
    }
}
