//! PostgreSQL lost and back under load (issue 13): while the database is unreachable the relay
//! answers `503 unavailable` (JSON) and `/readyz` says so, never a 500 and never an
//! acknowledgement it cannot keep; once the database is back it recovers without a restart,
//! and every message it acknowledged, before, during or after, is there. The outage is a cut
//! TCP proxy in front of the machine's PostgreSQL ([`relay::testkit::DatabaseProxy`]), so other
//! tests keep their database. (SQLite is a file in the relay's process: it has no such outage.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use relay::store::Backend;
use relay::testkit::{TestRelay, header, keys, seal, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

const PHONE: &str = "+15557770200";

/// Submits one first-contact message; returns its id and the status and error code answered.
async fn submit(
    relay: &TestRelay,
    api_key: &str,
    organisation: shared::ids::OrganisationId,
) -> (String, u16, String) {
    let envelope = seal(
        header(organisation, None, relay.now(), 3600),
        "outage",
        &keys(),
        None,
    );
    let id = envelope.header.message_id.to_string();
    let response = relay
        .http
        .post(relay.url("/v1/messages"))
        .bearer_auth(api_key)
        .json(&json!({ "to": PHONE, "envelope": envelope }))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (id, status, body["error"].as_str().unwrap_or("").to_owned())
}

async fn readyz(relay: &TestRelay) -> u16 {
    relay
        .http
        .get(relay.url("/readyz"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_503_and_the_relay_recovers_without_a_restart() {
    let relay = Arc::new(
        TestRelay::builder(Backend::Postgres)
            .database_outages()
            .start()
            .await,
    );
    let clinic = relay.registered_organisation("Outage Clinic").await;
    let proxy = relay.database_proxy.as_ref().unwrap();

    // Load: four submitters until told to stop, recording every answer.
    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<(String, u16, String)>>> = Arc::default();
    let mut submitters = Vec::new();
    for _ in 0..4 {
        let (relay, stop, answers) = (relay.clone(), stop.clone(), answers.clone());
        let (key, organisation) = (clinic.api_key.clone(), clinic.id);
        submitters.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let answer = submit(&relay, &key, organisation).await;
                answers.lock().await.push(answer);
            }
        }));
    }
    let accepted =
        |answers: &[(String, u16, String)]| answers.iter().filter(|a| a.1 == 201).count();
    wait_until(
        Duration::from_secs(30),
        "submissions before the outage",
        || async { (accepted(&answers.lock().await) >= 8).then_some(()) },
    )
    .await;

    proxy.cut();
    let during_start = answers.lock().await.len();
    wait_until(
        Duration::from_secs(90),
        "503 answers during the outage",
        || async {
            let answers = answers.lock().await;
            let unavailable = answers[during_start..]
                .iter()
                .filter(|a| a.1 == 503)
                .count();
            (unavailable >= 4).then_some(())
        },
    )
    .await;
    assert_eq!(readyz(&relay).await, 503, "/readyz during the outage");
    let (status, body) = relay
        .call(Method::GET, "/v1/organisation", Some(&clinic.api_key), None)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );

    proxy.restore();
    wait_until(
        Duration::from_secs(60),
        "/readyz after the outage",
        || async { (readyz(&relay).await == 200).then_some(()) },
    )
    .await;
    let after_start = answers.lock().await.len();
    wait_until(
        Duration::from_secs(60),
        "submissions after the outage",
        || async {
            let answers = answers.lock().await;
            (accepted(&answers[after_start..]) >= 8).then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for submitter in submitters {
        submitter.await.unwrap();
    }

    let answers = answers.lock().await.clone();
    let odd: Vec<_> = answers
        .iter()
        .filter(|a| a.1 != 201 && a.1 != 503)
        .collect();
    assert!(odd.is_empty(), "answers other than 201 and 503: {odd:?}");
    assert!(
        answers
            .iter()
            .filter(|a| a.1 == 503)
            .all(|a| a.2 == "unavailable"),
        "every 503 is the JSON `unavailable`"
    );
    // Every acknowledged message is there. (A 503 promises nothing either way: a commit cut
    // off before its answer may have landed, which a retry with the same message id or
    // idempotency key settles.)
    for (id, status, _) in &answers {
        if *status == 201 {
            let (found, _) = relay
                .call(
                    Method::GET,
                    &format!("/v1/messages/{id}"),
                    Some(&clinic.api_key),
                    None,
                )
                .await;
            assert_eq!(found, 200, "acknowledged message {id} is lost");
        }
    }
    println!(
        "{} submissions: {} acknowledged, {} answered 503 during the outage",
        answers.len(),
        accepted(&answers),
        answers.iter().filter(|a| a.1 == 503).count()
    );
    Arc::into_inner(relay).unwrap().finish().await;
}
