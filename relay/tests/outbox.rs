//! The SMS outbox under load and at its edges: the drain rate of a backlog through the Twilio
//! provider, a provider call that never ends, and a shutdown with a backlog, in-process and of
//! the real binary.
//!
//! Every SMS is sent exactly once: each test counts the provider calls per SMS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay::limits::Limits;
use relay::sms::twilio::{TwilioConfig, TwilioProvider};
use relay::sms::{Accepted, OutgoingSms, SendFuture, SmsProvider};
use relay::state::AppState;
use relay::store::Backend;
use relay::testkit::{RelayProcess, TestRelay, wait_until};
use tokio::sync::watch;

const PHONE: &str = "+15550001111";

/// Provider calls per outbox reference, shared by the providers of several instances.
#[derive(Debug, Default)]
struct Calls(Mutex<HashMap<String, u32>>);

impl Calls {
    fn add(&self, reference: &str) {
        *self
            .0
            .lock()
            .unwrap()
            .entry(reference.to_owned())
            .or_default() += 1;
    }

    fn of(&self, reference: &str) -> u32 {
        self.0.lock().unwrap().get(reference).copied().unwrap_or(0)
    }

    fn total(&self) -> u32 {
        self.0.lock().unwrap().values().sum()
    }

    /// The most calls any one SMS had.
    fn max(&self) -> u32 {
        self.0.lock().unwrap().values().copied().max().unwrap_or(0)
    }

    /// `count` SMS were called, each once.
    fn assert_each_once(&self, count: usize) {
        let calls = self.0.lock().unwrap();
        assert_eq!(calls.len(), count, "SMS called");
        let repeated = calls.values().filter(|n| **n != 1).count();
        assert_eq!(repeated, 0, "SMS called more than once");
    }
}

/// A provider that takes `delay` per SMS; every call counts, from its start.
#[derive(Debug)]
struct Slow {
    delay: Duration,
    calls: Arc<Calls>,
}

impl SmsProvider for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }

    fn send<'a>(&'a self, sms: &'a OutgoingSms) -> SendFuture<'a> {
        Box::pin(async move {
            self.calls.add(&sms.reference);
            tokio::time::sleep(self.delay).await;
            Ok(Accepted {
                provider_id: format!("slow-{}", sms.reference),
            })
        })
    }
}

/// Starts `state`'s outbox worker; the sender stops it.
fn worker(state: AppState) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = watch::channel(false);
    (stop, tokio::spawn(relay::jobs::run_outbox(state, stopped)))
}

/// Status, lease end and attempts of each outbox row.
async fn rows(relay: &TestRelay) -> HashMap<String, (String, i64, i64)> {
    sqlx::query_as::<_, (String, String, i64, i64)>(
        "SELECT id, status, claimed_until, attempts FROM sms_outbox",
    )
    .fetch_all(&mut *relay.state().store().conn().await.unwrap())
    .await
    .unwrap()
    .into_iter()
    .map(|(id, status, claimed_until, attempts)| (id, (status, claimed_until, attempts)))
    .collect()
}

/// What the test provider of [`a_hung_provider_call_ends_before_its_lease`] saw.
#[derive(Debug, Default)]
struct Hangs {
    /// A first call is outstanding.
    outstanding: AtomicBool,
    /// Calls that began while the first one was outstanding.
    overlapping: AtomicU32,
    /// Calls that accepted the SMS.
    delivered: AtomicU32,
    calls: AtomicU32,
}

/// Clears the "outstanding" flag when the hung call's future is dropped (cancelled).
struct Outstanding<'a>(&'a AtomicBool);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Hangs forever on its first call when `hang_first` is set; accepts every other call.
#[derive(Debug)]
struct Hanging {
    hang_first: AtomicBool,
    seen: Arc<Hangs>,
}

impl SmsProvider for Hanging {
    fn name(&self) -> &'static str {
        "hanging"
    }

    fn send<'a>(&'a self, sms: &'a OutgoingSms) -> SendFuture<'a> {
        Box::pin(async move {
            self.seen.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang_first.swap(false, Ordering::SeqCst) {
                self.seen.outstanding.store(true, Ordering::SeqCst);
                let _outstanding = Outstanding(&self.seen.outstanding);
                std::future::pending::<()>().await;
            }
            if self.seen.outstanding.load(Ordering::SeqCst) {
                self.seen.overlapping.fetch_add(1, Ordering::SeqCst);
            }
            self.seen.delivered.fetch_add(1, Ordering::SeqCst);
            Ok(Accepted {
                provider_id: format!("hanging-{}", sms.reference),
            })
        })
    }
}

/// Issue 13: a provider call that never answers used to hold its SMS past the claim lease, so
/// that another instance claimed and sent it while the first call was still outstanding (two
/// texts if the first call went through after all). The outbox now cuts every provider call at
/// `sms_timeout`, well inside the lease: the attempt is a temporary failure, retried after the
/// backoff, and the SMS is delivered once.
#[tokio::test]
async fn a_hung_provider_call_ends_before_its_lease() {
    let limits = Limits {
        outbox_lease: Duration::from_secs(4),
        outbox_poll: Duration::from_millis(100),
        sms_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let relay = TestRelay::builder(Backend::Postgres)
        .system_clock()
        .limits(limits)
        .start()
        .await;
    let clinic = relay.registered_organisation("Lakeside Health").await;
    let references = relay.queue_sms(&clinic, PHONE, 1).await;
    let seen = Arc::new(Hangs::default());
    let provider = |hang_first| {
        Arc::new(Hanging {
            hang_first: AtomicBool::new(hang_first),
            seen: seen.clone(),
        })
    };
    let (stop_a, a) = worker(relay.instance(provider(true)).await);
    wait_until(
        Duration::from_secs(10),
        "instance A's first call",
        || async { seen.outstanding.load(Ordering::SeqCst).then_some(()) },
    )
    .await;
    let (stop_b, b) = worker(relay.instance(provider(false)).await);
    wait_until(Duration::from_secs(20), "the SMS delivered", || async {
        (seen.delivered.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    assert_eq!(
        seen.overlapping.load(Ordering::SeqCst),
        0,
        "the SMS was sent again while the first call was outstanding"
    );
    stop_a.send(true).unwrap();
    stop_b.send(true).unwrap();
    for worker in [a, b] {
        tokio::time::timeout(Duration::from_secs(10), worker)
            .await
            .expect("the worker stops")
            .unwrap();
    }
    assert_eq!(seen.delivered.load(Ordering::SeqCst), 1, "delivered once");
    assert_eq!(
        seen.calls.load(Ordering::SeqCst),
        2,
        "the cut call, then the retry"
    );
    let (status, _, attempts) = rows(&relay).await.remove(&references[0]).unwrap();
    assert_eq!((status.as_str(), attempts), ("sent", 2));
    relay.finish().await;
}

#[tokio::test]
async fn shutdown_with_a_backlog_sqlite() {
    shutdown_with_a_backlog(Backend::Sqlite).await;
}

#[tokio::test]
async fn shutdown_with_a_backlog_postgres() {
    shutdown_with_a_backlog(Backend::Postgres).await;
}

/// A worker with thousands of SMS queued and a provider taking 50 ms per SMS is told to stop:
/// it returns within seconds (the figure is printed), and every SMS is then either recorded
/// sent, after exactly one provider call, or still pending, never called, and sendable at once,
/// which another instance then does.
async fn shutdown_with_a_backlog(backend: Backend) {
    const BACKLOG: usize = 3000;
    let limits = Limits {
        sms_concurrency: Some(16),
        ..Limits::default()
    };
    let relay = TestRelay::builder(backend)
        .system_clock()
        .limits(limits)
        .start()
        .await;
    let clinic = relay.registered_organisation("Lakeside Health").await;
    let references = relay.queue_sms(&clinic, PHONE, BACKLOG).await;
    let calls = Arc::new(Calls::default());
    let slow = Arc::new(Slow {
        delay: Duration::from_millis(50),
        calls: calls.clone(),
    });
    let (stop, running) = worker(relay.instance(slow).await);
    wait_until(Duration::from_secs(20), "the first SMS sent", || async {
        (calls.total() >= 20).then_some(())
    })
    .await;
    let asked = Instant::now();
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the outbox worker stops within 10 s of shutdown")
        .unwrap();
    let took = asked.elapsed();

    let now = relay.now();
    let rows = rows(&relay).await;
    let mut sent = 0;
    for reference in &references {
        let (status, claimed_until, attempts) = &rows[reference];
        match status.as_str() {
            "sent" => {
                assert_eq!(calls.of(reference), 1, "{reference}: sent once");
                sent += 1;
            }
            "pending" => {
                assert_eq!(calls.of(reference), 0, "{reference}: pending, never called");
                assert!(*claimed_until <= now, "{reference}: still claimed");
                assert_eq!(*attempts, 0, "{reference}: an attempt consumed");
            }
            other => panic!("{reference}: {other}"),
        }
    }
    println!(
        "{backend:?}: the outbox stopped {:.0} ms after shutdown, {sent} of {BACKLOG} SMS sent, \
         the rest pending",
        took.as_secs_f64() * 1000.0
    );

    let next = relay
        .instance(Arc::new(Slow {
            delay: Duration::ZERO,
            calls: calls.clone(),
        }))
        .await;
    relay::jobs::send_due(&next).await.unwrap();
    for reference in &references {
        assert_eq!(calls.of(reference), 1, "{reference}: sent exactly once");
    }
    relay.finish().await;
}

/// What a stand-in for Twilio's Messages endpoint received: calls per SMS body (each SMS of a
/// backlog has its own), and how long it takes to answer.
#[derive(Debug)]
struct StandIn {
    delay: Duration,
    calls: Calls,
    sids: AtomicU32,
}

async fn stand_in_answer(
    axum::extract::State(stand_in): axum::extract::State<Arc<StandIn>>,
    body: axum::body::Bytes,
) -> impl axum::response::IntoResponse {
    let sms = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "Body")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    stand_in.calls.add(&sms);
    tokio::time::sleep(stand_in.delay).await;
    let sid = stand_in.sids.fetch_add(1, Ordering::SeqCst);
    (
        axum::http::StatusCode::CREATED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"sid":"SM{sid:032x}","status":"queued"}}"#),
    )
}

/// Starts a stand-in that answers every request as Twilio answers an accepted SMS (`201`, a
/// fresh `SM…` sid) after `delay`.
async fn twilio_stand_in(delay: Duration) -> (url::Url, Arc<StandIn>) {
    let stand_in = Arc::new(StandIn {
        delay,
        calls: Calls::default(),
        sids: AtomicU32::new(0),
    });
    let app = axum::Router::new()
        .fallback(stand_in_answer)
        .with_state(stand_in.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url.parse().unwrap(), stand_in)
}

fn twilio(base_url: &url::Url) -> Arc<TwilioProvider> {
    Arc::new(
        TwilioProvider::new(TwilioConfig {
            base_url: base_url.clone(),
            account_sid: "AC00000000000000000000000000000001".into(),
            auth_token: "test-auth-token".parse().unwrap(),
            from: Some("+15550009999".into()),
            messaging_service_sid: None,
            status_callback: None,
            request_timeout: relay::sms::twilio::DEFAULT_REQUEST_TIMEOUT,
        })
        .unwrap(),
    )
}

#[tokio::test]
async fn drain_rate_sqlite() {
    drain_rate(Backend::Sqlite).await;
}

#[tokio::test]
async fn drain_rate_postgres() {
    drain_rate(Backend::Postgres).await;
}

/// Issue 11: a backlog drains through the Twilio provider, 32 calls at once, to a local
/// stand-in that answers at once; each SMS is sent once. The rate is printed (a benchmark
/// figure, not asserted).
async fn drain_rate(backend: Backend) {
    const BACKLOG: usize = 3000;
    let relay = TestRelay::start(backend).await;
    let clinic = relay.registered_organisation("Lakeside Health").await;
    relay.queue_sms(&clinic, PHONE, BACKLOG).await;
    let (url, stand_in) = twilio_stand_in(Duration::ZERO).await;
    let instance = relay.instance(twilio(&url)).await;
    let started = Instant::now();
    let attempts = relay::jobs::send_due(&instance).await.unwrap();
    let took = started.elapsed();
    assert_eq!(attempts, BACKLOG);
    stand_in.calls.assert_each_once(BACKLOG);
    assert!(
        rows(&relay)
            .await
            .values()
            .all(|(status, _, _)| status == "sent")
    );
    println!(
        "{backend:?}: drained {BACKLOG} SMS through the Twilio provider in {:.2} s: {:.0} SMS/s",
        took.as_secs_f64(),
        BACKLOG as f64 / took.as_secs_f64()
    );
    relay.finish().await;
}

#[tokio::test]
async fn the_binary_exits_soon_after_sigterm_with_a_backlog_sqlite() {
    the_binary_exits_soon_after_sigterm_with_a_backlog(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_binary_exits_soon_after_sigterm_with_a_backlog_postgres() {
    the_binary_exits_soon_after_sigterm_with_a_backlog(Backend::Postgres).await;
}

/// `relay serve`, the real binary, with thousands of SMS queued and a Twilio stand-in taking
/// 50 ms per SMS, gets SIGTERM: it exits, successfully, within seconds (printed); every SMS it
/// sent is recorded sent, the rest are pending and sendable at once, and another instance sends
/// those: each SMS exactly once.
async fn the_binary_exits_soon_after_sigterm_with_a_backlog(backend: Backend) {
    const BACKLOG: usize = 3000;
    let relay = TestRelay::builder(backend).system_clock().start().await;
    let clinic = relay.registered_organisation("Lakeside Health").await;
    relay.queue_sms(&clinic, PHONE, BACKLOG).await;
    let (url, stand_in) = twilio_stand_in(Duration::from_millis(50)).await;
    let settings = [
        ("RELAY_SMS_PROVIDER", "twilio"),
        ("RELAY_TWILIO_BASE_URL", url.as_str()),
        (
            "RELAY_TWILIO_ACCOUNT_SID",
            "AC00000000000000000000000000000001",
        ),
        ("RELAY_TWILIO_AUTH_TOKEN", "test-auth-token"),
        ("RELAY_TWILIO_FROM", "+15550009999"),
    ];
    // The console outbox file is not used: the settings choose Twilio.
    let unused = relay.dir.path().join("unused-console-outbox.jsonl");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_relay"));
    let mut process = RelayProcess::start(binary, &relay, &unused, &settings).await;
    wait_until(Duration::from_secs(30), "the binary sending", || async {
        (stand_in.calls.total() >= 100).then_some(())
    })
    .await;
    let asked = Instant::now();
    let exit = process.terminate(Duration::from_secs(15)).await;
    let took = asked.elapsed();
    assert!(exit.success(), "{exit}");

    // Each SMS body is another SMS: no call was repeated, every call is recorded sent, and the
    // SMS not sent are pending, unclaimed and without a consumed attempt.
    let now = relay.now();
    let rows = rows(&relay).await;
    let sent = rows
        .values()
        .filter(|(status, _, _)| status == "sent")
        .count();
    assert_eq!(stand_in.calls.max(), 1, "an SMS sent twice");
    assert_eq!(
        sent,
        stand_in.calls.total() as usize,
        "calls not recorded sent"
    );
    for (reference, (status, claimed_until, attempts)) in &rows {
        if status != "sent" {
            assert_eq!(status, "pending", "{reference}");
            assert!(*claimed_until <= now, "{reference}: still claimed");
            assert_eq!(*attempts, 0, "{reference}: an attempt consumed");
        }
    }
    println!(
        "{backend:?}: relay serve exited {:.0} ms after SIGTERM, {sent} of {BACKLOG} SMS sent, \
         the rest pending",
        took.as_secs_f64() * 1000.0
    );

    let next = relay.instance(twilio(&url)).await;
    relay::jobs::send_due(&next).await.unwrap();
    stand_in.calls.assert_each_once(BACKLOG);
    relay.finish().await;
}

/// A claim takes at most its limit (on PostgreSQL the locking subquery, run once per outer row
/// of a plain `IN`, once claimed 4 of 5 SMS for a limit of 3), and no other claim takes the same
/// SMS. SMS claimed but never handed to the provider (the shutdown came while the worker was
/// claiming) are released: unclaimed, their attempt uncounted, sendable at once by any instance.
#[tokio::test]
async fn claims_keep_their_limit_and_released_claims_are_sendable_at_once() {
    use relay::store::outbox::{claim_due, release};
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let relay = TestRelay::start(backend).await;
        let clinic = relay.registered_organisation("Lakeside Health").await;
        relay.queue_sms(&clinic, PHONE, 5).await;
        let store = relay.state().store();
        let mut tx = store.begin().await.unwrap();
        let claimed = claim_due(&mut tx, relay.now(), 60, 3).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(claimed.len(), 3, "{backend:?}");
        let mut tx = store.begin().await.unwrap();
        let others = claim_due(&mut tx, relay.now(), 60, 10).await.unwrap();
        assert_eq!(others.len(), 2, "{backend:?}: claimed SMS claimed again");
        drop(tx);

        let ids: Vec<&str> = claimed.iter().map(|row| row.id.as_str()).collect();
        release(&mut store.conn().await.unwrap(), &ids)
            .await
            .unwrap();
        let rows = rows(&relay).await;
        for id in &ids {
            assert_eq!(rows[*id], ("pending".to_owned(), 0, 0), "{backend:?}: {id}");
        }
        relay.deliver_sms().await;
        let mut sent: Vec<String> = relay
            .sms()
            .iter()
            .map(|sms| sms["reference"].as_str().unwrap().to_owned())
            .collect();
        sent.sort();
        sent.dedup();
        assert_eq!(
            (sent.len(), relay.sms().len()),
            (5, 5),
            "{backend:?}: each sent once"
        );
        relay.finish().await;
    }
}

/// Calls still running when the shutdown grace ends are cut: the worker returns soon after the
/// grace, and each cut call is a temporary failure, its SMS pending for a retry after the
/// backoff (the provider may have sent it; the relay cannot know).
#[tokio::test]
async fn shutdown_cuts_calls_that_outlast_the_grace() {
    let limits = Limits {
        sms_concurrency: Some(4),
        ..Limits::default()
    };
    let relay = TestRelay::builder(Backend::Sqlite)
        .limits(limits)
        .start()
        .await;
    let clinic = relay.registered_organisation("Lakeside Health").await;
    relay.queue_sms(&clinic, PHONE, 10).await;
    let calls = Arc::new(Calls::default());
    let stuck = Arc::new(Slow {
        delay: Duration::from_secs(3600),
        calls: calls.clone(),
    });
    let (stop, running) = worker(relay.instance(stuck).await);
    wait_until(Duration::from_secs(10), "four calls running", || async {
        (calls.total() == 4).then_some(())
    })
    .await;
    let asked = Instant::now();
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the outbox worker stops within 10 s of shutdown")
        .unwrap();
    println!(
        "calls outlasting the grace: the outbox stopped {:.0} ms after shutdown (grace {:?})",
        asked.elapsed().as_secs_f64() * 1000.0,
        relay::jobs::SHUTDOWN_GRACE
    );
    let rows = rows(&relay).await;
    let cut: Vec<_> = rows
        .values()
        .filter(|(_, _, attempts)| *attempts == 1)
        .collect();
    assert_eq!(cut.len(), 4, "{rows:?}");
    assert!(
        rows.values()
            .all(|(status, claimed_until, _)| status == "pending" && *claimed_until == 0),
        "{rows:?}"
    );
    let mut conn = relay.state().store().conn().await.unwrap();
    let retries: Vec<(i64, String)> =
        sqlx::query_as("SELECT next_attempt_at, last_error FROM sms_outbox WHERE attempts = 1")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    for (next_attempt_at, error) in retries {
        assert_eq!(
            next_attempt_at,
            relay.now() + relay::jobs::backoff_seconds(1)
        );
        assert!(error.contains("shut down"), "{error}");
    }
    drop(conn);
    relay.finish().await;
}
