//! The only thing the viewer ever stores on the device: the session blob.
//!
//! The blob is the patient's private key sealed under a key derived from a device half (kept
//! here) and a relay half (held by the relay, destroyed when the session ends). It lives in
//! `sessionStorage`, which the browser discards with the tab; logout, idle lock and remote wipe
//! clear it too. Nothing else — no plaintext, no key, no password — is ever written to
//! localStorage, sessionStorage, IndexedDB, cookies or caches by this viewer.

use gloo_storage::{SessionStorage, Storage};
use serde::{Deserialize, Serialize};
use shared::ids::{RecipientId, SessionId};

/// The sessionStorage key of the blob record.
pub const STORAGE_KEY: &str = "securetext.session";

/// What is kept between page loads of one live session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    /// The session the blob belongs to.
    pub session_id: SessionId,
    /// The patient.
    pub recipient_id: RecipientId,
    /// The device half of the session key (base64url); useless without the relay half.
    pub device_half: String,
    /// The sealed private key (base64url).
    pub blob: String,
}

/// Stores the session record, replacing any earlier one.
pub fn save(record: &StoredSession) -> bool {
    SessionStorage::set(STORAGE_KEY, record).is_ok()
}

/// The stored session record, if any (a malformed one is removed).
pub fn load() -> Option<StoredSession> {
    match SessionStorage::get::<StoredSession>(STORAGE_KEY) {
        Ok(record) => Some(record),
        Err(_) => {
            SessionStorage::delete(STORAGE_KEY);
            None
        }
    }
}

/// Removes everything this viewer may have stored, in both Web Storage areas.
pub fn clear() {
    SessionStorage::delete(STORAGE_KEY);
    gloo_storage::LocalStorage::delete(STORAGE_KEY);
}
