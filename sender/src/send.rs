//! Sending a message: look the patient up, check the pin, seal, record, submit.
//!
//! # Invariants
//! - The envelope is sealed here, on the organisation's host; the relay receives only the
//!   envelope and the phone number.
//! - The organisation wrap uses the public key from the local key file, never the one the relay
//!   reports, so a relay cannot slip its own key in as the organisation's.
//! - A recipient key that differs from the pinned one is never encrypted to
//!   ([`Error::KeyChangeHeld`]); the message falls back to nothing, not to first contact, so
//!   the operator notices.
//! - A number bound to a recipient id (crate::pins) that the relay now gives another id, or
//!   reports as not enrolled, is refused ([`Error::RecipientChangeHeld`]) until approved.
//! - Each envelope is sealed once and submitted with an idempotency key derived from its
//!   message id, so every retry of the same send (lost answer, 5xx, 429) names the same message
//!   and the relay stores it at most once.

use rand_core::OsRng;
use serde::Serialize;
use shared::envelope::{Content, ContentType, Direction, Envelope, Header};
use shared::identity_check::{CheckAnswer, CheckKind};
use shared::ids::{MessageId, OrganisationId, RecipientId};
use shared::keys::{Fingerprint, PublicKey};
use zeroize::Zeroizing;

use crate::Error;
use crate::client::{Client, SubmitStatus};
use crate::journal::{CheckRecord, Journal, RecordState, SentRecord};
use crate::pins::{PhoneCheck, PinCheck, PinStore};
use crate::state::{StateDir, unix_now};

/// The patient's number: the one E.164 rule the relay applies too (`Debug` redacts it). Its
/// parse error converts into [`Error::Input`].
pub use shared::phone::PhoneNumber;

/// Default message lifetime: 7 days.
pub const DEFAULT_LIFETIME_SECONDS: u64 = 7 * 86_400;

/// Parses a lifetime such as `7d`, `12h`, `30m`, `90s` or `2w` (a bare number is seconds).
pub fn parse_lifetime(text: &str) -> Result<u64, Error> {
    let text = text.trim();
    let invalid = || Error::Input(format!("lifetime {text:?}: use e.g. 7d, 12h, 30m or 3600s"));
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(invalid()),
    };
    let seconds = number.checked_mul(scale).ok_or_else(invalid)?;
    if !(60..=366 * 86_400).contains(&seconds) {
        return Err(Error::Input(
            "the lifetime must be between 1 minute and 366 days (the relay may allow less)".into(),
        ));
    }
    Ok(seconds)
}

/// What the patient must answer before the agent trusts the first key enrolled from a
/// first-contact message's link: something the sender and the patient know and the SMS does
/// not carry (`docs/PROTOCOL.md`, "Enrollment check"). Kept in the journal for the agent until
/// an answer verifies; `Debug` redacts it.
pub struct IdentityCheck {
    kind: CheckKind,
    date_of_birth: Option<Zeroizing<String>>,
    code: Option<Zeroizing<String>>,
}

impl IdentityCheck {
    /// A check of the date of birth (`YYYY-MM-DD`), of an enrollment code, or of both; each is
    /// validated now, so a typo fails the send rather than every patient's answer.
    pub fn new(date_of_birth: Option<&str>, code: Option<&str>) -> Result<Self, Error> {
        let kind = match (date_of_birth.is_some(), code.is_some()) {
            (true, true) => CheckKind::DateOfBirthAndCode,
            (true, false) => CheckKind::DateOfBirth,
            (false, true) => CheckKind::Code,
            (false, false) => {
                return Err(Error::Input(
                    "an identity check needs a date of birth, a code, or both".into(),
                ));
            }
        };
        CheckAnswer::new(kind, date_of_birth, code)
            .map_err(|e| Error::Input(format!("identity check: {e}")))?;
        Ok(Self {
            kind,
            date_of_birth: date_of_birth.map(|d| Zeroizing::new(d.trim().to_owned())),
            code: code.map(|c| Zeroizing::new(c.to_owned())),
        })
    }

    /// The questions the patient is asked.
    pub const fn kind(&self) -> CheckKind {
        self.kind
    }

    fn record(&self) -> CheckRecord {
        CheckRecord {
            kind: self.kind,
            date_of_birth: self.date_of_birth.as_ref().map(|d| d.to_string()),
            code: self.code.as_ref().map(|c| c.to_string()),
            answered: 0,
            verified: None,
        }
    }
}

impl std::fmt::Debug for IdentityCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityCheck({}, [redacted])", self.kind.as_str())
    }
}

/// What to send. The content is wiped from memory when this is dropped.
#[derive(Debug)]
pub struct OutgoingMessage {
    /// The patient's phone number.
    pub to: PhoneNumber,
    /// Subject and body.
    pub content: Content,
    /// Seconds until the message expires.
    pub lifetime_seconds: u64,
    /// The identity check of a first contact (ignored when the patient is enrolled: their key is
    /// pinned or looked up, not enrolled from this link).
    pub identity_check: Option<IdentityCheck>,
}

/// The organisation's rules for sending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendPolicy {
    /// Refuse a first contact without an identity check (`require_identity_check` in
    /// `config.json`): whoever opens an unchecked first-contact link first enrolls.
    pub require_identity_check: bool,
}

/// Who is sending: the organisation's id and its public key from the local key file. Sending
/// needs no passphrase: only the agent opens anything.
#[derive(Debug, Clone)]
pub struct OrganisationIdentity {
    /// The organisation.
    pub organisation_id: OrganisationId,
    /// Its public key (from the key file, not from the relay).
    pub public_key: PublicKey,
    /// Its sending rules.
    pub policy: SendPolicy,
}

/// How the recipient's key was treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RecipientTrust {
    /// Not enrolled: sealed to the organisation only; the agent re-wraps after enrollment, to
    /// the key that passed the identity check, or (without one) to whichever key enrolls
    /// first: an unverified first contact.
    FirstContact {
        /// The check the patient must pass, if any.
        identity_check: Option<CheckKind>,
    },
    /// Enrolled, and this key was pinned now (first use).
    PinnedNow {
        /// The key's fingerprint.
        fingerprint: Fingerprint,
    },
    /// Enrolled with the pinned key.
    Pinned {
        /// The key's fingerprint.
        fingerprint: Fingerprint,
    },
}

/// The outcome of [`Client::send`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SendReceipt {
    /// The message id.
    pub message_id: MessageId,
    /// The patient's id on the relay.
    pub recipient_id: RecipientId,
    /// The relay's status (`queued`).
    pub status: SubmitStatus,
    /// When the message expires (Unix seconds).
    pub expires_at: i64,
    /// How the recipient's key was treated.
    pub recipient: RecipientTrust,
}

/// The idempotency key of an envelope: a function of its message id, so every retry of one
/// sealed message carries the same key, and different messages never share one.
pub fn idempotency_key(message_id: MessageId) -> String {
    format!("securetext-msg-{message_id}")
}

impl Client {
    /// Sends `message` as `organisation`, using the pin store and journal in `state`:
    /// looks the patient up; seals to the patient and the organisation if enrolled (with the
    /// pinned key), else to the organisation only (first contact); records the message; submits
    /// it with retries under one idempotency key.
    pub async fn send(
        &self,
        organisation: &OrganisationIdentity,
        state: &StateDir,
        message: &OutgoingMessage,
    ) -> Result<SendReceipt, Error> {
        let now = unix_now();
        let lifetime = i64::try_from(message.lifetime_seconds)
            .map_err(|_| Error::Input("lifetime too large".into()))?;
        let pins = PinStore::new(state);
        let phone_hash = pins.phone_hash(message.to.as_str())?;
        let recipient = self.lookup_recipient(message.to.as_str()).await?;
        // The recipient id is the relay's word: a number bound to one recipient must not
        // silently become another one, or "not enrolled" (a first contact the relay could then
        // enroll its own key for).
        if let PhoneCheck::Changed { bound, offered } = pins.check_phone(
            &phone_hash,
            recipient.as_ref().map(|r| r.recipient_id),
            recipient.as_ref().map(|r| r.fingerprint),
        )? {
            return Err(Error::RecipientChangeHeld {
                recipient_id: bound,
                offered_recipient: offered,
            });
        }
        let identity_check = match (&recipient, &message.identity_check) {
            (None, None) if organisation.policy.require_identity_check => {
                return Err(Error::Input(
                    "this organisation requires an identity check for every first contact \
                     (the patient is not enrolled): give the date of birth, an enrollment code, \
                     or both"
                        .into(),
                ));
            }
            (None, check) => check.as_ref(),
            (Some(_), _) => None,
        };
        let trust = match &recipient {
            None => RecipientTrust::FirstContact {
                identity_check: identity_check.map(IdentityCheck::kind),
            },
            Some(found)
                if (message.identity_check.is_some()
                    || organisation.policy.require_identity_check)
                    && pins.get(found.recipient_id)?.is_none() =>
            {
                // The relay says the patient enrolled, with a key this organisation never
                // trusted: pinning it now would skip the check the sender asked for (a relay
                // could answer any number this way). Nothing is pinned or sent.
                return Err(Error::Input(format!(
                    "the relay reports this patient enrolled already (recipient {}, key {}), \
                     so no identity check can apply, and this organisation has not trusted \
                     that key before; confirm the fingerprint with the patient before sending \
                     to it",
                    found.recipient_id, found.fingerprint
                )));
            }
            Some(found) => match pins.check(found.recipient_id, found.fingerprint)? {
                PinCheck::FirstUse => RecipientTrust::PinnedNow {
                    fingerprint: found.fingerprint,
                },
                PinCheck::Matches => RecipientTrust::Pinned {
                    fingerprint: found.fingerprint,
                },
                PinCheck::Changed { pinned, offered } => {
                    return Err(Error::KeyChangeHeld {
                        recipient_id: found.recipient_id,
                        pinned,
                        offered,
                    });
                }
            },
        };
        let header = Header {
            version: shared::FORMAT_VERSION,
            message_id: MessageId::random(&mut OsRng),
            organisation_id: organisation.organisation_id,
            recipient_id: recipient.as_ref().map(|r| r.recipient_id),
            created_at: now,
            expires_at: now.saturating_add(lifetime),
            content_type: ContentType::Text,
            direction: Direction::ToRecipient,
        };
        let envelope = Envelope::seal(
            header,
            &message.content,
            &organisation.public_key,
            recipient.as_ref().map(|r| &r.public_key),
            &mut OsRng,
        )?;
        let journal = Journal::new(state);
        let id = header.message_id;
        let mut record = SentRecord::for_envelope(&envelope);
        record.phone_hash = Some(phone_hash.clone());
        record.identity_check = identity_check.map(IdentityCheck::record);
        journal.put(id, record)?;
        let kind = identity_check.map(IdentityCheck::kind);
        let receipt = self
            .submit(message.to.as_str(), &envelope, &idempotency_key(id), kind)
            .await?;
        // Binds a new number to the id of its first-contact receipt. A receipt naming another
        // recipient than the bound one is recorded as a pending change; the agent holds the
        // message's re-wrap until it is approved.
        pins.check_phone(&phone_hash, Some(receipt.recipient_id), None)?;
        journal.modify(id, |record| {
            record.state = RecordState::Accepted;
            record.recipient_id = Some(receipt.recipient_id);
        })?;
        Ok(SendReceipt {
            message_id: receipt.message_id,
            recipient_id: receipt.recipient_id,
            status: receipt.status,
            expires_at: receipt.expires_at,
            recipient: trust,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse() {
        assert_eq!(parse_lifetime("7d").unwrap(), 604_800);
        assert_eq!(parse_lifetime("12h").unwrap(), 43_200);
        assert_eq!(parse_lifetime("30m").unwrap(), 1_800);
        assert_eq!(parse_lifetime("3600").unwrap(), 3_600);
        assert_eq!(parse_lifetime("2w").unwrap(), 1_209_600);
        for bad in ["", "d", "7x", "-1d", "10s", "400d", "99999999999999999999d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn idempotency_key_is_stable_per_message() {
        let id = MessageId::from_bytes([1; 16]);
        assert_eq!(idempotency_key(id), idempotency_key(id));
        assert_ne!(
            idempotency_key(id),
            idempotency_key(MessageId::from_bytes([2; 16]))
        );
        assert!(idempotency_key(id).len() <= 200);
    }
}
