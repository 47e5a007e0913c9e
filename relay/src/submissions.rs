//! Group commit of submissions: concurrent `POST /v1/messages` requests share one transaction
//! and one durable commit, and each is answered only once that commit has returned.
//!
//! A durable commit costs a sync of the database's log (SQLite's WAL at `synchronous=FULL`,
//! PostgreSQL's WAL) whatever it carries; with one commit per request a relay accepts about as
//! many messages a second as the disk syncs. Here handlers hand their checked submission to one
//! writer task per relay and wait; the writer takes every submission queued while the previous
//! batch was committing (at most [`MAX_BATCH`]), writes them in one transaction and answers them
//! all after `COMMIT`. Under load a batch holds many submissions; alone, a request waits for no
//! one. Nothing is acknowledged before it is durable, and a failed commit fails every submission
//! of its batch (none was acknowledged).
//!
//! # One transaction, many submissions
//! A submission refused on its own merits (a taken id, a reused idempotency key, a changed
//! patient key, the API key's rate) must not fail the others, so the batch is written in
//! phases that refuse before they write:
//!
//! 1. reads and checks, in arrival order (a later submission sees what earlier ones in the
//!    batch claimed);
//! 2. the send rate of each API key, granted in arrival order, counted once per key;
//! 3. new patients created (in lookup order), then every patient's row and every
//!    organisation's audit chain locked, each in id order — the lock order of
//!    [`audit::lock_chain`], which keeps two relays and concurrent unlocks from deadlocking —
//!    and the patients' keys checked again under the lock (a reset committed since phase 1
//!    refuses a message wrapped to the old key);
//! 4. the messages, their links, their SMS and their audit events, each with a multi-row
//!    statement; a message whose id or idempotency key another relay inserted meanwhile is left
//!    out (`ON CONFLICT DO NOTHING`), which refuses only its own submission.
//!
//! A twin of a submission in the same batch (same idempotency key or message id: a client's
//! retry before its first attempt was answered) waits for a second round right after the
//! commit, where it gets the first one's answer (`200`, or its refusal) instead of a guess.
//!
//! Each phase costs a few statements per batch, not per submission: the audit chain's head is
//! read once per organisation and batch ([`audit::Chains`]), the rows the checks need are read
//! with one `IN (...)` list per kind, and the writes are multi-row inserts.

use std::collections::{HashMap, HashSet};
use std::sync::Weak;

use rand_core::OsRng;
use shared::api::{ErrorCode, SubmitResponse, SubmitStatus};
use shared::audit::AuditKind;
use shared::envelope::{Envelope, WrapRole};
use shared::identity_check::CheckKind;
use shared::ids::{MessageId, OrganisationId, RecipientId};
use shared::phone::PhoneNumber;
use shared::token::{Token, TokenKind};
use tokio::sync::{mpsc, oneshot};

use crate::error::AppError;
use crate::metrics::Metrics;
use crate::state::{AppState, Inner};
use crate::store::audit::{self, Chains, Record};
use crate::store::messages::{self, NewMessage, StoredMessage};
use crate::store::orgs::Organisation;
use crate::store::outbox::{self, NewSms, SealedSms};
use crate::store::recipients::{self, Recipient};
use crate::store::{StoreResult, Tx, throttle};

/// Most submissions written in one transaction. Bounds a batch's time and the transaction's
/// size; beyond a few hundred, larger batches save no more syncs than they cost in latency.
pub const MAX_BATCH: usize = 256;

/// Submissions waiting for the writer; a full queue makes handlers wait (backpressure).
const QUEUE: usize = 4 * MAX_BATCH;

/// A submission that passed every check needing no database.
#[derive(Debug)]
pub struct Submission {
    /// The sender.
    pub organisation: Organisation,
    /// The API key it came with (its send rate).
    pub api_key_id: String,
    /// The patient's number.
    pub phone: PhoneNumber,
    /// The sealed message, checked against the organisation and the clock.
    pub envelope: Envelope,
    /// The client's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// What the link asks the patient before enrolling (first contact only).
    pub identity_check: Option<CheckKind>,
    /// When the request arrived.
    pub now: i64,
}

/// How a submission ended.
#[derive(Debug, Clone)]
pub enum Accepted {
    /// Written and durable now: `201`.
    New(SubmitResponse),
    /// A retry of a submission accepted before (same idempotency key): `200`, the original
    /// answer.
    Replay(SubmitResponse),
}

/// What the writer answers a submission.
pub type Answer = Result<Accepted, AppError>;

struct Job {
    submission: Submission,
    answer: oneshot::Sender<Answer>,
}

/// The handle handlers submit through; the writer task ends when the relay's state is dropped.
#[derive(Debug)]
pub struct Submissions {
    queue: mpsc::Sender<Job>,
}

impl Submissions {
    /// Starts the writer for the state `state` will be (it holds only a weak reference, so the
    /// state and its database pool can go). Must run inside a Tokio runtime.
    pub(crate) fn start(state: Weak<Inner>) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(state, jobs));
        Self { queue }
    }

    /// Queues a submission and waits until its batch is committed (or refused).
    pub async fn submit(&self, submission: Submission) -> Answer {
        let (answer, answered) = oneshot::channel();
        let job = Job { submission, answer };
        let gone = || AppError::Unavailable("the relay is shutting down; retry shortly");
        self.queue.send(job).await.map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }
}

async fn write_batches(state: Weak<Inner>, mut jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Some(inner) = state.upgrade() else {
            return;
        };
        let state = AppState::from_inner(inner);
        let mut round = std::mem::take(&mut batch);
        // A twin of a submission in the same round (a client's retry before its first attempt
        // was answered) waits for the next round, where it sees the first one's outcome.
        while !round.is_empty() {
            let submissions: Vec<&Submission> = round.iter().map(|j| &j.submission).collect();
            let outcomes = match write_batch(&state, &submissions).await {
                Ok(outcomes) => {
                    Metrics::inc(&state.metrics().submission_batches);
                    outcomes
                }
                Err(error) => vec![Some(Err(AppError::from(error))); submissions.len()],
            };
            let mut twins = Vec::new();
            for (job, outcome) in round.into_iter().zip(outcomes) {
                match outcome {
                    // The client may have gone; its submission stands either way.
                    Some(outcome) => drop(job.answer.send(outcome)),
                    None => twins.push(job),
                }
            }
            round = twins;
        }
    }
}

/// A submission that passed phase 1, on its way to being written.
struct Planned<'a> {
    index: usize,
    submission: &'a Submission,
    lookup: [u8; 32],
    recipient: Option<RecipientId>,
}

/// Writes a batch in one transaction; the outcome of each submission, in order, `None` for a
/// twin left to the next round. An error is a failure of the whole batch (nothing of it is
/// written).
async fn write_batch(state: &AppState, batch: &[&Submission]) -> StoreResult<Vec<Option<Answer>>> {
    let mut tx = state.store().begin().await?;
    let mut outcomes: Vec<Option<Answer>> = vec![None; batch.len()];
    let mut planned = check_all(&mut tx, state, batch, &mut outcomes).await?;
    grant_send_rates(&mut tx, state, &mut planned, &mut outcomes).await?;
    lock_in_order(&mut tx, state, &mut planned).await?;
    recheck_locked_patients(&mut tx, &mut planned, &mut outcomes).await?;
    for (index, outcome) in write_all(&mut tx, state, &planned).await? {
        outcomes[index] = Some(outcome);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Phase 3, continued: the patient's key checked again under the lock. A reset or a new
/// enrollment committed since phase 1 read the patient must refuse a message wrapped to the old
/// key (`recipient_key_changed`).
async fn recheck_locked_patients(
    tx: &mut Tx,
    planned: &mut Vec<Planned<'_>>,
    outcomes: &mut [Option<Answer>],
) -> StoreResult<()> {
    let named: Vec<RecipientId> = planned
        .iter()
        .filter_map(|plan| plan.submission.envelope.header.recipient_id)
        .collect();
    let current = recipients::get_all(tx, &named).await?;
    let mut kept = Vec::with_capacity(planned.len());
    for plan in planned.drain(..) {
        if let Some(named) = plan.submission.envelope.header.recipient_id
            && let Err(refusal) = check_recipient(&plan.submission.envelope, current.get(&named))
        {
            outcomes[plan.index] = Some(Err(refusal));
            continue;
        }
        kept.push(plan);
    }
    *planned = kept;
    Ok(())
}

/// Phase 1: the checks that read, in arrival order. Refusals go to `outcomes`; the rest is the
/// plan. The rows they need are read first, with one statement per kind (and organisation),
/// not one per submission: nothing is written in this phase, so reading ahead sees what each
/// check would have seen.
async fn check_all<'a>(
    tx: &mut Tx,
    state: &AppState,
    batch: &[&'a Submission],
    outcomes: &mut [Option<Answer>],
) -> StoreResult<Vec<Planned<'a>>> {
    let mut keys_by_org: HashMap<OrganisationId, Vec<&str>> = HashMap::new();
    for submission in batch {
        if let Some(key) = &submission.idempotency_key {
            keys_by_org
                .entry(submission.organisation.id)
                .or_default()
                .push(key);
        }
    }
    let mut stored_keys = HashMap::new();
    for (org, keys) in keys_by_org {
        for (key, message) in messages::by_idempotency_keys(tx, org, &keys).await? {
            stored_keys.insert((org, key), message);
        }
    }
    let ids: Vec<MessageId> = batch.iter().map(|s| s.envelope.header.message_id).collect();
    let stored_ids = messages::taken(tx, &ids).await?;
    let lookups: Vec<[u8; 32]> = batch
        .iter()
        .map(|s| s.phone.lookup(state.data_key(), s.organisation.id))
        .collect();
    let patients = recipients::find_by_phones(tx, &lookups).await?;

    let mut planned = Vec::new();
    let mut ids_taken = HashSet::new();
    let mut keys_taken = HashSet::new();
    for (index, (&submission, lookup)) in batch.iter().zip(lookups).enumerate() {
        let header = &submission.envelope.header;
        let org = submission.organisation.id;
        if let Some(key) = &submission.idempotency_key {
            if !keys_taken.insert((org, key.clone())) {
                // Its twin is planned in this batch: its answer depends on the twin's outcome,
                // known next round (outcome left `None`).
                continue;
            }
            if let Some(existing) = stored_keys.get(&(org, key.clone())) {
                let replayed = replay(existing, header.message_id, submission.now);
                outcomes[index] = Some(replayed.map(Accepted::Replay));
                continue;
            }
        }
        if !ids_taken.insert(header.message_id) {
            // A twin by message id: as above.
            continue;
        }
        if stored_ids.contains(&header.message_id) {
            outcomes[index] = Some(Err(duplicate_message()));
            continue;
        }
        let recipient = patients.get(&lookup);
        if let Err(refusal) = check_recipient(&submission.envelope, recipient) {
            outcomes[index] = Some(Err(refusal));
            continue;
        }
        planned.push(Planned {
            index,
            submission,
            lookup,
            recipient: recipient.map(|r| r.id),
        });
    }
    Ok(planned)
}

/// A message naming its patient must be wrapped to that patient's current key; a first-contact
/// message names none.
fn check_recipient(envelope: &Envelope, recipient: Option<&Recipient>) -> Result<(), AppError> {
    let Some(named) = envelope.header.recipient_id else {
        return Ok(());
    };
    if recipient.map(|r| r.id) != Some(named) {
        return Err(AppError::invalid(
            "envelope",
            "the header's recipient_id is not the patient with this phone number",
        ));
    }
    let current = recipient
        .and_then(|r| r.enrollment.as_ref())
        .map(|e| e.public_key.fingerprint());
    let wrapped_to = envelope
        .wrap_for(WrapRole::Recipient)
        .map(|w| w.key_fingerprint);
    if current.is_none() || current != wrapped_to {
        return Err(AppError::Refused {
            code: ErrorCode::RecipientKeyChanged,
            message: "the patient's key is not the one this envelope is wrapped to; look the \
                      patient up again",
        });
    }
    Ok(())
}

/// Phase 2: each API key's sends for this minute, granted in arrival order; the excess is
/// refused with `rate_limited` and not counted.
async fn grant_send_rates(
    tx: &mut Tx,
    state: &AppState,
    planned: &mut Vec<Planned<'_>>,
    outcomes: &mut [Option<Answer>],
) -> StoreResult<()> {
    let limit = state.settings().limits.send_rate_per_minute;
    let mut wanted: HashMap<(String, i64), u32> = HashMap::new();
    for plan in planned.iter() {
        let minute = plan.submission.now.div_euclid(60);
        *wanted
            .entry((plan.submission.api_key_id.clone(), minute))
            .or_default() += 1;
    }
    let mut windows: Vec<_> = wanted.into_iter().collect();
    windows.sort();
    let mut left = HashMap::new();
    for ((key_id, minute), count) in windows {
        let key = format!("send:{key_id}:{minute}");
        let now = minute * 60;
        let granted = throttle::grant(tx, &key, count, limit, now).await?;
        left.insert((key_id, minute), granted);
    }
    planned.retain(|plan| {
        let minute = plan.submission.now.div_euclid(60);
        let granted = left
            .get_mut(&(plan.submission.api_key_id.clone(), minute))
            .expect("every window was granted");
        if *granted > 0 {
            *granted -= 1;
            return true;
        }
        let retry_after = u64::try_from(60 - plan.submission.now.rem_euclid(60)).unwrap_or(60);
        outcomes[plan.index] = Some(Err(AppError::TooMany {
            code: ErrorCode::RateLimited,
            message: "too many messages from this API key; retry after the indicated time",
            retry_after,
        }));
        false
    });
    Ok(())
}

/// Phase 3: new patients created, then every patient row and audit chain locked, in id order.
async fn lock_in_order(
    tx: &mut Tx,
    state: &AppState,
    planned: &mut [Planned<'_>],
) -> StoreResult<()> {
    // New numbers in lookup order: two relays creating the same two patients wait for each
    // other's uncommitted rows in one order, never in a cycle.
    let mut new_numbers: Vec<&Planned<'_>> =
        planned.iter().filter(|p| p.recipient.is_none()).collect();
    new_numbers.sort_by_key(|p| p.lookup);
    let mut created: HashMap<[u8; 32], RecipientId> = HashMap::new();
    for plan in new_numbers {
        if created.contains_key(&plan.lookup) {
            continue;
        }
        let recipient = recipients::get_or_create(
            tx,
            RecipientId::random(&mut OsRng),
            plan.submission.organisation.id,
            &plan.lookup,
            plan.submission.phone.seal(state.data_key(), &mut OsRng),
            plan.submission.now,
        )
        .await?;
        created.insert(plan.lookup, recipient.id);
    }
    for plan in planned.iter_mut() {
        if plan.recipient.is_none() {
            plan.recipient = created.get(&plan.lookup).copied();
        }
    }
    let patients: Vec<RecipientId> = planned.iter().filter_map(|p| p.recipient).collect();
    recipients::lock_all(tx, &patients).await?;
    let mut organisations: Vec<OrganisationId> = planned
        .iter()
        .map(|p| p.submission.organisation.id)
        .collect();
    organisations.sort();
    organisations.dedup();
    for organisation in organisations {
        audit::lock_chain(tx, organisation).await?;
    }
    Ok(())
}

/// Phase 4: the messages with their links, SMS and audit events, with multi-row statements:
/// the outcome of each planned submission, by its index in the batch. A message another relay
/// inserted since phase 1 (same id or idempotency key) refuses only its own submission, and
/// nothing of it is written.
async fn write_all(
    tx: &mut Tx,
    state: &AppState,
    planned: &[Planned<'_>],
) -> StoreResult<Vec<(usize, Answer)>> {
    let links: Vec<Token> = planned.iter().map(|_| Token::random(&mut OsRng)).collect();
    let new_messages: Vec<NewMessage<'_>> = planned
        .iter()
        .zip(&links)
        .map(|(plan, link)| NewMessage {
            envelope: &plan.submission.envelope,
            recipient_id: plan
                .recipient
                .expect("phase 3 gave every submission a patient"),
            idempotency_key: plan.submission.idempotency_key.as_deref(),
            link: link.hash(TokenKind::Link),
            now: plan.submission.now,
            identity_check: plan.submission.identity_check,
        })
        .collect();
    let inserted = messages::insert_all(tx, &new_messages).await?;

    let mut sms = Vec::with_capacity(inserted.len());
    let mut events = Vec::with_capacity(2 * inserted.len());
    let mut answers = Vec::with_capacity(planned.len());
    for ((plan, link), message) in planned.iter().zip(&links).zip(&new_messages) {
        let submission = plan.submission;
        let header = &submission.envelope.header;
        if !inserted.contains(&header.message_id) {
            answers.push((plan.index, Err(duplicate_message())));
            continue;
        }
        let org = &submission.organisation;
        // The token goes in the fragment, which browsers never send: the request a TLS proxy,
        // load balancer or CDN logs is `GET /m/`, while the viewer reads the token from
        // `location.hash`. (`GET /m/{link}` still serves links texted in the older path form.)
        let link_url = format!(
            "{}/m/#{}",
            state.settings().public_url,
            link.to_base64url().as_str()
        );
        let body_text = zeroize::Zeroizing::new(sms_body(&org.display_name, &link_url));
        sms.push(NewSms {
            id: MessageId::random(&mut OsRng).to_string(),
            message: header.message_id,
            organisation: org.id,
            sms: SealedSms::seal(state.data_key(), &submission.phone, &body_text),
            now: submission.now,
        });
        for kind in [AuditKind::MessageCreated, AuditKind::SmsQueued] {
            let record = Record::message(org.id, kind, header.message_id, message.recipient_id);
            events.push((record, submission.now));
        }
        answers.push((
            plan.index,
            Ok(Accepted::New(SubmitResponse {
                message_id: header.message_id,
                recipient_id: message.recipient_id,
                status: SubmitStatus::Queued,
                expires_at: header.expires_at,
            })),
        ));
    }
    outbox::enqueue(tx, &sms).await?;
    Chains::default().append_many(tx, &events).await?;
    Ok(answers)
}

/// The SMS text: who it is from and the link. No PHI, no key; one GSM segment.
pub fn sms_body(organisation_name: &str, link: &str) -> String {
    let name: String = organisation_name.chars().take(40).collect();
    format!("{name}: you have a secure message. Open {link}")
}

/// The answer to a submission whose idempotency key `existing` already holds: the original
/// answer for a retry of the same message, `idempotency_key_reused` for another message.
pub fn replay(
    existing: &StoredMessage,
    message: MessageId,
    now: i64,
) -> Result<SubmitResponse, AppError> {
    if existing.id != message {
        return Err(AppError::Refused {
            code: ErrorCode::IdempotencyKeyReused,
            message: "this idempotency key was used for another message",
        });
    }
    Ok(response(existing, now))
}

/// The answer about a stored message.
fn response(message: &StoredMessage, now: i64) -> SubmitResponse {
    SubmitResponse {
        message_id: message.id,
        recipient_id: message.recipient_id,
        status: message.status_at(now).into(),
        expires_at: message.expires_at,
    }
}

/// A message with this id or idempotency key exists (or is being written).
pub fn duplicate_message() -> AppError {
    AppError::Refused {
        code: ErrorCode::DuplicateMessage,
        message: "a message with this id or idempotency key already exists",
    }
}
