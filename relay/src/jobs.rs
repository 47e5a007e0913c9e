//! Background jobs: the SMS outbox worker and the purge of ended messages and sessions.
//!
//! Both are safe to run on several relay instances against one PostgreSQL database: outbox rows
//! are claimed with a lease by an atomic conditional update, and the purge statements are
//! idempotent.

use std::time::Duration;

use shared::audit::AuditKind;
use tokio::sync::watch;

use crate::error::AppError;
use crate::metrics::Metrics;
use crate::phone::Phone;
use crate::sms::{OutgoingSms, SmsError};
use crate::state::AppState;
use crate::store::audit::{self, Record};
use crate::store::{messages, outbox, sessions, throttle};

/// Purpose label of sealed SMS bodies.
pub const SMS_BODY: &str = "sms-body";
/// How long a claimed SMS is reserved for the instance sending it.
const CLAIM_LEASE_SECONDS: i64 = 60;

/// Delay before retry `attempt` (1-based): 2, 4, 8 … seconds, at most 10 minutes.
pub fn backoff_seconds(attempt: u32) -> i64 {
    (1i64 << attempt.clamp(1, 10)).min(600)
}

/// Sends due SMS until `shutdown` flips, waking on new messages or every poll interval.
pub async fn run_outbox(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let poll = Duration::from_millis(state.settings().limits.outbox_poll_ms);
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
pub async fn send_one(state: &AppState) -> Result<bool, AppError> {
    let now = state.now();
    let mut conn = state.store().pool().acquire().await?;
    let Some(row) = outbox::claim_due(&mut conn, now, CLAIM_LEASE_SECONDS).await? else {
        return Ok(false);
    };
    drop(conn);
    let result = match open_sms(state, &row) {
        Ok(sms) => state.sms().send(&sms).await,
        // Stored data that does not open (another data key, a damaged row) will never open:
        // fail the SMS for good instead of retrying it forever.
        Err(error) => Err(SmsError::Permanent(error.to_string())),
    };
    let now = state.now();
    let max_attempts = state.settings().limits.sms_max_attempts;
    let mut tx = state.store().pool().begin().await?;
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
            if matches!(error, SmsError::Temporary(_)) && row.attempts < max_attempts {
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
        audit::append(&mut tx, state.store().backend(), record, now).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Decrypts a queued SMS's number and text.
fn open_sms(state: &AppState, row: &outbox::OutboxRow) -> Result<OutgoingSms, AppError> {
    let key = state.data_key();
    let to = Phone::open(key, &row.to_sealed)?;
    let body = key
        .open(SMS_BODY, &row.body_sealed)
        .map_err(|_| AppError::Internal("queued SMS body does not open".into()))?;
    Ok(OutgoingSms {
        to: to.as_str().to_owned(),
        body: String::from_utf8(body.to_vec())
            .map_err(|_| AppError::Internal("queued SMS body is not UTF-8".into()))?,
        reference: row.id.clone(),
    })
}

/// Purges on an interval until `shutdown` flips.
pub async fn run_purge(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let interval = Duration::from_secs(state.settings().limits.purge_interval_seconds.max(1));
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
/// sessions (destroying their relay halves) and forgets old throttle counters.
pub async fn purge_once(state: &AppState) -> Result<(), AppError> {
    let now = state.now();
    let idle = i64::try_from(state.settings().limits.session_idle_seconds).unwrap_or(300);
    let mut tx = state.store().pool().begin().await?;
    let expired = messages::expire_due(&mut tx, now).await?;
    for (message, organisation, recipient) in &expired {
        let record = Record::message(*organisation, AuditKind::Expired, *message, *recipient);
        audit::append(&mut tx, state.store().backend(), record, now).await?;
    }
    let revoked = messages::purge_revoked(&mut tx).await?;
    outbox::cancel_for_ended_messages(&mut tx, now).await?;
    let sessions = sessions::end_stale(&mut tx, now, idle).await?;
    throttle::prune(&mut tx, now - 86_400).await?;
    tx.commit().await?;
    if !expired.is_empty() || revoked > 0 || sessions > 0 {
        tracing::info!(expired = expired.len(), revoked, sessions, "purged");
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
