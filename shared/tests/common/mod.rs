//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod enrollment_check_file;
pub mod vector_file;

use shared::envelope::{Content, ContentType, Direction, Header};
use shared::ids::{MessageId, OrganisationId, RecipientId};
use shared::keys::PrivateKey;

/// The fixed RSA keys of the vectors file (generating RSA-3072 keys per test would be slow).
pub struct Keys {
    pub organisation: PrivateKey,
    pub recipient: PrivateKey,
    pub other: PrivateKey,
}

pub fn keys() -> Keys {
    let file: vector_file::VectorFile =
        serde_json::from_str(include_str!("../vectors/v1.json")).expect("vector file parses");
    let named = |name: &str| {
        let entry = file
            .keys
            .iter()
            .find(|k| k.name == name)
            .expect("named key");
        PrivateKey::from_pkcs8_der(&hex::decode(&entry.private_key_pkcs8).unwrap()).unwrap()
    };
    Keys {
        organisation: named("organisation"),
        recipient: named("recipient"),
        other: named("recipient-after-reset"),
    }
}

pub fn header(recipient: Option<RecipientId>) -> Header {
    Header {
        version: shared::FORMAT_VERSION,
        message_id: MessageId::from_bytes([0x11; 16]),
        organisation_id: OrganisationId::from_bytes([0x22; 16]),
        recipient_id: recipient,
        created_at: 1_800_000_000,
        expires_at: 1_800_086_400,
        content_type: ContentType::Text,
        direction: Direction::ToRecipient,
    }
}

pub fn content(body: &str) -> Content {
    Content {
        subject: "Results".into(),
        body: body.into(),
    }
}
