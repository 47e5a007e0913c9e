//! Prometheus counters, kept in the state (no global recorder) and rendered as text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

/// Middleware counting every response by status class (its own layer, outermost but for
/// tracing, so that rejections and fallbacks are counted too).
pub async fn count_responses(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    state.metrics().count_status(response.status().as_u16());
    response
}

/// The relay's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// HTTP responses by class.
    pub responses_2xx: AtomicU64,
    /// HTTP 4xx responses.
    pub responses_4xx: AtomicU64,
    /// HTTP 5xx responses.
    pub responses_5xx: AtomicU64,
    /// Messages accepted from senders.
    pub messages_accepted: AtomicU64,
    /// SMS handed to the provider.
    pub sms_sent: AtomicU64,
    /// SMS attempts that failed (temporary or permanent).
    pub sms_attempts_failed: AtomicU64,
    /// Failed unlock attempts.
    pub unlock_failures: AtomicU64,
    /// Successful unlocks.
    pub unlocks: AtomicU64,
    /// Background jobs restarted after a panic or an early end.
    pub job_restarts: AtomicU64,
    /// Transactions that wrote a batch of submissions (group commit): against
    /// `messages_accepted`, how many submissions shared a durable commit.
    pub submission_batches: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response status.
    pub fn count_status(&self, status: u16) {
        match status {
            500.. => Self::inc(&self.responses_5xx),
            400..=499 => Self::inc(&self.responses_4xx),
            _ => Self::inc(&self.responses_2xx),
        }
    }

    /// The Prometheus text exposition, with the gauges supplied by the caller: the outbox
    /// backlog and the long-polls waiting ([`crate::changes::Changes::waiting`]).
    pub fn render(&self, outbox_pending: i64, long_polls_waiting: usize) -> String {
        let mut out = String::new();
        let counters = [
            (
                "securetext_http_responses_total",
                "HTTP responses by status class.",
                None,
            ),
            (
                "securetext_messages_accepted_total",
                "Messages accepted from senders.",
                Some(&self.messages_accepted),
            ),
            (
                "securetext_sms_sent_total",
                "SMS handed to the provider.",
                Some(&self.sms_sent),
            ),
            (
                "securetext_sms_attempts_failed_total",
                "SMS attempts that failed.",
                Some(&self.sms_attempts_failed),
            ),
            (
                "securetext_unlock_failures_total",
                "Failed unlock attempts.",
                Some(&self.unlock_failures),
            ),
            (
                "securetext_unlocks_total",
                "Successful unlocks.",
                Some(&self.unlocks),
            ),
            (
                "securetext_submission_batches_total",
                "Committed transactions of batched submissions (group commit).",
                Some(&self.submission_batches),
            ),
            (
                "securetext_job_restarts_total",
                "Background jobs restarted after a panic or an early end.",
                Some(&self.job_restarts),
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            match counter {
                Some(counter) => {
                    let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
                }
                None => {
                    for (class, counter) in [
                        ("2xx", &self.responses_2xx),
                        ("4xx", &self.responses_4xx),
                        ("5xx", &self.responses_5xx),
                    ] {
                        let _ = writeln!(
                            out,
                            "{name}{{class=\"{class}\"}} {}",
                            counter.load(Ordering::Relaxed)
                        );
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP securetext_sms_outbox_pending SMS waiting to be sent.\n\
             # TYPE securetext_sms_outbox_pending gauge\nsecuretext_sms_outbox_pending {outbox_pending}"
        );
        let _ = writeln!(
            out,
            "# HELP securetext_long_polls_waiting Requests holding their answer until a change.\n\
             # TYPE securetext_long_polls_waiting gauge\nsecuretext_long_polls_waiting {long_polls_waiting}"
        );
        out
    }
}
