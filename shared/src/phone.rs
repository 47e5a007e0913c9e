//! Phone numbers: the one E.164 rule every party applies, and their protected form at rest.
//!
//! A number is PHI in context, so [`PhoneNumber`] never prints itself in `Debug`, and the relay
//! stores it only sealed under its data key, indexed by a keyed hash of the organisation and the
//! number: each organisation's patients are its own, and the index links no patient of one
//! organisation to another's.

use std::fmt;

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::at_rest::DataKey;
use crate::ids::OrganisationId;

/// Purpose label of sealed phone numbers (see `docs/PROTOCOL.md`, "Sealed fields").
const PHONE: &str = "phone";
/// Purpose label of the lookup hash of an organisation's patient (see `docs/PROTOCOL.md`,
/// "Keyed lookups").
const PATIENT: &str = "patient";

/// Why text is not a phone number. Carries no part of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Not `+` and 8 to 15 digits, not starting with 0.
    #[error("phone number must be in E.164 form: + and 8 to 15 digits, e.g. +15551234567")]
    NotE164,
    /// A stored number did not open with the data key (another key, or a damaged row).
    #[error("stored phone number does not open with the data key")]
    Sealed,
}

/// A number in E.164 form: `+`, then 8 to 15 digits, the first not 0.
#[derive(Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses `text` as E.164. The visual separators people type — spaces, dashes, dots and
    /// parentheses — are removed first, so `+1 (555) 123-4567` is `+15551234567` everywhere
    /// (sender tool, relay, lookups).
    pub fn parse(text: &str) -> Result<Self, PhoneError> {
        let compact: String = text
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let digits = compact.strip_prefix('+').ok_or(PhoneError::NotE164)?;
        let valid = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if valid {
            Ok(Self(compact))
        } else {
            Err(PhoneError::NotE164)
        }
    }

    /// The E.164 text, for the SMS provider only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The keyed hash the relay indexes `organisation`'s patient with this number by. The
    /// organisation is part of it, so one organisation's lookup never finds another's patient.
    pub fn lookup(&self, key: &DataKey, organisation: OrganisationId) -> [u8; 32] {
        let mut value = Vec::with_capacity(16 + self.0.len());
        value.extend_from_slice(organisation.as_bytes());
        value.extend_from_slice(self.0.as_bytes());
        key.lookup(PATIENT, &value)
    }

    /// The number sealed for storage.
    pub fn seal(&self, key: &DataKey, rng: &mut impl CryptoRngCore) -> Vec<u8> {
        key.seal(PHONE, self.0.as_bytes(), rng)
    }

    /// Opens a number sealed by [`Self::seal`].
    pub fn open(key: &DataKey, sealed: &[u8]) -> Result<Self, PhoneError> {
        let bytes: Zeroizing<Vec<u8>> = key.open(PHONE, sealed).map_err(|_| PhoneError::Sealed)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| PhoneError::Sealed)?;
        Self::parse(text).map_err(|_| PhoneError::Sealed)
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PhoneNumber([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_with_separators_removed() {
        assert_eq!(
            PhoneNumber::parse("+1 (555) 123-4567").unwrap().as_str(),
            "+15551234567"
        );
        assert!(PhoneNumber::parse("+447700900123").is_ok());
        for bad in [
            "15551234567",
            "5551234567",
            "+1555",
            "+0155512345",
            "+1555123456789012",
            "+1555abc4567",
            "",
        ] {
            assert_eq!(PhoneNumber::parse(bad), Err(PhoneError::NotE164), "{bad}");
        }
        assert_eq!(
            format!("{:?}", PhoneNumber::parse("+15551234567").unwrap()),
            "PhoneNumber([redacted])"
        );
    }

    #[test]
    fn sealed_numbers_open_and_lookups_ignore_formatting() {
        let key = DataKey::random(&mut rand_core::OsRng);
        let a = PhoneNumber::parse("+1 555 123 4567").unwrap();
        let b = PhoneNumber::parse("+15551234567").unwrap();
        let clinic = OrganisationId::from_bytes([1; 16]);
        let pharmacy = OrganisationId::from_bytes([2; 16]);
        assert_eq!(a.lookup(&key, clinic), b.lookup(&key, clinic));
        assert_ne!(a.lookup(&key, clinic), a.lookup(&key, pharmacy));
        let sealed = a.seal(&key, &mut rand_core::OsRng);
        assert_eq!(PhoneNumber::open(&key, &sealed).unwrap(), b);
        assert_eq!(
            PhoneNumber::open(&DataKey::random(&mut rand_core::OsRng), &sealed),
            Err(PhoneError::Sealed)
        );
    }
}
