//! Writes the enrollment-check test vectors to standard output as JSON.
//!
//! `cargo run -p shared --example make_enrollment_check_vectors > shared/tests/vectors/enrollment-check-v1.json`
//!
//! Identifiers and each side's SPAKE2 randomness come from a ChaCha20 generator with a fixed
//! seed; every other value is computed twice, with the primitives (the `spake2` crate, HKDF,
//! HMAC) and through `shared::identity_check`, and the two must agree. The committed file is the
//! reference: `tests/vectors.rs` checks the code against it, and it must only be regenerated
//! for a deliberate format change.

#[path = "../tests/common/enrollment_check_file.rs"]
#[allow(dead_code)]
mod enrollment_check_file;

use enrollment_check_file::*;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::Sha256;
use shared::identity_check::{
    self, AGENT_CONFIRM_INFO, AGENT_IDENTITY, CheckAnswer, CheckContext, CheckKind, Confirmation,
    PATIENT_CONFIRM_INFO, PATIENT_IDENTITY, PakeMessage, PatientCheck,
};
use shared::ids::{MessageId, OrganisationId};
use shared::keys::Fingerprint;
use spake2::{Ed25519Group, Identity, Password, Spake2};

/// Fingerprints of the `recipient` and `recipient-after-reset` keys of `v1.json`.
const RECIPIENT: &str = "d203b4e782eafaf477d851493f8eeb0b08a8de0649ffc190435567caf33d03e9";
const OTHER_KEY: &str = "b8b62c2c859e6e20017e88ebfdb4f76cc405fd09ca9e8410febb98f8ddf99517";

/// One side's inputs: date of birth and code as typed, the canonical answer, the fingerprint.
type Inputs = (
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
    &'static str,
);

fn password_input(message: &MessageId, organisation: &OrganisationId, answer: &str) -> Vec<u8> {
    let mut out = identity_check::PASSWORD_INPUT_PREFIX.to_vec();
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(organisation.as_bytes());
    out.extend_from_slice(&u32::try_from(answer.len()).unwrap().to_be_bytes());
    out.extend_from_slice(answer.as_bytes());
    out
}

fn transcript(
    message: &MessageId,
    organisation: &OrganisationId,
    fingerprint: &[u8],
    message_a: &[u8],
    message_b: &[u8],
) -> Vec<u8> {
    let mut out = identity_check::TRANSCRIPT_PREFIX.to_vec();
    for part in [
        message.as_bytes().as_slice(),
        organisation.as_bytes(),
        fingerprint,
        message_a,
        message_b,
    ] {
        out.extend_from_slice(part);
    }
    out
}

fn hkdf32(key: &[u8], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(None, key)
        .expand(info, &mut out)
        .unwrap();
    out
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// One side's confirmation keys, transcript and both confirmations.
struct Confirmations {
    k_patient: [u8; 32],
    k_agent: [u8; 32],
    transcript: Vec<u8>,
    patient: [u8; 32],
    agent: [u8; 32],
}

impl Confirmations {
    fn compute(key: &[u8], transcript: &[u8]) -> Self {
        let (k_patient, k_agent) = (
            hkdf32(key, PATIENT_CONFIRM_INFO),
            hkdf32(key, AGENT_CONFIRM_INFO),
        );
        Self {
            patient: hmac(&k_patient, transcript),
            agent: hmac(&k_agent, transcript),
            k_patient,
            k_agent,
            transcript: transcript.to_vec(),
        }
    }
}

fn side(
    typed: Inputs,
    rng: &[u8],
    password_input: &[u8],
    message: &[u8],
    key: &[u8],
    computed: &Confirmations,
    is_patient: bool,
) -> CheckSide {
    let (sent, expected) = if is_patient {
        (computed.patient, computed.agent)
    } else {
        (computed.agent, computed.patient)
    };
    CheckSide {
        date_of_birth: typed.0.map(str::to_owned),
        code: typed.1.map(str::to_owned),
        answer: typed.2.to_owned(),
        fingerprint: typed.3.to_owned(),
        rng: hex::encode(rng),
        password_input: hex::encode(password_input),
        message: hex::encode(message),
        key: hex::encode(key),
        k_patient: hex::encode(computed.k_patient),
        k_agent: hex::encode(computed.k_agent),
        transcript: hex::encode(&computed.transcript),
        confirmation: hex::encode(sent),
        expected_confirmation: hex::encode(expected),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = ChaCha20Rng::from_seed(*b"securetext enrollment check v1!!");
    let organisation = OrganisationId::random(&mut rng);

    let dob = "1984-02-29";
    let cases: [(&str, CheckKind, Inputs, Inputs); 5] = [
        (
            "date-of-birth",
            CheckKind::DateOfBirth,
            (Some(dob), None, "dob:1984-02-29", RECIPIENT),
            (Some(dob), None, "dob:1984-02-29", RECIPIENT),
        ),
        (
            "code-typed-with-look-alikes",
            CheckKind::Code,
            (None, Some("7k3qo 9mzil"), "code:7K3Q09MZ11", RECIPIENT),
            (None, Some("7K3Q0-9MZ11"), "code:7K3Q09MZ11", RECIPIENT),
        ),
        (
            "date-of-birth-and-code",
            CheckKind::DateOfBirthAndCode,
            (
                Some(" 2000-02-29 "),
                Some("HX4PM-2RT8W"),
                "dob:2000-02-29\ncode:HX4PM2RT8W",
                RECIPIENT,
            ),
            (
                Some("2000-02-29"),
                Some("HX4PM-2RT8W"),
                "dob:2000-02-29\ncode:HX4PM2RT8W",
                RECIPIENT,
            ),
        ),
        (
            "wrong-date-of-birth",
            CheckKind::DateOfBirth,
            (Some("1984-02-28"), None, "dob:1984-02-28", RECIPIENT),
            (Some(dob), None, "dob:1984-02-29", RECIPIENT),
        ),
        (
            "substituted-key",
            CheckKind::DateOfBirth,
            (Some(dob), None, "dob:1984-02-29", RECIPIENT),
            (Some(dob), None, "dob:1984-02-29", OTHER_KEY),
        ),
    ];

    let mut vectors = Vec::new();
    for (name, kind, patient, agent) in cases {
        let message = MessageId::random(&mut rng);
        let mut rng_a = vec![0u8; 64];
        let mut rng_b = vec![0u8; 64];
        rng.fill_bytes(&mut rng_a);
        rng.fill_bytes(&mut rng_b);
        let (fingerprint_a, fingerprint_b) = (hex::decode(patient.3)?, hex::decode(agent.3)?);
        let (pw_a, pw_b) = (
            password_input(&message, &organisation, patient.2),
            password_input(&message, &organisation, agent.2),
        );

        // The primitives.
        let (id_a, id_b) = (
            Identity::new(PATIENT_IDENTITY),
            Identity::new(AGENT_IDENTITY),
        );
        let (state_a, message_a) = Spake2::<Ed25519Group>::start_a_with_rng(
            &Password::new(&pw_a),
            &id_a,
            &id_b,
            FixedRng::new(rng_a.clone()),
        );
        let (state_b, message_b) = Spake2::<Ed25519Group>::start_b_with_rng(
            &Password::new(&pw_b),
            &id_a,
            &id_b,
            FixedRng::new(rng_b.clone()),
        );
        let key_a = state_a.finish(&message_b).expect("SPAKE2 finishes");
        let key_b = state_b.finish(&message_a).expect("SPAKE2 finishes");
        let a = Confirmations::compute(
            &key_a,
            &transcript(
                &message,
                &organisation,
                &fingerprint_a,
                &message_a,
                &message_b,
            ),
        );
        let b = Confirmations::compute(
            &key_b,
            &transcript(
                &message,
                &organisation,
                &fingerprint_b,
                &message_a,
                &message_b,
            ),
        );
        let agent_verified = a.agent == b.agent;
        let patient_verified = a.patient == b.patient;

        // The API agrees.
        let context = CheckContext {
            message_id: &message,
            organisation_id: &organisation,
        };
        let answer_a = CheckAnswer::new(kind, patient.0, patient.1)?;
        let answer_b = CheckAnswer::new(kind, agent.0, agent.1)?;
        let (check, api_a) = PatientCheck::start(&answer_a, &context, FixedRng::new(rng_a.clone()));
        assert_eq!(api_a.as_bytes().as_slice(), message_a);
        let (reply, expected) = identity_check::answer_attempt(
            &answer_b,
            &context,
            &api_a,
            &Fingerprint::parse(agent.3)?,
            FixedRng::new(rng_b.clone()),
        )?;
        assert_eq!(reply.message.as_bytes().as_slice(), message_b);
        assert_eq!(reply.confirmation.as_bytes(), &b.agent);
        assert_eq!(*expected.to_stored_bytes(), b.patient);
        let finish = check.finish(
            &PakeMessage::from_bytes(&message_b)?,
            &Confirmation::from_bytes(b.agent),
            &Fingerprint::parse(patient.3)?,
        )?;
        assert_eq!(finish.confirmation.as_bytes(), &a.patient);
        assert_eq!(finish.agent_verified, agent_verified);
        assert_eq!(expected.matches(&finish.confirmation), patient_verified);

        vectors.push(EnrollmentCheckVector {
            name: name.to_owned(),
            kind: kind.as_str().to_owned(),
            message_id: message.to_string(),
            organisation_id: organisation.to_string(),
            patient: side(patient, &rng_a, &pw_a, &message_a, &key_a, &a, true),
            agent: side(agent, &rng_b, &pw_b, &message_b, &key_b, &b, false),
            agent_verified,
            patient_verified,
        });
    }

    let file = EnrollmentCheckFile {
        description: "SecureText enrollment check (SPAKE2 over Ed25519 with key confirmation), \
                      format version 1; see docs/PROTOCOL.md, sections \"Enrollment check\" and \
                      \"Test vectors\". Byte strings are lowercase hex."
            .to_owned(),
        format_version: shared::FORMAT_VERSION,
        enrollment_check: vectors,
    };
    println!("{}", serde_json::to_string_pretty(&file)?);
    Ok(())
}
