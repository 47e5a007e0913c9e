//! Setting an organisation up (`securetext init`) and opening its key later.
//!
//! # Invariants
//! - The key file is written (owner-only) before the public key is registered, so the relay
//!   never holds a public key whose private half was not kept.
//! - An existing key file is never overwritten, and a key already registered on the relay is
//!   replaced only on explicit request: messages wrapped to the old key could no longer be
//!   re-wrapped.
//! - A passphrase shorter than [`MIN_PASSPHRASE_CHARS`] is refused for new key files.

use std::path::PathBuf;

use rand_core::OsRng;
use serde::Serialize;
use shared::ids::OrganisationId;
use shared::kdf::{KdfParams, Password};
use shared::keyfile::OrganisationKeyFile;
use shared::keys::{Fingerprint, PrivateKey};

use crate::Error;
use crate::client::Client;
use crate::config::{ApiKey, Config, ConfigFile, RelayUrl};
use crate::organisation_key::{self, OrganisationKey};
use crate::state::{STATE_VERSION, StateDir, write_private};

/// Shortest passphrase accepted for a new key file.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// What `init` needs.
#[derive(Debug)]
pub struct InitRequest {
    /// The relay.
    pub relay_url: RelayUrl,
    /// The organisation's API key.
    pub api_key: ApiKey,
    /// Whether to write the API key into `config.json` (otherwise it must come from the
    /// environment each time).
    pub store_api_key: bool,
    /// Where to write the key file (default: in the state directory).
    pub key_file: Option<PathBuf>,
    /// Argon2id costs for the passphrase ([`KdfParams::DEFAULT`] normally).
    pub kdf_params: KdfParams,
    /// Replace a public key the relay already has for the organisation.
    pub replace_registered_key: bool,
}

/// What `init` did.
#[derive(Debug, Clone, Serialize)]
pub struct InitOutcome {
    /// The organisation.
    pub organisation_id: OrganisationId,
    /// Its display name on the relay.
    pub display_name: String,
    /// The new key's fingerprint.
    pub fingerprint: Fingerprint,
    /// Where the key file is.
    pub key_file: PathBuf,
}

/// Checks a new passphrase and normalises it.
pub fn new_passphrase(text: &str) -> Result<Password, Error> {
    if text.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(Error::Input(format!(
            "the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters"
        )));
    }
    Ok(Password::new(text)?)
}

/// Sets the organisation up: generates the RSA-3072 key with AWS-LC (or uses `key`, for tests and
/// migrations), seals it under `passphrase`, writes the key file and `config.json`, and
/// registers the public key with the relay.
pub async fn init(
    state: &StateDir,
    request: InitRequest,
    passphrase: &Password,
    key: Option<PrivateKey>,
) -> Result<InitOutcome, Error> {
    let key_file = request
        .key_file
        .clone()
        .unwrap_or_else(|| state.default_key_file());
    if key_file.exists() {
        return Err(Error::KeyFile {
            path: key_file,
            reason: "already exists; it is never overwritten (move it away to start over)".into(),
        });
    }
    let client = Client::new(request.relay_url.clone(), request.api_key.clone())?;
    let organisation = client.organisation().await?;
    if organisation.public_key.is_some() && !request.replace_registered_key {
        return Err(Error::Config(
            "the relay already has a public key for this organisation; pass \
             --replace-registered-key only if that key is lost (its pending first-contact \
             messages can then no longer be re-wrapped)"
                .into(),
        ));
    }
    let key = match key {
        Some(key) => key,
        None => tokio::task::spawn_blocking(organisation_key::generate)
            .await
            .map_err(|_| Error::Protocol(shared::Error::KeyGeneration))??,
    };
    let sealed = OrganisationKeyFile::seal(
        &key,
        organisation.id,
        passphrase,
        request.kdf_params,
        &mut OsRng,
    )?;
    write_private(&key_file, sealed.to_json().as_bytes())?;
    Config::save(
        state,
        &ConfigFile {
            version: STATE_VERSION,
            relay_url: request.relay_url,
            organisation_id: organisation.id,
            api_key: request.store_api_key.then_some(request.api_key),
            key_file: request.key_file,
            require_identity_check: false,
        },
    )?;
    client.register_key(key.public_key()).await?;
    Ok(InitOutcome {
        organisation_id: organisation.id,
        display_name: organisation.display_name,
        fingerprint: key.public_key().fingerprint(),
        key_file,
    })
}

/// Opens the organisation's private key with `passphrase`, into the constant-time backend the
/// agent decrypts with.
pub fn unseal_key(config: &Config, passphrase: &Password) -> Result<OrganisationKey, Error> {
    let file = config.load_key_file()?;
    let key_file_error = |error| match error {
        shared::Error::DecryptionFailed => Error::WrongPassphrase,
        other => Error::KeyFile {
            path: config.key_file.clone(),
            reason: other.to_string(),
        },
    };
    let key = file.unseal(passphrase).map_err(key_file_error)?;
    OrganisationKey::new(key).map_err(key_file_error)
}
