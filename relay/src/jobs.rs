//! Background jobs: the SMS outbox worker and the purge of ended messages and sessions.
//!
//! Both are safe to run on several relay instances against one PostgreSQL database: outbox rows
//! are claimed with a lease by an atomic conditional update, and the purge statements are
//! idempotent.
//!
//! # Supervision
//! [`supervise`] runs each job; a job that panics or returns before shutdown is logged, counted
//! (`securetext_job_restarts_total`) and restarted after a second. Restarting in-process keeps
//! the relay serving while the job recovers; a lease-claimed SMS of a crashed attempt is
//! retried once its lease ends, so nothing is lost or sent twice by the restart itself.

use std::future::Future;
use std::time::Duration;

use shared::audit::AuditKind;
use tokio::sync::watch;

use crate::limits::seconds;
use crate::metrics::Metrics;
use crate::sms::{OutgoingSms, SmsError};
use crate::state::AppState;
use crate::store::audit::{self, Record};
use crate::store::{StoreResult, devices, messages, outbox, row_keys, sessions, throttle};

/// Pause before a crashed job is restarted.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Runs `job` until `shutdown` flips, restarting it whenever it panics or ends early.
pub async fn supervise<F, Fut>(
    name: &'static str,
    state: AppState,
    shutdown: watch::Receiver<bool>,
    job: F,
) where
    F: Fn(AppState, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let outcome = tokio::spawn(job(state.clone(), shutdown.clone())).await;
        if *shutdown.borrow() {
            return;
        }
        match outcome {
            Ok(()) => tracing::error!(job = name, "background job ended unexpectedly; restarting"),
            Err(error) => {
                tracing::error!(job = name, %error, "background job failed; restarting");
            }
        }
        Metrics::inc(&state.metrics().job_restarts);
        let mut shutdown = shutdown.clone();
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(RESTART_DELAY) => {}
        }
    }
}

/// Delay before retry `attempt` (1-based): 2, 4, 8 … seconds, at most 10 minutes.
pub fn backoff_seconds(attempt: u32) -> i64 {
    (1i64 << attempt.clamp(1, 10)).min(600)
}

/// Sends due SMS until `shutdown` flips, waking on new messages or every poll interval.
pub async fn run_outbox(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let poll = state.settings().limits.outbox_poll;
    loop {
        loop {
            match send_one(&state).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(error) => {
                    tracing::error!(%error, "outbox worker");
                    break;
                }
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            () = state.outbox_woken() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// Claims and sends one due SMS; `false` when none is due.
pub async fn send_one(state: &AppState) -> StoreResult<bool> {
    let now = state.now();
    let limits = &state.settings().limits;
    let mut conn = state.store().conn().await?;
    let Some(row) = outbox::claim_due(&mut conn, now, seconds(limits.outbox_lease)).await? else {
        return Ok(false);
    };
    drop(conn);
    let opened = row.open(state.data_key()).map(|(to, body)| OutgoingSms {
        to: to.as_str().to_owned(),
        body: body.to_string(),
        reference: row.id.clone(),
    });
    let result = match opened {
        Ok(sms) => state.sms().send(&sms).await,
        // Stored data that does not open (another data key, a damaged row) will never open:
        // fail the SMS for good instead of retrying it forever.
        Err(error) => Err(SmsError::Permanent(error.to_string())),
    };
    let now = state.now();
    let max_attempts = limits.sms_max_attempts;
    let mut tx = state.store().begin().await?;
    let (kind, detail) = match &result {
        Ok(accepted) => {
            outbox::mark_sent(&mut tx, &row.id, &accepted.provider_id).await?;
            Metrics::inc(&state.metrics().sms_sent);
            (
                Some(AuditKind::SmsSent),
                format!("provider={}", state.sms().name()),
            )
        }
        Err(error) => {
            Metrics::inc(&state.metrics().sms_attempts_failed);
            tracing::warn!(outbox = %row.id, attempt = row.attempts, %error, "SMS attempt failed");
            let text = error.to_string();
            if error.is_temporary() && row.attempts < max_attempts {
                let next = now + backoff_seconds(row.attempts);
                outbox::mark_retry(&mut tx, &row.id, next, &text).await?;
                (None, String::new())
            } else {
                outbox::mark_failed(&mut tx, &row.id, &text).await?;
                (
                    Some(AuditKind::SmsFailed),
                    format!("attempts={}", row.attempts),
                )
            }
        }
    };
    if let Some(kind) = kind {
        let record = Record {
            organisation: row.organisation_id,
            kind,
            message: Some(row.message_id),
            recipient: None,
            detail: &detail,
        };
        audit::append(&mut tx, record, now).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Purges on an interval until `shutdown` flips.
pub async fn run_purge(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let interval = state
        .settings()
        .limits
        .purge_interval
        .max(Duration::from_secs(1));
    loop {
        if let Err(error) = purge_once(&state).await {
            tracing::error!(%error, "purge job");
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Expires due messages (purging their ciphertext), purges revoked ciphertext, ends stale
/// sessions (destroying their relay halves), deletes the row keys of every ended message and
/// session and forgets old throttle counters; then, if any row key went (or an earlier scrub is
/// owed), scrubs the database files ([`row_keys::scrub`]). So whatever was revoked, logged out, wiped, expired or timed out
/// before a run is unrecoverable from the database files when the run ends: this is the bound
/// the threat model states (one purge interval).
pub async fn purge_once(state: &AppState) -> StoreResult<()> {
    let now = state.now();
    let idle = seconds(state.settings().limits.session_idle);
    let mut tx = state.store().begin().await?;
    let expired = messages::expire_due(&mut tx, now).await?;
    for (message, organisation, recipient) in &expired {
        let record = Record::message(*organisation, AuditKind::Expired, *message, *recipient);
        audit::append(&mut tx, record, now).await?;
    }
    let revoked = messages::purge_revoked(&mut tx).await?;
    outbox::cancel_for_ended_messages(&mut tx, now).await?;
    let sessions = sessions::end_stale(&mut tx, now, idle).await?;
    let keys = row_keys::delete_ended(&mut tx).await?;
    throttle::prune(&mut tx, now - 86_400).await?;
    devices::prune(&mut tx, now).await?;
    tx.commit().await?;
    state.store().scrub_if_needed(keys).await?;
    if !expired.is_empty() || revoked > 0 || sessions > 0 || keys > 0 {
        tracing::info!(expired = expired.len(), revoked, sessions, keys, "purged");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff_seconds(1), 2);
        assert_eq!(backoff_seconds(3), 8);
        assert_eq!(backoff_seconds(30), 600);
    }
}
