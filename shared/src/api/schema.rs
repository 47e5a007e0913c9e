//! OpenAPI descriptions of the protocol types that serialize as text (ids, salts, verifiers,
//! fingerprints, public keys). Their serde forms are hand-written, so their schemas are too;
//! the `openapi_schemas_match_serde` test in the relay checks them against real values.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

use crate::identity_check::{Confirmation, PakeMessage};
use crate::ids::{CheckAttemptId, MessageId, OrganisationId, RecipientId, SessionId};
use crate::kdf::{Salt, Verifier};
use crate::keys::{Fingerprint, PublicKey};

fn text(description: &str, format: Option<SchemaFormat>, pattern: Option<&str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .format(format)
        .pattern(pattern)
        .into()
}

fn uuid(description: &str) -> RefOr<Schema> {
    text(description, Some(SchemaFormat::Custom("uuid".into())), None)
}

const BASE64URL: &str = "^[A-Za-z0-9_-]*$";

impl PartialSchema for OrganisationId {
    fn schema() -> RefOr<Schema> {
        uuid("An organisation's id (hyphenated UUID).")
    }
}
impl PartialSchema for RecipientId {
    fn schema() -> RefOr<Schema> {
        uuid("A patient's id (hyphenated UUID).")
    }
}
impl PartialSchema for MessageId {
    fn schema() -> RefOr<Schema> {
        uuid("A message's id (hyphenated UUID, chosen by the sender).")
    }
}
impl PartialSchema for CheckAttemptId {
    fn schema() -> RefOr<Schema> {
        uuid("An identity-check attempt's id (hyphenated UUID).")
    }
}
impl PartialSchema for SessionId {
    fn schema() -> RefOr<Schema> {
        uuid("A viewer session's id (hyphenated UUID).")
    }
}
impl PartialSchema for Salt {
    fn schema() -> RefOr<Schema> {
        text(
            "16-byte KDF salt, unpadded base64url.",
            None,
            Some(BASE64URL),
        )
    }
}
impl PartialSchema for Verifier {
    fn schema() -> RefOr<Schema> {
        text(
            "32-byte verifier of the auth key, unpadded base64url.",
            None,
            Some(BASE64URL),
        )
    }
}
impl PartialSchema for Fingerprint {
    fn schema() -> RefOr<Schema> {
        text(
            "SHA-256 of a public key's SPKI DER, 64 lowercase hex digits.",
            None,
            Some("^[0-9a-fA-F]{64}$"),
        )
    }
}
impl PartialSchema for PublicKey {
    fn schema() -> RefOr<Schema> {
        text(
            "RSA public key (3072 to 4096 bits) as SPKI DER, unpadded base64url.",
            None,
            Some(BASE64URL),
        )
    }
}

impl PartialSchema for PakeMessage {
    fn schema() -> RefOr<Schema> {
        text(
            "Enrollment-check SPAKE2 message (side byte and Ed25519 point, 33 bytes), unpadded base64url.",
            None,
            Some("^[A-Za-z0-9_-]{44}$"),
        )
    }
}
impl PartialSchema for Confirmation {
    fn schema() -> RefOr<Schema> {
        text(
            "Enrollment-check key confirmation (HMAC-SHA256, 32 bytes), unpadded base64url.",
            None,
            Some("^[A-Za-z0-9_-]{43}$"),
        )
    }
}

macro_rules! named {
    ($($name:ident),*) => {
        $(impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        })*
    };
}
named!(
    OrganisationId,
    RecipientId,
    MessageId,
    SessionId,
    CheckAttemptId,
    Salt,
    Verifier,
    Fingerprint,
    PublicKey,
    PakeMessage,
    Confirmation
);
