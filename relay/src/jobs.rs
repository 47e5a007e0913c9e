//! Background jobs: the SMS outbox worker and the purge of ended messages and sessions.
//!
//! Both are safe to run on several relay instances against one PostgreSQL database: outbox rows
//! are claimed with a lease by one atomic statement ([`outbox::claim_due`]), and the purge
//! statements are idempotent.
//!
//! # The outbox worker
//! Sending is a pipeline with a bounded number of provider calls in flight: the configured
//! [`Limits::sms_concurrency`](crate::limits::Limits::sms_concurrency), or else the provider's
//! own [`SmsProvider::concurrency`](crate::sms::SmsProvider::concurrency). Each turn is one
//! transaction that records every attempt finished since the previous turn (the outbox row and
//! the audit event) and claims as many due SMS as there are free slots; only once it has
//! committed are the claimed SMS handed to the provider. So a claim is durable before its
//! provider call, there is at most one call per SMS and attempt, and results are committed many
//! to a commit: that, not weaker durability, is where the throughput comes from, and a slow
//! database makes the groups larger instead of leaving the provider idle.
//!
//! Every provider call is cut at [`Limits::sms_timeout`](crate::limits::Limits::sms_timeout),
//! and never later than half the claim lease: a call that outlived the lease would let another
//! instance claim the SMS and text the patient a second time. A cut call is a temporary failure,
//! retried with backoff like any other; the provider may have sent it nonetheless, so that SMS,
//! as after a crash between the call and the record, is sent at least once.
//!
//! # Shutdown
//! When `shutdown` flips, the worker stops claiming, gives the calls in flight
//! [`SHUTDOWN_GRACE`] to finish, cuts those still running (temporary failures, as above),
//! records every result and releases what it claimed but did not hand to the provider (lease
//! ended, attempt not counted), so that another instance or the next start sends it at once.
//! SMS never claimed stay pending. The worker is done within [`SHUTDOWN_GRACE`] and the time
//! the last commit takes, whatever the backlog.
//!
//! # Supervision
//! [`supervise`] runs each job; a job that panics or returns before shutdown is logged, counted
//! (`securetext_job_restarts_total`) and restarted after a second. Restarting in-process keeps
//! the relay serving while the job recovers; a lease-claimed SMS of a crashed attempt is
//! retried once its lease ends, so nothing is lost or sent twice by the restart itself.

use std::future::Future;
use std::time::{Duration, Instant};

use shared::audit::AuditKind;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};

use crate::limits::seconds;
use crate::metrics::Metrics;
use crate::sms::{Accepted, OutgoingSms, SmsError};
use crate::state::AppState;
use crate::store::audit::{self, Record};
use crate::store::outbox::OutboxRow;
use crate::store::{
    StoreResult, Tx, checks, devices, messages, outbox, row_keys, sessions, throttle,
};

/// Pause before a crashed job is restarted.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// At shutdown, how long the provider calls in flight get to finish before they are cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// At shutdown, how long the worker keeps trying to record the last results when the database
/// fails (what it cannot record is retried when its lease ends, as after a crash).
const SHUTDOWN_RECORDING: Duration = Duration::from_secs(2);

/// How long a turn waits, after the first provider call in flight ends, for others to end.
/// Each turn is a durable commit on the database the submissions also commit on; under load,
/// a turn per ended call made the outbox a commit per SMS or two beside every submission batch.
/// An SMS's result is recorded this much later (its lease covers far more).
const RECORD_LINGER: Duration = Duration::from_millis(20);

/// Pause before a turn that failed on the database is tried again while calls are in flight.
const STORE_RETRY: Duration = Duration::from_millis(200);

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

/// Sends due SMS until `shutdown` flips, waking on new messages or every poll interval, then
/// winds down as the module documentation says.
pub async fn run_outbox(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let poll = state.settings().limits.outbox_poll;
    let mut pipeline = Pipeline::new(state.clone(), Some(shutdown.clone()));
    loop {
        let turn = pipeline.turn().await;
        if let Err(error) = &turn {
            tracing::error!(%error, "outbox worker");
        }
        let idle = pipeline.sending.is_empty();
        tokio::select! {
            _ = shutdown.changed() => break,
            () = pipeline.collect(), if !idle && turn.is_ok() => {}
            () = tokio::time::sleep(STORE_RETRY), if !idle && turn.is_err() => {}
            () = state.outbox_woken(), if idle => {}
            () = tokio::time::sleep(poll), if idle => {}
        }
    }
    pipeline.stop().await;
}

/// Sends every SMS due now through the worker's pipeline and returns once none is due and none
/// is in flight, with the number of attempts recorded: the outbox worker's work, stepped by the
/// caller (tests, and `TestRelay::deliver_sms`) instead of run in the background.
pub async fn send_due(state: &AppState) -> StoreResult<usize> {
    let mut pipeline = Pipeline::new(state.clone(), None);
    let mut recorded = 0;
    loop {
        let finished = pipeline.finished.len();
        pipeline.turn().await?;
        recorded += finished;
        if pipeline.sending.is_empty() {
            return Ok(recorded);
        }
        pipeline.collect().await;
    }
}

/// An SMS handed to the provider, and how the attempt went.
#[derive(Debug)]
struct Attempt {
    row: OutboxRow,
    result: Result<Accepted, SmsError>,
}

/// The outbox worker between turns.
#[derive(Debug)]
struct Pipeline {
    state: AppState,
    /// The provider calls in flight, each ending with its attempt. (Declared before `cut`, so
    /// that dropping the pipeline aborts the calls before the cut signal goes.)
    sending: JoinSet<Attempt>,
    /// Attempts finished, not yet recorded.
    finished: Vec<Attempt>,
    /// Flipped to cut the calls in flight (shutdown).
    cut: watch::Sender<bool>,
    /// The worker's shutdown signal: once it has flipped, SMS claimed are released, not sent.
    stopping: Option<watch::Receiver<bool>>,
    /// Provider calls at once.
    slots: usize,
    /// Longest provider call.
    timeout: Duration,
}

impl Pipeline {
    fn new(state: AppState, stopping: Option<watch::Receiver<bool>>) -> Self {
        let limits = &state.settings().limits;
        let slots = limits
            .sms_concurrency
            .unwrap_or_else(|| state.sms().concurrency())
            .max(1);
        let timeout = limits.sms_timeout.min(limits.outbox_lease / 2);
        Self {
            state,
            sending: JoinSet::new(),
            finished: Vec::new(),
            cut: watch::channel(false).0,
            stopping,
            slots,
            timeout,
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.as_ref().is_some_and(|stop| *stop.borrow())
    }

    /// One turn: records the finished attempts and claims due SMS for the free slots (none once
    /// stopping) in one transaction, then hands the claimed SMS to the provider. On an error the
    /// transaction rolls back, nothing is sent, and the finished attempts wait for the next turn.
    async fn turn(&mut self) -> StoreResult<()> {
        let free = match self.stopping() {
            true => 0,
            false => self.slots.saturating_sub(self.sending.len()),
        };
        if self.finished.is_empty() && free == 0 {
            return Ok(());
        }
        let now = self.state.now();
        let lease = seconds(self.state.settings().limits.outbox_lease);
        let mut tx = self.state.store().begin().await?;
        // Record first: a finished attempt's row is still pending until its result is recorded,
        // and once its lease has run out (recording delayed by a database outage) a claim made
        // first would take it again and text the patient a second time. The claim waits for no
        // lock (SKIP LOCKED), so taking it after the audit chains keeps the lock order.
        record(&mut tx, &self.state, &self.finished, now).await?;
        let claimed = match free {
            0 => Vec::new(),
            free => outbox::claim_due(&mut tx, now, lease, free).await?,
        };
        tx.commit().await?;
        for attempt in self.finished.drain(..) {
            recorded(&self.state, &attempt);
        }
        if self.stopping() {
            // Shutdown came while claiming: hand nothing more to the provider.
            self.release(&claimed).await;
        } else {
            for row in claimed {
                self.start(row);
            }
        }
        Ok(())
    }

    /// Hands a claimed SMS to the provider, for at most `timeout` and until the calls are cut.
    fn start(&mut self, row: OutboxRow) {
        let state = self.state.clone();
        let timeout = self.timeout;
        let mut cut = self.cut.subscribe();
        self.sending.spawn(async move {
            let result = match row.open(state.data_key()) {
                Ok((to, body)) => {
                    let sms = OutgoingSms {
                        to: to.as_str().to_owned(),
                        body: body.to_string(),
                        reference: row.id.clone(),
                    };
                    let cut = async {
                        let _ = cut.wait_for(|cut| *cut).await;
                    };
                    tokio::select! {
                        sent = tokio::time::timeout(timeout, state.sms().send(&sms)) => {
                            sent.unwrap_or_else(|_| Err(SmsError::Temporary(format!(
                                "no answer from the provider within {} s",
                                timeout.as_secs_f64()
                            ))))
                        }
                        () = cut => Err(SmsError::Temporary(
                            "the relay shut down during the provider call".to_owned(),
                        )),
                    }
                }
                // Stored data that does not open (another data key, a damaged row) will never
                // open: fail the SMS for good instead of retrying it forever.
                Err(error) => Err(SmsError::Permanent(error.to_string())),
            };
            Attempt { row, result }
        });
    }

    /// Waits for the next provider call to end, then for those that end within
    /// [`RECORD_LINGER`] after it, so that one turn (one durable commit) records many.
    /// Cancel-safe: an attempt joins `finished` as soon as its task is joined.
    async fn collect(&mut self) {
        let Some(joined) = self.sending.join_next().await else {
            return;
        };
        self.joined(joined);
        let linger = tokio::time::sleep(RECORD_LINGER);
        tokio::pin!(linger);
        while !self.sending.is_empty() {
            tokio::select! {
                () = &mut linger => break,
                Some(joined) = self.sending.join_next() => self.joined(joined),
            }
        }
    }

    fn joined(&mut self, joined: Result<Attempt, JoinError>) {
        match joined {
            Ok(attempt) => self.finished.push(attempt),
            // A provider that panicked took its SMS's reference with it: the SMS stays claimed
            // and is retried when its lease ends, as after a crash.
            Err(error) => tracing::error!(%error, "SMS provider call failed"),
        }
    }

    /// Ends the claims of SMS never handed to the provider, without counting the attempt. On a
    /// database error they are retried when their leases end instead.
    async fn release(&self, claimed: &[OutboxRow]) {
        if claimed.is_empty() {
            return;
        }
        let ids: Vec<&str> = claimed.iter().map(|row| row.id.as_str()).collect();
        let released = match self.state.store().conn().await {
            Ok(mut conn) => outbox::release(&mut conn, &ids).await,
            Err(error) => Err(error),
        };
        match released {
            Ok(()) => tracing::info!(released = ids.len(), "released claimed SMS at shutdown"),
            Err(error) => tracing::warn!(
                claimed = ids.len(),
                %error,
                "claimed SMS not released; they are sent when their leases end"
            ),
        }
    }

    /// Shutdown: lets the calls in flight finish for [`SHUTDOWN_GRACE`], cuts the rest, and
    /// records every attempt (retrying for [`SHUTDOWN_RECORDING`] if the database fails).
    async fn stop(mut self) {
        let grace = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(grace);
        let mut cut = false;
        while !self.sending.is_empty() {
            tokio::select! {
                () = self.collect() => {}
                () = &mut grace, if !cut => {
                    tracing::warn!(
                        in_flight = self.sending.len(),
                        "provider calls still running at shutdown; cutting them"
                    );
                    cut = true;
                    self.cut.send_replace(true);
                }
            }
        }
        let recording = Instant::now() + SHUTDOWN_RECORDING;
        while !self.finished.is_empty() {
            match self.turn().await {
                Ok(()) => {}
                Err(error) if Instant::now() < recording => {
                    tracing::warn!(%error, "recording SMS attempts at shutdown; retrying");
                    tokio::time::sleep(STORE_RETRY).await;
                }
                Err(error) => {
                    tracing::error!(
                        unrecorded = self.finished.len(),
                        %error,
                        "SMS attempts not recorded at shutdown; they are retried when their \
                         leases end"
                    );
                    return;
                }
            }
        }
    }
}

/// Writes the outcome of `attempts`: sent (bodies wiped, audit `sms_sent`), retry later, or
/// failed for good (audit `sms_failed`). The SMS sent and the audit events are written with a
/// few statements for the whole group.
async fn record(tx: &mut Tx, state: &AppState, attempts: &[Attempt], now: i64) -> StoreResult<()> {
    let provider = format!("provider={}", state.sms().name());
    let mut sent = Vec::new();
    let mut events = Vec::new();
    for Attempt { row, result } in attempts {
        let detail = match result {
            Ok(accepted) => {
                sent.push((row.id.as_str(), accepted.provider_id.as_str()));
                (AuditKind::SmsSent, provider.clone())
            }
            Err(error) => {
                let text = error.to_string();
                if error.is_temporary() && row.attempts < state.settings().limits.sms_max_attempts {
                    let next = now + backoff_seconds(row.attempts);
                    outbox::mark_retry(tx, &row.id, next, &text).await?;
                    continue;
                }
                outbox::mark_failed(tx, &row.id, &text).await?;
                (AuditKind::SmsFailed, format!("attempts={}", row.attempts))
            }
        };
        events.push((row, detail));
    }
    outbox::mark_sent(tx, &sent).await?;
    let records: Vec<Record<'_>> = events
        .iter()
        .map(|(row, (kind, detail))| Record {
            organisation: row.organisation_id,
            kind: *kind,
            message: Some(row.message_id),
            recipient: None,
            detail,
        })
        .collect();
    audit::append_all(tx, &records, now).await
}

/// Counts and logs an attempt once it is recorded.
fn recorded(state: &AppState, attempt: &Attempt) {
    match &attempt.result {
        Ok(_) => Metrics::inc(&state.metrics().sms_sent),
        Err(error) => {
            Metrics::inc(&state.metrics().sms_attempts_failed);
            tracing::warn!(
                outbox = %attempt.row.id,
                attempt = attempt.row.attempts,
                %error,
                "SMS attempt failed"
            );
        }
    }
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
    let revoked = messages::purge_revoked(&mut tx).await?;
    outbox::cancel_for_ended_messages(&mut tx, now).await?;
    let sessions = sessions::end_stale(&mut tx, now, idle).await?;
    let keys = row_keys::delete_ended(&mut tx).await?;
    throttle::prune(&mut tx, now - 86_400).await?;
    devices::prune(&mut tx, now).await?;
    let abandoned = checks::abandon_stale(&mut tx, now).await?;
    // The audit chains last, in id order (append_all): the lock order of `audit::lock_chain`,
    // so that a purge cannot deadlock with a batch of submissions, an unlock or the outbox.
    let details: Vec<String> = abandoned
        .iter()
        .map(|a| format!("attempts_left={} reason=abandoned", a.attempts_left))
        .collect();
    let records: Vec<_> = expired
        .iter()
        .map(|(message, organisation, recipient)| {
            Record::message(*organisation, AuditKind::Expired, *message, *recipient)
        })
        .chain(abandoned.iter().zip(&details).map(|(a, detail)| {
            Record::message(
                a.organisation_id,
                AuditKind::EnrollmentCheckFailed,
                a.message_id,
                a.recipient_id,
            )
            .with_detail(detail)
        }))
        .collect();
    audit::append_all(&mut tx, &records, now).await?;
    tx.commit().await?;
    state.store().scrub_if_needed(keys).await?;
    if !expired.is_empty() || revoked > 0 || sessions > 0 || keys > 0 || !abandoned.is_empty() {
        let abandoned_checks = abandoned.len();
        tracing::info!(
            expired = expired.len(),
            revoked,
            sessions,
            keys,
            abandoned_checks,
            "purged"
        );
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
