//! Checks the code against the committed test vectors (`tests/vectors/v1.json` and
//! `tests/vectors/enrollment-check-v1.json`), recomputing
//! every intermediate value with the primitives directly where the API keeps it secret, and
//! checks that `docs/PROTOCOL.md` quotes the same values and labels.

mod common;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use common::enrollment_check_file::{EnrollmentCheckFile, FixedRng};
use common::vector_file::*;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use shared::bundle::{self, KeyBundle, SealBinding};
use shared::encoding::b64u_encode;
use shared::envelope::{Content, ContentKey, Envelope, Header, Wrap, WrapRole};
use shared::identity_check::{
    self, CheckAnswer, CheckContext, CheckKind, Confirmation, PakeMessage, PatientCheck,
};
use shared::ids::{MessageId, OrganisationId, RecipientId, SessionId};
use shared::kdf::{self, AuthKey, Password, Salt, derive_password_keys};
use shared::keys::{Fingerprint, PrivateKey};
use shared::session::{self, DeviceHalf, RelayHalf, SessionBlob};
use shared::token::{Token, TokenKind};

const VECTORS: &str = include_str!("vectors/v1.json");
const CHECK_VECTORS: &str = include_str!("vectors/enrollment-check-v1.json");
const PROTOCOL: &str = include_str!("../../docs/PROTOCOL.md");

fn file() -> VectorFile {
    serde_json::from_str(VECTORS).expect("vector file parses")
}

fn h(text: &str) -> Vec<u8> {
    hex::decode(text).expect("hex")
}

fn arr<const N: usize>(text: &str) -> [u8; N] {
    h(text).try_into().expect("length")
}

fn key<'a>(keys: &'a [(String, PrivateKey)], name: &str) -> &'a PrivateKey {
    &keys.iter().find(|(n, _)| n == name).expect("named key").1
}

fn load_keys(file: &VectorFile) -> Vec<(String, PrivateKey)> {
    file.keys
        .iter()
        .map(|k| {
            let private = PrivateKey::from_pkcs8_der(&h(&k.private_key_pkcs8)).unwrap();
            assert_eq!(private.public_key().spki_der(), h(&k.public_key_spki));
            assert_eq!(
                Sha256::digest(h(&k.public_key_spki)).to_vec(),
                h(&k.fingerprint)
            );
            assert_eq!(
                private.public_key().fingerprint().to_string(),
                k.fingerprint
            );
            (k.name.clone(), private)
        })
        .collect()
}

fn aes_gcm_open(key: &[u8], nonce: &[u8], aad: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    Aes256Gcm::new_from_slice(key)
        .unwrap()
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .expect("vector decrypts with the primitive directly")
}

#[test]
fn kdf_vectors() {
    let file = file();
    assert_eq!(file.format_version, shared::FORMAT_VERSION);
    assert!(!file.kdf.is_empty());
    for v in &file.kdf {
        let nfc = h(&v.password_nfc);
        let mut master = [0u8; 32];
        argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(
                v.params.memory_kib,
                v.params.iterations,
                v.params.parallelism,
                Some(32),
            )
            .unwrap(),
        )
        .hash_password_into(&nfc, &h(&v.salt), &mut master)
        .unwrap();
        assert_eq!(hex::encode(master), v.master, "{}: master", v.name);

        let hkdf = Hkdf::<Sha256>::new(Some(b"securetext/v1/password-keys"), &master);
        let (mut sealing, mut auth) = ([0u8; 32], [0u8; 32]);
        hkdf.expand(b"securetext/v1/seal-key", &mut sealing)
            .unwrap();
        hkdf.expand(b"securetext/v1/auth-key", &mut auth).unwrap();
        assert_eq!(
            hex::encode(sealing),
            v.sealing_key,
            "{}: sealing key",
            v.name
        );
        assert_eq!(hex::encode(auth), v.auth_key, "{}: auth key", v.name);
        let mut verifier = Sha256::new();
        verifier.update(b"securetext/v1/verifier");
        verifier.update(auth);
        assert_eq!(
            hex::encode(verifier.finalize()),
            v.verifier,
            "{}: verifier",
            v.name
        );

        // The crate's API gives the same values.
        let keys = derive_password_keys(
            &Password::new(&v.password).unwrap(),
            &Salt::from_bytes(arr(&v.salt)),
            &v.params,
        )
        .unwrap();
        assert_eq!(hex::encode(keys.auth.verifier().as_bytes()), v.verifier);
        assert_eq!(*keys.auth.to_base64url(), b64u_encode(auth));
        let presented = AuthKey::from_base64url(&b64u_encode(auth)).unwrap();
        assert!(keys.auth.verifier().matches(&presented));
    }
}

#[test]
fn key_bundle_vectors() {
    let file = file();
    let keys = load_keys(&file);
    for v in &file.key_bundle {
        let kdf = file.kdf.iter().find(|k| k.name == v.kdf).unwrap();
        let recipient = RecipientId::parse(&v.recipient_id).unwrap();
        let salt = Salt::from_bytes(arr(&kdf.salt));
        let mut aad = b"securetext/v1/sealed-private-key\x02".to_vec();
        aad.extend_from_slice(recipient.as_bytes());
        aad.extend_from_slice(salt.as_bytes());
        aad.push(1);
        for word in [
            kdf.params.memory_kib,
            kdf.params.iterations,
            kdf.params.parallelism,
        ] {
            aad.extend_from_slice(&word.to_be_bytes());
        }
        assert_eq!(hex::encode(&aad), v.aad);
        let binding = SealBinding {
            recipient,
            salt,
            kdf_params: kdf.params,
        };
        assert_eq!(binding.aad(), aad);

        // Independent decryption with AES-256-GCM directly.
        let sealed = h(&v.sealed_private_key);
        assert_eq!(sealed[0], 1, "version byte");
        assert_eq!(&sealed[1..13], h(&v.nonce).as_slice());
        let der = aes_gcm_open(&h(&kdf.sealing_key), &sealed[1..13], &aad, &sealed[13..]);
        let private = key(&keys, &v.key);
        assert_eq!(der, *private.to_pkcs8_der().unwrap());

        // The API reproduces the bytes and opens them.
        let password_keys = derive_password_keys(
            &Password::new(&kdf.password).unwrap(),
            &Salt::from_bytes(arr(&kdf.salt)),
            &kdf.params,
        )
        .unwrap();
        let bundle =
            KeyBundle::seal_with_nonce(private, &binding, &password_keys.sealing, &arr(&v.nonce))
                .unwrap();
        assert_eq!(bundle.sealed_private_key, sealed);
        let opened = bundle.unseal(&binding, &password_keys.sealing).unwrap();
        assert_eq!(opened.public_key(), private.public_key());

        // Another salt or cheaper parameters beside the same sealed key are refused.
        let mut other_salt = binding;
        other_salt.salt = Salt::from_bytes([7; 16]);
        let mut other_params = binding;
        other_params.kdf_params.iterations += 1;
        for wrong in [other_salt, other_params] {
            assert!(bundle.unseal(&wrong, &password_keys.sealing).is_err());
        }
    }
}

#[test]
fn envelope_and_rewrap_vectors() {
    let file = file();
    let keys = load_keys(&file);
    for v in &file.envelope {
        let header: Header = serde_json::from_value(v.header_json.clone()).unwrap();
        assert_eq!(
            hex::encode(header.to_bytes()),
            v.header,
            "{}: header bytes",
            v.name
        );
        assert_eq!(Header::from_bytes(&h(&v.header)).unwrap(), header);
        assert_eq!(
            v.oaep_label,
            format!("securetext/v1/content-key/{}", header.message_id)
        );

        let content = Content {
            subject: v.subject.clone(),
            body: v.body.clone(),
        };
        assert_eq!(
            hex::encode(content.to_padded().unwrap()),
            v.padded,
            "{}: padding",
            v.name
        );
        let padded = aes_gcm_open(
            &h(&v.content_key),
            &h(&v.nonce),
            &h(&v.header),
            &h(&v.ciphertext),
        );
        assert_eq!(hex::encode(&padded), v.padded);

        let organisation = key(&keys, &v.organisation_key);
        let recipient = v.recipient_key.as_deref().map(|name| key(&keys, name));
        let content_key = ContentKey::from_bytes_for_vectors(arr(&v.content_key));
        let resealed = Envelope::seal_with(
            header,
            &content,
            &content_key,
            &arr(&v.nonce),
            organisation.public_key(),
            recipient.map(PrivateKey::public_key),
            &mut rand_core::OsRng,
        )
        .unwrap();
        assert_eq!(
            hex::encode(&resealed.ciphertext),
            v.ciphertext,
            "{}: ciphertext",
            v.name
        );

        let envelope: Envelope = serde_json::from_value(v.envelope_json.clone()).unwrap();
        assert_eq!(envelope.header, header);
        assert_eq!(hex::encode(&envelope.ciphertext), v.ciphertext);
        envelope.validate().unwrap();
        assert!(
            envelope
                .unwrap_with(organisation)
                .unwrap()
                .ct_eq(&content_key)
        );
        assert_eq!(envelope.open(organisation, None).unwrap(), content);
        match recipient {
            Some(recipient) => {
                assert!(envelope.unwrap_with(recipient).unwrap().ct_eq(&content_key));
                assert_eq!(
                    envelope.open(recipient, header.recipient_id).unwrap(),
                    content
                );
            }
            None => {
                assert!(header.recipient_id.is_none());
                assert!(envelope.wrap_for(WrapRole::Recipient).is_none());
            }
        }
    }

    for v in &file.rewrap {
        let source = file.envelope.iter().find(|e| e.name == v.envelope).unwrap();
        let mut envelope: Envelope = serde_json::from_value(source.envelope_json.clone()).unwrap();
        let recipient = key(&keys, &v.recipient_key);
        assert_eq!(
            envelope.open(recipient, None),
            Err(shared::Error::NotAddressedToKey)
        );
        let wrap: Wrap = serde_json::from_value(v.recipient_wrap_json.clone()).unwrap();
        assert_eq!(wrap.key_fingerprint, recipient.public_key().fingerprint());
        envelope.set_recipient_wrap(wrap).unwrap();
        let content = envelope.open(recipient, None).unwrap();
        assert_eq!(content.body, source.body);
        assert!(envelope.unwrap_with(recipient).unwrap().ct_eq(
            &ContentKey::from_bytes_for_vectors(arr(&source.content_key))
        ));
    }
}

#[test]
fn session_blob_vectors() {
    let file = file();
    let keys = load_keys(&file);
    for v in &file.session_blob {
        let session = SessionId::parse(&v.session_id).unwrap();
        let recipient = RecipientId::parse(&v.recipient_id).unwrap();
        let mut ikm = h(&v.device_half);
        ikm.extend(h(&v.relay_half));
        let mut session_key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(session.as_bytes()), &ikm)
            .expand(b"securetext/v1/session-key", &mut session_key)
            .unwrap();
        assert_eq!(hex::encode(session_key), v.session_key);
        let mut aad = b"securetext/v1/session-blob\x01".to_vec();
        aad.extend_from_slice(session.as_bytes());
        aad.extend_from_slice(recipient.as_bytes());
        assert_eq!(hex::encode(&aad), v.aad);
        assert_eq!(session::aad(session, recipient), aad);

        let blob = h(&v.blob);
        let der = aes_gcm_open(&session_key, &blob[1..13], &aad, &blob[13..]);
        let private = key(&keys, &v.key);
        assert_eq!(der, *private.to_pkcs8_der().unwrap());

        let device = DeviceHalf::from_base64url(&b64u_encode(h(&v.device_half))).unwrap();
        let relay = RelayHalf::from_base64url(&b64u_encode(h(&v.relay_half))).unwrap();
        let sealed = SessionBlob::seal_with_nonce(
            private,
            session,
            recipient,
            &device,
            &relay,
            &arr(&v.nonce),
        )
        .unwrap();
        assert_eq!(sealed.as_bytes(), blob.as_slice());
        let opened = sealed.open(session, recipient, &device, &relay).unwrap();
        assert_eq!(opened.public_key(), private.public_key());
    }
}

#[test]
fn token_hash_vectors() {
    for v in &file().token_hash {
        let kind = match v.kind.as_str() {
            "link" => TokenKind::Link,
            "session" => TokenKind::Session,
            "api-key" => TokenKind::ApiKey,
            "device" => TokenKind::Device,
            other => panic!("unknown kind {other}"),
        };
        assert_eq!(b64u_encode(h(&v.token)), v.token_base64url);
        let mut expected = Sha256::new();
        expected.update(format!("securetext/v1/token/{}\0", v.kind));
        expected.update(h(&v.token));
        assert_eq!(hex::encode(expected.finalize()), v.hash);
        let token = Token::from_base64url(&v.token_base64url).unwrap();
        assert_eq!(hex::encode(token.hash(kind).as_bytes()), v.hash);
    }
}

#[test]
fn enrollment_check_vectors() {
    let file: EnrollmentCheckFile = serde_json::from_str(CHECK_VECTORS).expect("file parses");
    assert_eq!(file.format_version, shared::FORMAT_VERSION);
    assert!(file.enrollment_check.len() >= 5);
    let (id_a, id_b) = (
        spake2::Identity::new(b"securetext/v1/enrollment-check/patient"),
        spake2::Identity::new(b"securetext/v1/enrollment-check/agent"),
    );
    let hmac = |key: &[u8], data: &[u8]| {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    };
    let mut verdicts = Vec::new();
    for v in &file.enrollment_check {
        let n = &v.name;
        let message = MessageId::parse(&v.message_id).unwrap();
        let organisation = OrganisationId::parse(&v.organisation_id).unwrap();
        let (pa, pb) = (&v.patient, &v.agent);

        // The primitives, from the vector's password inputs and randomness.
        for side in [pa, pb] {
            let mut input = b"securetext/v1/enrollment-check/password".to_vec();
            input.extend_from_slice(message.as_bytes());
            input.extend_from_slice(organisation.as_bytes());
            input.extend_from_slice(&(side.answer.len() as u32).to_be_bytes());
            input.extend_from_slice(side.answer.as_bytes());
            assert_eq!(
                hex::encode(&input),
                side.password_input,
                "{n}: password input"
            );
        }
        let (state_a, message_a) = spake2::Spake2::<spake2::Ed25519Group>::start_a_with_rng(
            &spake2::Password::new(h(&pa.password_input)),
            &id_a,
            &id_b,
            FixedRng::new(h(&pa.rng)),
        );
        let (state_b, message_b) = spake2::Spake2::<spake2::Ed25519Group>::start_b_with_rng(
            &spake2::Password::new(h(&pb.password_input)),
            &id_a,
            &id_b,
            FixedRng::new(h(&pb.rng)),
        );
        assert_eq!(hex::encode(&message_a), pa.message, "{n}: patient message");
        assert_eq!(hex::encode(&message_b), pb.message, "{n}: agent message");
        let keys = [
            state_a.finish(&message_b).unwrap(),
            state_b.finish(&message_a).unwrap(),
        ];
        for (side, key) in [(pa, &keys[0]), (pb, &keys[1])] {
            assert_eq!(hex::encode(key), side.key, "{n}: K");
            let hkdf = Hkdf::<Sha256>::new(None, key);
            let (mut k_patient, mut k_agent) = ([0u8; 32], [0u8; 32]);
            hkdf.expand(
                b"securetext/v1/enrollment-check/patient-confirm",
                &mut k_patient,
            )
            .unwrap();
            hkdf.expand(
                b"securetext/v1/enrollment-check/agent-confirm",
                &mut k_agent,
            )
            .unwrap();
            assert_eq!(hex::encode(k_patient), side.k_patient, "{n}: k_patient");
            assert_eq!(hex::encode(k_agent), side.k_agent, "{n}: k_agent");
            let mut transcript = b"securetext/v1/enrollment-check/transcript".to_vec();
            transcript.extend_from_slice(message.as_bytes());
            transcript.extend_from_slice(organisation.as_bytes());
            transcript.extend_from_slice(&h(&side.fingerprint));
            transcript.extend_from_slice(&message_a);
            transcript.extend_from_slice(&message_b);
            assert_eq!(hex::encode(&transcript), side.transcript, "{n}: transcript");
            let (patient_mac, agent_mac) =
                (hmac(&k_patient, &transcript), hmac(&k_agent, &transcript));
            let (sent, expected) = if std::ptr::eq(side, pa) {
                (patient_mac, agent_mac)
            } else {
                (agent_mac, patient_mac)
            };
            assert_eq!(sent, side.confirmation, "{n}: confirmation");
            assert_eq!(
                expected, side.expected_confirmation,
                "{n}: expected confirmation"
            );
        }
        assert_eq!(
            v.agent_verified,
            pa.expected_confirmation == pb.confirmation
        );
        assert_eq!(
            v.patient_verified,
            pb.expected_confirmation == pa.confirmation
        );

        // The API, from the answers as typed, reproduces every value it shows.
        let kind: CheckKind = serde_json::from_value(serde_json::json!(v.kind)).unwrap();
        let context = CheckContext {
            message_id: &message,
            organisation_id: &organisation,
        };
        let answer = |side: &common::enrollment_check_file::CheckSide| {
            CheckAnswer::new(kind, side.date_of_birth.as_deref(), side.code.as_deref()).unwrap()
        };
        let (check, sent_a) = PatientCheck::start(&answer(pa), &context, FixedRng::new(h(&pa.rng)));
        assert_eq!(
            hex::encode(sent_a.as_bytes()),
            pa.message,
            "{n}: API patient message"
        );
        let relayed_a = PakeMessage::from_base64url(&sent_a.to_base64url()).unwrap();
        let (reply, expected) = identity_check::answer_attempt(
            &answer(pb),
            &context,
            &relayed_a,
            &Fingerprint::parse(&pb.fingerprint).unwrap(),
            FixedRng::new(h(&pb.rng)),
        )
        .unwrap();
        assert_eq!(hex::encode(reply.message.as_bytes()), pb.message);
        assert_eq!(hex::encode(reply.confirmation.as_bytes()), pb.confirmation);
        assert_eq!(
            hex::encode(*expected.to_stored_bytes()),
            pb.expected_confirmation
        );
        let finish = check
            .finish(
                &PakeMessage::from_bytes(&h(&pb.message)).unwrap(),
                &Confirmation::from_bytes(arr(&pb.confirmation)),
                &Fingerprint::parse(&pa.fingerprint).unwrap(),
            )
            .unwrap();
        assert_eq!(hex::encode(finish.confirmation.as_bytes()), pa.confirmation);
        assert_eq!(
            finish.agent_verified, v.agent_verified,
            "{n}: agent_verified"
        );
        assert_eq!(
            expected.matches(&finish.confirmation),
            v.patient_verified,
            "{n}: patient_verified"
        );
        verdicts.push((v.agent_verified, v.patient_verified));
    }
    assert!(verdicts.contains(&(true, true)) && verdicts.contains(&(false, false)));
}

/// The document describes the file: it names it, uses the same labels as the code, and every
/// hex value it quotes in its "Test vectors" section is in the file.
#[test]
fn protocol_document_agrees_with_vectors_and_code() {
    assert!(PROTOCOL.contains("shared/tests/vectors/v1.json"));
    assert!(PROTOCOL.contains("shared/tests/vectors/enrollment-check-v1.json"));
    for label in [
        kdf::PASSWORD_KEYS_SALT,
        kdf::SEAL_KEY_INFO,
        kdf::AUTH_KEY_INFO,
        kdf::VERIFIER_PREFIX,
        bundle::SEALED_PRIVATE_KEY_AAD_PREFIX,
        session::SESSION_KEY_INFO,
        session::SESSION_BLOB_AAD_PREFIX,
        shared::token::TOKEN_HASH_PREFIX,
        shared::envelope::WRAP_LABEL_PREFIX.as_bytes(),
        shared::envelope::HEADER_MAGIC,
        identity_check::PASSWORD_INPUT_PREFIX,
        identity_check::PATIENT_IDENTITY,
        identity_check::AGENT_IDENTITY,
        identity_check::PATIENT_CONFIRM_INFO,
        identity_check::AGENT_CONFIRM_INFO,
        identity_check::TRANSCRIPT_PREFIX,
        identity_check::CODE_ALPHABET,
    ] {
        let label = std::str::from_utf8(label).unwrap();
        assert!(
            PROTOCOL.contains(label),
            "PROTOCOL.md does not mention {label:?}"
        );
    }
    let section = PROTOCOL
        .split_once("## Test vectors")
        .expect("PROTOCOL.md has a \"## Test vectors\" section")
        .1;
    let quoted: Vec<&str> = section
        .split(|c: char| !c.is_ascii_hexdigit())
        .filter(|word| word.len() >= 32)
        .collect();
    assert!(quoted.len() >= 5, "the section quotes vector values");
    for value in quoted {
        assert!(
            VECTORS.contains(value) || CHECK_VECTORS.contains(value),
            "PROTOCOL.md quotes {value}, absent from the vector files"
        );
    }
}
