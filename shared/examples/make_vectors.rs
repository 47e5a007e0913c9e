//! Writes the protocol test vectors to standard output as JSON.
//!
//! `cargo run -p shared --example make_vectors > shared/tests/vectors/v1.json`
//!
//! All randomness comes from a ChaCha20 generator with a fixed seed, so the file is reproducible
//! with this crate's dependency versions. The committed file is the reference: `tests/vectors.rs`
//! checks the code against it, and it must only be regenerated for a deliberate format change.

#[path = "../tests/common/vector_file.rs"]
#[allow(dead_code)]
mod vector_file;

use hkdf::Hkdf;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::Sha256;
use shared::bundle::{KeyBundle, SealBinding};
use shared::envelope::{Content, ContentKey, Direction, Envelope, Header, WrapRole};
use shared::ids::{MessageId, OrganisationId, RecipientId, SessionId};
use shared::kdf::{self, KdfParams, Password, Salt, derive_password_keys};
use shared::keys::PrivateKey;
use shared::session::{self, DeviceHalf, RelayHalf, SessionBlob};
use shared::token::{Token, TokenKind};
use unicode_normalization::UnicodeNormalization;
use vector_file::*;

fn random<const N: usize>(rng: &mut ChaCha20Rng) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill_bytes(&mut out);
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = ChaCha20Rng::from_seed(*b"securetext protocol v1 vectors!!");

    let organisation = PrivateKey::generate(&mut rng)?;
    let recipient = PrivateKey::generate(&mut rng)?;
    let new_recipient = PrivateKey::generate(&mut rng)?;
    let keys = [
        ("organisation", &organisation),
        ("recipient", &recipient),
        ("recipient-after-reset", &new_recipient),
    ]
    .iter()
    .map(|(name, key)| {
        Ok(RsaKeyVector {
            name: name.to_string(),
            private_key_pkcs8: hex::encode(key.to_pkcs8_der()?),
            public_key_spki: hex::encode(key.public_key().spki_der()),
            fingerprint: key.public_key().fingerprint().to_string(),
        })
    })
    .collect::<Result<Vec<_>, shared::Error>>()?;

    let kdf_cases = [
        (
            "default-params",
            "correct horse battery staple",
            KdfParams::DEFAULT,
        ),
        (
            "minimum-params-nfd-password",
            "Contrasen\u{0303}a-2026",
            KdfParams::MINIMUM,
        ),
    ];
    let mut kdf = Vec::new();
    for (name, typed, params) in kdf_cases {
        let salt = Salt::from_bytes(random(&mut rng));
        let nfc: String = typed.nfc().collect();
        let mut master = [0u8; 32];
        argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(
                params.memory_kib,
                params.iterations,
                params.parallelism,
                Some(32),
            )
            .map_err(|e| e.to_string())?,
        )
        .hash_password_into(nfc.as_bytes(), salt.as_bytes(), &mut master)
        .map_err(|e| e.to_string())?;
        let hkdf = Hkdf::<Sha256>::new(Some(kdf::PASSWORD_KEYS_SALT), &master);
        let (mut sealing, mut auth) = ([0u8; 32], [0u8; 32]);
        hkdf.expand(kdf::SEAL_KEY_INFO, &mut sealing)
            .map_err(|e| e.to_string())?;
        hkdf.expand(kdf::AUTH_KEY_INFO, &mut auth)
            .map_err(|e| e.to_string())?;
        let derived = derive_password_keys(&Password::new(typed)?, &salt, &params)?;
        kdf.push(KdfVector {
            name: name.into(),
            password: typed.into(),
            password_nfc: hex::encode(nfc.as_bytes()),
            salt: hex::encode(salt.as_bytes()),
            params,
            master: hex::encode(master),
            sealing_key: hex::encode(sealing),
            auth_key: hex::encode(auth),
            verifier: hex::encode(derived.auth.verifier().as_bytes()),
        });
    }

    let recipient_id = RecipientId::random(&mut rng);
    let password_keys = derive_password_keys(
        &Password::new(kdf_cases[0].1)?,
        &Salt::from_bytes(hex::decode(&kdf[0].salt)?.try_into().map_err(|_| "salt")?),
        &kdf_cases[0].2,
    )?;
    let bundle_nonce: [u8; 12] = random(&mut rng);
    let binding = SealBinding {
        recipient: recipient_id,
        salt: Salt::from_bytes(hex::decode(&kdf[0].salt)?.try_into().map_err(|_| "salt")?),
        kdf_params: kdf_cases[0].2,
    };
    let sealed =
        KeyBundle::seal_with_nonce(&recipient, &binding, &password_keys.sealing, &bundle_nonce)?;
    let key_bundle = vec![KeyBundleVector {
        name: "recipient-bundle".into(),
        kdf: kdf[0].name.clone(),
        key: "recipient".into(),
        recipient_id: recipient_id.to_string(),
        nonce: hex::encode(bundle_nonce),
        aad: hex::encode(binding.aad()),
        sealed_private_key: hex::encode(&sealed.sealed_private_key),
    }];

    let organisation_id = OrganisationId::random(&mut rng);
    let mut envelope = Vec::new();
    let mut first_contact = None;
    let cases = [
        (
            "enrolled-recipient",
            Some(recipient_id),
            "Appointment reminder",
            "Your lab results are ready. Dr. García asks you to call the clinic.",
        ),
        (
            "first-contact",
            None,
            "",
            "Bienvenido. Su receta está lista para recoger en la farmacia.",
        ),
    ];
    for (name, recipient_in_header, subject, body) in cases {
        let header = Header {
            version: shared::FORMAT_VERSION,
            message_id: MessageId::random(&mut rng),
            organisation_id,
            recipient_id: recipient_in_header,
            created_at: 1_795_000_000,
            expires_at: 1_795_000_000 + 7 * 24 * 3600,
            content_type: shared::envelope::ContentType::Text,
            direction: Direction::ToRecipient,
        };
        let content = Content {
            subject: subject.into(),
            body: body.into(),
        };
        let content_key_bytes: [u8; 32] = random(&mut rng);
        let nonce: [u8; 12] = random(&mut rng);
        let recipient_public = recipient_in_header.map(|_| recipient.public_key());
        let sealed = Envelope::seal_with(
            header,
            &content,
            &ContentKey::from_bytes_for_vectors(content_key_bytes),
            &nonce,
            organisation.public_key(),
            recipient_public,
            &mut rng,
        )?;
        if recipient_in_header.is_none() {
            first_contact = Some(sealed.clone());
        }
        envelope.push(EnvelopeVector {
            name: name.into(),
            header_json: serde_json::to_value(header)?,
            header: hex::encode(header.to_bytes()),
            subject: subject.into(),
            body: body.into(),
            padded: hex::encode(content.to_padded()?),
            content_key: hex::encode(content_key_bytes),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(&sealed.ciphertext),
            oaep_label: format!(
                "{}{}",
                shared::envelope::WRAP_LABEL_PREFIX,
                header.message_id
            ),
            organisation_key: "organisation".into(),
            recipient_key: recipient_in_header.map(|_| "recipient".into()),
            envelope_json: serde_json::to_value(&sealed)?,
        });
    }

    let first_contact = first_contact.ok_or("first-contact case missing")?;
    let wrap = first_contact.rewrap(&organisation, new_recipient.public_key(), &mut rng)?;
    assert_eq!(wrap.role, WrapRole::Recipient);
    let rewrap = vec![RewrapVector {
        name: "first-contact-to-enrolled".into(),
        envelope: "first-contact".into(),
        recipient_key: "recipient-after-reset".into(),
        recipient_wrap_json: serde_json::to_value(&wrap)?,
    }];

    let session_id = SessionId::random(&mut rng);
    let device_bytes: [u8; 32] = random(&mut rng);
    let relay_bytes: [u8; 32] = random(&mut rng);
    let mut ikm = device_bytes.to_vec();
    ikm.extend_from_slice(&relay_bytes);
    let mut session_key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(session_id.as_bytes()), &ikm)
        .expand(session::SESSION_KEY_INFO, &mut session_key)
        .map_err(|e| e.to_string())?;
    let blob_nonce: [u8; 12] = random(&mut rng);
    let blob = SessionBlob::seal_with_nonce(
        &recipient,
        session_id,
        recipient_id,
        &DeviceHalf::from_base64url(&shared::encoding::b64u_encode(device_bytes))?,
        &RelayHalf::from_base64url(&shared::encoding::b64u_encode(relay_bytes))?,
        &blob_nonce,
    )?;
    let session_blob = vec![SessionBlobVector {
        name: "recipient-session".into(),
        key: "recipient".into(),
        session_id: session_id.to_string(),
        recipient_id: recipient_id.to_string(),
        device_half: hex::encode(device_bytes),
        relay_half: hex::encode(relay_bytes),
        session_key: hex::encode(session_key),
        nonce: hex::encode(blob_nonce),
        aad: hex::encode(session::aad(session_id, recipient_id)),
        blob: hex::encode(blob.as_bytes()),
    }];

    let mut token_hash = Vec::new();
    for (kind, label) in [
        (TokenKind::Link, "link"),
        (TokenKind::Session, "session"),
        (TokenKind::ApiKey, "api-key"),
        (TokenKind::Device, "device"),
    ] {
        let bytes: [u8; 32] = random(&mut rng);
        let text = shared::encoding::b64u_encode(bytes);
        let token = Token::from_base64url(&text)?;
        token_hash.push(TokenHashVector {
            kind: label.into(),
            token: hex::encode(bytes),
            token_base64url: text,
            hash: hex::encode(token.hash(kind).as_bytes()),
        });
    }

    let file = VectorFile {
        description: "SecureText protocol format version 1 test vectors; see docs/PROTOCOL.md, \
                      section \"Test vectors\". Byte strings are lowercase hex."
            .into(),
        format_version: shared::FORMAT_VERSION,
        keys,
        kdf,
        key_bundle,
        envelope,
        rewrap,
        session_blob,
        token_hash,
    };
    println!("{}", serde_json::to_string_pretty(&file)?);
    Ok(())
}
