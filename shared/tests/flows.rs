//! The protocol's flows end to end, with `shared` playing sender, viewer and (key-less) relay:
//! enroll, send, unlock, first contact and re-wrap, re-enrollment, session re-open and wipe.

mod common;

use rand_core::OsRng;
use shared::Error;
use shared::bundle::{KeyBundle, SealBinding};
use shared::envelope::{Content, Envelope, MAX_CONTENT_LEN, WrapRole, padded_len};
use shared::ids::{RecipientId, SessionId};
use shared::kdf::{AuthKey, KdfParams, Password, Salt, derive_password_keys};
use shared::session::{DeviceHalf, RelayHalf, SessionBlob};

const PARAMS: KdfParams = KdfParams::MINIMUM;

#[test]
fn enroll_then_unlock_with_the_password_only() {
    let keys = common::keys();
    let recipient = RecipientId::random(&mut OsRng);
    let salt = Salt::random(&mut OsRng);

    // Enrollment in the viewer: the relay receives bundle, salt, params and verifier.
    let enrolled =
        derive_password_keys(&Password::new("s3cret phrase").unwrap(), &salt, &PARAMS).unwrap();
    let binding = SealBinding {
        recipient,
        salt,
        kdf_params: PARAMS,
    };
    let bundle = KeyBundle::seal(&keys.recipient, &binding, &enrolled.sealing, &mut OsRng).unwrap();
    let verifier = enrolled.auth.verifier();
    let stored = serde_json::to_string(&bundle).unwrap();

    // Unlock: same password derives a proof the relay accepts and a key that unseals.
    let again =
        derive_password_keys(&Password::new("s3cret phrase").unwrap(), &salt, &PARAMS).unwrap();
    let proof = AuthKey::from_base64url(&again.auth.to_base64url()).unwrap();
    assert!(verifier.matches(&proof));
    let bundle: KeyBundle = serde_json::from_str(&stored).unwrap();
    let private = bundle.unseal(&binding, &again.sealing).unwrap();
    assert_eq!(private.public_key(), keys.recipient.public_key());

    // Wrong password: the relay refuses the proof and the bundle does not open.
    let wrong =
        derive_password_keys(&Password::new("s3cret phrasE").unwrap(), &salt, &PARAMS).unwrap();
    assert!(!verifier.matches(&wrong.auth));
    assert_eq!(
        bundle.unseal(&binding, &wrong.sealing).err(),
        Some(Error::DecryptionFailed)
    );

    // Another recipient's record, or another salt or parameters served beside the bundle: the
    // associated data no longer matches.
    let other = SealBinding {
        recipient: RecipientId::random(&mut OsRng),
        ..binding
    };
    let other_salt = SealBinding {
        salt: Salt::random(&mut OsRng),
        ..binding
    };
    let other_params = SealBinding {
        kdf_params: KdfParams::DEFAULT,
        ..binding
    };
    for wrong in [other, other_salt, other_params] {
        assert_eq!(
            bundle.unseal(&wrong, &again.sealing).err(),
            Some(Error::DecryptionFailed)
        );
    }
}

#[test]
fn bundle_with_mismatched_public_key_is_refused() {
    let keys = common::keys();
    let recipient = RecipientId::random(&mut OsRng);
    let binding = SealBinding {
        recipient,
        salt: Salt::random(&mut OsRng),
        kdf_params: PARAMS,
    };
    let password =
        derive_password_keys(&Password::new("pw").unwrap(), &binding.salt, &PARAMS).unwrap();
    let mut bundle =
        KeyBundle::seal(&keys.recipient, &binding, &password.sealing, &mut OsRng).unwrap();
    bundle.public_key = keys.other.public_key().clone();
    assert_eq!(
        bundle.unseal(&binding, &password.sealing).err(),
        Some(Error::DecryptionFailed)
    );
}

#[test]
fn send_to_enrolled_recipient_and_both_sides_read_it() {
    let keys = common::keys();
    let recipient = RecipientId::random(&mut OsRng);
    let header = common::header(Some(recipient));
    let content = common::content("Your prescription is ready.");
    let envelope = Envelope::seal(
        header,
        &content,
        keys.organisation.public_key(),
        Some(keys.recipient.public_key()),
        &mut OsRng,
    )
    .unwrap();
    envelope.validate().unwrap();
    let json = serde_json::to_string(&envelope).unwrap();
    assert!(!json.contains("prescription"));
    let envelope: Envelope = serde_json::from_str(&json).unwrap();

    assert_eq!(
        envelope.open(&keys.recipient, Some(recipient)).unwrap(),
        content
    );
    assert_eq!(envelope.open(&keys.organisation, None).unwrap(), content);
    assert_eq!(
        envelope.open(&keys.other, Some(recipient)),
        Err(Error::NotAddressedToKey)
    );
    assert_eq!(
        envelope.open(&keys.recipient, Some(RecipientId::random(&mut OsRng))),
        Err(Error::WrongRecipient)
    );
    // Header and recipient key must be given together.
    assert!(
        Envelope::seal(
            header,
            &content,
            keys.organisation.public_key(),
            None,
            &mut OsRng
        )
        .is_err()
    );
}

#[test]
fn first_contact_rewrap_and_re_enrollment() {
    let keys = common::keys();
    let content = common::content("Welcome to the clinic.");
    let mut envelope = Envelope::seal(
        common::header(None),
        &content,
        keys.organisation.public_key(),
        None,
        &mut OsRng,
    )
    .unwrap();
    envelope.validate().unwrap();
    assert_eq!(envelope.wraps.len(), 1);
    assert_eq!(
        envelope.open(&keys.recipient, None),
        Err(Error::NotAddressedToKey)
    );

    // The agent re-wraps to the newly enrolled key; the viewer then reads.
    let wrap = envelope
        .rewrap(&keys.organisation, keys.recipient.public_key(), &mut OsRng)
        .unwrap();
    assert_eq!(wrap.role, WrapRole::Recipient);
    envelope.set_recipient_wrap(wrap).unwrap();
    assert_eq!(
        envelope
            .open(&keys.recipient, Some(RecipientId::random(&mut OsRng)))
            .unwrap(),
        content
    );

    // Forgotten password: a new key replaces the old wrap.
    let wrap = envelope
        .rewrap(&keys.organisation, keys.other.public_key(), &mut OsRng)
        .unwrap();
    envelope.set_recipient_wrap(wrap).unwrap();
    assert_eq!(envelope.wraps.len(), 2);
    assert_eq!(envelope.open(&keys.other, None).unwrap(), content);
    assert_eq!(
        envelope.open(&keys.recipient, None),
        Err(Error::NotAddressedToKey)
    );

    // Only the organisation can re-wrap.
    assert_eq!(
        envelope
            .rewrap(&keys.recipient, keys.recipient.public_key(), &mut OsRng)
            .err(),
        Some(Error::NotAddressedToKey)
    );
}

#[test]
fn rewrap_refuses_a_substituted_ciphertext() {
    let keys = common::keys();
    let original = Envelope::seal(
        common::header(None),
        &common::content("original"),
        keys.organisation.public_key(),
        None,
        &mut OsRng,
    )
    .unwrap();
    let other = Envelope::seal(
        common::header(None),
        &common::content("substituted"),
        keys.organisation.public_key(),
        None,
        &mut OsRng,
    )
    .unwrap();
    let mut spliced = original.clone();
    spliced.ciphertext = other.ciphertext;
    spliced.nonce = other.nonce;
    assert_eq!(
        spliced
            .rewrap(&keys.organisation, keys.recipient.public_key(), &mut OsRng)
            .err(),
        Some(Error::DecryptionFailed)
    );
}

#[test]
fn session_blob_reopens_until_the_relay_half_is_gone() {
    let keys = common::keys();
    let (session, recipient) = (
        SessionId::random(&mut OsRng),
        RecipientId::random(&mut OsRng),
    );
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
    let stored = (blob.to_base64url(), device.to_base64url());

    let blob = SessionBlob::from_base64url(&stored.0).unwrap();
    let device = DeviceHalf::from_base64url(&stored.1).unwrap();
    let relay_again = RelayHalf::from_base64url(&relay.to_base64url()).unwrap();
    let private = blob
        .open(session, recipient, &device, &relay_again)
        .unwrap();
    assert_eq!(private.public_key(), keys.recipient.public_key());

    // Remote wipe: the relay's half is destroyed; any other half opens nothing.
    let fresh = RelayHalf::random(&mut OsRng);
    assert_eq!(
        blob.open(session, recipient, &device, &fresh).err(),
        Some(Error::DecryptionFailed)
    );
    let other_device = DeviceHalf::random(&mut OsRng);
    assert_eq!(
        blob.open(session, recipient, &other_device, &relay).err(),
        Some(Error::DecryptionFailed)
    );
    let other_session = SessionId::random(&mut OsRng);
    assert_eq!(
        blob.open(other_session, recipient, &device, &relay).err(),
        Some(Error::DecryptionFailed)
    );
}

#[test]
fn padding_hides_length_within_buckets_and_caps_size() {
    for (len, bucket) in [
        (0, 256),
        (240, 256),
        (249, 512),
        (1000, 1024),
        (65_000, 65_536),
    ] {
        let content = Content {
            subject: String::new(),
            body: "x".repeat(len),
        };
        let padded = content.to_padded().unwrap();
        assert_eq!(padded.len(), bucket, "body of {len} bytes");
        assert_eq!(padded.len(), padded_len(8 + len));
        assert_eq!(Content::from_padded(&padded).unwrap(), content);
    }
    let too_big = Content {
        subject: String::new(),
        body: "x".repeat(MAX_CONTENT_LEN),
    };
    assert!(matches!(
        too_big.to_padded(),
        Err(Error::ContentTooLarge { .. })
    ));
}

#[test]
fn expiry_is_a_header_fact() {
    let header = common::header(None);
    assert!(!header.is_expired(header.created_at));
    assert!(header.is_expired(header.expires_at));
    let mut bad = header;
    bad.expires_at = bad.created_at;
    assert!(bad.validate().is_err());
    let mut future = header;
    future.version = 2;
    assert_eq!(future.validate(), Err(Error::UnsupportedVersion(2)));
}

#[test]
fn binary_header_reports_versions_and_refuses_zero_recipient() {
    let header = common::header(Some(RecipientId::from_bytes([7; 16])));
    let mut bytes = header.to_bytes();
    assert_eq!(
        shared::envelope::Header::from_bytes(&bytes).unwrap(),
        header
    );
    bytes[4] = 2;
    assert_eq!(
        shared::envelope::Header::from_bytes(&bytes),
        Err(Error::UnsupportedVersion(2))
    );
    let mut zero = common::header(None).to_bytes();
    zero[37] = 1;
    assert!(matches!(
        shared::envelope::Header::from_bytes(&zero),
        Err(Error::Malformed { .. })
    ));
}

/// The viewer opens a message the relay listed only as what it was listed as, and only while
/// its authenticated header is live: an envelope moved under another message's id (a relay
/// swapping envelopes) and an expired header are refused before any private-key operation,
/// and what is shown — dates included — comes from the header that opened.
#[test]
fn a_listed_message_opens_only_under_its_own_id_and_before_its_expiry() {
    let keys = common::keys();
    let recipient = RecipientId::from_bytes([7; 16]);
    let header = common::header(Some(recipient));
    let envelope = Envelope::seal(
        header,
        &common::content("Bring your card."),
        keys.organisation.public_key(),
        Some(keys.recipient.public_key()),
        &mut OsRng,
    )
    .unwrap();
    let live = header.created_at + 60;

    let opened = envelope
        .open_listed(header.message_id, &keys.recipient, recipient, live)
        .unwrap();
    assert_eq!(opened.header, header);
    assert_eq!(opened.content.body, "Bring your card.");

    let other = shared::ids::MessageId::from_bytes([0x33; 16]);
    assert_eq!(
        envelope
            .open_listed(other, &keys.recipient, recipient, live)
            .unwrap_err(),
        Error::WrongMessage
    );
    for now in [header.expires_at, header.expires_at + 1] {
        assert_eq!(
            envelope
                .open_listed(header.message_id, &keys.recipient, recipient, now)
                .unwrap_err(),
            Error::Expired
        );
    }
    // The checks of `open` still apply.
    let stranger = RecipientId::from_bytes([8; 16]);
    assert_eq!(
        envelope
            .open_listed(header.message_id, &keys.recipient, stranger, live)
            .unwrap_err(),
        Error::WrongRecipient
    );
    let mut altered = envelope.clone();
    altered.ciphertext[0] ^= 1;
    assert_eq!(
        altered
            .open_listed(header.message_id, &keys.recipient, recipient, live)
            .unwrap_err(),
        Error::DecryptionFailed
    );
}
