//! Shared state of a running relay.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use shared::at_rest::DataKey;
use tokio::sync::Notify;

use crate::changes::Changes;
use crate::config::Secret;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::sms::SmsProvider;
use crate::store::Store;
use crate::submissions::Submissions;

/// The time source. Tests drive a manual clock to cross expiries and lockouts without sleeping.
#[derive(Debug, Clone)]
pub enum Clock {
    /// Wall-clock Unix seconds.
    System,
    /// A settable time, for tests.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// Current Unix seconds.
    pub fn now(&self) -> i64 {
        match self {
            Self::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0),
            Self::Manual(now) => now.load(Ordering::SeqCst),
        }
    }
}

/// Settings the handlers need (the serve options, resolved).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL used in SMS links (no trailing slash).
    pub public_url: String,
    /// Whether the relay is reached over TLS (Secure cookies, HSTS).
    pub tls: bool,
    /// Built viewer directory.
    pub viewer_dir: PathBuf,
    /// Lifetimes and limits.
    pub limits: Limits,
    /// Whether a TLS proxy in front sets `X-Forwarded-For` (client addresses for throttling).
    pub trust_forwarded_for: bool,
    /// Twilio's auth token, to verify status callbacks (when Twilio is the provider).
    pub twilio_auth_token: Option<Secret>,
}

/// Everything a request handler or background job can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    store: Store,
    submissions: Submissions,
    data_key: DataKey,
    settings: Settings,
    sms: Arc<dyn SmsProvider>,
    outbox_wake: Notify,
    changes: Changes,
    metrics: Metrics,
    clock: Clock,
}

impl AppState {
    /// Assembles the state and starts its submission writer ([`crate::submissions`]); call it
    /// inside a Tokio runtime.
    pub fn new(
        store: Store,
        data_key: DataKey,
        settings: Settings,
        sms: Arc<dyn SmsProvider>,
        clock: Clock,
    ) -> Self {
        Self {
            inner: Arc::new_cyclic(|state| Inner {
                store,
                submissions: Submissions::start(state.clone()),
                data_key,
                settings,
                sms,
                outbox_wake: Notify::new(),
                changes: Changes::default(),
                metrics: Metrics::default(),
                clock,
            }),
        }
    }

    /// The state the submission writer holds weakly, while the relay runs.
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// Where handlers queue submissions for the next group commit.
    pub fn submissions(&self) -> &Submissions {
        &self.inner.submissions
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The data key for phone numbers and queued SMS.
    pub fn data_key(&self) -> &DataKey {
        &self.inner.data_key
    }

    /// Resolved settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The SMS provider.
    pub fn sms(&self) -> &dyn SmsProvider {
        self.inner.sms.as_ref()
    }

    /// Wakes the outbox worker (a message was just queued).
    pub fn wake_outbox(&self) {
        self.inner.outbox_wake.notify_one();
    }

    /// Waits until [`Self::wake_outbox`] is called.
    pub async fn outbox_woken(&self) {
        self.inner.outbox_wake.notified().await;
    }

    /// The long-polls' waiters ([`crate::changes`]).
    pub fn changes(&self) -> &Changes {
        &self.inner.changes
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Current Unix seconds.
    pub fn now(&self) -> i64 {
        self.inner.clock.now()
    }
}
