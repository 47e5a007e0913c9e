//! Scale-out (issue 13): two `relay serve` processes on one PostgreSQL database, under
//! concurrent submissions through both and patients unlocking through one and reading through
//! the other. Every answer is a success (no `500`, no `503`); every acknowledged message is
//! delivered once and decrypts; every SMS is sent exactly once, by one of the two relays (each
//! writes its own provider file); the audit chain, appended to by both, verifies.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use relay::limits::Limits;
use relay::store::{Backend, Store};
use relay::testkit::load::{
    Enrolled, Submissions, check_delivered, console_lines, enroll_patients, outbox_statuses,
    positions_by_reference, wait_for_empty_outbox,
};
use relay::testkit::{Endpoint, Patient, RelayProcess, TestRelay, keys};
use shared::api::VIEWER_REQUEST_HEADER;

const PATIENTS: usize = 3;
const SUBMITTERS: usize = 6;
const READERS: usize = 3;
/// Submissions acknowledged before the load stops.
const SUBMISSIONS: usize = 300;
const PASSWORD: &str = "scale out password";

/// Every patient unlocks from the loopback address: no address limit on opens in the way.
const SETTINGS: &[(&str, &str)] = &[
    ("RELAY_SEND_RATE_PER_MINUTE", "1000000"),
    ("RELAY_OPEN_RATE_PER_MINUTE", "1000000"),
    ("RELAY_OUTBOX_POLL_MS", "100"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_on_one_postgres_under_submissions_and_unlocks() {
    let mut relay = TestRelay::builder(Backend::Postgres)
        .system_clock()
        .start()
        .await;
    let clinic = relay.registered_organisation("Riverside Clinic").await;
    let patient = Patient {
        key: keys().patient,
        password: PASSWORD,
    };
    let patients = enroll_patients(&relay, &clinic, &patient, PATIENTS).await;
    relay.stop().await;
    let welcome_sms = console_lines(&relay.outbox_file);

    let binary = Path::new(env!("CARGO_BIN_EXE_relay"));
    let files = [
        relay.dir.path().join("sms-a.jsonl"),
        relay.dir.path().join("sms-b.jsonl"),
    ];
    let relays = Arc::new([
        RelayProcess::start(binary, &relay, &files[0], SETTINGS).await,
        RelayProcess::start(binary, &relay, &files[1], SETTINGS).await,
    ]);
    let started = Instant::now();
    let load = Arc::new(Submissions::default());
    let urls: Vec<_> = relays.iter().map(|r| r.url("/v1/messages")).collect();
    let submitters = load.spawn(SUBMITTERS, &urls, &clinic, &patients);
    let reading = Arc::new(AtomicBool::new(true));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|task| {
            tokio::spawn(read_until_stopped(
                task,
                relays.clone(),
                patients.clone(),
                reading.clone(),
                reads.clone(),
            ))
        })
        .collect();

    load.wait_for_more(SUBMISSIONS).await;
    let acknowledged = load.stop(submitters).await;
    reading.store(false, Ordering::SeqCst);
    for reader in readers {
        reader.await.unwrap();
    }
    let store = Store::open(&relay.db.url()).await.unwrap();
    wait_for_empty_outbox(&store).await;
    let elapsed = started.elapsed();
    let mut relays = Arc::into_inner(relays).expect("the readers are done");
    for process in &mut relays {
        let status = process.terminate(Duration::from_secs(60)).await;
        assert!(status.success(), "relay exit: {status}\n{}", process.log());
    }
    assert_eq!(
        load.unanswered(),
        0,
        "every submission is answered at the first attempt"
    );

    // The readers used this minute's opens of the loopback address.
    relay
        .boot(Limits {
            open_rate_per_minute: 1_000_000,
            ..Limits::default()
        })
        .await;
    check_delivered(&relay, &patient, &patients, &acknowledged).await;
    let sent_by: Vec<_> = files.iter().map(|file| console_lines(file)).collect();
    let mut positions = positions_by_reference(
        &[welcome_sms.clone(), sent_by[0].clone(), sent_by[1].clone()].concat(),
    );
    let rows = outbox_statuses(&store).await;
    for (id, status) in &rows {
        assert_eq!(status, "sent", "SMS {id}");
        let lines = positions.remove(id).unwrap_or_default();
        assert_eq!(lines.len(), 1, "SMS {id} sent {} times", lines.len());
    }
    assert!(
        positions.is_empty(),
        "SMS the relays have no record of: {:?}",
        positions.keys()
    );
    let events = relay::admin::audit_events(&store, &clinic.id.to_string())
        .await
        .unwrap();
    shared::audit::verify_chain(&events).expect("the audit chain of two relays verifies");
    println!(
        "2 relays, 1 PostgreSQL: {} submissions and {} unlock+read sessions in {elapsed:.1?}, \
         {} SMS sent exactly once ({} by relay A, {} by relay B), {} audit events verify",
        acknowledged.len(),
        reads.load(Ordering::SeqCst),
        rows.len(),
        sent_by[0].len(),
        sent_by[1].len(),
        events.len(),
    );
    store.close().await;
    relay.finish().await;
}

/// Unlocks a patient through one relay, lists the messages and logs out through the other,
/// over and over, checking every answer.
async fn read_until_stopped(
    task: usize,
    relays: Arc<[RelayProcess; 2]>,
    patients: Vec<Enrolled>,
    reading: Arc<AtomicBool>,
    reads: Arc<AtomicUsize>,
) {
    let patient = Patient {
        key: keys().patient,
        password: PASSWORD,
    };
    let mut n = task;
    while reading.load(Ordering::SeqCst) {
        let (first, second) = (&relays[n % 2], &relays[(n + 1) % 2]);
        let enrolled = &patients[n % patients.len()];
        let session = patient.unlock(first, &enrolled.link).await;
        let listing = second
            .http()
            .get(second.url("/v1/viewer/messages"))
            .header("cookie", &session.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(listing.status(), 200, "listing through the other relay");
        let logout = second
            .http()
            .post(second.url("/v1/viewer/logout"))
            .header("cookie", &session.cookie)
            .header(VIEWER_REQUEST_HEADER, "1")
            .send()
            .await
            .unwrap();
        assert_eq!(logout.status(), 204, "logout through the other relay");
        reads.fetch_add(1, Ordering::SeqCst);
        n += 1;
    }
}
