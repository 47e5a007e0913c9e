//! Identifiers of organisations, recipients, messages and sessions.
//!
//! # Wire format
//! Each identifier is 16 bytes. The canonical binary form (inside authenticated data) is the raw
//! 16 bytes; the JSON form is the lowercase hyphenated UUID text. Fresh identifiers are UUID
//! version 4 (122 random bits); parsers accept any 16 bytes so that identifiers from other
//! systems can be carried.
//!
//! # Invariants
//! - The four kinds are distinct types, so a message id can never be passed where a recipient id
//!   is bound into associated data.

use std::fmt;

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random (version 4) identifier.
            pub fn random(rng: &mut impl CryptoRngCore) -> Self {
                let mut bytes = [0u8; 16];
                rng.fill_bytes(&mut bytes);
                Self(uuid::Builder::from_random_bytes(bytes).into_uuid())
            }

            /// The identifier from its 16 canonical bytes.
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }

            /// The 16 canonical bytes, as bound into associated data.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// Parses the one text form: a lowercase hyphenated UUID, as [`Display`] writes
            /// it. Other spellings of the same UUID (upper case, braces, `urn:uuid:`, no
            /// hyphens) are refused, so that an id has one spelling wherever it is a key.
            ///
            /// [`Display`]: fmt::Display
            pub fn parse(text: &str) -> Result<Self, Error> {
                let id = Uuid::try_parse(text)
                    .map_err(|_| Error::malformed($what, "not a UUID"))?;
                let mut canonical = [0u8; uuid::fmt::Hyphenated::LENGTH];
                if id.hyphenated().encode_lower(&mut canonical).as_bytes() != text.as_bytes() {
                    return Err(Error::malformed($what, "not a lowercase hyphenated UUID"));
                }
                Ok(Self(id))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(text: &str) -> Result<Self, Error> {
                Self::parse(text)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

define_id!(
    /// The sending organisation (clinic, health plan, pharmacy) registered on a relay.
    OrganisationId,
    "organisation id"
);
define_id!(
    /// A patient as known to the relay (one per phone number), whether enrolled or not.
    RecipientId,
    "recipient id"
);
define_id!(
    /// One message; chosen by the sender before sealing because the header binds it.
    MessageId,
    "message id"
);
define_id!(
    /// One attempt at a message's identity check (one answer the patient typed).
    CheckAttemptId,
    "check attempt id"
);
define_id!(
    /// One unlocked viewer session; salts the session-key derivation.
    SessionId,
    "session id"
);

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn text_and_bytes_round_trip() {
        let id = MessageId::random(&mut OsRng);
        assert_eq!(MessageId::parse(&id.to_string()).unwrap(), id);
        assert_eq!(MessageId::from_bytes(*id.as_bytes()), id);
        assert_eq!(id.to_string().len(), 36);
        assert!(RecipientId::parse("not-a-uuid").is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
    }

    /// One text form only (issue 12, finding 14): an id is a key in the relay's database and
    /// in the sender's state files, so a second spelling of the same id must not be accepted.
    #[test]
    fn only_the_lowercase_hyphenated_form_is_accepted() {
        let id = MessageId::random(&mut OsRng);
        let canonical = id.to_string();
        let other_forms = [
            canonical.to_uppercase(),
            canonical.replace('-', ""),
            format!("{{{canonical}}}"),
            format!("urn:uuid:{canonical}"),
        ];
        for text in &other_forms {
            assert!(MessageId::parse(text).is_err(), "{text} was accepted");
            assert!(
                serde_json::from_str::<MessageId>(&format!("\"{text}\"")).is_err(),
                "{text} was accepted from JSON"
            );
        }
        assert_eq!(
            serde_json::from_str::<MessageId>(&format!("\"{canonical}\"")).unwrap(),
            id
        );
    }
}
