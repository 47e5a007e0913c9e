//! The pin store: which key fingerprint this organisation trusts for each recipient.
//!
//! The relay runs the key directory, so it could hand out a key of its own (THREAT_MODEL.md,
//! section 6.2). Pinning on first use turns a later substitution into a visible key change that
//! needs an operator's approval. Both `send` and the agent consult the same store.
//!
//! # Wire format
//! `pins.json` in the state directory:
//! ```text
//! {"version": 1, "recipients": {"<recipient uuid>": {
//!     "fingerprint": hex64, "pinned_at": unix seconds,
//!     "pending": null | {"fingerprint": hex64, "first_seen": unix seconds, "last_seen": unix seconds}}},
//!  "phone_salt": hex64 (random, per installation),
//!  "phones": {"<phone hash>": {"recipient_id": uuid, "bound_at": unix seconds,
//!     "pending": null | {"recipient_id": uuid | null, "fingerprint": hex64 | null,
//!                        "first_seen": unix seconds, "last_seen": unix seconds}}}}
//!
//! phone hash = hex(SHA-256("securetext/v1/sender-phone-hash" || phone_salt || 0x00 || E.164))
//! ```
//!
//! # Invariants
//! - Trust on first use: a recipient with no pin gets the fingerprint first seen.
//! - A different fingerprint is never used until approved. It is recorded as `pending` (the
//!   most recent one offered) so that an operator can list and approve it.
//! - Approval moves exactly the pending fingerprint to the pin; an operator who checked a
//!   fingerprint out of band can require that exact one ([`PinStore::approve`]'s `expected`), so
//!   a key swapped again after the check is not approved by mistake.
//! - Recipient ids are assigned by the relay, so pins alone would let a relay swap a pinned
//!   patient for a "new" one (answer "not enrolled", then enroll its own key under the id of the
//!   first-contact receipt). Each phone number is therefore bound (by a salted hash; the number
//!   is never stored) to the recipient id first seen for it; a different id, or "not enrolled"
//!   for a bound number, is a change held for approval like a changed key.
//! - Every change is a locked read-modify-write of the file (see [`crate::state`]).

use std::collections::BTreeMap;

use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::ids::RecipientId;
use shared::keys::Fingerprint;

use crate::Error;
use crate::state::{STATE_VERSION, StateDir, Versioned, read_versioned, unix_now};

/// A changed key waiting for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingKey {
    /// The fingerprint the relay now offers.
    pub fingerprint: Fingerprint,
    /// When it was first seen.
    pub first_seen: i64,
    /// When it was last seen.
    pub last_seen: i64,
}

/// What is pinned for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// The trusted fingerprint.
    pub fingerprint: Fingerprint,
    /// When it was pinned or approved.
    pub pinned_at: i64,
    /// A changed key waiting for approval, if any.
    pub pending: Option<PendingKey>,
}

/// The outcome of checking a recipient's key against the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// Nothing was pinned: the key is now pinned (trust on first use).
    FirstUse,
    /// The key is the pinned one.
    Matches,
    /// The key differs from the pinned one; it is recorded as pending and must not be used.
    Changed {
        /// The trusted fingerprint.
        pinned: Fingerprint,
        /// The offered fingerprint.
        offered: Fingerprint,
    },
}

/// An approved key change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Approval {
    /// The fingerprint trusted before.
    pub previous: Fingerprint,
    /// The fingerprint trusted now.
    pub approved: Fingerprint,
}

/// The keyed hash of a patient's phone number (hex), as stored in `pins.json` and the journal.
/// The number itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhoneHash(String);

impl PhoneHash {
    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A recipient id other than the one first seen for a phone number (or "not enrolled"), held
/// until an operator approves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingRecipient {
    /// The recipient id the relay now gives for the number; `None`: "not enrolled".
    pub recipient_id: Option<RecipientId>,
    /// The key it offers with it, if known.
    pub fingerprint: Option<Fingerprint>,
    /// When it was first seen.
    pub first_seen: i64,
    /// When it was last seen.
    pub last_seen: i64,
}

/// The recipient id first seen for one phone number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneBinding {
    /// The recipient id.
    pub recipient_id: RecipientId,
    /// When it was bound or approved.
    pub bound_at: i64,
    /// A different recipient (or "not enrolled") waiting for approval, if any.
    pub pending: Option<PendingRecipient>,
}

/// The outcome of checking the recipient the relay gives for a phone number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneCheck {
    /// Nothing was bound and nothing offered (first contact with a new number).
    Unbound,
    /// Nothing was bound: the offered recipient is now bound to the number.
    FirstUse,
    /// The offered recipient is the bound one.
    Matches,
    /// The relay gives another recipient (or "not enrolled"); recorded as pending, must not
    /// be used until approved.
    Changed {
        /// The recipient first seen for the number.
        bound: RecipientId,
        /// What the relay gives now (`None`: not enrolled).
        offered: Option<RecipientId>,
    },
}

/// An approved recipient change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecipientApproval {
    /// The recipient bound before.
    pub previous: RecipientId,
    /// The recipient bound now (`None`: the binding was dropped; the next send is a first
    /// contact and binds the number anew).
    pub approved: Option<RecipientId>,
    /// The key pinned for the new recipient, if one was offered.
    pub fingerprint: Option<Fingerprint>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinFile {
    version: u8,
    recipients: BTreeMap<RecipientId, Pin>,
    /// Per-installation random salt of the phone hashes (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phone_salt: Option<String>,
    /// Phone hash -> recipient first seen for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    phones: BTreeMap<PhoneHash, PhoneBinding>,
}

impl Default for PinFile {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            recipients: BTreeMap::new(),
            phone_salt: None,
            phones: BTreeMap::new(),
        }
    }
}

impl Versioned for PinFile {
    fn version(&self) -> u8 {
        self.version
    }
}

/// Domain-separation label of the phone hash.
const PHONE_HASH_LABEL: &[u8] = b"securetext/v1/sender-phone-hash";

fn hash_phone(salt: &str, phone: &str) -> PhoneHash {
    let mut hash = Sha256::new();
    hash.update(PHONE_HASH_LABEL);
    hash.update(salt.as_bytes());
    hash.update([0]);
    hash.update(phone.as_bytes());
    PhoneHash(hex::encode(hash.finalize()))
}

/// The pin store of one state directory.
#[derive(Debug, Clone)]
pub struct PinStore {
    state: StateDir,
}

impl PinStore {
    /// The store in `state` (`pins.json`; created on first pin).
    pub fn new(state: &StateDir) -> Self {
        Self {
            state: state.clone(),
        }
    }

    /// Checks `offered` for `recipient`: pins it if nothing is pinned, records it as pending if
    /// it differs from the pin (and clears a stale pending key when it matches again).
    pub fn check(&self, recipient: RecipientId, offered: Fingerprint) -> Result<PinCheck, Error> {
        let now = unix_now();
        self.update(|file| {
            let Some(pin) = file.recipients.get_mut(&recipient) else {
                file.recipients.insert(
                    recipient,
                    Pin {
                        fingerprint: offered,
                        pinned_at: now,
                        pending: None,
                    },
                );
                return Ok(PinCheck::FirstUse);
            };
            if pin.fingerprint == offered {
                pin.pending = None;
                return Ok(PinCheck::Matches);
            }
            pin.pending = Some(match pin.pending {
                Some(pending) if pending.fingerprint == offered => PendingKey {
                    last_seen: now,
                    ..pending
                },
                _ => PendingKey {
                    fingerprint: offered,
                    first_seen: now,
                    last_seen: now,
                },
            });
            Ok(PinCheck::Changed {
                pinned: pin.fingerprint,
                offered,
            })
        })
    }

    /// Approves the pending key of `recipient`. With `expected`, only that exact fingerprint
    /// is approved. Fails if nothing is pending.
    pub fn approve(
        &self,
        recipient: RecipientId,
        expected: Option<Fingerprint>,
    ) -> Result<Approval, Error> {
        let now = unix_now();
        self.update(|file| {
            let pin = file.recipients.get_mut(&recipient).ok_or_else(|| {
                Error::Input(format!("nothing is pinned for recipient {recipient}"))
            })?;
            let pending = pin.pending.ok_or_else(|| {
                Error::Input(format!(
                    "recipient {recipient} has no key change waiting for approval"
                ))
            })?;
            if let Some(expected) = expected
                && expected != pending.fingerprint
            {
                return Err(Error::Input(format!(
                    "the pending key of recipient {recipient} is {}, not {expected}; \
                     nothing was approved",
                    pending.fingerprint
                )));
            }
            let approval = Approval {
                previous: pin.fingerprint,
                approved: pending.fingerprint,
            };
            *pin = Pin {
                fingerprint: pending.fingerprint,
                pinned_at: now,
                pending: None,
            };
            Ok(approval)
        })
    }

    /// The keyed hash of a phone number (E.164 text), creating this installation's random
    /// salt on first use.
    pub fn phone_hash(&self, phone: &str) -> Result<PhoneHash, Error> {
        if let Some(salt) = self.load()?.phone_salt {
            return Ok(hash_phone(&salt, phone));
        }
        self.update(|file| {
            let salt = file.phone_salt.get_or_insert_with(|| {
                let mut bytes = [0u8; 32];
                OsRng.fill_bytes(&mut bytes);
                hex::encode(bytes)
            });
            Ok(hash_phone(salt, phone))
        })
    }

    /// Checks the recipient the relay gives for a phone number (`None`: not enrolled) against
    /// the one first seen for it: binds it if nothing is bound, records it as pending if it
    /// differs (and clears a stale pending change when it matches again).
    pub fn check_phone(
        &self,
        phone: &PhoneHash,
        offered: Option<RecipientId>,
        fingerprint: Option<Fingerprint>,
    ) -> Result<PhoneCheck, Error> {
        let now = unix_now();
        self.update(|file| {
            let Some(binding) = file.phones.get_mut(phone) else {
                let Some(recipient_id) = offered else {
                    return Ok(PhoneCheck::Unbound);
                };
                file.phones.insert(
                    phone.clone(),
                    PhoneBinding {
                        recipient_id,
                        bound_at: now,
                        pending: None,
                    },
                );
                return Ok(PhoneCheck::FirstUse);
            };
            if offered == Some(binding.recipient_id) {
                binding.pending = None;
                return Ok(PhoneCheck::Matches);
            }
            binding.pending = Some(match binding.pending {
                Some(pending)
                    if pending.recipient_id == offered && pending.fingerprint == fingerprint =>
                {
                    PendingRecipient {
                        last_seen: now,
                        ..pending
                    }
                }
                _ => PendingRecipient {
                    recipient_id: offered,
                    fingerprint,
                    first_seen: now,
                    last_seen: now,
                },
            });
            Ok(PhoneCheck::Changed {
                bound: binding.recipient_id,
                offered,
            })
        })
    }

    /// The recipient bound to a phone hash, if any.
    pub fn phone_recipient(&self, phone: &PhoneHash) -> Result<Option<RecipientId>, Error> {
        Ok(self.load()?.phones.get(phone).map(|b| b.recipient_id))
    }

    /// Recipient changes waiting for approval: (recipient bound before, the pending change).
    pub fn recipient_changes(&self) -> Result<Vec<(RecipientId, PendingRecipient)>, Error> {
        Ok(self
            .load()?
            .phones
            .into_values()
            .filter_map(|b| b.pending.map(|p| (b.recipient_id, p)))
            .collect())
    }

    /// Whether a recipient change is pending for a number bound to `recipient`.
    pub fn has_recipient_change(&self, recipient: RecipientId) -> Result<bool, Error> {
        Ok(self
            .recipient_changes()?
            .iter()
            .any(|(bound, _)| *bound == recipient))
    }

    /// Approves the pending recipient change of the number bound to `recipient`: binds the
    /// number to the new recipient and pins the key offered with it (or, for "not enrolled",
    /// drops the binding). With `expected`, only a change offering that exact key is approved.
    pub fn approve_recipient_change(
        &self,
        recipient: RecipientId,
        expected: Option<Fingerprint>,
    ) -> Result<RecipientApproval, Error> {
        let now = unix_now();
        self.update(|file| {
            let (phone, pending) = file
                .phones
                .iter()
                .find_map(|(phone, b)| {
                    (b.recipient_id == recipient)
                        .then_some(b.pending.map(|p| (phone.clone(), p)))
                        .flatten()
                })
                .ok_or_else(|| {
                    Error::Input(format!(
                        "recipient {recipient} has no recipient change waiting for approval"
                    ))
                })?;
            if let Some(expected) = expected
                && Some(expected) != pending.fingerprint
            {
                return Err(Error::Input(format!(
                    "the pending change of recipient {recipient} does not offer key {expected}; \
                     nothing was approved"
                )));
            }
            match pending.recipient_id {
                Some(new) => {
                    file.phones.insert(
                        phone,
                        PhoneBinding {
                            recipient_id: new,
                            bound_at: now,
                            pending: None,
                        },
                    );
                    if let Some(fingerprint) = pending.fingerprint {
                        file.recipients.insert(
                            new,
                            Pin {
                                fingerprint,
                                pinned_at: now,
                                pending: None,
                            },
                        );
                    }
                }
                None => {
                    file.phones.remove(&phone);
                }
            }
            Ok(RecipientApproval {
                previous: recipient,
                approved: pending.recipient_id,
                fingerprint: pending.fingerprint,
            })
        })
    }

    /// The pin of one recipient.
    pub fn get(&self, recipient: RecipientId) -> Result<Option<Pin>, Error> {
        Ok(self.load()?.recipients.get(&recipient).copied())
    }

    /// Every pin, by recipient id.
    pub fn list(&self) -> Result<Vec<(RecipientId, Pin)>, Error> {
        Ok(self.load()?.recipients.into_iter().collect())
    }

    fn load(&self) -> Result<PinFile, Error> {
        Ok(read_versioned(&self.state.pins_file())?.unwrap_or_default())
    }

    fn update<T>(&self, change: impl FnOnce(&mut PinFile) -> Result<T, Error>) -> Result<T, Error> {
        self.state.update(&self.state.pins_file(), "pins", change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(byte: u8) -> Fingerprint {
        Fingerprint::from_bytes([byte; 32])
    }

    #[test]
    fn trust_on_first_use_then_hold_changes_until_approved() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::open(root.path().join("s")).unwrap();
        let pins = PinStore::new(&state);
        let patient = RecipientId::from_bytes([7; 16]);
        assert_eq!(pins.check(patient, fp(1)).unwrap(), PinCheck::FirstUse);
        assert_eq!(pins.check(patient, fp(1)).unwrap(), PinCheck::Matches);
        assert!(pins.approve(patient, None).is_err(), "nothing pending");

        let changed = PinCheck::Changed {
            pinned: fp(1),
            offered: fp(2),
        };
        assert_eq!(pins.check(patient, fp(2)).unwrap(), changed);
        assert_eq!(pins.check(patient, fp(2)).unwrap(), changed, "still held");
        assert_eq!(pins.get(patient).unwrap().unwrap().fingerprint, fp(1));

        // A third key replaces the pending one; approving the old one by fingerprint fails.
        pins.check(patient, fp(3)).unwrap();
        assert!(pins.approve(patient, Some(fp(2))).is_err());
        let approval = pins.approve(patient, Some(fp(3))).unwrap();
        assert_eq!((approval.previous, approval.approved), (fp(1), fp(3)));
        assert_eq!(pins.check(patient, fp(3)).unwrap(), PinCheck::Matches);
        assert_eq!(pins.list().unwrap().len(), 1);

        // Another store on the same directory sees the same pins.
        let again = PinStore::new(&StateDir::open(state.path()).unwrap());
        assert_eq!(again.get(patient).unwrap().unwrap().fingerprint, fp(3));
        assert!(
            pins.approve(RecipientId::from_bytes([8; 16]), None)
                .is_err()
        );
    }
}
