//! SecureText viewer: the patient's page. It decrypts in the browser with keys derived from the
//! patient's password and leaves nothing readable on the device after the session.
//!
//! - [`app`]: screens and the state machine.
//! - [`flow`]: enroll, unlock, resume and load journeys (no UI).
//! - [`api`]: every relay call, typed.
//! - [`keygen`]: RSA key pair generation through WebCrypto.
//! - [`webkey`]: the unlocked private key as a non-extractable WebCrypto key, which decrypts.
//! - [`lifecycle`]: the link token from the address, and the end of the session on leaving.
//! - [`vault`]: the session blob in sessionStorage, the only thing ever stored.
//! - [`strength`]: the enrollment's password policy and its zxcvbn estimator (a web worker).
//! - [`i18n`]: every text in English and Spanish.
//! - [`timing`]: `performance` marks at the steps of unlocking and enrolling (benchmark).
#![deny(missing_docs)]

pub mod api;
pub mod app;
pub mod flow;
pub mod i18n;
pub mod keygen;
pub mod lifecycle;
pub mod strength;
pub mod timing;
pub mod vault;
pub mod webkey;
