//! Invariant 2: altering any stored byte makes opening fail with a typed error; it never yields
//! altered text. Property tests flip one bit anywhere in every sealed or wrapped field; the
//! header, being short, is checked exhaustively. Failing cases proptest finds are recorded in
//! `tamper.proptest-regressions` beside this file and replayed first on every run.

mod common;

use std::sync::LazyLock;

use proptest::prelude::*;
use rand_core::OsRng;
use shared::Error;
use shared::bundle::{KeyBundle, SealBinding};
use shared::envelope::{Content, Envelope, Header, WrapRole};
use shared::ids::{RecipientId, SessionId};
use shared::kdf::{KdfParams, Password, PasswordKeys, Salt, derive_password_keys};
use shared::session::{DeviceHalf, RelayHalf, SessionBlob};

struct Fixture {
    keys: common::Keys,
    recipient: RecipientId,
    binding: SealBinding,
    password: PasswordKeys,
    bundle: KeyBundle,
    envelope: Envelope,
    content: Content,
    session: SessionId,
    device: DeviceHalf,
    relay: RelayHalf,
    blob: SessionBlob,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let keys = common::keys();
    let recipient = RecipientId::random(&mut OsRng);
    let binding = SealBinding {
        recipient,
        salt: Salt::random(&mut OsRng),
        kdf_params: KdfParams::MINIMUM,
    };
    let password = derive_password_keys(
        &Password::new("tamper test").unwrap(),
        &binding.salt,
        &binding.kdf_params,
    )
    .unwrap();
    let bundle = KeyBundle::seal(&keys.recipient, &binding, &password.sealing, &mut OsRng).unwrap();
    let content = common::content("Take 20 mg twice daily.");
    let envelope = Envelope::seal(
        common::header(Some(recipient)),
        &content,
        keys.organisation.public_key(),
        Some(keys.recipient.public_key()),
        &mut OsRng,
    )
    .unwrap();
    let session = SessionId::random(&mut OsRng);
    let device = DeviceHalf::random(&mut OsRng);
    let relay = RelayHalf::random(&mut OsRng);
    let blob = SessionBlob::seal(
        &keys.recipient,
        session,
        recipient,
        &device,
        &relay,
        &mut OsRng,
    )
    .unwrap();
    Fixture {
        keys,
        recipient,
        binding,
        password,
        bundle,
        envelope,
        content,
        session,
        device,
        relay,
        blob,
    }
});

fn flip(bytes: &mut [u8], bit: usize) {
    bytes[bit / 8] ^= 1 << (bit % 8);
}

/// The errors a tampered structure may produce: the opaque failure, or a refused version byte.
fn is_tamper_error(error: &Error) -> bool {
    matches!(
        error,
        Error::DecryptionFailed | Error::UnsupportedVersion(_)
    )
}

fn check_sealed_key_bit(bit: usize) {
    let f = &*FIXTURE;
    let mut bundle = f.bundle.clone();
    flip(&mut bundle.sealed_private_key, bit);
    let error = bundle.unseal(&f.binding, &f.password.sealing).unwrap_err();
    assert!(is_tamper_error(&error), "bit {bit}: {error:?}");
}

fn check_ciphertext_bit(bit: usize) {
    let f = &*FIXTURE;
    let mut envelope = f.envelope.clone();
    flip(&mut envelope.ciphertext, bit);
    assert_eq!(
        envelope.open(&f.keys.recipient, Some(f.recipient)),
        Err(Error::DecryptionFailed)
    );
    assert_eq!(
        envelope.open(&f.keys.organisation, None),
        Err(Error::DecryptionFailed)
    );
}

fn check_wrap_bit(role: WrapRole, bit: usize) {
    let f = &*FIXTURE;
    let mut envelope = f.envelope.clone();
    let wrap = envelope.wraps.iter_mut().find(|w| w.role == role).unwrap();
    flip(&mut wrap.wrapped_key, bit);
    let key = match role {
        WrapRole::Recipient => &f.keys.recipient,
        WrapRole::Organisation => &f.keys.organisation,
    };
    assert_eq!(
        envelope.open(key, None),
        Err(Error::DecryptionFailed),
        "{role:?} bit {bit}"
    );
    assert_eq!(
        envelope
            .rewrap(&f.keys.organisation, f.keys.other.public_key(), &mut OsRng)
            .is_err(),
        role == WrapRole::Organisation
    );
}

fn check_blob_bit(bit: usize) {
    let f = &*FIXTURE;
    let mut bytes = f.blob.as_bytes().to_vec();
    flip(&mut bytes, bit);
    let blob = SessionBlob::from_base64url(&shared::encoding::b64u_encode(&bytes)).unwrap();
    let error = blob
        .open(f.session, f.recipient, &f.device, &f.relay)
        .unwrap_err();
    assert!(is_tamper_error(&error), "bit {bit}: {error:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_flipped_bit_in_a_sealed_private_key_is_refused(bit in 0..FIXTURE.bundle.sealed_private_key.len() * 8) {
        check_sealed_key_bit(bit);
    }

    #[test]
    fn any_flipped_bit_in_the_ciphertext_is_refused(bit in 0..FIXTURE.envelope.ciphertext.len() * 8) {
        check_ciphertext_bit(bit);
    }

    #[test]
    fn any_flipped_bit_in_the_nonce_is_refused(bit in 0..96usize) {
        let f = &*FIXTURE;
        let mut envelope = f.envelope.clone();
        flip(&mut envelope.nonce, bit);
        prop_assert_eq!(envelope.open(&f.keys.recipient, Some(f.recipient)), Err(Error::DecryptionFailed));
    }

    #[test]
    fn any_flipped_bit_in_the_recipient_wrap_is_refused(bit in 0..3072usize) {
        check_wrap_bit(WrapRole::Recipient, bit);
    }

    #[test]
    fn any_flipped_bit_in_the_organisation_wrap_is_refused(bit in 0..3072usize) {
        check_wrap_bit(WrapRole::Organisation, bit);
    }

    #[test]
    fn any_flipped_bit_in_a_session_blob_is_refused(bit in 0..FIXTURE.blob.as_bytes().len() * 8) {
        check_blob_bit(bit);
    }

    #[test]
    fn any_flipped_bit_in_a_wrap_fingerprint_means_not_addressed(bit in 0..256usize) {
        let f = &*FIXTURE;
        let mut envelope = f.envelope.clone();
        let wrap = envelope.wraps.iter_mut().find(|w| w.role == WrapRole::Recipient).unwrap();
        let mut fingerprint = *wrap.key_fingerprint.as_bytes();
        flip(&mut fingerprint, bit);
        wrap.key_fingerprint = shared::keys::Fingerprint::from_bytes(fingerprint);
        prop_assert_eq!(envelope.open(&f.keys.recipient, None), Err(Error::NotAddressedToKey));
    }
}

/// Every bit of the 72-byte header: either the header no longer parses, or the message no
/// longer opens, for the recipient and for the organisation.
#[test]
fn every_flipped_bit_in_the_header_is_refused() {
    let f = &*FIXTURE;
    let original = f.envelope.header.to_bytes();
    for bit in 0..original.len() * 8 {
        let mut bytes = original;
        flip(&mut bytes, bit);
        let Ok(header) = Header::from_bytes(&bytes) else {
            continue;
        };
        let mut envelope = f.envelope.clone();
        envelope.header = header;
        for (key, me) in [
            (&f.keys.recipient, Some(f.recipient)),
            (&f.keys.organisation, None),
        ] {
            match envelope.open(key, me) {
                Err(Error::DecryptionFailed | Error::WrongRecipient | Error::Malformed { .. }) => {}
                other => panic!("bit {bit}: {other:?}"),
            }
        }
    }
    // Sanity: the untouched envelope opens.
    assert_eq!(
        f.envelope
            .open(&f.keys.recipient, Some(f.recipient))
            .unwrap(),
        f.content
    );
}

/// Fixed edge cases: version bytes, first and last bytes (nonce start, tag end).
#[test]
fn edge_bits_regressions() {
    let f = &*FIXTURE;
    for bit in [0, 7, 8, 13 * 8, f.bundle.sealed_private_key.len() * 8 - 1] {
        check_sealed_key_bit(bit);
    }
    for bit in [
        0,
        f.envelope.ciphertext.len() * 8 - 1,
        (f.envelope.ciphertext.len() - 16) * 8,
    ] {
        check_ciphertext_bit(bit);
    }
    for bit in [0, 7, 3071] {
        check_wrap_bit(WrapRole::Recipient, bit);
        check_wrap_bit(WrapRole::Organisation, bit);
    }
    for bit in [0, 8, f.blob.as_bytes().len() * 8 - 1] {
        check_blob_bit(bit);
    }
}
