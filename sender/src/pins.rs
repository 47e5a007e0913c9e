//! The pin store: which key fingerprint this organisation trusts for each recipient.
//!
//! The relay runs the key directory, so it could hand out a key of its own (THREAT_MODEL.md,
//! section 6.2). Pinning on first use turns a later substitution into a visible key change that
//! needs an operator's approval. Both `send` and the agent consult the same store.
//!
//! # Wire format
//! `pins.json` in the state directory (version 2):
//! ```text
//! {"version": 2, "recipients": {"<recipient uuid>": {
//!     "fingerprint": hex64, "pinned_at": unix seconds,
//!     "pending": null | {"fingerprint": hex64, "first_seen": unix seconds, "last_seen": unix seconds}}},
//!  "phones": {"<phone hash>": {"recipient_id": uuid, "bound_at": unix seconds,
//!     "pending": null | {"recipient_id": uuid | null, "fingerprint": hex64 | null,
//!                        "first_seen": unix seconds, "last_seen": unix seconds}}},
//!  "legacy": absent | {"phone_salt": hex64, "phones": {"<salted hash>": binding as above},
//!                      "moved": {"<salted hash>": "<phone hash>"}}}
//!
//! phone-hash.key = hex(32 random bytes) || "\n"        (own file, 0600, made on first use)
//! phone hash     = hex(HMAC-SHA256(phone-hash key, "securetext/v1/sender-phone-hash" || E.164))
//! ```
//! The key is outside `pins.json` so that a copy of `pins.json` or of the journal alone cannot
//! test the ~10^10 phone numbers against the hashes. Losing the key loses every binding, so it
//! belongs in the same backups as `pins.json`; a missing key while keyed bindings exist is
//! refused rather than replaced.
//!
//! # Version 1 and its migration
//! Version 1 kept `"phone_salt": hex64` inside the file and `"phones"` under
//! `hex(SHA-256("securetext/v1/sender-phone-hash" || phone_salt || 0x00 || E.164))`, so the file
//! alone sufficed to search the number space. A salted hash cannot be re-keyed without its
//! number, so a version-1 file is read with its bindings under `legacy`, and each moves when its
//! number is next hashed ([`PinStore::phone_hash`], i.e. at the next `send` to it): the salted
//! hash is computed too, the binding moves to the keyed hash, and journal records naming the
//! salted hash are rewritten. The salt is deleted once no salted binding is left. Until then a
//! salted hash still finds its binding (the agent checks journal records written before the
//! upgrade). Older tools refuse version 2 instead of missing every binding.
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
//!   first-contact receipt). Each phone number is therefore bound (by a keyed hash; the number
//!   is never stored) to the recipient id first seen for it; a different id, or "not enrolled"
//!   for a bound number, is a change held for approval like a changed key.
//! - Every change is a locked read-modify-write of the file (see [`crate::state`]).

use std::collections::BTreeMap;

use std::path::Path;

use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::ids::RecipientId;
use shared::keys::Fingerprint;
use zeroize::Zeroizing;

use crate::Error;
use crate::journal::Journal;
use crate::state::{StateDir, Versioned, read_private, read_versioned, unix_now, write_private};

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

/// `pins.json` as this version writes it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(try_from = "RawPinFile")]
struct PinFile {
    version: u8,
    recipients: BTreeMap<RecipientId, Pin>,
    /// Keyed phone hash -> recipient first seen for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    phones: BTreeMap<PhoneHash, PhoneBinding>,
    /// Bindings of version 1 not migrated yet, with the salt needed to find them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    legacy: Option<LegacyPhones>,
}

/// What is left of a version-1 file's phone bindings. Their salted hashes cannot be turned into
/// keyed ones without the numbers, so each moves when its number is next hashed
/// ([`PinStore::phone_hash`]).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyPhones {
    /// The version-1 salt (hex), kept only while salted bindings remain.
    phone_salt: String,
    /// Salted phone hash -> recipient first seen for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    phones: BTreeMap<PhoneHash, PhoneBinding>,
    /// Salted hash -> keyed hash of bindings moved while the journal may still name the salted
    /// hash (a crash between the two writes); emptied once the journal is rewritten.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    moved: BTreeMap<PhoneHash, PhoneHash>,
}

/// Any version of `pins.json` this tool reads; [`PinFile`] is made from it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPinFile {
    version: u8,
    recipients: BTreeMap<RecipientId, Pin>,
    /// Version 1 only: the salt of every hash in `phones`.
    #[serde(default)]
    phone_salt: Option<String>,
    #[serde(default)]
    phones: BTreeMap<PhoneHash, PhoneBinding>,
    #[serde(default)]
    legacy: Option<LegacyPhones>,
}

impl TryFrom<RawPinFile> for PinFile {
    type Error = String;

    /// Reads a version-1 file's salted bindings as legacy ones. Other versions pass through
    /// unchanged, so that [`read_versioned`] refuses the ones it does not know.
    fn try_from(raw: RawPinFile) -> Result<Self, String> {
        let mut file = Self {
            version: raw.version,
            recipients: raw.recipients,
            phones: raw.phones,
            legacy: raw.legacy,
        };
        if raw.version == 1 {
            if file.legacy.is_some() {
                return Err("`legacy` in a version 1 file".into());
            }
            match raw.phone_salt {
                Some(phone_salt) if !file.phones.is_empty() => {
                    file.legacy = Some(LegacyPhones {
                        phone_salt,
                        phones: std::mem::take(&mut file.phones),
                        moved: BTreeMap::new(),
                    });
                }
                // A salt without bindings protects nothing: forgotten at the next write.
                Some(_) => {}
                None if file.phones.is_empty() => {}
                None => return Err("phone bindings without `phone_salt`".into()),
            }
            file.version = PINS_VERSION;
        } else if raw.phone_salt.is_some() {
            return Err("`phone_salt` belongs to version 1".into());
        }
        Ok(file)
    }
}

impl Default for PinFile {
    fn default() -> Self {
        Self {
            version: PINS_VERSION,
            recipients: BTreeMap::new(),
            phones: BTreeMap::new(),
            legacy: None,
        }
    }
}

impl Versioned for PinFile {
    const VERSION: u8 = PINS_VERSION;

    fn version(&self) -> u8 {
        self.version
    }
}

impl PinFile {
    /// The binding stored under `hash`: a keyed hash, a salted one not migrated yet, or a salted
    /// one the journal may still name for a binding that has moved.
    fn binding(&self, hash: &PhoneHash) -> Option<&PhoneBinding> {
        let mut key = hash;
        if let Some(legacy) = &self.legacy {
            if let Some(binding) = legacy.phones.get(hash) {
                return Some(binding);
            }
            key = legacy.moved.get(hash).unwrap_or(hash);
        }
        self.phones.get(key)
    }

    /// [`PinFile::binding`], for changing it.
    fn binding_mut(&mut self, hash: &PhoneHash) -> Option<&mut PhoneBinding> {
        let mut key = hash;
        if let Some(legacy) = &mut self.legacy {
            if legacy.phones.contains_key(hash) {
                return legacy.phones.get_mut(hash);
            }
            key = legacy.moved.get(hash).unwrap_or(hash);
        }
        self.phones.get_mut(key)
    }

    /// Every binding, keyed and legacy.
    fn bindings(&self) -> impl Iterator<Item = (&PhoneHash, &PhoneBinding)> {
        let legacy = self.legacy.iter().flat_map(|l| l.phones.iter());
        self.phones.iter().chain(legacy)
    }

    /// [`PinFile::bindings`], for changing one.
    fn bindings_mut(&mut self) -> impl Iterator<Item = (&PhoneHash, &mut PhoneBinding)> {
        let legacy = self.legacy.iter_mut().flat_map(|l| l.phones.iter_mut());
        self.phones.iter_mut().chain(legacy)
    }

    fn remove_binding(&mut self, hash: &PhoneHash) {
        if self.phones.remove(hash).is_none()
            && let Some(legacy) = &mut self.legacy
        {
            legacy.phones.remove(hash);
        }
    }
}

/// The version of `pins.json` written: 2 since phone hashes are keyed. Version 1 (salted
/// hashes, the salt in the file) is read and migrated; an older tool refuses version 2 rather
/// than miss every binding and bind the numbers anew.
const PINS_VERSION: u8 = 2;

/// Domain-separation label of the phone hash (both versions).
const PHONE_HASH_LABEL: &[u8] = b"securetext/v1/sender-phone-hash";

/// The version-1 phone hash, needed only to find bindings not migrated yet.
fn legacy_hash(salt: &str, phone: &str) -> PhoneHash {
    let mut hash = Sha256::new();
    hash.update(PHONE_HASH_LABEL);
    hash.update(salt.as_bytes());
    hash.update([0]);
    hash.update(phone.as_bytes());
    PhoneHash(hex::encode(hash.finalize()))
}

/// The installation's phone-hash key. It lives in its own file, not in `pins.json`, so that a
/// copy of `pins.json` or the journal (a backup, a support bundle) cannot test the small space
/// of phone numbers against the stored hashes.
struct PhoneHashKey(Zeroizing<[u8; 32]>);

impl PhoneHashKey {
    /// Reads the key file; `Ok(None)` if it does not exist.
    fn read(path: &Path) -> Result<Option<Self>, Error> {
        let Some(text) = read_private(path)?.map(Zeroizing::new) else {
            return Ok(None);
        };
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), key.as_mut()).map_err(|e| Error::StateFile {
            path: path.to_owned(),
            reason: format!("not a phone-hash key: {e}"),
        })?;
        Ok(Some(Self(key)))
    }

    /// Makes a random key and writes it owner-only.
    fn generate(path: &Path) -> Result<Self, Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(key.as_mut());
        let mut text = Zeroizing::new(hex::encode(key.as_ref()));
        text.push('\n');
        write_private(path, text.as_bytes())?;
        Ok(Self(key))
    }

    fn hash(&self, phone: &str) -> PhoneHash {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref())
            .expect("HMAC accepts 32-byte keys");
        mac.update(PHONE_HASH_LABEL);
        mac.update(phone.as_bytes());
        PhoneHash(hex::encode(mac.finalize().into_bytes()))
    }
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

    /// The keyed hash of a phone number (E.164 text), creating this installation's
    /// phone-hash key on first use. While bindings of version 1 remain, the number's salted
    /// binding (if any) moves to the keyed hash first.
    pub fn phone_hash(&self, phone: &str) -> Result<PhoneHash, Error> {
        let key = match PhoneHashKey::read(&self.state.phone_hash_key_file())? {
            Some(key) => key,
            None => self.update(|file| self.create_key(file))?,
        };
        let hash = key.hash(phone);
        if self.load()?.legacy.is_some() {
            self.migrate(phone, &hash)?;
        }
        Ok(hash)
    }

    /// Creates the phone-hash key, under the pins lock so that two processes cannot make two.
    /// Refused if keyed bindings exist: a new key would silently unbind every number.
    fn create_key(&self, file: &PinFile) -> Result<PhoneHashKey, Error> {
        let path = self.state.phone_hash_key_file();
        if let Some(key) = PhoneHashKey::read(&path)? {
            return Ok(key);
        }
        if !file.phones.is_empty() {
            return Err(Error::StateFile {
                path,
                reason: "missing, but pins.json holds phone bindings made with it; restore it \
                         from a backup"
                    .into(),
            });
        }
        PhoneHashKey::generate(&path)
    }

    /// Moves the version-1 binding of `phone` to its keyed hash `keyed`, points the journal's
    /// records at the keyed hash, and forgets the salt once no version-1 binding is left.
    /// Three writes, each leaving a readable state: until the journal is rewritten, `moved`
    /// maps the salted hashes it names to the keyed ones.
    fn migrate(&self, phone: &str, keyed: &PhoneHash) -> Result<(), Error> {
        let moved = self.update(|file| {
            let Some(legacy) = &mut file.legacy else {
                return Ok(BTreeMap::new());
            };
            let salted = legacy_hash(&legacy.phone_salt, phone);
            if let Some(binding) = legacy.phones.remove(&salted) {
                // The salted binding is the number's first-seen one; it wins.
                file.phones.insert(keyed.clone(), binding);
                legacy.moved.insert(salted, keyed.clone());
            }
            Ok(legacy.moved.clone())
        })?;
        if !moved.is_empty() {
            Journal::new(&self.state).replace_phone_hashes(&moved)?;
        }
        self.update(|file| {
            if let Some(legacy) = &mut file.legacy {
                legacy.moved.retain(|salted, _| !moved.contains_key(salted));
                if legacy.phones.is_empty() && legacy.moved.is_empty() {
                    file.legacy = None;
                }
            }
            Ok(())
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
            let Some(binding) = file.binding_mut(phone) else {
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
        Ok(self.load()?.binding(phone).map(|b| b.recipient_id))
    }

    /// Recipient changes waiting for approval: (recipient bound before, the pending change).
    pub fn recipient_changes(&self) -> Result<Vec<(RecipientId, PendingRecipient)>, Error> {
        Ok(self
            .load()?
            .bindings()
            .filter_map(|(_, b)| b.pending.map(|p| (b.recipient_id, p)))
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
            let (phone, pending, binding) = file
                .bindings_mut()
                .find_map(|(phone, b)| match b.pending {
                    Some(pending) if b.recipient_id == recipient => {
                        Some((phone.clone(), pending, b))
                    }
                    _ => None,
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
                    *binding = PhoneBinding {
                        recipient_id: new,
                        bound_at: now,
                        pending: None,
                    };
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
                None => file.remove_binding(&phone),
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

    /// Every string in a JSON document, keys included: the candidates for key material.
    fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    out.push(k.clone());
                    strings(v, out);
                }
            }
            _ => {}
        }
    }

    /// Someone holding `pins.json` alone (a backup, a support bundle) must not be able to test
    /// phone numbers against its hashes: nothing in it recomputes a stored hash, neither by the
    /// salted formula of version 1 nor as an HMAC key.
    #[test]
    fn pins_json_alone_does_not_recompute_phone_hashes() {
        use hmac::{Hmac, Mac};

        let root = tempfile::tempdir().unwrap();
        let state = StateDir::open(root.path().join("s")).unwrap();
        let pins = PinStore::new(&state);
        let phone = "+15557770042";
        let hash = pins.phone_hash(phone).unwrap();
        pins.check_phone(&hash, Some(RecipientId::from_bytes([7; 16])), None)
            .unwrap();

        let text = std::fs::read_to_string(state.pins_file()).unwrap();
        assert!(text.contains(hash.as_str()), "the binding is stored");
        let mut candidates = Vec::new();
        strings(&serde_json::from_str(&text).unwrap(), &mut candidates);
        for candidate in &candidates {
            let mut salted = Sha256::new();
            salted.update(b"securetext/v1/sender-phone-hash");
            salted.update(candidate.as_bytes());
            salted.update([0]);
            salted.update(phone.as_bytes());
            assert_ne!(
                hex::encode(salted.finalize()),
                hash.as_str(),
                "salt {candidate}"
            );
            let key = hex::decode(candidate).unwrap_or_else(|_| candidate.as_bytes().to_vec());
            let mut keyed = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
            keyed.update(b"securetext/v1/sender-phone-hash");
            keyed.update(phone.as_bytes());
            assert_ne!(hex::encode(keyed.finalize().into_bytes()), hash.as_str());
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_phone_hash_key_is_its_own_owner_only_file_and_is_never_replaced() {
        use std::os::unix::fs::PermissionsExt as _;

        let root = tempfile::tempdir().unwrap();
        let state = StateDir::open(root.path().join("s")).unwrap();
        let pins = PinStore::new(&state);
        let hash = pins.phone_hash("+15557770042").unwrap();
        let key_file = state.phone_hash_key_file();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key_file), crate::state::FILE_MODE);
        let key = std::fs::read_to_string(&key_file).unwrap();
        assert_eq!(key.trim().len(), 64);
        let text = std::fs::read_to_string(state.pins_file()).unwrap();
        assert!(!text.contains(key.trim()), "the key stays out of pins.json");
        assert_eq!(pins.phone_hash("+15557770042").unwrap(), hash, "stable");
        assert_ne!(pins.phone_hash("+15557770043").unwrap(), hash);

        // Readable by others: refused, like every state file.
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            pins.phone_hash("+15557770042"),
            Err(Error::InsecurePermissions { .. })
        ));
        // Lost while numbers are bound with it: refused, not silently replaced (which would
        // unbind every number).
        pins.check_phone(&hash, Some(RecipientId::from_bytes([7; 16])), None)
            .unwrap();
        std::fs::remove_file(&key_file).unwrap();
        assert!(matches!(
            pins.phone_hash("+15557770042"),
            Err(Error::StateFile { path, .. }) if path == key_file
        ));
        assert!(!key_file.exists());
    }

    fn journal_record(phone_hash: &PhoneHash) -> crate::journal::SentRecord {
        crate::journal::SentRecord {
            digest: "00".repeat(32),
            recipient_id: Some(RecipientId::from_bytes([1; 16])),
            first_contact: true,
            created_at: unix_now(),
            expires_at: unix_now() + 3_600,
            state: crate::journal::RecordState::Accepted,
            phone_hash: Some(phone_hash.clone()),
            wraps: Vec::new(),
            alarm: None,
            identity_check: None,
        }
    }

    /// A version-1 `pins.json`: the salt beside bindings of two numbers, one with a pending
    /// change.
    fn write_version_1(state: &StateDir, salt: &str, a: &PhoneHash, b: &PhoneHash) {
        let text = serde_json::json!({
            "version": 1,
            "recipients": {},
            "phone_salt": salt,
            "phones": {
                a.as_str(): {"recipient_id": RecipientId::from_bytes([1; 16]), "bound_at": 1,
                             "pending": null},
                b.as_str(): {"recipient_id": RecipientId::from_bytes([2; 16]), "bound_at": 1,
                             "pending": {"recipient_id": RecipientId::from_bytes([3; 16]),
                                         "fingerprint": fp(3), "first_seen": 2, "last_seen": 2}},
            },
        });
        write_private(&state.pins_file(), text.to_string().as_bytes()).unwrap();
    }

    #[test]
    fn version_1_bindings_move_to_keyed_hashes_as_their_numbers_are_hashed() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::open(root.path().join("s")).unwrap();
        let (phone_a, phone_b) = ("+15550000001", "+15550000002");
        let salt = "ab".repeat(32);
        let (salted_a, salted_b) = (legacy_hash(&salt, phone_a), legacy_hash(&salt, phone_b));
        write_version_1(&state, &salt, &salted_a, &salted_b);
        let journal = Journal::new(&state);
        let message = shared::ids::MessageId::from_bytes([5; 16]);
        journal.put(message, journal_record(&salted_a)).unwrap();
        let pins = PinStore::new(&state);
        let (a, b, c) = (
            RecipientId::from_bytes([1; 16]),
            RecipientId::from_bytes([2; 16]),
            RecipientId::from_bytes([3; 16]),
        );

        // Before migration the salted hashes still work: the agent checks a journal record
        // written before the upgrade, `keys list` shows the pending change.
        assert_eq!(
            pins.check_phone(&salted_a, Some(a), None).unwrap(),
            PhoneCheck::Matches
        );
        assert_eq!(pins.recipient_changes().unwrap().len(), 1);
        assert!(pins.has_recipient_change(b).unwrap());

        // Hashing number A moves its binding and the journal's record to the keyed hash.
        let keyed_a = pins.phone_hash(phone_a).unwrap();
        assert_ne!(keyed_a, salted_a);
        assert_eq!(pins.phone_recipient(&keyed_a).unwrap(), Some(a));
        let record = journal.get(message).unwrap().unwrap();
        assert_eq!(record.phone_hash.as_ref(), Some(&keyed_a));
        let text = std::fs::read_to_string(state.pins_file()).unwrap();
        assert!(text.contains("\"version\": 2"), "{text}");
        assert!(!text.contains(salted_a.as_str()), "{text}");
        assert!(
            text.contains(&salt),
            "kept while number B's binding is salted"
        );

        // A pending change on a salted binding is approved in place.
        let approval = pins.approve_recipient_change(b, Some(fp(3))).unwrap();
        assert_eq!(approval.approved, Some(c));
        assert_eq!(pins.phone_recipient(&salted_b).unwrap(), Some(c));
        assert_eq!(pins.get(c).unwrap().unwrap().fingerprint, fp(3));

        // The last salted binding moves: the salt is gone, only keyed hashes are left.
        let keyed_b = pins.phone_hash(phone_b).unwrap();
        assert_eq!(pins.phone_recipient(&keyed_b).unwrap(), Some(c));
        let text = std::fs::read_to_string(state.pins_file()).unwrap();
        assert!(!text.contains(&salt) && !text.contains("legacy"), "{text}");
        assert!(!text.contains(salted_b.as_str()), "{text}");
        assert_eq!(
            pins.check_phone(&keyed_b, Some(c), None).unwrap(),
            PhoneCheck::Matches
        );
    }

    #[test]
    fn a_crash_between_moving_a_binding_and_rewriting_the_journal_is_recovered() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::open(root.path().join("s")).unwrap();
        let pins = PinStore::new(&state);
        let keyed = pins.phone_hash("+15550000001").unwrap();
        let (salted, other) = (PhoneHash("11".repeat(32)), PhoneHash("22".repeat(32)));
        let binding = |byte| PhoneBinding {
            recipient_id: RecipientId::from_bytes([byte; 16]),
            bound_at: 1,
            pending: None,
        };
        // The binding moved, the journal still names the salted hash.
        state
            .update(&state.pins_file(), "pins", |file: &mut PinFile| {
                file.phones.insert(keyed.clone(), binding(1));
                file.legacy = Some(LegacyPhones {
                    phone_salt: "ab".repeat(32),
                    phones: BTreeMap::from([(other.clone(), binding(2))]),
                    moved: BTreeMap::from([(salted.clone(), keyed.clone())]),
                });
                Ok(())
            })
            .unwrap();
        let journal = Journal::new(&state);
        let message = shared::ids::MessageId::from_bytes([5; 16]);
        journal.put(message, journal_record(&salted)).unwrap();

        // The agent's check through the salted hash finds the moved binding, not a first use.
        assert_eq!(
            pins.check_phone(&salted, Some(RecipientId::from_bytes([9; 16])), None)
                .unwrap(),
            PhoneCheck::Changed {
                bound: RecipientId::from_bytes([1; 16]),
                offered: Some(RecipientId::from_bytes([9; 16])),
            }
        );
        // The next hash of any number finishes the rewrite.
        pins.phone_hash("+15550000009").unwrap();
        let record = journal.get(message).unwrap().unwrap();
        assert_eq!(record.phone_hash.as_ref(), Some(&keyed));
        let file = pins.load().unwrap();
        let legacy = file.legacy.unwrap();
        assert!(legacy.moved.is_empty());
        assert_eq!(legacy.phones.len(), 1, "number B was not hashed");
    }

    #[test]
    fn version_1_files_without_bindings_forget_the_salt_and_inconsistent_ones_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::open(root.path().join("s")).unwrap();
        let pins = PinStore::new(&state);
        let salt = "cd".repeat(32);
        let text = serde_json::json!({"version": 1, "recipients": {}, "phone_salt": salt});
        write_private(&state.pins_file(), text.to_string().as_bytes()).unwrap();
        pins.check(RecipientId::from_bytes([1; 16]), fp(1)).unwrap();
        let text = std::fs::read_to_string(state.pins_file()).unwrap();
        assert!(
            !text.contains(&salt) && text.contains("\"version\": 2"),
            "{text}"
        );

        for bad in [
            serde_json::json!({"version": 1, "recipients": {},
                               "phones": {"00": {"recipient_id": RecipientId::from_bytes([1; 16]),
                                                 "bound_at": 1, "pending": null}}}),
            serde_json::json!({"version": 2, "recipients": {}, "phone_salt": salt}),
        ] {
            write_private(&state.pins_file(), bad.to_string().as_bytes()).unwrap();
            assert!(matches!(pins.list(), Err(Error::StateFile { .. })), "{bad}");
        }
        let newer = serde_json::json!({"version": 3, "recipients": {}});
        write_private(&state.pins_file(), newer.to_string().as_bytes()).unwrap();
        assert!(matches!(
            pins.list(),
            Err(Error::StateFile { reason, .. }) if reason == "unsupported version 3"
        ));
    }
}
