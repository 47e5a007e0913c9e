//! The patient's journeys as plain async functions — enroll, unlock, resume, load messages —
//! with the UI kept out, so each step is testable and the components only show progress.
//!
//! All cryptography goes through `shared`; the only browser-specific piece is key generation
//! (WebCrypto, see [`crate::keygen`]).

use rand_core::OsRng;
use shared::api::{EnrollRequest, MessageView, OpenResponse, PatientState, SessionResponse};
use shared::bundle::KeyBundle;
use shared::envelope::Content;
use shared::ids::{MessageId, RecipientId};
use shared::kdf::{KdfParams, Password, PasswordKeys, Salt, derive_password_keys};
use shared::keys::PrivateKey;
use shared::session::{DeviceHalf, RelayHalf, SessionBlob};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::api::{self, ApiError};
use crate::keygen;
use crate::vault::{self, StoredSession};

/// Why a journey stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The relay refused or failed (see the code).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The relay offered key-derivation parameters below the safe minimum (or absurd ones):
    /// refused, because a weak derivation would hand it a cheaply guessable proof.
    #[error("the relay offered unsafe key-derivation parameters")]
    UnsafeParameters,
    /// The browser lacks what the viewer needs (WebCrypto).
    #[error("the browser lacks WebCrypto")]
    Unsupported,
    /// Decryption or key handling failed: data altered, or a wrong key.
    #[error("decryption or key handling failed")]
    Crypto,
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
    /// Proving the password.
    Unlocking,
}

/// An unlocked session: the private key lives only here, in WebAssembly memory, and is wiped
/// when this is dropped (lock, idle timeout, logout).
#[derive(Debug)]
pub struct Unlocked {
    /// The patient's private key.
    pub key: PrivateKey,
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
    /// Sender.
    pub organisation: String,
    /// Sent.
    pub created_at: i64,
    /// Expiry.
    pub expires_at: i64,
    /// Subject.
    pub subject: String,
    /// Body, shown as plain text.
    pub body: String,
    /// Whether the read receipt was already sent.
    pub read: bool,
}

/// Lets the browser paint the latest progress text before a blocking computation.
async fn yield_to_browser() {
    gloo_timers::future::TimeoutFuture::new(30).await;
}

fn derive(password: &Password, salt: &Salt, params: &KdfParams) -> Result<PasswordKeys, FlowError> {
    params.validate().map_err(|_| FlowError::UnsafeParameters)?;
    derive_password_keys(password, salt, params).map_err(|_| FlowError::UnsafeParameters)
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

/// First visit: derive keys from the new password, generate and seal the key pair, enroll,
/// then unlock with the same keys.
pub async fn enroll(
    link: &str,
    info: &OpenResponse,
    password: Password,
    progress: impl Fn(Step),
) -> Result<Unlocked, FlowError> {
    let PatientState::New { kdf_params } = &info.patient else {
        return Err(FlowError::Crypto);
    };
    progress(Step::Deriving);
    yield_to_browser().await;
    let salt = Salt::random(&mut OsRng);
    let keys = derive(&password, &salt, kdf_params)?;
    drop(password);
    progress(Step::Generating);
    yield_to_browser().await;
    let private = keygen::generate().await.map_err(|e| match e {
        keygen::KeygenError::Unsupported => FlowError::Unsupported,
        keygen::KeygenError::Failed => FlowError::Crypto,
    })?;
    progress(Step::Enrolling);
    yield_to_browser().await;
    let bundle = KeyBundle::seal(&private, info.recipient_id, &keys.sealing, &mut OsRng)
        .map_err(|_| FlowError::Crypto)?;
    api::enroll(&EnrollRequest {
        link: link.to_owned(),
        bundle,
        salt,
        kdf_params: *kdf_params,
        verifier: keys.auth.verifier(),
    })
    .await?;
    progress(Step::Unlocking);
    let session = api::unlock(link, &keys.auth.to_base64url()).await?;
    keep_for_session(&private, &session)?;
    Ok(Unlocked {
        key: private,
        recipient: session.recipient_id,
        idle_timeout_seconds: session.idle_timeout_seconds,
    })
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
    let bundle = api::key_bundle().await?;
    let private = bundle
        .unseal(session.recipient_id, &keys.sealing)
        .map_err(|_| FlowError::Crypto)?;
    keep_for_session(&private, &session)?;
    Ok(Unlocked {
        key: private,
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
    match opened {
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

/// The patient's messages: decrypted ones, and how many still wait for the sender's re-wrap.
pub async fn load_messages(unlocked: &Unlocked) -> Result<(Vec<Shown>, usize), FlowError> {
    let items: Vec<MessageView> = api::messages().await?;
    let mut shown = Vec::new();
    let mut waiting = 0;
    let mut unreadable = 0;
    for item in items {
        let Some(envelope) = item.envelope.as_ref().filter(|_| !item.awaiting_key) else {
            waiting += 1;
            continue;
        };
        // One envelope that does not open (altered, or wrapped to another key) must not hide
        // the patient's other messages: it is left out, never shown altered.
        let Ok(content): Result<Content, _> =
            envelope.open(&unlocked.key, Some(unlocked.recipient))
        else {
            unreadable += 1;
            continue;
        };
        shown.push(Shown {
            id: item.message_id,
            organisation: item.organisation_name.clone(),
            created_at: item.created_at,
            expires_at: item.expires_at,
            subject: content.subject.clone(),
            body: content.body.clone(),
            read: item.read_at.is_some(),
        });
    }
    if shown.is_empty() && waiting == 0 && unreadable > 0 {
        return Err(FlowError::Crypto);
    }
    Ok((shown, waiting))
}

/// Ends the session everywhere: the relay destroys its half, the device forgets the blob.
pub async fn logout() {
    vault::clear();
    let _ = api::logout().await;
}
