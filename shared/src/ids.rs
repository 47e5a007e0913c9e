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
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

            /// Parses the hyphenated UUID text form.
            pub fn parse(text: &str) -> Result<Self, Error> {
                Uuid::try_parse(text)
                    .map(Self)
                    .map_err(|_| Error::malformed($what, "not a UUID"))
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
}
