//! Fixed keys and messages sealed as the sender tooling seals them.

use rand_core::OsRng;
use serde_json::Value;
use shared::envelope::{Content, ContentType, Direction, Envelope, Header};
use shared::ids::{MessageId, OrganisationId, RecipientId};
use shared::keys::PrivateKey;

/// The RSA keys of the protocol vectors: tests never wait for key generation, and a failure
/// reproduces with the same keys.
#[derive(Debug)]
pub struct Keys {
    /// The organisation's key.
    pub organisation: PrivateKey,
    /// The patient's key.
    pub patient: PrivateKey,
    /// The key the patient has after a password reset.
    pub patient_after_reset: PrivateKey,
}

/// The keys of `shared/tests/vectors/v1.json`.
pub fn keys() -> Keys {
    let file: Value =
        serde_json::from_str(include_str!("../../../shared/tests/vectors/v1.json")).unwrap();
    let named = |name: &str| {
        let entry = file["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap_or_else(|| panic!("no key {name:?} in the vectors"));
        PrivateKey::from_pkcs8_der(
            &hex::decode(entry["private_key_pkcs8"].as_str().unwrap()).unwrap(),
        )
        .unwrap()
    };
    Keys {
        organisation: named("organisation"),
        patient: named("recipient"),
        patient_after_reset: named("recipient-after-reset"),
    }
}

/// A header for a text message from `organisation`, created at `now`, living `lifetime` seconds.
pub fn header(
    organisation: OrganisationId,
    recipient: Option<RecipientId>,
    now: i64,
    lifetime: i64,
) -> Header {
    Header {
        version: shared::FORMAT_VERSION,
        message_id: MessageId::random(&mut OsRng),
        organisation_id: organisation,
        recipient_id: recipient,
        created_at: now,
        expires_at: now + lifetime,
        content_type: ContentType::Text,
        direction: Direction::ToRecipient,
    }
}

/// Content with a fixed subject.
pub fn content(body: &str) -> Content {
    Content {
        subject: "From your clinic".into(),
        body: body.into(),
    }
}

/// Seals `body` to the organisation and, when known, the patient's key.
pub fn seal(header: Header, body: &str, keys: &Keys, patient: Option<&PrivateKey>) -> Envelope {
    Envelope::seal(
        header,
        &content(body),
        keys.organisation.public_key(),
        patient.map(PrivateKey::public_key),
        &mut OsRng,
    )
    .unwrap()
}
