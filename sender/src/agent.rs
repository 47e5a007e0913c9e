//! The re-wrap agent: gives patients who enrolled after a message was sent (first contact) or
//! who enrolled again (forgotten password) the content key of their waiting messages.
//!
//! Each pass lists the relay's pending re-wraps and, for each, checks it against local records,
//! applies the pin rule, re-wraps with the organisation's private key and uploads the wrap.
//! [`Agent::run`] repeats passes as long-polls: each asks the relay to hold its answer until a
//! patient enrolls (`GET /v1/rewraps?wait=20`), so the re-wrap follows an enrollment within a
//! round trip instead of a poll interval. It backs off exponentially while the relay is down,
//! asks again at once only after a pass that re-wrapped something, and otherwise never sooner
//! than the poll interval after the previous pass started (a relay that does not hold answers,
//! or that keeps listing a held key change, is polled, not hammered); it stops when its
//! shutdown future completes.
//!
//! # Invariants
//! (THREAT_MODEL.md, sections 6.2 and 6.3)
//! - Only messages this organisation sent are re-wrapped: the header's organisation must be
//!   ours, the journal must know the message (unless [`AgentPolicy::accept_unrecorded`]), the
//!   envelope must have the digest recorded at sending, and the recipient must be the one the
//!   message was sent to (or, for an envelope naming a recipient, the one it names). A record
//!   whose submission was never confirmed (no recipient id, state not accepted) is not
//!   re-wrapped: the relay's claim about its recipient cannot be checked.
//! - A re-wrap for another recipient id than the one first seen for the journal record's phone
//!   number is held as a recipient change (crate::pins), never pinned on first use.
//! - Each message is unwrapped at most once per recipient key: the wrap is recorded in the
//!   journal before it is uploaded, and a later pass re-uploads the recorded wrap instead of
//!   unwrapping again. This keeps the private-key operation from becoming an oracle that the
//!   relay can query at will (RUSTSEC-2023-0071).
//! - The unwrap is AWS-LC's constant-time RSA-OAEP ([`OrganisationKey`]), never the `rsa`
//!   crate's (RUSTSEC-2023-0071).
//! - A failed unwrap of our own wrap is an alarm: recorded, reported, never retried.
//! - A recipient key that differs from the pinned one is held and reported until an operator
//!   approves it, or approved and reported when [`AgentPolicy::auto_approve_key_changes`] is
//!   set (an explicit opt-in that trades the pin's protection for convenience).
//! - The plaintext that re-wrap decrypts to check the content key is dropped (and wiped)
//!   inside `shared::envelope::Envelope::rewrap`; nothing here sees it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand_core::OsRng;
use serde::Serialize;
use shared::api::{CheckProgress, LongPoll};
use shared::audit::AuditKind;
use shared::envelope::Wrap;
use shared::identity_check::{CheckContext, ExpectedConfirmation, MAX_ATTEMPTS, answer_attempt};
use shared::ids::{CheckAttemptId, MessageId, OrganisationId, RecipientId};
use shared::keys::Fingerprint;

use crate::client::{Client, PendingCheck, PendingRewrap};
use crate::error::ErrorCode;
use crate::journal::{Journal, MadeWrap, RecordState, SentRecord, envelope_digest};
use crate::organisation_key::OrganisationKey;
use crate::pins::{PhoneCheck, PinCheck, PinStore};
use crate::state::StateDir;
use crate::{Error, RelayError};

/// What the agent may decide on its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentPolicy {
    /// Approve changed recipient keys without an operator (each approval is reported).
    pub auto_approve_key_changes: bool,
    /// Re-wrap messages this host's journal does not know (sent from another host with the
    /// same organisation key). Off by default: the journal is the agent's evidence that the
    /// organisation sent the message to this recipient.
    pub accept_unrecorded: bool,
}

/// Something the agent did or refused to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum AgentEvent {
    /// A recipient wrap was made (or re-sent) and installed by the relay.
    Rewrapped {
        /// The message.
        message_id: MessageId,
        /// The patient.
        recipient_id: RecipientId,
        /// The key wrapped to.
        fingerprint: Fingerprint,
        /// Whether this key was pinned now (first use).
        newly_pinned: bool,
        /// Whether the key passed the message's identity check. A key pinned now without one
        /// is an unverified first enrollment: whoever opened the link first chose it.
        identity_verified: bool,
    },
    /// The patient's answer to the message's identity check verified, for this key: the relay
    /// enrolled it, and it is the one key this message is re-wrapped to.
    IdentityVerified {
        /// The message.
        message_id: MessageId,
        /// The patient.
        recipient_id: RecipientId,
        /// The key the answer is bound to.
        fingerprint: Fingerprint,
    },
    /// An answer to the message's identity check did not verify (or came for a message this
    /// host asked no check for); nothing was enrolled or trusted.
    IdentityCheckFailed {
        /// The message.
        message_id: MessageId,
        /// The patient.
        recipient_id: RecipientId,
        /// Answers the message still accepts (0: send the patient a new message).
        attempts_left: u32,
        /// Why.
        reason: String,
    },
    /// The patient said, on the unlock screen, that they never set a password: someone else
    /// may have enrolled with their link. Call the patient on a number already known.
    PasswordDisowned {
        /// The message whose link they opened.
        message_id: MessageId,
        /// The patient.
        recipient_id: RecipientId,
        /// When (Unix seconds).
        at: i64,
    },
    /// The patient enrolled a key that no answer to the message's identity check verified; the
    /// message is not re-wrapped to it.
    IdentityCheckPending {
        /// The message.
        message_id: MessageId,
        /// The patient.
        recipient_id: RecipientId,
        /// The unverified key.
        offered: Fingerprint,
    },
    /// The recipient's key differs from the pinned one; the message waits for approval.
    KeyChangeHeld {
        /// The message.
        message_id: MessageId,
        /// The patient.
        recipient_id: RecipientId,
        /// The trusted fingerprint.
        pinned: Fingerprint,
        /// The new fingerprint.
        offered: Fingerprint,
    },
    /// The relay lists the message for another recipient than the one first seen for the
    /// patient's number; the message waits for `securetext keys approve`.
    RecipientChangeHeld {
        /// The message.
        message_id: MessageId,
        /// The recipient first seen for the number.
        recipient_id: RecipientId,
        /// The recipient the relay lists now.
        offered_recipient_id: RecipientId,
        /// Its key.
        offered: Fingerprint,
    },
    /// A changed key was approved automatically (policy).
    KeyChangeAutoApproved {
        /// The patient.
        recipient_id: RecipientId,
        /// The fingerprint trusted before.
        previous: Fingerprint,
        /// The fingerprint trusted now.
        approved: Fingerprint,
    },
    /// The relay lists a message this host has no record of; it is not re-wrapped.
    NotRecorded {
        /// The message.
        message_id: MessageId,
    },
    /// Something is wrong with this message; it will not be re-wrapped.
    Alarm {
        /// The message.
        message_id: MessageId,
        /// Why.
        reason: String,
    },
    /// The message was revoked or expired meanwhile.
    Ended {
        /// The message.
        message_id: MessageId,
    },
    /// The relay refused the wrap for now (the patient's key changed again, or the patient
    /// was reset); the next pass sees the new state.
    Deferred {
        /// The message.
        message_id: MessageId,
        /// The relay's reason.
        reason: String,
    },
}

impl AgentEvent {
    /// The message concerned, if any.
    pub fn message_id(&self) -> Option<MessageId> {
        match self {
            Self::Rewrapped { message_id, .. }
            | Self::IdentityVerified { message_id, .. }
            | Self::IdentityCheckFailed { message_id, .. }
            | Self::IdentityCheckPending { message_id, .. }
            | Self::PasswordDisowned { message_id, .. }
            | Self::KeyChangeHeld { message_id, .. }
            | Self::RecipientChangeHeld { message_id, .. }
            | Self::NotRecorded { message_id }
            | Self::Alarm { message_id, .. }
            | Self::Ended { message_id }
            | Self::Deferred { message_id, .. } => Some(*message_id),
            Self::KeyChangeAutoApproved { .. } => None,
        }
    }

    /// Events that describe a standing condition (repeated every pass until resolved), which
    /// [`Agent::run`] reports once and then only as periodic reminders.
    fn standing_key(&self) -> Option<String> {
        match self {
            Self::KeyChangeHeld {
                message_id,
                offered,
                ..
            } => Some(format!("held:{message_id}:{offered}")),
            Self::RecipientChangeHeld {
                message_id,
                offered_recipient_id,
                offered,
                ..
            } => Some(format!(
                "recipient-held:{message_id}:{offered_recipient_id}:{offered}"
            )),
            Self::IdentityCheckPending {
                message_id,
                offered,
                ..
            } => Some(format!("check-pending:{message_id}:{offered}")),
            Self::NotRecorded { message_id } => Some(format!("unrecorded:{message_id}")),
            Self::Alarm { message_id, .. } => Some(format!("alarm:{message_id}")),
            _ => None,
        }
    }
}

/// What [`Agent::run`] reports to its caller.
#[derive(Debug)]
pub enum AgentNotice<'a> {
    /// An event of a pass.
    Event(&'a AgentEvent),
    /// A pass failed (relay unreachable or failing, or a local file problem); the agent waits
    /// `retry_in` before the next one.
    PassFailed {
        /// Why.
        error: &'a Error,
        /// The back-off before the next pass.
        retry_in: Duration,
    },
    /// A pass succeeded after failures.
    Recovered,
}

/// Timing of [`Agent::run`].
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// How long each pass asks the relay to wait for an enrollment (0: plain polling).
    pub wait: Duration,
    /// Least time between the starts of two passes when the first re-wrapped nothing; the base
    /// of the back-off.
    pub poll: Duration,
    /// Longest back-off while the relay is down.
    pub max_backoff: Duration,
    /// How often a standing condition (held key change, alarm) is reported again.
    pub remind_every: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(u64::from(LongPoll::MAX_WAIT_SECONDS)),
            poll: Duration::from_millis(1_000),
            max_backoff: Duration::from_secs(60),
            remind_every: Duration::from_secs(600),
        }
    }
}

/// The agent of one organisation.
#[derive(Debug)]
pub struct Agent {
    client: Client,
    organisation_id: OrganisationId,
    /// In AWS-LC: the relay chooses what the agent decrypts, so the decryption is constant-time.
    key: OrganisationKey,
    pins: PinStore,
    journal: Journal,
    policy: AgentPolicy,
    /// What the patient's confirmation must be, per identity-check attempt this agent answered
    /// and has not decided yet. In memory only: after a restart such an attempt fails (the
    /// patient answers again), which keeps the exchange's secrets off the disk.
    expected: Mutex<HashMap<CheckAttemptId, Answered>>,
    /// The audit log's last sequence number read for alarms the patient raised
    /// ([`AgentEvent::PasswordDisowned`]); `None` until the first pass.
    audit_after: Mutex<Option<u64>>,
}

/// Audit events read per request.
const AUDIT_PAGE: usize = 1_000;

/// On start, the agent reports the alarms patients raised this long ago at most.
const ALARMS_LOOKBACK_SECONDS: i64 = 7 * 86_400;

/// An identity-check attempt this agent answered: what it answered it for, and what the
/// patient's confirmation must be.
#[derive(Debug)]
struct Answered {
    message_id: MessageId,
    recipient_id: RecipientId,
    fingerprint: Fingerprint,
    expected: ExpectedConfirmation,
}

impl Agent {
    /// An agent holding the organisation's unsealed private key.
    pub fn new(
        client: Client,
        organisation_id: OrganisationId,
        key: OrganisationKey,
        state: &StateDir,
        policy: AgentPolicy,
    ) -> Self {
        Self {
            client,
            organisation_id,
            key,
            pins: PinStore::new(state),
            journal: Journal::new(state),
            policy,
            expected: Mutex::new(HashMap::new()),
            audit_after: Mutex::new(None),
        }
    }

    /// One pass over the relay's pending re-wraps. Fails (for the caller to back off) when the
    /// relay cannot be reached or fails, or a local state file cannot be used; a refusal that
    /// concerns one message only becomes an event.
    pub async fn run_once(&self) -> Result<Vec<AgentEvent>, Error> {
        self.pass(Duration::ZERO).await.map(|(events, _)| events)
    }

    /// A pass that first waits up to `wait` for something to re-wrap; also says whether it
    /// re-wrapped anything. Only then does the next pass start at once: the relay answers a
    /// long-poll at once while it lists messages the agent leaves alone (held key changes,
    /// messages it did not send, alarms), and asking again at once would spin.
    ///
    /// Identity checks come first, without waiting, then the pass waits for whichever comes
    /// first: an enrollment to re-wrap or a check to answer (a patient waits on both).
    async fn pass(&self, wait: Duration) -> Result<(Vec<AgentEvent>, bool), Error> {
        let mut events = Vec::new();
        let mut progressed = false;
        for item in self.client.wait_for_checks(Duration::ZERO).await? {
            progressed |= self.process_check(&item, &mut events).await?;
        }
        let rewraps = if progressed || wait.is_zero() {
            self.client.wait_for_rewraps(Duration::ZERO).await?
        } else {
            tokio::select! {
                rewraps = self.client.wait_for_rewraps(wait) => rewraps?,
                checks = self.client.wait_for_checks(wait) => {
                    for item in checks? {
                        progressed |= self.process_check(&item, &mut events).await?;
                    }
                    Vec::new()
                }
            }
        };
        for item in rewraps {
            self.process(&item, &mut events).await?;
        }
        self.patient_alarms(&mut events).await?;
        progressed |= events
            .iter()
            .any(|event| matches!(event, AgentEvent::Rewrapped { .. }));
        Ok((events, progressed))
    }

    /// Takes one step of an identity-check attempt: answers it, or decides it once the patient
    /// confirmed. Returns whether it did something (the patient waits for it).
    async fn process_check(
        &self,
        item: &PendingCheck,
        events: &mut Vec<AgentEvent>,
    ) -> Result<bool, Error> {
        let id = item.message_id;
        let Some(record) = self.journal.get(id)? else {
            // Another host's message (or a relay listing what we never sent): that host's
            // agent answers it, or nobody does.
            events.push(AgentEvent::NotRecorded { message_id: id });
            return Ok(false);
        };
        let fail = |reason: &str| self.fail_check(item, reason.to_owned());
        let Some(check) = record.identity_check.clone() else {
            return fail("this host asked no identity check for the message")
                .await
                .map(|event| events.push(event))
                .map(|()| true);
        };
        if record.recipient_id != Some(item.recipient_id) {
            self.raise_alarm(
                id,
                "the relay lists an identity check for another recipient",
            )?;
            return fail("the relay lists the check for another recipient than the message's")
                .await
                .map(|event| events.push(event))
                .map(|()| true);
        }
        let context = CheckContext {
            message_id: &item.message_id,
            organisation_id: &self.organisation_id,
        };
        if let Some(confirmation) = &item.patient_confirmation {
            // The confirmation must match what this agent expects for the attempt it answered,
            // and the relay must list that attempt as it was answered: the same message, patient
            // and key. Otherwise a relay could move a right answer to another key or message.
            let (answered_here, verified, fingerprint) = {
                let expected = self.lock_expected();
                match expected.get(&item.attempt_id) {
                    None => (false, false, item.recipient_fingerprint),
                    Some(answered) => (
                        true,
                        answered.message_id == item.message_id
                            && answered.recipient_id == item.recipient_id
                            && answered.fingerprint == item.recipient_fingerprint
                            && answered.expected.matches(confirmation),
                        answered.fingerprint,
                    ),
                }
            };
            if verified {
                // Recorded before the verdict: once the relay enrolls the key, this host must
                // already trust it for this message.
                self.journal.modify(id, |record| {
                    if let Some(check) = &mut record.identity_check {
                        check.verified = Some(fingerprint);
                    }
                })?;
            }
            let answer = match self.client.check_verdict(item.attempt_id, verified).await {
                Ok(answer) => answer,
                Err(Error::Relay(error)) if !error.is_transient() => {
                    self.lock_expected().remove(&item.attempt_id);
                    events.push(refusal(id, &error));
                    return Ok(false);
                }
                Err(error) => return Err(error),
            };
            self.lock_expected().remove(&item.attempt_id);
            if answer.progress == CheckProgress::Verified {
                self.journal.modify(id, |record| {
                    if let Some(check) = &mut record.identity_check {
                        check.date_of_birth = None;
                        check.code = None;
                    }
                })?;
                events.push(AgentEvent::IdentityVerified {
                    message_id: id,
                    recipient_id: item.recipient_id,
                    fingerprint: item.recipient_fingerprint,
                });
            } else {
                let reason = if !answered_here {
                    "this agent did not answer the attempt (it restarted since)"
                } else if verified {
                    "the patient cannot take the key (enrolled meanwhile, or reset)"
                } else {
                    "the answer or the key did not match"
                };
                events.push(AgentEvent::IdentityCheckFailed {
                    message_id: id,
                    recipient_id: item.recipient_id,
                    attempts_left: answer.attempts_left,
                    reason: reason.to_owned(),
                });
            }
            return Ok(true);
        }
        if item.agent_message.is_some() {
            // Answered (by another agent of this host, or before a restart); the patient is next.
            return Ok(false);
        }
        let Some(answer) = check.answer()? else {
            let event = fail("an answer verified already").await?;
            events.push(event);
            return Ok(true);
        };
        // Counted before the answer leaves, in one locked step with the check of the count, so
        // that neither a crash nor a second agent on this host gives the relay extra guesses.
        let counted = self
            .journal
            .modify(id, |record| match &mut record.identity_check {
                Some(check) if check.answered < MAX_ATTEMPTS => {
                    check.answered += 1;
                    true
                }
                _ => false,
            })?;
        if !counted {
            let event = fail("this agent answered every attempt the message allows").await?;
            events.push(event);
            return Ok(true);
        }
        let (reply, expected) = match answer_attempt(
            &answer,
            &context,
            &item.patient_message,
            &item.recipient_fingerprint,
            OsRng,
        ) {
            Ok(answered) => answered,
            Err(_) => {
                let event = fail("the patient's exchange message is malformed").await?;
                events.push(event);
                return Ok(true);
            }
        };
        self.lock_expected().insert(
            item.attempt_id,
            Answered {
                message_id: item.message_id,
                recipient_id: item.recipient_id,
                fingerprint: item.recipient_fingerprint,
                expected,
            },
        );
        match self.client.reply_check(item.attempt_id, &reply).await {
            Ok(()) => Ok(true),
            Err(Error::Relay(error)) if !error.is_transient() => {
                self.lock_expected().remove(&item.attempt_id);
                events.push(refusal(id, &error));
                Ok(false)
            }
            Err(error) => {
                self.lock_expected().remove(&item.attempt_id);
                Err(error)
            }
        }
    }

    /// Reads the audit log since the last pass for the alarms patients raise in the viewer
    /// ("I never set a password"); the first pass reads from the start and reports those of
    /// the last [`ALARMS_LOOKBACK_SECONDS`]. One pass lasts at most one long-poll, so an alarm is
    /// reported within about 20 seconds.
    async fn patient_alarms(&self, events: &mut Vec<AgentEvent>) -> Result<(), Error> {
        let known = *self
            .audit_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let since = crate::state::unix_now() - ALARMS_LOOKBACK_SECONDS;
        let mut after = known.unwrap_or(0);
        loop {
            let page = self.client.audit_page(after, AUDIT_PAGE).await?;
            for event in &page {
                if event.kind == AuditKind::PasswordDisowned
                    && (known.is_some() || event.at >= since)
                    && let (Some(message_id), Some(recipient_id)) =
                        (event.message_id, event.recipient_id)
                {
                    events.push(AgentEvent::PasswordDisowned {
                        message_id,
                        recipient_id,
                        at: event.at,
                    });
                }
                after = after.max(event.seq);
            }
            if page.len() < AUDIT_PAGE {
                break;
            }
        }
        *self
            .audit_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(after);
        Ok(())
    }

    /// Fails an attempt (the verdict `false`) and describes why.
    async fn fail_check(&self, item: &PendingCheck, reason: String) -> Result<AgentEvent, Error> {
        self.lock_expected().remove(&item.attempt_id);
        let attempts_left = match self.client.check_verdict(item.attempt_id, false).await {
            Ok(answer) => answer.attempts_left,
            Err(Error::Relay(error)) if !error.is_transient() => 0,
            Err(error) => return Err(error),
        };
        Ok(AgentEvent::IdentityCheckFailed {
            message_id: item.message_id,
            recipient_id: item.recipient_id,
            attempts_left,
            reason,
        })
    }

    fn lock_expected(&self) -> std::sync::MutexGuard<'_, HashMap<CheckAttemptId, Answered>> {
        self.expected.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs passes until `shutdown` completes, reporting through `report`. Shutdown is
    /// prompt: a pass in flight is abandoned, which is safe because every local write is
    /// atomic and complete before the request that depends on it, and every relay request
    /// the agent makes can be repeated.
    pub async fn run(
        &self,
        options: RunOptions,
        shutdown: impl Future<Output = ()>,
        mut report: impl FnMut(AgentNotice<'_>),
    ) {
        tokio::pin!(shutdown);
        let mut failures: u32 = 0;
        let mut reported: HashMap<String, Instant> = HashMap::new();
        loop {
            let started = Instant::now();
            let pass = tokio::select! {
                () = &mut shutdown => return,
                pass = self.pass(options.wait) => pass,
            };
            let wait = match pass {
                Ok((events, progressed)) => {
                    if failures > 0 {
                        report(AgentNotice::Recovered);
                    }
                    failures = 0;
                    let now = Instant::now();
                    let mut standing = HashMap::new();
                    for event in &events {
                        match event.standing_key() {
                            Some(key) => {
                                let last = reported.get(&key).copied();
                                let due = last.is_none_or(|at| now - at >= options.remind_every);
                                if due {
                                    report(AgentNotice::Event(event));
                                }
                                standing.insert(key, if due { now } else { last.unwrap_or(now) });
                            }
                            None => report(AgentNotice::Event(event)),
                        }
                    }
                    // Conditions that resolved are forgotten, so a recurrence is reported anew.
                    reported = standing;
                    if progressed {
                        Duration::ZERO
                    } else {
                        options.poll.saturating_sub(started.elapsed())
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let retry_in = options
                        .poll
                        .saturating_mul(1u32 << failures.min(16))
                        .min(options.max_backoff);
                    report(AgentNotice::PassFailed {
                        error: &error,
                        retry_in,
                    });
                    retry_in
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn process(
        &self,
        item: &PendingRewrap,
        events: &mut Vec<AgentEvent>,
    ) -> Result<(), Error> {
        let id = item.message_id;
        let alarm = |reason: &str| AgentEvent::Alarm {
            message_id: id,
            reason: reason.to_owned(),
        };
        if let Some(reason) = self.public_check(item) {
            events.push(alarm(reason));
            return Ok(());
        }
        let record = match self.journal.get(id)? {
            Some(record) => record,
            None if self.policy.accept_unrecorded => {
                let mut record = SentRecord::for_envelope(&item.envelope);
                record.state = RecordState::Unrecorded;
                record.recipient_id = Some(item.recipient_id);
                self.journal.put(id, record.clone())?;
                record
            }
            None => {
                events.push(AgentEvent::NotRecorded { message_id: id });
                return Ok(());
            }
        };
        if let Some(reason) = &record.alarm {
            events.push(alarm(reason));
            return Ok(());
        }
        if record.digest == envelope_digest(&item.envelope)
            && (record.recipient_id.is_none()
                || !matches!(
                    record.state,
                    RecordState::Accepted | RecordState::Unrecorded
                ))
        {
            // The submission's answer never arrived (or not yet): this host does not know
            // which recipient the message went to, so the relay's word cannot be checked.
            events.push(AgentEvent::NotRecorded { message_id: id });
            return Ok(());
        }
        let mismatch = if record.digest != envelope_digest(&item.envelope) {
            Some("the envelope differs from the one this host sent")
        } else if record.recipient_id != Some(item.recipient_id) {
            Some("the relay lists the message for another recipient than it was sent to")
        } else {
            None
        };
        if let Some(reason) = mismatch {
            self.raise_alarm(id, reason)?;
            events.push(alarm(reason));
            return Ok(());
        }

        let fingerprint = item.recipient_fingerprint;
        // The recipient id is the relay's word: the journal's phone hash says which recipient
        // this host first saw for the number; another one is a change held for approval, not a
        // first use.
        if let Some(phone) = &record.phone_hash
            && let PhoneCheck::Changed {
                bound,
                offered: Some(offered_recipient_id),
            } = self
                .pins
                .check_phone(phone, Some(item.recipient_id), Some(fingerprint))?
        {
            events.push(AgentEvent::RecipientChangeHeld {
                message_id: id,
                recipient_id: bound,
                offered_recipient_id,
                offered: fingerprint,
            });
            return Ok(());
        }
        let mut newly_pinned = false;
        let identity_verified = record
            .identity_check
            .as_ref()
            .is_some_and(|check| check.verified == Some(fingerprint));
        // A message with an identity check is re-wrapped only to the key its answer verified:
        // not to one that merely enrolled first, nor to one pinned through another (unchecked)
        // message. Decided before the pin store is consulted, which pins a first use.
        if record.identity_check.is_some() && !identity_verified {
            events.push(AgentEvent::IdentityCheckPending {
                message_id: id,
                recipient_id: item.recipient_id,
                offered: fingerprint,
            });
            return Ok(());
        }
        match self.pins.check(item.recipient_id, fingerprint)? {
            PinCheck::FirstUse => newly_pinned = true,
            PinCheck::Matches => {}
            PinCheck::Changed { pinned, offered } if !self.policy.auto_approve_key_changes => {
                events.push(AgentEvent::KeyChangeHeld {
                    message_id: id,
                    recipient_id: item.recipient_id,
                    pinned,
                    offered,
                });
                return Ok(());
            }
            PinCheck::Changed { offered, .. } => {
                let approval = self.pins.approve(item.recipient_id, Some(offered))?;
                events.push(AgentEvent::KeyChangeAutoApproved {
                    recipient_id: item.recipient_id,
                    previous: approval.previous,
                    approved: approval.approved,
                });
            }
        }

        let wrap = match record.wrap_for(fingerprint) {
            Some(made) => made.wrap.clone(),
            None => match item
                .envelope
                .rewrap(&self.key, &item.recipient_public_key, &mut OsRng)
            {
                Ok(wrap) => {
                    self.journal.modify(id, |record| {
                        record.wraps.push(MadeWrap {
                            wrap: wrap.clone(),
                            uploaded: false,
                        });
                    })?;
                    wrap
                }
                Err(error) => {
                    let reason = match error {
                        shared::Error::NotAddressedToKey => {
                            "the organisation wrap is not for this organisation key"
                        }
                        _ => "the organisation wrap or the ciphertext does not open",
                    };
                    self.raise_alarm(id, reason)?;
                    events.push(alarm(reason));
                    return Ok(());
                }
            },
        };
        events.push(
            self.upload(item, &wrap, newly_pinned, identity_verified)
                .await?,
        );
        Ok(())
    }

    /// Checks that need nothing but the item: the envelope is well-formed, ours, and about the
    /// recipient the relay names.
    fn public_check(&self, item: &PendingRewrap) -> Option<&'static str> {
        let header = &item.envelope.header;
        if item.envelope.validate().is_err() {
            Some("the envelope is malformed")
        } else if header.message_id != item.message_id {
            Some("the envelope belongs to another message id")
        } else if header.organisation_id != self.organisation_id {
            Some("the envelope names another organisation")
        } else if header.recipient_id.is_some_and(|r| r != item.recipient_id) {
            Some("the envelope names another recipient than the relay lists")
        } else {
            None
        }
    }

    async fn upload(
        &self,
        item: &PendingRewrap,
        wrap: &Wrap,
        newly_pinned: bool,
        identity_verified: bool,
    ) -> Result<AgentEvent, Error> {
        let id = item.message_id;
        match self.client.upload_wrap(id, wrap).await {
            Ok(fingerprint) => {
                self.journal.modify(id, |record| {
                    for made in &mut record.wraps {
                        if made.wrap.key_fingerprint == fingerprint {
                            made.uploaded = true;
                        }
                    }
                })?;
                Ok(AgentEvent::Rewrapped {
                    message_id: id,
                    recipient_id: item.recipient_id,
                    fingerprint,
                    newly_pinned,
                    identity_verified,
                })
            }
            Err(Error::Relay(error)) if !error.is_transient() => Ok(refusal(id, &error)),
            Err(error) => Err(error),
        }
    }

    fn raise_alarm(&self, id: MessageId, reason: &str) -> Result<(), Error> {
        match self.journal.modify(id, |record| {
            record.alarm = Some(reason.to_owned());
        }) {
            Ok(()) | Err(Error::Input(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// Turns a relay refusal of one wrap into an event.
fn refusal(id: MessageId, error: &RelayError) -> AgentEvent {
    match error.code {
        ErrorCode::MessageEnded | ErrorCode::NotFound => AgentEvent::Ended { message_id: id },
        _ => AgentEvent::Deferred {
            message_id: id,
            reason: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table of `--json` agent events names every event the agent emits, under the
    /// tag it is serialised with.
    #[test]
    fn every_event_is_in_the_readme() {
        let readme = include_str!("../README.md");
        let message_id = MessageId::from_bytes([1; 16]);
        let recipient_id = RecipientId::from_bytes([2; 16]);
        let fingerprint = Fingerprint::from_bytes([3; 32]);
        let events = [
            AgentEvent::Rewrapped {
                message_id,
                recipient_id,
                fingerprint,
                newly_pinned: false,
                identity_verified: false,
            },
            AgentEvent::IdentityVerified {
                message_id,
                recipient_id,
                fingerprint,
            },
            AgentEvent::IdentityCheckFailed {
                message_id,
                recipient_id,
                attempts_left: 0,
                reason: String::new(),
            },
            AgentEvent::IdentityCheckPending {
                message_id,
                recipient_id,
                offered: fingerprint,
            },
            AgentEvent::PasswordDisowned {
                message_id,
                recipient_id,
                at: 0,
            },
            AgentEvent::KeyChangeHeld {
                message_id,
                recipient_id,
                pinned: fingerprint,
                offered: fingerprint,
            },
            AgentEvent::RecipientChangeHeld {
                message_id,
                recipient_id,
                offered_recipient_id: recipient_id,
                offered: fingerprint,
            },
            AgentEvent::KeyChangeAutoApproved {
                recipient_id,
                previous: fingerprint,
                approved: fingerprint,
            },
            AgentEvent::NotRecorded { message_id },
            AgentEvent::Alarm {
                message_id,
                reason: String::new(),
            },
            AgentEvent::Ended { message_id },
            AgentEvent::Deferred {
                message_id,
                reason: String::new(),
            },
        ];
        for event in &events {
            // A new variant fails to compile here until it is added above (and to the README).
            match event {
                AgentEvent::Rewrapped { .. }
                | AgentEvent::IdentityVerified { .. }
                | AgentEvent::IdentityCheckFailed { .. }
                | AgentEvent::IdentityCheckPending { .. }
                | AgentEvent::PasswordDisowned { .. }
                | AgentEvent::KeyChangeHeld { .. }
                | AgentEvent::RecipientChangeHeld { .. }
                | AgentEvent::KeyChangeAutoApproved { .. }
                | AgentEvent::NotRecorded { .. }
                | AgentEvent::Alarm { .. }
                | AgentEvent::Ended { .. }
                | AgentEvent::Deferred { .. } => {}
            }
            let value = serde_json::to_value(event).unwrap();
            let tag = value["event"].as_str().unwrap();
            assert!(
                readme.contains(&format!("| `{tag}` |")),
                "sender/README.md does not document agent event `{tag}`"
            );
            for key in value.as_object().unwrap().keys().filter(|k| *k != "event") {
                let row = readme
                    .lines()
                    .find(|line| line.starts_with(&format!("| `{tag}` |")))
                    .unwrap();
                assert!(row.contains(&format!("`{key}`")), "`{tag}` lacks `{key}`");
            }
        }
    }
}
