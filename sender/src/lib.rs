//! SecureText sender tooling: a client of the relay's sender API, message sealing with pinned
//! recipient keys, the re-wrap agent, and audit-log verification. The `securetext` command is a
//! thin layer over this library; EHR integrations can use it directly.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sender::Error> {
//! use sender::config::{ApiKey, RelayUrl};
//! use sender::send::{OrganisationIdentity, OutgoingMessage, PhoneNumber, SendPolicy};
//! use sender::state::StateDir;
//! use shared::envelope::Content;
//!
//! let state = StateDir::open(StateDir::default_path()?)?;
//! let config = sender::config::Config::load(state.clone(), Default::default())?;
//! let key_file = config.load_key_file()?;
//! let client = sender::Client::new(config.relay_url.clone(), config.api_key.clone())?;
//! let me = OrganisationIdentity {
//!     organisation_id: config.organisation_id,
//!     public_key: key_file.public_key.clone(),
//!     policy: SendPolicy::default(),
//! };
//! let message = OutgoingMessage {
//!     to: PhoneNumber::parse("+15551234567")?,
//!     content: Content { subject: "Results".into(), body: "Your results are ready.".into() },
//!     lifetime_seconds: sender::send::DEFAULT_LIFETIME_SECONDS,
//!     identity_check: None,
//! };
//! let receipt = client.send(&me, &state, &message).await?;
//! println!("sent {}", receipt.message_id);
//! # Ok(()) }
//! ```
//!
//! # Map
//! - [`client`]: [`Client`], the typed relay API with bounded, idempotent retries.
//! - [`send`]: [`Client::send`]: lookup, pin check, sealing, submission.
//! - [`agent`]: the re-wrap agent for first contact and re-enrollment.
//! - [`pins`]: recipient key pinning (trust on first use, approval of changes).
//! - [`journal`]: this host's record of its sends, which the agent checks re-wraps against.
//! - [`audit`]: local verification of exported audit logs, with an anchor against rewrites.
//! - [`organisation_key`]: the organisation's private key in AWS-LC, for constant-time unwraps.
//! - [`setup`]: `init` (key generation, key file, registration) and opening the key.
//! - [`config`], [`state`]: configuration and the owner-only state directory.
//! - [`error`]: [`Error`], [`RelayError`] (every relay error code) and the exit codes.
//!
//! # Invariants
//! - Plaintext, content keys, the organisation private key, the passphrase and the API key never
//!   leave this process except as the relay protocol requires (the API key in the
//!   `Authorization` header) and never appear in errors or output.
//! - Nothing is encrypted to a recipient key that differs from the pinned one until an operator
//!   (or the agent's documented opt-in policy) approves it.
//! - Every state file is owner-only and replaced atomically.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod agent;
pub mod audit;
pub mod client;
pub mod config;
pub mod error;
pub mod journal;
pub mod organisation_key;
pub mod pins;
pub mod send;
pub mod setup;
pub mod state;

pub use client::Client;
pub use error::{Error, ErrorCode, ExitCode, RelayError};
