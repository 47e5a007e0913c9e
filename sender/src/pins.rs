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
//!     "pending": null | {"fingerprint": hex64, "first_seen": unix seconds, "last_seen": unix seconds}}}}
//! ```
//!
//! # Invariants
//! - Trust on first use: a recipient with no pin gets the fingerprint first seen.
//! - A different fingerprint is never used until approved. It is recorded as `pending` (the
//!   most recent one offered) so that an operator can list and approve it.
//! - Approval moves exactly the pending fingerprint to the pin; an operator who checked a
//!   fingerprint out of band can require that exact one ([`PinStore::approve`]'s `expected`), so
//!   a key swapped again after the check is not approved by mistake.
//! - Every change is a locked read-modify-write of the file (see [`crate::state`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shared::ids::RecipientId;
use shared::keys::Fingerprint;

use crate::Error;
use crate::state::{StateDir, read_json, unix_now, write_json};

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

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinFile {
    version: u8,
    recipients: BTreeMap<RecipientId, Pin>,
}

impl Default for PinFile {
    fn default() -> Self {
        Self {
            version: 1,
            recipients: BTreeMap::new(),
        }
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

    /// The pin of one recipient.
    pub fn get(&self, recipient: RecipientId) -> Result<Option<Pin>, Error> {
        Ok(self.load()?.recipients.get(&recipient).copied())
    }

    /// Every pin, by recipient id.
    pub fn list(&self) -> Result<Vec<(RecipientId, Pin)>, Error> {
        Ok(self.load()?.recipients.into_iter().collect())
    }

    fn load(&self) -> Result<PinFile, Error> {
        let path = self.state.pins_file();
        let file: PinFile = read_json(&path)?.unwrap_or_default();
        if file.version != 1 {
            return Err(Error::StateFile {
                path,
                reason: format!("unsupported version {}", file.version),
            });
        }
        Ok(file)
    }

    fn update<T>(&self, change: impl FnOnce(&mut PinFile) -> Result<T, Error>) -> Result<T, Error> {
        let _lock = self.state.lock("pins")?;
        let mut file = self.load()?;
        let result = change(&mut file)?;
        write_json(&self.state.pins_file(), &file)?;
        Ok(result)
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
