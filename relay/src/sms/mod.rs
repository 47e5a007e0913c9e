//! SMS providers: how a queued link reaches the patient's phone.
//!
//! The outbox worker owns retries and bookkeeping; a provider only makes one delivery attempt
//! and says how it went. That split is why [`SmsError`] has exactly two kinds: a
//! [`SmsError::Temporary`] failure (network, timeout, provider overload) is retried later with
//! the same outbox row, a [`SmsError::Permanent`] one (invalid number, rejected content) is not,
//! because retrying would fail the same way forever.
//!
//! Providers are trait objects (`Arc<dyn SmsProvider>`) chosen at start-up from the
//! configuration, so the trait returns a boxed future instead of using `async fn`.
//!
//! # What may be logged
//! An SMS body carries a link token that, together with the patient's password, opens a
//! message, and the destination is a patient's phone number. Neither ever goes to a log, an
//! error text or a `Debug` output: [`OutgoingSms`]'s `Debug` is redacted, providers log the
//! outbox reference and the provider's message id only, and [`mask_phone`] exists for the one
//! place a human must recognise a number (the development console).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub mod console;
pub mod twilio;

/// One SMS to send.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingSms {
    /// Destination phone number in E.164 form (`+15551234567`).
    pub to: String,
    /// The text; it contains the message link and its token.
    pub body: String,
    /// Our reference for the SMS: the outbox row id. Safe to log.
    pub reference: String,
}

impl fmt::Debug for OutgoingSms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingSms")
            .field("to", &"[redacted]")
            .field("body", &"[redacted]")
            .field("reference", &self.reference)
            .finish()
    }
}

/// The provider accepted the SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The provider's id for the message (Twilio's `SM…` sid), used to match delivery status
    /// callbacks to the outbox row. Safe to log.
    pub provider_id: String,
}

/// Why a delivery attempt failed. The texts never contain phone numbers, bodies or secrets.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    /// Worth retrying later: network failure, timeout, rate limit, provider error.
    #[error("temporary SMS failure: {0}")]
    Temporary(String),
    /// Retrying cannot help: the provider refused this SMS.
    #[error("permanent SMS failure: {0}")]
    Permanent(String),
}

impl SmsError {
    /// Whether the outbox should try this SMS again later.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Self::Temporary(_))
    }
}

/// The future a provider's [`SmsProvider::send`] returns.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<Accepted, SmsError>> + Send + 'a>>;

/// Something that can deliver an SMS.
pub trait SmsProvider: Send + Sync + fmt::Debug {
    /// Short name for logs and metrics (`console`, `twilio`).
    fn name(&self) -> &'static str;

    /// How many SMS the outbox hands this provider at once unless the operator says otherwise
    /// (`--sms-concurrency`). One by default: a provider that does not say it takes concurrent
    /// calls gets them one after another.
    fn concurrency(&self) -> usize {
        1
    }

    /// Makes one delivery attempt. Retrying is the caller's business (and so is the bound on
    /// how long it may take: the outbox cuts a call at its timeout by dropping the future).
    fn send<'a>(
        &'a self,
        sms: &'a OutgoingSms,
    ) -> Pin<Box<dyn Future<Output = Result<Accepted, SmsError>> + Send + 'a>>;
}

/// Masks a phone number for display: keeps the country-code "+" and last 2 digits, e.g.
/// `"+*********67"`.
///
/// Every other digit becomes `*`; characters that are neither digits nor a leading `+` are
/// dropped. Numbers with fewer than 6 digits are masked entirely, since two digits would be a
/// large part of them.
#[must_use]
pub fn mask_phone(phone: &str) -> String {
    let phone = phone.trim();
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    let shown = if digits.len() >= 6 { 2 } else { 0 };
    let mut masked = String::with_capacity(digits.len() + 1);
    if phone.starts_with('+') {
        masked.push('+');
    }
    let hidden = digits.len() - shown;
    masked.extend(std::iter::repeat_n('*', hidden));
    masked.extend(&digits[hidden..]);
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_phone_keeps_plus_and_last_two_digits() {
        assert_eq!(mask_phone("+15551234567"), "+*********67");
        assert_eq!(mask_phone("+447700900123"), "+**********23");
        assert_eq!(mask_phone(" +15551234567 "), "+*********67");
    }

    #[test]
    fn mask_phone_without_plus_and_with_separators() {
        assert_eq!(mask_phone("5551234567"), "********67");
        assert_eq!(mask_phone("+1 (555) 123-4567"), "+*********67");
    }

    #[test]
    fn mask_phone_hides_short_numbers_entirely() {
        assert_eq!(mask_phone(""), "");
        assert_eq!(mask_phone("+"), "+");
        assert_eq!(mask_phone("+12"), "+**");
        assert_eq!(mask_phone("12345"), "*****");
        assert_eq!(mask_phone("123456"), "****56");
    }

    #[test]
    fn mask_phone_never_contains_the_hidden_digits() {
        let masked = mask_phone("+15551234567");
        assert!(!masked.contains("555"));
        assert!(!masked.contains("1234"));
    }

    #[test]
    fn outgoing_sms_debug_is_redacted() {
        let sms = OutgoingSms {
            to: "+15551234567".into(),
            body: "Message from Clinic: https://relay.example/m/SECRETTOKEN".into(),
            reference: "outbox-42".into(),
        };
        let debug = format!("{sms:?}");
        assert!(debug.contains("outbox-42"), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
        assert!(!debug.contains("5551234567"), "{debug}");
        assert!(!debug.contains("SECRETTOKEN"), "{debug}");
        assert!(!debug.contains("Clinic"), "{debug}");
        let pretty = format!("{sms:#?}");
        assert!(!pretty.contains("5551234567") && !pretty.contains("SECRETTOKEN"));
    }

    #[test]
    fn error_kinds() {
        assert!(SmsError::Temporary("x".into()).is_temporary());
        assert!(!SmsError::Permanent("x".into()).is_temporary());
        assert_eq!(
            SmsError::Permanent("nope".into()).to_string(),
            "permanent SMS failure: nope"
        );
    }
}
