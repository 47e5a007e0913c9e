//! Crash consistency (issue 13): the `relay serve` binary, under load from concurrent
//! submitters, is killed with `SIGKILL` after a random number of acknowledged submissions and
//! restarted on the same database, again and again. Afterwards:
//!
//! - every acknowledged message is there exactly once and decrypts for its patient, with the
//!   body that was sent (submitters retry an unanswered submission with its idempotency key, as
//!   the sender tooling does, until it is acknowledged);
//! - every queued SMS was sent, and written to the provider once — except that an SMS the
//!   provider had accepted when the relay died, before the relay recorded it, is sent again
//!   after the restart (at least once: the relay cannot know). The test checks that every
//!   repeat is of that kind: the SMS's earlier line is among the last lines written before a
//!   kill;
//! - the audit chain verifies.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use relay::limits::Limits;
use relay::store::{Backend, Store};
use relay::testkit::load::{
    Submissions, check_delivered, console_lines, enroll_patients, outbox_statuses,
    positions_by_reference, wait_for_empty_outbox,
};
use relay::testkit::{Endpoint, Patient, RelayProcess, TestRelay, keys};

/// Patients the messages are spread over.
const PATIENTS: usize = 3;
/// Concurrent submitters.
const SUBMITTERS: usize = 6;
/// `SIGKILL`s per run.
const KILLS: usize = 6;
/// Provider calls the outbox makes at once; also the most SMS a relay has handed to its
/// provider and not yet recorded at any moment (it claims only as many as it has free calls).
const SMS_CONCURRENCY: &str = "4";

/// The relay's settings for the run: no send rate limit in the way, and a short SMS lease so
/// that an SMS claimed by a killed process is sent soon after the restart.
const SETTINGS: &[(&str, &str)] = &[
    ("RELAY_SEND_RATE_PER_MINUTE", "1000000"),
    ("RELAY_OUTBOX_LEASE_SECONDS", "2"),
    ("RELAY_OUTBOX_POLL_MS", "100"),
    ("RELAY_SMS_CONCURRENCY", SMS_CONCURRENCY),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_and_duplicates_nothing_on_sqlite() {
    crash_under_load(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_and_duplicates_nothing_on_postgres() {
    crash_under_load(Backend::Postgres).await;
}

async fn crash_under_load(backend: Backend) {
    let mut relay = TestRelay::builder(backend).system_clock().start().await;
    let clinic = relay.registered_organisation("Riverside Clinic").await;
    let patient = Patient {
        key: keys().patient,
        password: "crash test password",
    };
    let patients = enroll_patients(&relay, &clinic, &patient, PATIENTS).await;
    relay.stop().await;

    let outbox_file = relay.outbox_file.clone();
    let binary = Path::new(env!("CARGO_BIN_EXE_relay"));
    let mut process = RelayProcess::start(binary, &relay, &outbox_file, SETTINGS).await;
    let load = Arc::new(Submissions::default());
    let urls = [process.url("/v1/messages")];
    let submitters = load.spawn(SUBMITTERS, &urls, &clinic, &patients);

    let started = Instant::now();
    // How many SMS lines the provider's file held when each kill struck.
    let mut lines_at_kills = Vec::new();
    for _ in 0..KILLS {
        load.wait_for_more(5 + (OsRng.next_u32() % 40) as usize)
            .await;
        process.kill();
        lines_at_kills.push(console_lines(&outbox_file).len());
        process.restart().await;
    }
    load.wait_for_more(20).await;
    let acknowledged = load.stop(submitters).await;
    let store = Store::open(&relay.db.url()).await.unwrap();
    wait_for_empty_outbox(&store).await;
    let status = process.terminate(Duration::from_secs(60)).await;
    assert!(status.success(), "relay exit: {status}\n{}", process.log());
    let elapsed = started.elapsed();

    relay.boot(Limits::default()).await;
    check_delivered(&relay, &patient, &patients, &acknowledged).await;
    let (sms, repeats) = check_sms(&store, &outbox_file, &lines_at_kills).await;
    let events = relay::admin::audit_events(&store, &clinic.id.to_string())
        .await
        .unwrap();
    shared::audit::verify_chain(&events).expect("the audit chain verifies after the crashes");
    println!(
        "{backend:?}: {} submissions acknowledged in {elapsed:.1?} across {KILLS} kill -9, {} \
         attempts unanswered and retried; {sms} SMS sent, {repeats} of them again after a kill \
         struck while in flight; {} audit events verify; nothing lost",
        acknowledged.len(),
        load.unanswered(),
        events.len(),
    );
    store.close().await;
    relay.finish().await;
}

/// Every outbox row was sent; every line in the provider's file is of an outbox row; a row
/// written more than once was in flight at a kill each time but the last. Returns how many SMS
/// there are and how many lines were such repeats.
async fn check_sms(store: &Store, outbox_file: &Path, lines_at_kills: &[usize]) -> (usize, usize) {
    let rows = outbox_statuses(store).await;
    let mut positions = positions_by_reference(&console_lines(outbox_file));
    let in_flight: usize = SMS_CONCURRENCY.parse().unwrap();
    let mut repeats = 0;
    for (id, status) in &rows {
        assert_eq!(status, "sent", "SMS {id}");
        let written = positions
            .remove(id)
            .unwrap_or_else(|| panic!("SMS {id} is recorded sent but the provider never got it"));
        for pair in written.windows(2) {
            let (earlier, later) = (pair[0], pair[1]);
            assert!(
                lines_at_kills
                    .iter()
                    .any(|&kill| earlier < kill && kill <= later && kill - earlier <= in_flight),
                "SMS {id} was sent again (lines {earlier} and {later}) without a kill while it \
                 was in flight (kills at lines {lines_at_kills:?})"
            );
            repeats += 1;
        }
    }
    assert!(
        positions.is_empty(),
        "the provider got SMS the relay has no record of: {:?}",
        positions.keys()
    );
    (rows.len(), repeats)
}
