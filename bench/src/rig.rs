//! One backend's set-up: a fresh database, the release `relay serve` binary on it (through the
//! test kit's [`RelayProcess`], as the crash and scale-out suites run it), sending SMS to the
//! Twilio stand-in, with an organisation, an enrolled patient with an unlocked session, and the
//! rate limits raised so that the bench measures the relay, not its throttles.
//!
//! The test kit's in-process relay ([`TestRelay`]) stays up beside the process on the same
//! database, serving nothing the load touches: it creates the organisation and enrolls the
//! patient before the process starts, and queues SMS backlogs later (one transaction, as
//! `TestRelay::queue_sms` writes them). It runs no outbox worker, so every SMS is the process's.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay::limits::Limits;
use relay::store::{Backend, outbox};
use relay::testkit::{Patient, RelayProcess, Sender, TestRelay, free_port, header, keys, seal};
use serde_json::json;

use crate::probe::Probe;
use crate::servers::{Served, StandIn, TWILIO_ACCOUNT_SID};

/// Messages one API key may submit per minute, and opens per link and address: far above what
/// two cores can reach, so that no request of the bench is throttled.
pub const SEND_RATE_PER_MINUTE: &str = "1000000000";
/// See [`SEND_RATE_PER_MINUTE`].
pub const OPEN_RATE_PER_MINUTE: &str = "1000000";
/// The stand-in's answer latency, spread evenly between these (a provider API's round trip
/// from a data centre).
pub const TWILIO_LATENCY_MS: (u64, u64) = (20, 50);

/// What the bench sets for the relay process, beyond the test kit's listener, database, data
/// key, viewer directory and `RELAY_LOG=warn`; printed with the results.
pub fn settings(twilio_base: &str, metrics_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("RELAY_SEND_RATE_PER_MINUTE", SEND_RATE_PER_MINUTE.into()),
        ("RELAY_OPEN_RATE_PER_MINUTE", OPEN_RATE_PER_MINUTE.into()),
        ("RELAY_SMS_PROVIDER", "twilio".into()),
        ("RELAY_TWILIO_BASE_URL", twilio_base.into()),
        ("RELAY_TWILIO_ACCOUNT_SID", TWILIO_ACCOUNT_SID.into()),
        ("RELAY_TWILIO_AUTH_TOKEN", "bench-auth-token".into()),
        ("RELAY_TWILIO_FROM", "+15550009999".into()),
        ("RELAY_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}")),
    ]
}

/// One backend's relay process and what the cells need from it.
#[derive(Debug)]
pub struct Rig {
    /// The backend.
    pub backend: Backend,
    /// The in-process relay (set-up and backlogs only).
    pub relay: TestRelay,
    /// The organisation submitting.
    pub clinic: Sender,
    /// The release relay under load.
    pub process: RelayProcess,
    /// The Twilio stand-in the process sends to.
    pub stand_in: Arc<StandIn>,
    _stand_in_server: Served,
    /// `http://…/metrics` of the process.
    pub metrics_url: String,
    /// The `Cookie` header of the reading patient's unlocked session.
    pub reader_cookie: String,
    /// Time from spawning the process to its first `200` on `/readyz`.
    pub start_time: Duration,
}

impl Rig {
    /// Sets up `backend` and starts `binary` on it.
    pub async fn start(backend: Backend, binary: &Path) -> anyhow::Result<Self> {
        let limits = Limits {
            send_rate_per_minute: SEND_RATE_PER_MINUTE.parse()?,
            open_rate_per_minute: OPEN_RATE_PER_MINUTE.parse()?,
            ..Limits::DEFAULT
        };
        let relay = TestRelay::builder(backend)
            .system_clock()
            .limits(limits)
            .start()
            .await;
        let clinic = relay.registered_organisation("Lakeside Health").await;
        let keys = keys();

        // The reading patient: enrolled through a first-contact message (still waiting for the
        // agent's re-wrap), then four messages sealed to the patient's key.
        let patient = Patient {
            key: relay::testkit::keys().patient,
            password: "bench reader password",
        };
        let reader =
            relay::testkit::load::enroll_patients(&relay, &clinic, &patient, 1).await[0].clone();
        for n in 0..4 {
            let envelope = seal(
                header(clinic.id, Some(reader.recipient), relay.now(), 86_400),
                &format!("Your lab results are ready ({n})"),
                &keys,
                Some(&keys.patient),
            );
            let (status, answer) = relay
                .call(
                    reqwest::Method::POST,
                    "/v1/messages",
                    Some(&clinic.api_key),
                    Some(json!({ "to": reader.phone, "envelope": envelope })),
                )
                .await;
            anyhow::ensure!(status == 201, "set-up submission: {status} {answer}");
        }

        let (stand_in, stand_in_server) = StandIn::start(
            Duration::from_millis(TWILIO_LATENCY_MS.0),
            Duration::from_millis(TWILIO_LATENCY_MS.1),
        )?;
        let metrics_port = free_port();
        let settings = settings(&stand_in_server.base(), metrics_port);
        let settings: Vec<(&str, &str)> = settings.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let unused_console = relay.dir.path().join("unused-console-outbox.jsonl");
        let spawned = Instant::now();
        let process = RelayProcess::start(binary, &relay, &unused_console, &settings).await;
        let start_time = spawned.elapsed();
        let session = patient.unlock(&process, &reader.link).await;
        Ok(Self {
            backend,
            relay,
            clinic,
            process,
            stand_in,
            _stand_in_server: stand_in_server,
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            reader_cookie: session.cookie,
            start_time,
        })
    }

    /// The relay process, for `/proc` figures.
    pub fn probe(&self) -> anyhow::Result<Probe> {
        let pid = self
            .process
            .pid()
            .ok_or_else(|| anyhow::anyhow!("the relay process is not running"))?;
        Ok(Probe::of(pid))
    }

    /// SMS pending in the outbox (claimed and in flight included).
    pub async fn pending(&self) -> anyhow::Result<i64> {
        let mut conn = self.relay.state().store().conn().await?;
        Ok(outbox::pending_count(&mut conn).await?)
    }

    /// Outbox rows with `status`.
    pub async fn outbox_rows(&self, status: &str) -> anyhow::Result<i64> {
        let mut conn = self.relay.state().store().conn().await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sms_outbox WHERE status = $1")
            .bind(status)
            .fetch_one(&mut *conn)
            .await?;
        Ok(n)
    }

    /// Waits (polling every 20 ms) until no SMS is pending, at most `limit`; the time it took,
    /// or `None` if SMS were still pending at the limit.
    pub async fn wait_for_empty_outbox(&self, limit: Duration) -> anyhow::Result<Option<Duration>> {
        let started = Instant::now();
        loop {
            if self.pending().await? == 0 {
                return Ok(Some(started.elapsed()));
            }
            if started.elapsed() >= limit {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A counter or gauge of the process's `/metrics` (summed over its labels).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(&self.metrics_url)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let values: Vec<f64> = text
            .lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// Stops the process and the in-process relay and drops a PostgreSQL database; what the
    /// process logged (warnings and errors) goes to standard error, a clue to any figure.
    pub async fn finish(mut self) {
        self.process.kill();
        let log = self.process.log();
        let lines: Vec<&str> = log.lines().collect();
        if !lines.is_empty() {
            eprintln!(
                "[bench] {:?}: the relay logged {} lines; the last ones:",
                self.backend,
                lines.len()
            );
            for line in &lines[lines.len().saturating_sub(20)..] {
                eprintln!("    {line}");
            }
        }
        self.relay.finish().await;
    }
}
