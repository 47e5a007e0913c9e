//! Phone numbers: validation, and their protected storage form.

use rand_core::OsRng;
use shared::at_rest::DataKey;

use crate::error::AppError;

/// Purpose label of sealed phone numbers and their lookups.
const PHONE: &str = "phone";

/// A validated E.164 number (`+` then 8 to 15 digits, no leading zero).
#[derive(Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    /// Validates `text` as E.164.
    pub fn parse(text: &str) -> Result<Self, AppError> {
        let digits = text.strip_prefix('+').ok_or_else(|| {
            AppError::invalid(
                "to",
                "phone number must be in E.164 form, e.g. +15551234567",
            )
        })?;
        let valid = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if !valid {
            return Err(AppError::invalid(
                "to",
                "phone number must be in E.164 form: + and 8 to 15 digits",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The number, for the SMS provider only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The keyed hash the relay indexes patients by.
    pub fn lookup(&self, key: &DataKey) -> [u8; 32] {
        key.lookup(PHONE, self.0.as_bytes())
    }

    /// The number sealed for storage.
    pub fn seal(&self, key: &DataKey) -> Vec<u8> {
        key.seal(PHONE, self.0.as_bytes(), &mut OsRng)
    }

    /// Opens a stored number.
    pub fn open(key: &DataKey, sealed: &[u8]) -> Result<Self, AppError> {
        let bytes = key.open(PHONE, sealed).map_err(|_| {
            AppError::Internal("stored phone number does not open with the data key".into())
        })?;
        String::from_utf8(bytes.to_vec())
            .map(Self)
            .map_err(|_| AppError::Internal("stored phone number is not UTF-8".into()))
    }
}

impl std::fmt::Debug for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Phone([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_only() {
        assert!(Phone::parse("+15551234567").is_ok());
        assert!(Phone::parse("+447700900123").is_ok());
        for bad in [
            "15551234567",
            "+1555",
            "+0155512345",
            "+1555123456789012",
            "+1555-123-4567",
            "",
        ] {
            assert!(Phone::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            format!("{:?}", Phone::parse("+15551234567").unwrap()),
            "Phone([redacted])"
        );
    }
}
