//! The HTTP cells: the no-op handler, `POST /v1/messages` and `GET /v1/viewer/messages`, each
//! at a concurrency, with the relay's peak memory and CPU over the cell.
//!
//! Submissions are valid first-contact envelopes (sealed to the organisation's key only, as a
//! first message to a patient without a key is), built and serialised before the cell starts so
//! that the client's RSA-OAEP and AES-GCM work is not part of the load; each has its own message
//! id and idempotency key, to one of a thousand patients' numbers. Each cell starts with an
//! empty outbox (the SMS of the previous cell sent), so a cell's figures are its own load: its
//! submissions and the SMS they queue, which the relay sends meanwhile as it would in use.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use shared::ids::OrganisationId;

use crate::load::{self, MakeRequest, Outcome, Timing};
use crate::probe::Probe;
use crate::rig::Rig;

/// A cell of the relay with what the relay process did meanwhile.
#[derive(Debug, Clone, Default)]
pub struct RelayCell {
    /// The load's figures.
    pub load: Outcome,
    /// The relay's peak resident memory during the cell, KiB.
    pub peak_rss_kib: Option<u64>,
    /// Submissions per durable commit (group commit), for submission cells.
    pub per_commit: Option<f64>,
    /// How long the previous cell's SMS took to drain before this cell began.
    pub drained_before: Option<Duration>,
    /// Time spent building the request bodies before the cell (not measured).
    pub built: Option<(usize, Duration)>,
}

/// The no-op handler at `concurrency`.
pub async fn noop(base: &str, concurrency: usize, timing: Timing) -> Outcome {
    let url = format!("{base}/noop");
    let make: MakeRequest = Arc::new(move |client: &reqwest::Client| Some(client.get(&url)));
    let probe = Probe::own();
    load::run(&load::client(), concurrency, timing, make, Some(&probe)).await
}

/// First-contact submissions, serialised, `count` of them (built on every core).
pub fn build_submissions(
    keys: &relay::testkit::Keys,
    organisation: OrganisationId,
    tag: &str,
    count: usize,
) -> Vec<Vec<u8>> {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let now = crate::storage::now();
    let per_thread = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t * per_thread..((t + 1) * per_thread).min(count))
                        .map(|n| {
                            let envelope = relay::testkit::seal(
                                relay::testkit::header(organisation, None, now, 86_400),
                                &format!(
                                    "Reminder: your appointment is on Tuesday at 10:30. Reply \
                                     to reschedule. ({tag} {n})"
                                ),
                                keys,
                                None,
                            );
                            serde_json::to_vec(&json!({
                                "to": format!("+1555030{:04}", n % 1000),
                                "envelope": envelope,
                                "idempotency_key": format!("bench-{tag}-{n}"),
                            }))
                            .expect("a submission serialises")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|part| part.join().expect("a builder thread panicked"))
            .collect()
    })
}

/// Waits for the outbox to empty before a cell (at most `limit`).
async fn drain_first(rig: &Rig, limit: Duration) -> anyhow::Result<Option<Duration>> {
    rig.wait_for_empty_outbox(limit).await
}

/// `POST /v1/messages` at `concurrency` with `count` pre-built submissions.
pub async fn submissions(
    rig: &Rig,
    concurrency: usize,
    timing: Timing,
    count: usize,
    drain_limit: Duration,
) -> anyhow::Result<RelayCell> {
    let drained_before = drain_first(rig, drain_limit).await?;
    let tag = format!("{:?}-c{concurrency}", rig.backend).to_lowercase();
    let built_at = Instant::now();
    let bodies = {
        let keys = relay::testkit::keys();
        let organisation = rig.clinic.id;
        tokio::task::spawn_blocking(move || build_submissions(&keys, organisation, &tag, count))
            .await?
    };
    let built = (bodies.len(), built_at.elapsed());
    // Popped from the end: each body is sent once.
    let pool = Arc::new(Mutex::new(bodies));
    let url = rig.process_url("/v1/messages");
    let api_key = rig.clinic.api_key.clone();
    let make: MakeRequest = Arc::new(move |client: &reqwest::Client| {
        let body = pool.lock().unwrap().pop()?;
        Some(
            client
                .post(&url)
                .bearer_auth(&api_key)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
    });
    let accepted_before = rig.metric("securetext_messages_accepted_total").await;
    let batches_before = rig.metric("securetext_submission_batches_total").await;
    let mut cell = measured(rig, concurrency, timing, make).await?;
    let accepted = rig.metric("securetext_messages_accepted_total").await;
    let batches = rig.metric("securetext_submission_batches_total").await;
    cell.per_commit = match (accepted_before, accepted, batches_before, batches) {
        (Some(a0), Some(a1), Some(b0), Some(b1)) if b1 > b0 => Some((a1 - a0) / (b1 - b0)),
        _ => None,
    };
    cell.drained_before = drained_before;
    cell.built = Some(built);
    Ok(cell)
}

/// `GET /v1/viewer/messages` with the reading patient's session at `concurrency`.
pub async fn viewer_reads(
    rig: &Rig,
    concurrency: usize,
    timing: Timing,
    drain_limit: Duration,
) -> anyhow::Result<RelayCell> {
    let drained_before = drain_first(rig, drain_limit).await?;
    let url = rig.process_url("/v1/viewer/messages");
    let cookie = rig.reader_cookie.clone();
    let make: MakeRequest = Arc::new(move |client: &reqwest::Client| {
        Some(client.get(&url).header(reqwest::header::COOKIE, &cookie))
    });
    let mut cell = measured(rig, concurrency, timing, make).await?;
    cell.drained_before = drained_before;
    Ok(cell)
}

async fn measured(
    rig: &Rig,
    concurrency: usize,
    timing: Timing,
    make: MakeRequest,
) -> anyhow::Result<RelayCell> {
    let probe = rig.probe()?;
    probe.reset_peak();
    let outcome = load::run(&load::client(), concurrency, timing, make, Some(&probe)).await;
    Ok(RelayCell {
        load: outcome,
        peak_rss_kib: probe.peak_rss_kib(),
        ..RelayCell::default()
    })
}

impl Rig {
    /// The absolute URL of `path` on the relay process.
    pub fn process_url(&self, path: &str) -> String {
        use relay::testkit::Endpoint as _;
        self.process.url(path)
    }
}
