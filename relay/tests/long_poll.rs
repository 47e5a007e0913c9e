//! The long-polls of enrollment → first plaintext (issue 11, item 4): the agent's
//! `GET /v1/rewraps?wait=…` answers when a patient enrolls, the viewer's
//! `GET /v1/viewer/messages?wait=…` when the sender's re-wrap lands, on both backends; across two
//! relays on one PostgreSQL database; at once on shutdown; and never to a session that ended
//! while it waited.
//!
//! Each test first sees the request waiting (the relay's waiter count) and only then makes the
//! change, so an answer that carries the change proves the wait ended on it, not on a poll.

use std::path::Path;
use std::time::Duration;

use rand_core::OsRng;
use relay::store::Backend;
use relay::testkit::{
    Endpoint, Patient, RelayProcess, Sender, TestRelay, free_port, header, keys, seal, wait_until,
};
use reqwest::Method;
use serde_json::{Value, json};
use shared::api::{MessageList, PendingRewraps};
use shared::envelope::Envelope;

const PHONE: &str = "+15551230001";
const PASSWORD: &str = "long poll password";
/// Longer than any test takes: the answer must come from the change, not from the limit.
const WAIT: &str = "20";
/// How long a test waits for an answer it expects now.
const ANSWER_LIMIT: Duration = Duration::from_secs(15);

/// A first-contact message from a registered clinic, its SMS link, and the patient.
struct Scene {
    relay: TestRelay,
    clinic: Sender,
    envelope: Envelope,
    link: String,
    patient: Patient,
}

async fn scene(relay: TestRelay) -> Scene {
    let clinic = relay.registered_organisation("Riverside Clinic").await;
    let envelope = seal(
        header(clinic.id, None, relay.now(), 86_400),
        "Your results are ready.",
        &keys(),
        None,
    );
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(&clinic.api_key),
            Some(json!({ "to": PHONE, "envelope": envelope })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let link = relay.deliver_link_for(PHONE).await;
    Scene {
        relay,
        clinic,
        envelope,
        link,
        patient: Patient {
            key: keys().patient,
            password: PASSWORD,
        },
    }
}

/// Starts `GET path` (with `cookie` or the clinic's API key) in the background.
fn spawn_get(
    relay: &impl Endpoint,
    path: &str,
    auth: Auth<'_>,
) -> tokio::task::JoinHandle<(u16, String)> {
    let mut request = relay.http().get(relay.url(path));
    request = match auth {
        Auth::ApiKey(key) => request.bearer_auth(key),
        Auth::Cookie(cookie) => request.header("cookie", cookie),
    };
    tokio::spawn(async move {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    })
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    ApiKey(&'a str),
    Cookie(&'a str),
}

/// Waits (deadline-bounded) until the in-process relay has `count` requests waiting.
async fn until_waiting(relay: &TestRelay, count: usize) {
    let state = relay.state().clone();
    wait_until(ANSWER_LIMIT, "the long-poll to wait", || {
        let waiting = state.changes().waiting();
        async move { (waiting == count).then_some(()) }
    })
    .await;
}

async fn answer(task: tokio::task::JoinHandle<(u16, String)>) -> (u16, String) {
    tokio::time::timeout(ANSWER_LIMIT, task)
        .await
        .expect("the long-poll answers after the change")
        .unwrap()
}

async fn agent_learns_of_an_enrollment_without_polling(backend: Backend) {
    let scene = scene(TestRelay::start(backend).await).await;
    let relay = &scene.relay;
    let poll = spawn_get(
        relay,
        &format!("/v1/rewraps?wait={WAIT}"),
        Auth::ApiKey(&scene.clinic.api_key),
    );
    until_waiting(relay, 1).await;
    scene.patient.enroll(relay, &scene.link).await;
    let (status, body) = answer(poll).await;
    assert_eq!(status, 200, "{body}");
    let pending: PendingRewraps = serde_json::from_str(&body).unwrap();
    assert_eq!(pending.pending.len(), 1, "{body}");
    assert_eq!(
        pending.pending[0].message_id,
        scene.envelope.header.message_id
    );
    assert_eq!(
        pending.pending[0].recipient_public_key,
        *scene.patient.key.public_key()
    );
    assert_eq!(relay.state().changes().waiting(), 0);
    scene.relay.finish().await;
}

#[tokio::test]
async fn agent_learns_of_an_enrollment_without_polling_sqlite() {
    agent_learns_of_an_enrollment_without_polling(Backend::Sqlite).await;
}

#[tokio::test]
async fn agent_learns_of_an_enrollment_without_polling_postgres() {
    agent_learns_of_an_enrollment_without_polling(Backend::Postgres).await;
}

/// The scene's message's content key wrapped to the patient's key, as the clinic's agent makes it.
fn recipient_wrap(scene: &Scene) -> shared::envelope::Wrap {
    scene
        .envelope
        .rewrap(
            &keys().organisation,
            scene.patient.key.public_key(),
            &mut OsRng,
        )
        .unwrap()
}

/// Re-wraps the scene's message to the patient's key, as the clinic's agent does.
async fn rewrap(scene: &Scene) {
    let wrap = recipient_wrap(scene);
    let path = format!(
        "/v1/messages/{}/recipient-wrap",
        scene.envelope.header.message_id
    );
    let (status, body) = scene
        .relay
        .call(
            Method::PUT,
            &path,
            Some(&scene.clinic.api_key),
            Some(json!({ "wrap": wrap })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn viewer_learns_of_the_rewrap_without_polling(backend: Backend) {
    let scene = scene(TestRelay::start(backend).await).await;
    let relay = &scene.relay;
    let recipient = scene.patient.enroll(relay, &scene.link).await;
    let session = scene.patient.unlock(relay, &scene.link).await;
    let path = format!("/v1/viewer/messages?wait={WAIT}");
    let poll = spawn_get(relay, &path, Auth::Cookie(&session.cookie));
    until_waiting(relay, 1).await;
    rewrap(&scene).await;
    let (status, body) = answer(poll).await;
    assert_eq!(status, 200, "{body}");
    let list: MessageList = serde_json::from_str(&body).unwrap();
    let [message] = &list.messages[..] else {
        panic!("one message: {body}");
    };
    assert!(!message.awaiting_key, "{body}");
    let opened = message
        .envelope
        .as_ref()
        .expect("the re-wrapped envelope")
        .open(&session.key, Some(recipient))
        .unwrap();
    assert_eq!(opened.body.as_str(), "Your results are ready.");

    // Nothing awaits a re-wrap any more: the same long-poll answers at once.
    let (status, body) = answer(spawn_get(relay, &path, Auth::Cookie(&session.cookie))).await;
    assert_eq!(status, 200, "{body}");
    scene.relay.finish().await;
}

#[tokio::test]
async fn viewer_learns_of_the_rewrap_without_polling_sqlite() {
    viewer_learns_of_the_rewrap_without_polling(Backend::Sqlite).await;
}

#[tokio::test]
async fn viewer_learns_of_the_rewrap_without_polling_postgres() {
    viewer_learns_of_the_rewrap_without_polling(Backend::Postgres).await;
}

/// A session that ends while its long-poll waits gets no messages: the relay looks again at
/// the end of the wait.
#[tokio::test]
async fn a_session_ended_while_waiting_gets_nothing() {
    let scene = scene(TestRelay::start(Backend::Sqlite).await).await;
    let relay = &scene.relay;
    scene.patient.enroll(relay, &scene.link).await;
    let session = scene.patient.unlock(relay, &scene.link).await;
    let poll = spawn_get(
        relay,
        "/v1/viewer/messages?wait=2",
        Auth::Cookie(&session.cookie),
    );
    until_waiting(relay, 1).await;
    relay::admin::revoke_sessions(relay.state().store(), relay.state().data_key(), PHONE, None)
        .await
        .unwrap();
    // Nothing wakes the wait (a revocation from the operator's command is not announced): the
    // last look at the wait's end finds the session ended.
    let (status, body) = answer(poll).await;
    assert_eq!(status, 401, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "unauthorized");
    scene.relay.finish().await;
}

/// `wait` is 0 to 20 seconds; anything else is a client error the relay names.
#[tokio::test]
async fn a_wait_out_of_range_is_refused() {
    let scene = scene(TestRelay::start(Backend::Sqlite).await).await;
    let key = Some(scene.clinic.api_key.as_str());
    for (query, status) in [
        ("wait=0", 200),
        ("", 200),
        ("wait=21", 422),
        ("wait=-1", 422),
        ("wait=soon", 422),
        ("wait=1&cache=1", 200),
    ] {
        let path = format!("/v1/rewraps?{query}");
        let (got, body) = scene.relay.call(Method::GET, &path, key, None).await;
        assert_eq!(got, status, "{path}: {body}");
        if status == 422 {
            assert_eq!(body["error"], "invalid", "{path}: {body}");
        }
    }
    scene.relay.finish().await;
}

/// A relay process's settings: metrics on `port` (for its waiter count), no open limit.
fn process_settings(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("RELAY_METRICS_LISTEN", format!("127.0.0.1:{port}")),
        ("RELAY_OPEN_RATE_PER_MINUTE", "1000000".to_owned()),
    ]
}

fn as_env<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    settings
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect()
}

/// Waits (deadline-bounded) until the relay process's metrics show `count` waiting requests.
async fn until_process_waiting(http: &reqwest::Client, metrics_port: u16, count: usize) {
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let expected = format!("securetext_long_polls_waiting {count}\n");
    wait_until(
        ANSWER_LIMIT,
        "the relay process's long-poll to wait",
        || {
            let request = http.get(&url).send();
            let expected = expected.clone();
            async move {
                let text = request.await.ok()?.text().await.ok()?;
                text.contains(&expected).then_some(())
            }
        },
    )
    .await;
}

/// Two relays on one PostgreSQL database: the agent waits on one, the patient enrolls and the
/// agent re-wraps through the other, and each long-poll answers on its change (PostgreSQL's
/// `NOTIFY` at commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_answer_across_relays_on_postgres() {
    let mut scene = scene(TestRelay::start(Backend::Postgres).await).await;
    scene.relay.stop().await;
    let binary = Path::new(env!("CARGO_BIN_EXE_relay"));
    let ports = [free_port(), free_port()];
    let settings = ports.map(process_settings);
    let dir = scene.relay.dir.path().to_owned();
    let waiting_relay = RelayProcess::start(
        binary,
        &scene.relay,
        &dir.join("sms-a.jsonl"),
        &as_env(&settings[0]),
    )
    .await;
    let other_relay = RelayProcess::start(
        binary,
        &scene.relay,
        &dir.join("sms-b.jsonl"),
        &as_env(&settings[1]),
    )
    .await;
    let http = reqwest::Client::new();

    let poll = spawn_get(
        &waiting_relay,
        &format!("/v1/rewraps?wait={WAIT}"),
        Auth::ApiKey(&scene.clinic.api_key),
    );
    until_process_waiting(&http, ports[0], 1).await;
    scene.patient.enroll(&other_relay, &scene.link).await;
    let (status, body) = answer(poll).await;
    assert_eq!(status, 200, "{body}");
    let pending: PendingRewraps = serde_json::from_str(&body).unwrap();
    assert_eq!(pending.pending.len(), 1, "{body}");

    let session = scene.patient.unlock(&waiting_relay, &scene.link).await;
    let poll = spawn_get(
        &waiting_relay,
        &format!("/v1/viewer/messages?wait={WAIT}"),
        Auth::Cookie(&session.cookie),
    );
    until_process_waiting(&http, ports[0], 1).await;
    let wrap = recipient_wrap(&scene);
    let response = other_relay
        .http()
        .put(other_relay.url(&format!(
            "/v1/messages/{}/recipient-wrap",
            scene.envelope.header.message_id
        )))
        .bearer_auth(&scene.clinic.api_key)
        .json(&json!({ "wrap": wrap }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, body) = answer(poll).await;
    assert_eq!(status, 200, "{body}");
    let list: MessageList = serde_json::from_str(&body).unwrap();
    assert!(list.messages.iter().all(|m| !m.awaiting_key), "{body}");
    scene.relay.finish().await;
}

/// `SIGTERM` answers a waiting long-poll at once (with what it found: nothing), so a relay
/// with agents waiting still stops within its drain time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_waiting_long_polls() {
    let mut scene = scene(TestRelay::start(Backend::Sqlite).await).await;
    scene.relay.stop().await;
    let binary = Path::new(env!("CARGO_BIN_EXE_relay"));
    let port = free_port();
    let settings = process_settings(port);
    let outbox = scene.relay.dir.path().join("sms.jsonl");
    let mut process = RelayProcess::start(binary, &scene.relay, &outbox, &as_env(&settings)).await;
    let poll = spawn_get(
        &process,
        &format!("/v1/rewraps?wait={WAIT}"),
        Auth::ApiKey(&scene.clinic.api_key),
    );
    until_process_waiting(&reqwest::Client::new(), port, 1).await;
    let status = process.terminate(ANSWER_LIMIT).await;
    assert!(status.success(), "{status}");
    let (status, body) = answer(poll).await;
    assert_eq!(status, 200, "{body}");
    let pending: PendingRewraps = serde_json::from_str(&body).unwrap();
    assert!(pending.pending.is_empty(), "{body}");
    scene.relay.finish().await;
}
