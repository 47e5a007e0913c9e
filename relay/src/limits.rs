//! Lifetimes, limits and job intervals of a running relay, with their defaults.
//!
//! The defaults are written once, in [`Limits::DEFAULT`]; the command line
//! (`crate::config::LimitArgs`) shows and overrides them.

use std::time::Duration;

use crate::store::throttle::LockoutPolicy;

/// Lifetimes, limits and job intervals.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Viewer sessions end after this long, whatever the activity.
    pub session_max: Duration,
    /// Viewer sessions end after this long without a request; the viewer locks itself after
    /// the same time.
    pub session_idle: Duration,
    /// Longest message lifetime a sender may ask for.
    pub message_max_lifetime: Duration,
    /// Wrong passwords per patient before the first lockout.
    pub unlock_attempts: u32,
    /// First lockout; each further lockout doubles it, up to a day.
    pub first_lockout: Duration,
    /// Wrong passwords from one client address (any patient) before it is locked out.
    pub address_unlock_attempts: u32,
    /// Failures from one address are forgotten after this long without new ones; a patient
    /// whose last failure is older than this is not held back by a locked address.
    pub address_quiet_window: Duration,
    /// How long a browser that unlocked stays a known device (its cookie's `Max-Age`; each
    /// successful unlock from it starts the time again).
    pub device_lifetime: Duration,
    /// Opens of one link (`POST /v1/viewer/open`) one client address may make per minute.
    pub open_rate_per_minute: u32,
    /// Messages one API key may submit per minute.
    pub send_rate_per_minute: u32,
    /// Largest request body accepted (bytes).
    pub max_body_bytes: usize,
    /// A connection that has not sent a complete request head this long after connecting (or
    /// after its previous request) is closed: idle and slow-header clients do not hold a
    /// connection slot.
    pub header_read_timeout: Duration,
    /// A request not answered this long after its head arrived — typically a body that stalls —
    /// is answered `408 request_timeout`.
    pub request_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog until one closes.
    /// Keep it below the process's open-files limit, less the database pool.
    pub max_connections: usize,
    /// How often the SMS outbox is polled when idle.
    pub outbox_poll: Duration,
    /// How long a claimed SMS is reserved for the instance sending it.
    pub outbox_lease: Duration,
    /// Attempts to deliver an SMS before it is marked failed.
    pub sms_max_attempts: u32,
    /// SMS handed to the provider at once by one relay instance; `None` takes the provider's
    /// own number ([`SmsProvider::concurrency`](crate::sms::SmsProvider::concurrency)).
    pub sms_concurrency: Option<usize>,
    /// Longest a provider call may take; then the attempt is a temporary failure, retried. The
    /// outbox never lets a call run past half of [`Self::outbox_lease`], since another instance
    /// claims the SMS once the lease ends.
    pub sms_timeout: Duration,
    /// How often expired and revoked ciphertext is purged.
    pub purge_interval: Duration,
}

impl Limits {
    /// The defaults.
    pub const DEFAULT: Self = Self {
        session_max: Duration::from_secs(3600),
        session_idle: Duration::from_secs(300),
        message_max_lifetime: Duration::from_secs(30 * 24 * 3600),
        unlock_attempts: 5,
        first_lockout: Duration::from_secs(60),
        address_unlock_attempts: 20,
        address_quiet_window: Duration::from_secs(3600),
        device_lifetime: Duration::from_secs(90 * 24 * 3600),
        open_rate_per_minute: 20,
        send_rate_per_minute: 120,
        max_body_bytes: 256 * 1024,
        header_read_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        max_connections: 512,
        outbox_poll: Duration::from_millis(1000),
        outbox_lease: Duration::from_secs(60),
        sms_max_attempts: 8,
        sms_concurrency: None,
        sms_timeout: Duration::from_secs(20),
        purge_interval: Duration::from_secs(60),
    };

    /// The lockout rule for one patient.
    pub fn patient_lockout(&self) -> LockoutPolicy {
        LockoutPolicy {
            attempts: self.unlock_attempts,
            first_lockout: self.first_lockout,
        }
    }

    /// The lockout rule for one known device: the patient's numbers, counted apart.
    pub fn device_lockout(&self) -> LockoutPolicy {
        self.patient_lockout()
    }

    /// The lockout rule for one client address.
    pub fn address_lockout(&self) -> LockoutPolicy {
        LockoutPolicy {
            attempts: self.address_unlock_attempts,
            first_lockout: self.first_lockout,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A duration as whole seconds for Unix-second arithmetic, saturating (the one conversion the
/// relay uses between `Duration`s and stored `i64` times).
pub fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
