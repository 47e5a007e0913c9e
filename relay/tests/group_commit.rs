//! Group commit (issue 11): concurrent submissions share transactions and durable commits, each
//! is answered after its commit, and a submission refused on its own merits — over the send
//! rate, a taken id, a reused idempotency key — refuses only itself and writes nothing.
//! (That an acknowledged submission survives a crash or an outage is `crash.rs` and
//! `outage.rs`.)

use std::sync::atomic::Ordering;

use relay::limits::Limits;
use relay::store::{Backend, Store};
use relay::testkit::load::outbox_statuses;
use relay::testkit::{Sender, TestRelay, header, keys, seal};
use serde_json::{Value, json};
use sqlx::Row;
use tokio::task::JoinSet;

/// Concurrent submissions per burst.
const BURST: usize = 64;

#[tokio::test]
async fn concurrent_submissions_share_commits_on_sqlite() {
    share_commits(Backend::Sqlite).await;
}

#[tokio::test]
async fn concurrent_submissions_share_commits_on_postgres() {
    share_commits(Backend::Postgres).await;
}

#[tokio::test]
async fn refusals_in_a_batch_refuse_only_themselves_on_sqlite() {
    refusals_are_isolated(Backend::Sqlite).await;
}

#[tokio::test]
async fn refusals_in_a_batch_refuse_only_themselves_on_postgres() {
    refusals_are_isolated(Backend::Postgres).await;
}

/// Submits every body at once; the statuses and answers, in the order given.
async fn burst(relay: &TestRelay, clinic: &Sender, bodies: Vec<Value>) -> Vec<(u16, Value)> {
    let mut requests = JoinSet::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let request = relay
            .http
            .post(relay.url("/v1/messages"))
            .bearer_auth(&clinic.api_key)
            .json(&body);
        requests.spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (i, status, response.json::<Value>().await.unwrap())
        });
    }
    let mut answers: Vec<_> = requests.join_all().await;
    answers.sort_by_key(|(i, _, _)| *i);
    answers.into_iter().map(|(_, s, a)| (s, a)).collect()
}

/// A first-contact submission to a number of its own.
fn first_contact(relay: &TestRelay, clinic: &Sender, n: usize, key: Option<&str>) -> Value {
    let envelope = seal(
        header(clinic.id, None, relay.now(), 3600),
        "Your results are ready",
        &keys(),
        None,
    );
    let mut body = json!({ "to": format!("+1555030{n:04}"), "envelope": envelope });
    if let Some(key) = key {
        body["idempotency_key"] = json!(key);
    }
    body
}

async fn count(store: &Store, table: &str) -> i64 {
    let mut conn = store.conn().await.unwrap();
    sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

async fn share_commits(backend: Backend) {
    let limits = Limits {
        send_rate_per_minute: 10_000,
        ..Limits::default()
    };
    let relay = TestRelay::builder(backend).limits(limits).start().await;
    let clinic = relay.registered_organisation("Riverside Clinic").await;
    let metrics = relay.state().metrics();
    let batches_before = metrics.submission_batches.load(Ordering::SeqCst);
    let mut bodies: Vec<Value> = (0..BURST)
        .map(|n| first_contact(&relay, &clinic, n, None))
        .collect();
    // A client's retry sent while its first attempt is still being written (same idempotency
    // key, same envelope): one is stored, the other gets the original answer.
    let twin = first_contact(&relay, &clinic, BURST, Some("twin"));
    bodies.push(twin.clone());
    bodies.push(twin);
    let mut answers = burst(&relay, &clinic, bodies).await;
    let twins: Vec<u16> = answers.split_off(BURST).iter().map(|(s, _)| *s).collect();
    assert!(
        twins == [201, 200] || twins == [200, 201],
        "a retry racing its first attempt gets the original answer, not {twins:?}"
    );
    for (status, answer) in &answers {
        assert_eq!(*status, 201, "{answer}");
    }
    let batches = metrics.submission_batches.load(Ordering::SeqCst) - batches_before;
    println!(
        "{backend:?}: {} concurrent submissions in {batches} commits",
        BURST + 2
    );
    assert!(
        batches < BURST as u64,
        "{BURST} concurrent submissions took {batches} commits: none shared"
    );
    // Every acknowledged submission is there, with its SMS and its two audit events, and the
    // chain the batches wrote verifies.
    let store = relay.state().store();
    assert_eq!(count(store, "messages").await, BURST as i64 + 1);
    assert_eq!(outbox_statuses(store).await.len(), BURST + 1);
    let events = relay::admin::audit_events(store, &clinic.id.to_string())
        .await
        .unwrap();
    shared::audit::verify_chain(&events).unwrap();
    let created = events
        .iter()
        .filter(|e| e.kind == shared::audit::AuditKind::MessageCreated)
        .count();
    assert_eq!(created, BURST + 1);
    relay.finish().await;
}

async fn refusals_are_isolated(backend: Backend) {
    const RATE: usize = 40;
    let limits = Limits {
        send_rate_per_minute: RATE as u32,
        ..Limits::default()
    };
    let relay = TestRelay::builder(backend).limits(limits).start().await;
    let clinic = relay.registered_organisation("Riverside Clinic").await;
    // An earlier message whose id and idempotency key the burst reuses.
    let earlier = first_contact(&relay, &clinic, 9_999, Some("earlier"));
    let (status, _) = relay
        .call(
            reqwest::Method::POST,
            "/v1/messages",
            Some(&clinic.api_key),
            Some(earlier.clone()),
        )
        .await;
    assert_eq!(status, 201);
    let store = relay.state().store();
    let messages = count(store, "messages").await;
    let outbox = count(store, "sms_outbox").await;
    let patients = count(store, "recipients").await;

    let mut bodies: Vec<Value> = (0..BURST)
        .map(|n| first_contact(&relay, &clinic, n, None))
        .collect();
    // A taken id (another number, the earlier envelope) and a reused idempotency key (a new
    // envelope): both refused whatever batch they land in.
    let mut taken_id = earlier.clone();
    taken_id["to"] = json!("+15550399999");
    taken_id.as_object_mut().unwrap().remove("idempotency_key");
    bodies.push(taken_id);
    bodies.push(first_contact(&relay, &clinic, 9_998, Some("earlier")));
    let answers = burst(&relay, &clinic, bodies).await;

    let status_of = |i: usize| answers[i].0;
    let code_of = |i: usize| {
        answers[i].1["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        (status_of(BURST), code_of(BURST).as_str()),
        (409, "duplicate_message")
    );
    assert_eq!(
        (status_of(BURST + 1), code_of(BURST + 1).as_str()),
        (409, "idempotency_key_reused")
    );
    let accepted = (0..BURST).filter(|&i| status_of(i) == 201).count();
    let limited = (0..BURST)
        .filter(|&i| status_of(i) == 429 && code_of(i) == "rate_limited")
        .count();
    // The earlier message used one send of this minute.
    assert_eq!(
        (accepted, limited),
        (RATE - 1, BURST - (RATE - 1)),
        "exactly the rate is granted"
    );
    // Only the accepted wrote anything, and nothing twice.
    assert_eq!(count(store, "messages").await, messages + accepted as i64);
    assert_eq!(count(store, "sms_outbox").await, outbox + accepted as i64);
    assert_eq!(count(store, "recipients").await, patients + accepted as i64);
    relay.finish().await;
}

#[tokio::test]
async fn a_message_stored_meanwhile_is_left_out_of_a_batch_on_sqlite() {
    left_out_if_stored_meanwhile(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_message_stored_meanwhile_is_left_out_of_a_batch_on_postgres() {
    left_out_if_stored_meanwhile(Backend::Postgres).await;
}

/// Phase 4's race: another relay stored a message with the same id or idempotency key after
/// this batch's checks read. The batch's multi-row insert leaves that message out, writes none
/// of its row key, link or SMS, and writes the others.
async fn left_out_if_stored_meanwhile(backend: Backend) {
    use rand_core::OsRng;
    use relay::store::messages::{self, NewMessage};
    use shared::envelope::Envelope;
    use shared::token::{Token, TokenKind};

    let relay = TestRelay::start(backend).await;
    let clinic = relay.registered_organisation("Riverside Clinic").await;
    let earlier = first_contact(&relay, &clinic, 1, Some("earlier"));
    let (status, answer) = relay
        .call(
            reqwest::Method::POST,
            "/v1/messages",
            Some(&clinic.api_key),
            Some(earlier.clone()),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let patient = answer["recipient_id"].as_str().unwrap().parse().unwrap();
    let envelope =
        |body: &Value| -> Envelope { serde_json::from_value(body["envelope"].clone()).unwrap() };
    let same_id = envelope(&earlier);
    let same_key = envelope(&first_contact(&relay, &clinic, 1, None));
    let fresh = envelope(&first_contact(&relay, &clinic, 1, None));
    let new = |envelope, idempotency_key| NewMessage {
        envelope,
        recipient_id: patient,
        idempotency_key,
        link: Token::random(&mut OsRng).hash(TokenKind::Link),
        now: relay.now(),
        identity_check: None,
    };
    let store = relay.state().store();
    let before = [
        count(store, "messages").await,
        count(store, "row_keys").await,
        count(store, "links").await,
    ];
    let mut tx = store.begin().await.unwrap();
    let batch = [
        new(&same_id, None),
        new(&same_key, Some("earlier")),
        new(&fresh, Some("fresh")),
    ];
    let written = messages::insert_all(&mut tx, &batch).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        written.into_iter().collect::<Vec<_>>(),
        [fresh.header.message_id],
        "only the message no one stored is written"
    );
    let after = [
        count(store, "messages").await,
        count(store, "row_keys").await,
        count(store, "links").await,
    ];
    assert_eq!(after, before.map(|n| n + 1), "messages, row keys, links");
    relay.finish().await;
}
