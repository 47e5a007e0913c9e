//! The patient's journeys as plain async functions — enroll, unlock, resume, load messages —
//! with the UI kept out, so each step is testable and the components only show progress; and
//! the session's [`Inbox`], which opens each delivered envelope once.
//!
//! All cryptography goes through `shared`, except what the browser does better: key generation
//! ([`crate::keygen`]) and the private-key decryption of wraps ([`crate::webkey`]), both in
//! WebCrypto; and the password's Unicode normalisation ([`password`]), which the browser does
//! without the viewer shipping Unicode's tables.

use std::collections::{HashMap, HashSet};

use rand_core::OsRng;
use shared::Error;
use shared::api::{
    CheckProgress, CheckStarted, EnrollRequest, ErrorCode, LongPoll, MessageView, OpenResponse,
    PatientState, SessionResponse, UnreadableReason,
};
use shared::bundle::{KeyBundle, SealBinding};
use shared::envelope::{Envelope, Opened};
use shared::identity_check::{CheckAnswer, CheckContext, PatientCheck};
use shared::ids::{MessageId, RecipientId};
use shared::kdf::{KdfParams, Password, PasswordKeys, Salt, derive_password_keys};
use shared::keys::{Fingerprint, PrivateKey};
use shared::session::{DeviceHalf, RelayHalf, SessionBlob};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::{Closure, JsValue};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::api::{self, ApiError};
use crate::keygen;
use crate::timing::mark;
use crate::vault::{self, StoredSession};
use crate::webkey::{ImportError, SessionKey};

/// The password as typed, normalised to NFC (PROTOCOL.md, "Password normalisation") by the
/// browser's `String.prototype.normalize`: the viewer is built without `shared`'s `nfc` feature,
/// whose tables would be about an eighth of its download (24.7 KB brotli). The in-browser
/// tests check the browser's NFC against the `unicode-normalization` crate's on every code
/// point. The typed text was a JavaScript string already (the input's value), so this adds no
/// copy the viewer could have wiped.
pub fn password(typed: &str) -> Result<Password, Error> {
    let normalised = js_sys::JsString::from(typed).normalize("NFC");
    Password::from_nfc(Zeroizing::new(normalised.into()))
}

/// Why a journey stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The relay refused or failed (see the code).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The relay offered key-derivation parameters cheaper than the default (or absurd ones),
    /// refused before the password is used because a weak derivation would hand it a cheaply
    /// guessable proof; or, after accepting the proof, a key bundle that does not open beside
    /// the salt and parameters it served (a wrong password never gets that far).
    #[error("the relay offered unsafe key-derivation inputs")]
    UnsafeRelay,
    /// The browser lacks what the viewer needs (WebCrypto).
    #[error("the browser lacks WebCrypto")]
    Unsupported,
    /// Decryption or key handling failed: data altered, or a wrong key.
    #[error("decryption or key handling failed")]
    Crypto,
    /// The answer to the sender's identity check did not match; nothing was enrolled.
    #[error("the identity check did not match")]
    CheckFailed {
        /// Answers the message still accepts.
        attempts_left: u32,
    },
}

/// The steps a long journey reports, for the progress text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Argon2id on the password.
    Deriving,
    /// Generating the key pair.
    Generating,
    /// Sending the sealed keys to the relay.
    Enrolling,
    /// Waiting for the sender to confirm the identity-check answer.
    Confirming,
    /// Proving the password.
    Unlocking,
}

/// An unlocked session: the private key lives only here, as a non-extractable WebCrypto key
/// that the browser discards when this is dropped (lock, idle timeout, logout).
#[derive(Debug)]
pub struct Unlocked {
    /// The patient's private key.
    pub key: SessionKey,
    /// The patient.
    pub recipient: RecipientId,
    /// Idle timeout the relay announced.
    pub idle_timeout_seconds: u64,
}

/// A decrypted message, wiped when dropped.
#[derive(Debug, Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Shown {
    /// Its id (not secret; kept for the read receipt).
    #[zeroize(skip)]
    pub id: MessageId,
    /// The sender's name as the relay lists it. The header binds only the organisation's id,
    /// so the page labels this as the name registered with the relay.
    pub organisation: String,
    /// Sent: the authenticated header's `created_at`, not the relay's record.
    pub created_at: i64,
    /// Expiry: the authenticated header's `expires_at`, not the relay's record.
    pub expires_at: i64,
    /// Subject.
    pub subject: String,
    /// Body, shown as plain text.
    pub body: String,
    /// Whether the read receipt was already sent.
    pub read: bool,
}

/// A delivered message that did not open safely. The page shows a notice in its place, never
/// any of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The listed id.
    pub id: MessageId,
    /// The sender's name as the relay lists it: whom the notice tells the patient to contact.
    pub organisation: String,
    /// Why it did not open, as reported to the relay.
    pub reason: UnreadableReason,
}

/// One place in the patient's list of messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Opened and checked.
    Readable(Shown),
    /// Delivered, but it did not open safely.
    Unreadable(Unreadable),
}

impl Entry {
    /// The listed message's id.
    pub fn id(&self) -> MessageId {
        match self {
            Self::Readable(shown) => shown.id,
            Self::Unreadable(unreadable) => unreadable.id,
        }
    }
}

/// What a refresh of the list gives the page.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// The messages to show, in the relay's order (newest first); expired ones left out.
    pub entries: Vec<Entry>,
    /// How many still wait for the sender's re-wrap.
    pub waiting: usize,
    /// Failures the relay has not yet taken a report of.
    pub to_report: Vec<(MessageId, UnreadableReason)>,
}

/// What one session has opened, in WebAssembly memory only (never in storage). Opening an
/// envelope is an RSA private-key operation, and the page refreshes its list every few
/// seconds, so each delivered envelope is opened at most once while it stays listed: a message
/// that opened is shown from here, one that failed stays failed (the relay cannot make the
/// viewer try a new envelope under the same id again and again). Opened content leaves, wiped,
/// when its message leaves the list (revoked, expired, purged), when its header expires by the
/// browser's clock, and with the whole inbox on lock, idle timeout, logout and remote wipe.
#[derive(Debug, Default)]
pub struct Inbox {
    opened: HashMap<MessageId, Shown>,
    /// Failures, and whether the relay has taken their report (ids and codes: nothing secret).
    failed: HashMap<MessageId, (UnreadableReason, bool)>,
}

impl Inbox {
    /// The messages of `items` that [`Self::refresh`] will ask to open at `now`: delivered
    /// envelopes this session has not opened (or whose opened header has expired) nor failed
    /// on. Opening is asynchronous (WebCrypto), so the caller opens these first and hands the
    /// results to the refresh.
    pub fn unopened(&self, items: &[MessageView], now: i64) -> Vec<MessageId> {
        items
            .iter()
            .filter(|item| {
                let id = item.message_id;
                let shown = self
                    .opened
                    .get(&id)
                    .is_some_and(|shown| !shared::envelope::is_expired(shown.expires_at, now));
                !shown && !self.failed.contains_key(&id) && delivered(item).is_some()
            })
            .map(|item| item.message_id)
            .collect()
    }

    /// Brings the inbox up to date with the relay's list `items` at the browser's clock `now`,
    /// calling `open` only for delivered envelopes this session has not opened or failed on
    /// (those [`Self::unopened`] lists). `open` answers `None` for one it has no result for,
    /// which then waits for the next refresh like an envelope not yet delivered.
    pub fn refresh(
        &mut self,
        items: &[MessageView],
        now: i64,
        mut open: impl FnMut(&MessageView, &Envelope) -> Option<Result<Opened, Error>>,
    ) -> Refreshed {
        let listed: HashSet<MessageId> = items.iter().map(|m| m.message_id).collect();
        self.opened.retain(|id, shown| {
            listed.contains(id) && !shared::envelope::is_expired(shown.expires_at, now)
        });
        let mut refreshed = Refreshed::default();
        for item in items {
            let id = item.message_id;
            if let Some(shown) = self.opened.get_mut(&id) {
                shown.read |= item.read_at.is_some();
                refreshed.entries.push(Entry::Readable(shown.clone()));
                continue;
            }
            if let Some(&(reason, reported)) = self.failed.get(&id) {
                refreshed.entries.push(unreadable(item, reason));
                if !reported {
                    refreshed.to_report.push((id, reason));
                }
                continue;
            }
            let Some(envelope) = delivered(item) else {
                refreshed.waiting += 1;
                continue;
            };
            let Some(result) = open(item, envelope) else {
                refreshed.waiting += 1;
                continue;
            };
            match result {
                Ok(opened) => {
                    let shown = Shown {
                        id,
                        organisation: item.organisation_name.clone(),
                        created_at: opened.header.created_at,
                        expires_at: opened.header.expires_at,
                        subject: opened.content.subject.clone(),
                        body: opened.content.body.clone(),
                        read: item.read_at.is_some(),
                    };
                    self.opened.insert(id, shown.clone());
                    refreshed.entries.push(Entry::Readable(shown));
                }
                // An expired header is the message's end, not a failure: it is not shown, as if
                // the relay had stopped listing it.
                Err(error) => {
                    if let Some(reason) = UnreadableReason::of(&error) {
                        self.failed.insert(id, (reason, false));
                        refreshed.entries.push(unreadable(item, reason));
                        refreshed.to_report.push((id, reason));
                    }
                }
            }
        }
        refreshed
    }

    /// The relay has taken the report of the failure of `id`: do not report it again.
    pub fn reported(&mut self, id: MessageId) {
        if let Some((_, reported)) = self.failed.get_mut(&id) {
            *reported = true;
        }
    }

    /// The read receipt of `id` was sent from this page.
    pub fn mark_read(&mut self, id: MessageId) {
        if let Some(shown) = self.opened.get_mut(&id) {
            shown.read = true;
        }
    }
}

/// The envelope of a listed message, if it can be opened yet (re-wrapped for this patient).
fn delivered(item: &MessageView) -> Option<&Envelope> {
    item.envelope.as_ref().filter(|_| !item.awaiting_key)
}

fn unreadable(item: &MessageView, reason: UnreadableReason) -> Entry {
    Entry::Unreadable(Unreadable {
        id: item.message_id,
        organisation: item.organisation_name.clone(),
        reason,
    })
}

/// Lets the browser paint the latest progress text before a blocking computation: resolves
/// once the next frame has been painted (a zero-delay timer set from an animation-frame
/// callback runs after that frame's paint), or after [`PAINT_WAIT_MS`] if no frame comes (a
/// hidden tab runs no animation frames). It was a fixed 30 ms wait.
async fn yield_to_browser() {
    let painted = js_sys::Promise::new(&mut |resolve, _reject| {
        let Some(window) = web_sys::window() else {
            let _ = resolve.call0(&JsValue::UNDEFINED);
            return;
        };
        let after_paint = resolve.clone();
        let on_frame = Closure::once_into_js(move || {
            if let Some(window) = web_sys::window() {
                let _ = window.set_timeout_with_callback(after_paint.unchecked_ref());
            }
        });
        let _ = window.request_animation_frame(on_frame.unchecked_ref());
        let _ =
            window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, PAINT_WAIT_MS);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(painted).await;
}

/// Longest wait for a painted frame before a blocking computation starts anyway.
const PAINT_WAIT_MS: i32 = 100;

/// Maps and touches the memory Argon2id will use, while the patient reads and types: on a
/// freshly opened page the first derivation would otherwise also wait for the browser to
/// provide `memory_kib` of new, zeroed WebAssembly memory (the benchmark opens the link afresh
/// for every unlock, as a patient does). Freed at once; the allocator keeps the memory for the
/// derivation, since WebAssembly memory never shrinks.
///
/// Runs once the password screen has been painted. Parameters the derivation would refuse
/// (above [`KdfParams::MAXIMUM`], say) are left alone.
pub async fn prepare_derivation(params: &KdfParams) {
    const OS_PAGE: usize = 4096;
    if params.validate_at_least(&KdfParams::DEFAULT).is_err() {
        return;
    }
    yield_to_browser().await;
    let bytes = usize::try_from(params.memory_kib)
        .unwrap_or(0)
        .saturating_mul(1024);
    let mut memory = vec![0u8; bytes];
    for page in memory.chunks_mut(OS_PAGE) {
        page[0] = 1;
    }
    drop(std::hint::black_box(memory));
}

/// Refuses parameters cheaper than the ones this viewer enrolls with ([`KdfParams::DEFAULT`]):
/// the relay serves them, and a proof derived under weaker ones would be cheap to guess from.
fn derive(password: &Password, salt: &Salt, params: &KdfParams) -> Result<PasswordKeys, FlowError> {
    params
        .validate_at_least(&KdfParams::DEFAULT)
        .map_err(|_| FlowError::UnsafeRelay)?;
    mark("securetext:derive:start");
    let keys = derive_password_keys(password, salt, params).map_err(|_| FlowError::UnsafeRelay);
    mark("securetext:derive:end");
    keys
}

/// Moves the private key into WebCrypto, where the session decrypts with it; `private` (and
/// its PKCS#8) is wiped. Sealing for the session happens before, from the same key.
async fn into_session_key(private: PrivateKey) -> Result<SessionKey, FlowError> {
    SessionKey::import(private).await.map_err(|e| match e {
        ImportError::Unsupported => FlowError::Unsupported,
        ImportError::Refused => FlowError::Crypto,
    })
}

/// Seals the private key for this session and stores the blob; failure to store only costs the
/// fast re-open, so it is not an error.
fn keep_for_session(key: &PrivateKey, session: &SessionResponse) -> Result<(), FlowError> {
    let relay_half =
        RelayHalf::from_base64url(&session.relay_half).map_err(|_| FlowError::Crypto)?;
    let device_half = DeviceHalf::random(&mut OsRng);
    let blob = SessionBlob::seal(
        key,
        session.session_id,
        session.recipient_id,
        &device_half,
        &relay_half,
        &mut OsRng,
    )
    .map_err(|_| FlowError::Crypto)?;
    vault::save(&StoredSession {
        session_id: session.session_id,
        recipient_id: session.recipient_id,
        device_half: device_half.to_base64url().to_string(),
        blob: blob.to_base64url(),
    });
    Ok(())
}

/// First visit: derive keys from the new password, generate and seal the key pair, enroll
/// (through the sender's identity check when `answer` is given), then unlock with the same keys.
pub async fn enroll(
    link: &str,
    info: &OpenResponse,
    password: Password,
    answer: Option<CheckAnswer>,
    progress: impl Fn(Step),
) -> Result<Unlocked, FlowError> {
    let PatientState::New { kdf_params, .. } = &info.patient else {
        return Err(FlowError::Crypto);
    };
    progress(Step::Deriving);
    yield_to_browser().await;
    let salt = Salt::random(&mut OsRng);
    let keys = derive(&password, &salt, kdf_params)?;
    drop(password);
    progress(Step::Generating);
    yield_to_browser().await;
    mark("securetext:keygen:start");
    let private = keygen::generate().await.map_err(|e| match e {
        keygen::KeygenError::Unsupported => FlowError::Unsupported,
        keygen::KeygenError::Failed => FlowError::Crypto,
    })?;
    mark("securetext:keygen:end");
    progress(Step::Enrolling);
    yield_to_browser().await;
    let binding = SealBinding {
        recipient: info.recipient_id,
        salt,
        kdf_params: *kdf_params,
    };
    let bundle = KeyBundle::seal(&private, &binding, &keys.sealing, &mut OsRng)
        .map_err(|_| FlowError::Crypto)?;
    let fingerprint = bundle.public_key.fingerprint();
    let context = CheckContext {
        message_id: &info.message_id,
        organisation_id: &info.organisation_id,
    };
    let check = answer.map(|answer| PatientCheck::start(&answer, &context, OsRng));
    let (check, first_message) = check.unzip();
    let started = api::enroll(&EnrollRequest {
        link: link.to_owned(),
        bundle,
        salt,
        kdf_params: *kdf_params,
        verifier: keys.auth.verifier(),
        identity_check: first_message,
    })
    .await?;
    if let (Some(started), Some(check)) = (started, check) {
        progress(Step::Confirming);
        confirm_identity(link, started, check, &fingerprint).await?;
    }
    mark("securetext:enrolled");
    progress(Step::Unlocking);
    let session = api::unlock(link, &keys.auth.to_base64url()).await?;
    mark("securetext:unlocked");
    keep_for_session(&private, &session)?;
    let key = into_session_key(private).await?;
    mark("securetext:key-ready");
    Ok(Unlocked {
        key,
        recipient: session.recipient_id,
        idle_timeout_seconds: session.idle_timeout_seconds,
    })
}

/// Longest time the viewer waits for the sender's agent to take part in an identity check
/// before it says so (the agent may be down); each wait is one long-poll.
const CHECK_POLLS: u32 = 15;

/// Follows an identity-check attempt to its end: reads the agent's answer, learns from its
/// confirmation whether the patient's answer was right, sends the patient's confirmation (also
/// when it was wrong, so that the sender records the failure), and waits for the verdict.
async fn confirm_identity(
    link: &str,
    started: CheckStarted,
    check: PatientCheck,
    fingerprint: &Fingerprint,
) -> Result<(), FlowError> {
    let failed = FlowError::CheckFailed {
        attempts_left: started.attempts_left,
    };
    let mut check = Some(check);
    for _ in 0..CHECK_POLLS {
        let status =
            api::check_status(link, started.attempt_id, LongPoll::MAX_WAIT_SECONDS).await?;
        match status.progress {
            CheckProgress::Verified => return Ok(()),
            CheckProgress::Failed => {
                return Err(FlowError::CheckFailed {
                    attempts_left: status.attempts_left,
                });
            }
            CheckProgress::Answered => {
                let (Some(message), Some(confirmation), Some(check)) = (
                    status.agent_message,
                    status.agent_confirmation,
                    check.take(),
                ) else {
                    return Err(FlowError::Crypto);
                };
                let finish = check
                    .finish(&message, &confirmation, fingerprint)
                    .map_err(|_| FlowError::Crypto)?;
                api::check_confirm(link, started.attempt_id, finish.confirmation).await?;
                if !finish.agent_verified {
                    // The agent's confirmation shows the answer was wrong; its verdict follows.
                    return Err(failed);
                }
            }
            CheckProgress::AwaitingSender | CheckProgress::Confirmed => {}
        }
    }
    Err(FlowError::Api(ApiError::Relay {
        code: ErrorCode::Unavailable,
        attempts_left: None,
        retry_after: None,
    }))
}

/// Later visits: derive, prove the password, fetch and unseal the private key.
pub async fn unlock(
    link: &str,
    info: &OpenResponse,
    password: Password,
    progress: impl Fn(Step),
) -> Result<Unlocked, FlowError> {
    let PatientState::Enrolled { kdf_params, salt } = &info.patient else {
        return Err(FlowError::Crypto);
    };
    progress(Step::Deriving);
    yield_to_browser().await;
    let keys = derive(&password, salt, kdf_params)?;
    drop(password);
    progress(Step::Unlocking);
    let session = api::unlock(link, &keys.auth.to_base64url()).await?;
    mark("securetext:unlocked");
    let bundle = api::key_bundle().await?;
    // The bundle opens only beside the salt and parameters it was sealed with: if the relay
    // served others at open, this is where it shows.
    let binding = SealBinding {
        recipient: session.recipient_id,
        salt: *salt,
        kdf_params: *kdf_params,
    };
    let private = bundle
        .unseal(&binding, &keys.sealing)
        .map_err(|_| FlowError::UnsafeRelay)?;
    keep_for_session(&private, &session)?;
    let key = into_session_key(private).await?;
    mark("securetext:key-ready");
    Ok(Unlocked {
        key,
        recipient: session.recipient_id,
        idle_timeout_seconds: session.idle_timeout_seconds,
    })
}

/// Re-open within a live session, without the password: the stored blob opens only with the
/// relay's half, which the relay hands out only to this session's cookie.
pub async fn resume() -> Option<Unlocked> {
    let stored = vault::load()?;
    let Ok(session) = api::session().await else {
        vault::clear();
        return None;
    };
    let opened = (|| {
        if session.session_id != stored.session_id || session.recipient_id != stored.recipient_id {
            return None;
        }
        let device = DeviceHalf::from_base64url(&stored.device_half).ok()?;
        let relay = RelayHalf::from_base64url(&session.relay_half).ok()?;
        let blob = SessionBlob::from_base64url(&stored.blob).ok()?;
        blob.open(session.session_id, session.recipient_id, &device, &relay)
            .ok()
    })();
    let key = match opened {
        Some(private) => into_session_key(private).await.ok(),
        None => None,
    };
    match key {
        Some(key) => Some(Unlocked {
            key,
            recipient: session.recipient_id,
            idle_timeout_seconds: session.idle_timeout_seconds,
        }),
        None => {
            vault::clear();
            None
        }
    }
}

/// The patient's live messages, as the relay lists them.
pub async fn messages(wait_seconds: u32) -> Result<Vec<MessageView>, FlowError> {
    let items = api::messages(wait_seconds).await?;
    mark("securetext:messages");
    Ok(items)
}

/// Opens the envelopes of the messages `wanted` (from [`Inbox::unopened`]) in `items`, each
/// with [`Envelope::unwrapping_listed`]'s checks (it must be the listed message's and unexpired
/// at `now`, before any private-key operation) and the session's WebCrypto key.
pub async fn open_envelopes(
    items: &[MessageView],
    wanted: &[MessageId],
    unlocked: &Unlocked,
    now: i64,
) -> HashMap<MessageId, Result<Opened, Error>> {
    let mut opened = HashMap::new();
    mark("securetext:open:start");
    for item in items
        .iter()
        .filter(|item| wanted.contains(&item.message_id))
    {
        let Some(envelope) = delivered(item) else {
            continue;
        };
        let result = match envelope.unwrapping_listed(
            item.message_id,
            unlocked.key.public_key(),
            unlocked.recipient,
            now,
        ) {
            Ok(unwrapping) => unlocked.key.open(unwrapping).await,
            Err(error) => Err(error),
        };
        opened.insert(item.message_id, result);
    }
    mark("securetext:open:end");
    opened
}

/// Files what [`open_envelopes`] opened into the session's inbox and brings it up to date.
pub fn open_new(
    inbox: &mut Inbox,
    items: &[MessageView],
    now: i64,
    mut opened: HashMap<MessageId, Result<Opened, Error>>,
) -> Refreshed {
    inbox.refresh(items, now, |item, _| opened.remove(&item.message_id))
}

/// Tells the relay, for the sender's audit log, that message `id` did not open. Whether the
/// report was taken: `false` only when the relay could not be reached (worth another try at
/// the next refresh); a refusal is final, and the patient's notice does not depend on either.
pub async fn report_unreadable(id: MessageId, reason: UnreadableReason) -> bool {
    !matches!(
        api::report_unreadable(id, reason).await,
        Err(ApiError::Network)
    )
}

/// Ends the session everywhere: the relay destroys its half, the device forgets the blob.
pub async fn logout() {
    vault::clear();
    let _ = api::logout().await;
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use shared::Error;
    use shared::api::{MessageView, UnreadableReason};
    use shared::envelope::{Content, ContentType, Direction, Envelope, Header, Opened};
    use shared::ids::{MessageId, OrganisationId, RecipientId};

    use super::{Entry, Inbox};

    const NOW: i64 = 1_800_000_000;

    fn header(id: MessageId) -> Header {
        Header {
            version: shared::FORMAT_VERSION,
            message_id: id,
            organisation_id: OrganisationId::from_bytes([2; 16]),
            recipient_id: Some(RecipientId::from_bytes([3; 16])),
            created_at: NOW - 100,
            expires_at: NOW + 3600,
            content_type: ContentType::Text,
            direction: Direction::ToRecipient,
        }
    }

    /// A listed message; the envelope's bytes do not matter, the opener below decides.
    fn listed(id: u8, delivered: bool) -> MessageView {
        let id = MessageId::from_bytes([id; 16]);
        MessageView {
            message_id: id,
            organisation_name: "Riverside Clinic".into(),
            // The relay's claims, which the viewer must not show.
            created_at: 0,
            expires_at: i64::MAX,
            read_at: None,
            awaiting_key: !delivered,
            envelope: delivered.then(|| Envelope {
                header: header(id),
                nonce: vec![0; 12],
                ciphertext: Vec::new(),
                wraps: Vec::new(),
            }),
        }
    }

    /// Opens like `Envelope::open_listed` would: message 9 was altered, message 8's header
    /// has expired; every other one opens. Counts the calls.
    fn opener<'a>(
        calls: &'a RefCell<Vec<MessageId>>,
    ) -> impl FnMut(&MessageView, &Envelope) -> Option<Result<Opened, Error>> + 'a {
        move |item, envelope| {
            calls.borrow_mut().push(item.message_id);
            Some(match item.message_id.as_bytes()[0] {
                9 => Err(Error::DecryptionFailed),
                8 => Err(Error::Expired),
                _ => Ok(Opened {
                    header: envelope.header,
                    content: Content {
                        subject: "Results".into(),
                        body: "All normal.".into(),
                    },
                }),
            })
        }
    }

    #[test]
    fn each_envelope_is_opened_once_per_session() {
        let calls = RefCell::new(Vec::new());
        let mut inbox = Inbox::default();
        let list = vec![listed(1, true), listed(2, false), listed(9, true)];

        let first = inbox.refresh(&list, NOW, opener(&calls));
        assert_eq!(
            calls.borrow().len(),
            2,
            "the two delivered envelopes are opened"
        );
        assert_eq!(first.waiting, 1);
        assert_eq!(first.entries.len(), 2);

        // The poll's next refreshes, with the same list: no open at all.
        for _ in 0..3 {
            let again = inbox.refresh(&list, NOW + 3, opener(&calls));
            assert_eq!(again.entries, first.entries);
        }
        assert_eq!(
            calls.borrow().len(),
            2,
            "a refresh of the same list opens nothing"
        );

        // Message 2 arrives re-wrapped: only it is opened.
        let list = vec![listed(1, true), listed(2, true), listed(9, true)];
        let third = inbox.refresh(&list, NOW + 6, opener(&calls));
        assert_eq!(calls.borrow().len(), 3);
        assert_eq!(calls.borrow()[2], MessageId::from_bytes([2; 16]));
        assert_eq!((third.entries.len(), third.waiting), (3, 0));
    }

    #[test]
    fn shown_values_come_from_the_opened_header_and_failures_take_their_place() {
        let calls = RefCell::new(Vec::new());
        let mut inbox = Inbox::default();
        let list = vec![listed(1, true), listed(9, true), listed(8, true)];
        let refreshed = inbox.refresh(&list, NOW, opener(&calls));
        let [Entry::Readable(shown), Entry::Unreadable(unreadable)] = &refreshed.entries[..] else {
            panic!("one readable and one unreadable entry, the expired one left out");
        };
        let authenticated = header(shown.id);
        assert_eq!(shown.created_at, authenticated.created_at);
        assert_eq!(shown.expires_at, authenticated.expires_at);
        assert_eq!(shown.body, "All normal.");
        assert_eq!(unreadable.id, MessageId::from_bytes([9; 16]));
        assert_eq!(unreadable.reason, UnreadableReason::DecryptionFailed);
        assert_eq!(unreadable.organisation, "Riverside Clinic");
        // The failure is to be reported until the relay has taken the report, then no more.
        assert_eq!(refreshed.to_report, [(unreadable.id, unreadable.reason)]);
        let again = inbox.refresh(&list, NOW + 3, opener(&calls));
        assert_eq!(again.to_report, [(unreadable.id, unreadable.reason)]);
        inbox.reported(unreadable.id);
        assert!(
            inbox
                .refresh(&list, NOW + 6, opener(&calls))
                .to_report
                .is_empty()
        );
    }

    #[test]
    fn opened_content_leaves_with_its_message_or_its_expiry() {
        let calls = RefCell::new(Vec::new());
        let mut inbox = Inbox::default();
        inbox.refresh(&[listed(1, true), listed(3, true)], NOW, opener(&calls));
        // Message 3 was revoked (no longer listed); message 1's header expires.
        let later = inbox.refresh(&[listed(1, true)], NOW + 60, opener(&calls));
        assert_eq!(later.entries.len(), 1);
        assert_eq!(calls.borrow().len(), 2);
        // Not shown from memory once its header has expired; opening it again is refused as
        // `Envelope::open_listed` refuses it.
        let expired = inbox.refresh(&[listed(1, true)], NOW + 3600, |_, _| {
            Some(Err(Error::Expired))
        });
        assert!(
            expired.entries.is_empty(),
            "an expired header is not shown from memory"
        );
        assert!(
            expired.to_report.is_empty(),
            "an expiry is not a failure to report"
        );
    }

    /// The asynchronous opening asks for exactly what the refresh will want; a message with no
    /// result yet waits instead of being recorded as failed (issue 12, finding 12).
    #[test]
    fn unopened_lists_what_the_refresh_asks_for_and_missing_results_wait() {
        let calls = RefCell::new(Vec::new());
        let mut inbox = Inbox::default();
        let id = |n| MessageId::from_bytes([n; 16]);
        let list = vec![listed(1, true), listed(2, false), listed(9, true)];
        assert_eq!(inbox.unopened(&list, NOW), [id(1), id(9)]);

        let mut open = opener(&calls);
        let first = inbox.refresh(&list, NOW, |item, envelope| {
            (item.message_id != id(1))
                .then(|| open(item, envelope))
                .flatten()
        });
        assert_eq!((first.entries.len(), first.waiting), (1, 2));
        assert_eq!(inbox.unopened(&list, NOW), [id(1)], "9 failed for good");

        inbox.refresh(&list, NOW, opener(&calls));
        assert!(inbox.unopened(&list, NOW).is_empty());
        assert_eq!(
            inbox.unopened(&list, NOW + 3600),
            [id(1)],
            "an expired header is asked again, and refused as expired by the opening"
        );
    }

    #[test]
    fn a_message_read_here_stays_read() {
        let calls = RefCell::new(Vec::new());
        let mut inbox = Inbox::default();
        let list = [listed(1, true)];
        inbox.refresh(&list, NOW, opener(&calls));
        inbox.mark_read(MessageId::from_bytes([1; 16]));
        let [Entry::Readable(shown)] = &inbox.refresh(&list, NOW + 3, opener(&calls)).entries[..]
        else {
            panic!("one readable entry");
        };
        assert!(shown.read);
    }
}
