//! The journal of this host's sends: what the agent checks a re-wrap request against.
//!
//! The relay lists messages that wait for a recipient wrap, but it is not trusted to say which
//! messages this organisation sent or for whom (THREAT_MODEL.md, section 6.3). The sender
//! records each message before submitting it; the agent re-wraps only what the journal
//! vouches for, unwraps each message at most once per recipient key, and stops for good on a
//! message whose organisation wrap fails to open.
//!
//! # Wire format
//! `messages.json` in the state directory:
//! ```text
//! {"version": 1, "messages": {"<message uuid>": {
//!    "digest": hex64, "recipient_id": uuid | null, "first_contact": bool,
//!    "created_at": i64, "expires_at": i64, "state": "submitting" | "accepted" | "unrecorded",
//!    "phone_hash": hex64 | null (keyed, see crate::pins; salted in records written before
//!                 pins.json version 2, replaced when the number's binding migrates),
//!    "wraps": [{"wrap": {role, key_fingerprint, wrapped_key}, "uploaded": bool}],
//!    "alarm": null | "reason",
//!    "identity_check": null | {"kind": "date_of_birth" | "code" | "date_of_birth_and_code",
//!        "date_of_birth": "YYYY-MM-DD" | null, "code": text | null,
//!        "answered": u32, "verified": hex64 | null}}}}
//!
//! digest = SHA-256("securetext/v1/sender-envelope-digest" || header[72] || nonce[12]
//!                  || u32(len(ciphertext)) || ciphertext || organisation fingerprint[32]
//!                  || u32(len(organisation wrapped_key)) || organisation wrapped_key)
//! ```
//! The digest leaves out the recipient wrap, which re-wrapping replaces, and covers everything
//! else. This is a local format: the relay never sees the digest.
//!
//! # Invariants
//! - No plaintext, no phone number and no key that opens anything is written: ids, a digest,
//!   times, and recipient wraps (ciphertext for the patient's own key). The one exception is
//!   the answer of a message's identity check (a date of birth, an enrollment code), which the
//!   agent needs to take part in the exchange: it is kept only until an answer verifies (then
//!   erased, leaving the verified fingerprint) or the record is dropped.
//! - A record is written before its submission, so a message the relay accepted is always
//!   known here even if the process dies before the answer arrives.
//! - Records are dropped a day after their message expires; the relay stops serving expired
//!   messages, so nothing can need a re-wrap later.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::envelope::{Envelope, Wrap, WrapRole};
use shared::identity_check::{CheckAnswer, CheckKind};
use shared::ids::{MessageId, RecipientId};
use shared::keys::Fingerprint;

use crate::Error;
use crate::pins::PhoneHash;
use crate::state::{STATE_VERSION, StateDir, Versioned, read_versioned, unix_now};

/// Domain-separation label of the envelope digest.
pub const DIGEST_LABEL: &[u8] = b"securetext/v1/sender-envelope-digest";
/// Records are kept this long after their message expires.
const KEEP_AFTER_EXPIRY: i64 = 86_400;

/// Where a record is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Written before submission; the relay may or may not have it.
    Submitting,
    /// The relay accepted it.
    Accepted,
    /// Not sent from this host; recorded by an agent allowed to accept such messages.
    Unrecorded,
}

/// A recipient wrap this host made, and whether the relay has confirmed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MadeWrap {
    /// The wrap.
    pub wrap: Wrap,
    /// Whether the relay installed it.
    pub uploaded: bool,
}

/// What this host knows about one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentRecord {
    /// [`envelope_digest`] of the envelope as sealed.
    pub digest: String,
    /// The patient, once known (the relay assigns it for a first contact).
    pub recipient_id: Option<RecipientId>,
    /// Whether it was sealed to the organisation only.
    pub first_contact: bool,
    /// Header `created_at`.
    pub created_at: i64,
    /// Header `expires_at`.
    pub expires_at: i64,
    /// Submission state.
    pub state: RecordState,
    /// The keyed hash of the phone number it was sent to ([`crate::pins::PinStore::phone_hash`]);
    /// `None` for records written before it was kept, or not sent from this host.
    #[serde(default)]
    pub phone_hash: Option<PhoneHash>,
    /// Recipient wraps made by the agent, one per recipient key at most.
    #[serde(default)]
    pub wraps: Vec<MadeWrap>,
    /// Set when the organisation wrap failed to open: the agent never tries this message again.
    #[serde(default)]
    pub alarm: Option<String>,
    /// The identity check the patient must pass before the agent trusts their first key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_check: Option<CheckRecord>,
}

/// A message's identity check, as the agent keeps it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRecord {
    /// The questions.
    pub kind: CheckKind,
    /// The date of birth the patient must give; erased once an answer verified.
    pub date_of_birth: Option<String>,
    /// The enrollment code handed to the patient; erased once an answer verified.
    pub code: Option<String>,
    /// Attempts this host's agent answered (it answers at most
    /// [`shared::identity_check::MAX_ATTEMPTS`], whatever the relay counts).
    #[serde(default)]
    pub answered: u32,
    /// The key an answer verified for: the only first key the agent trusts for this message.
    #[serde(default)]
    pub verified: Option<Fingerprint>,
}

impl CheckRecord {
    /// The answer to take part in the exchange with, while it is kept.
    pub fn answer(&self) -> Result<Option<CheckAnswer>, Error> {
        if self.date_of_birth.is_none() && self.code.is_none() {
            return Ok(None);
        }
        CheckAnswer::new(
            self.kind,
            self.date_of_birth.as_deref(),
            self.code.as_deref(),
        )
        .map(Some)
        .map_err(|e| Error::Input(format!("the stored identity-check answer: {e}")))
    }
}

impl std::fmt::Debug for CheckRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckRecord")
            .field("kind", &self.kind)
            .field("answer", &"[redacted]")
            .field("answered", &self.answered)
            .field("verified", &self.verified)
            .finish()
    }
}

impl SentRecord {
    /// A record for an envelope about to be submitted.
    pub fn for_envelope(envelope: &Envelope) -> Self {
        Self {
            digest: envelope_digest(envelope),
            recipient_id: envelope.header.recipient_id,
            first_contact: envelope.header.recipient_id.is_none(),
            created_at: envelope.header.created_at,
            expires_at: envelope.header.expires_at,
            state: RecordState::Submitting,
            phone_hash: None,
            wraps: Vec::new(),
            alarm: None,
            identity_check: None,
        }
    }

    /// The wrap made for this key, if any.
    pub fn wrap_for(&self, fingerprint: Fingerprint) -> Option<&MadeWrap> {
        self.wraps
            .iter()
            .find(|w| w.wrap.key_fingerprint == fingerprint)
    }
}

/// The digest of an envelope, without its recipient wrap (see the module documentation).
pub fn envelope_digest(envelope: &Envelope) -> String {
    let mut hash = Sha256::new();
    hash.update(DIGEST_LABEL);
    hash.update(envelope.header.to_bytes());
    hash.update(&envelope.nonce);
    put_bytes(&mut hash, &envelope.ciphertext);
    if let Some(wrap) = envelope.wrap_for(WrapRole::Organisation) {
        hash.update(wrap.key_fingerprint.as_bytes());
        put_bytes(&mut hash, &wrap.wrapped_key);
    }
    hex::encode(hash.finalize())
}

fn put_bytes(hash: &mut Sha256, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    hash.update(len.to_be_bytes());
    hash.update(bytes);
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalFile {
    version: u8,
    messages: BTreeMap<MessageId, SentRecord>,
}

impl Default for JournalFile {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            messages: BTreeMap::new(),
        }
    }
}

impl Versioned for JournalFile {
    fn version(&self) -> u8 {
        self.version
    }
}

/// The journal of one state directory.
#[derive(Debug, Clone)]
pub struct Journal {
    state: StateDir,
}

impl Journal {
    /// The journal in `state` (`messages.json`; created on first record).
    pub fn new(state: &StateDir) -> Self {
        Self {
            state: state.clone(),
        }
    }

    /// The record of a message.
    pub fn get(&self, id: MessageId) -> Result<Option<SentRecord>, Error> {
        Ok(self.load()?.messages.remove(&id))
    }

    /// Inserts or replaces a record.
    pub fn put(&self, id: MessageId, record: SentRecord) -> Result<(), Error> {
        self.update(|file| {
            file.messages.insert(id, record);
            Ok(())
        })
    }

    /// Changes an existing record; fails if there is none.
    pub fn modify<T>(
        &self,
        id: MessageId,
        change: impl FnOnce(&mut SentRecord) -> T,
    ) -> Result<T, Error> {
        self.update(|file| {
            let record = file
                .messages
                .get_mut(&id)
                .ok_or_else(|| Error::Input(format!("message {id} is not in the journal")))?;
            Ok(change(record))
        })
    }

    /// Replaces each record's phone hash found in `replacements` by the one it maps to (the
    /// migration of `pins.json`'s salted phone hashes to keyed ones, see [`crate::pins`]).
    pub(crate) fn replace_phone_hashes(
        &self,
        replacements: &BTreeMap<PhoneHash, PhoneHash>,
    ) -> Result<(), Error> {
        self.update(|file| {
            for record in file.messages.values_mut() {
                if let Some(new) = record.phone_hash.as_ref().and_then(|h| replacements.get(h)) {
                    record.phone_hash = Some(new.clone());
                }
            }
            Ok(())
        })
    }

    /// Every record.
    pub fn list(&self) -> Result<Vec<(MessageId, SentRecord)>, Error> {
        Ok(self.load()?.messages.into_iter().collect())
    }

    fn load(&self) -> Result<JournalFile, Error> {
        Ok(read_versioned(&self.state.journal_file())?.unwrap_or_default())
    }

    /// A locked read-modify-write that also drops the records past [`KEEP_AFTER_EXPIRY`].
    fn update<T>(
        &self,
        change: impl FnOnce(&mut JournalFile) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.state.update(
            &self.state.journal_file(),
            "messages",
            |file: &mut JournalFile| {
                let result = change(file)?;
                let horizon = unix_now() - KEEP_AFTER_EXPIRY;
                file.messages
                    .retain(|_, record| record.expires_at > horizon);
                Ok(result)
            },
        )
    }
}
