//! Verified first enrollment (issue 10, part 2), end to end: the real relay, the sender's
//! library and agent, and a patient playing the viewer's side of the exchange. The attack is
//! interception at first contact: whoever holds a first-contact link enrolls first. Without an
//! identity check the agent re-wraps to the interceptor's key (and now says it is unverified);
//! with one the interceptor's wrong answers enroll nothing, and the real patient, answering
//! right, still enrolls and reads. Every test runs on SQLite and PostgreSQL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay::store::Backend;
use relay::testkit::{CheckOutcome, Keys, Patient, TestRelay, keys, wait_for};
use sender::agent::{Agent, AgentEvent, AgentNotice, AgentPolicy, RunOptions};
use sender::client::RetryPolicy;
use sender::config::{ApiKey, Config, Overrides, RelayUrl};
use sender::pins::PinStore;
use sender::send::{IdentityCheck, OrganisationIdentity, OutgoingMessage, PhoneNumber, SendPolicy};
use sender::setup::{InitRequest, unseal_key};
use sender::state::StateDir;
use sender::{Client, Error};
use shared::envelope::Content;
use shared::identity_check::{CheckAnswer, CheckKind};
use shared::kdf::{KdfParams, Password};

const PHONE: &str = "+15557790001";
const PASSPHRASE: &str = "organisation passphrase 2026";
const BIRTH_DATE: &str = "1984-03-07";

type Reports = Arc<Mutex<Vec<AgentEvent>>>;

/// A sender organisation set up against `relay`, with its agent running.
struct Organisation {
    /// The organisation on the relay (its API key, for submissions made without this tooling).
    sender: relay::testkit::Sender,
    client: Client,
    me: OrganisationIdentity,
    state: StateDir,
    reports: Reports,
    /// The agent, until [`Self::spawn_agent`] runs it.
    agent: Option<Agent>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _home: tempfile::TempDir,
}

impl Organisation {
    async fn start(relay: &TestRelay, keys: &Keys, policy: SendPolicy) -> Self {
        let sender = relay.organisation("Riverside Clinic").await;
        let home = tempfile::tempdir().unwrap();
        let state = StateDir::open(home.path().join("securetext")).unwrap();
        sender::setup::init(
            &state,
            InitRequest {
                relay_url: RelayUrl::parse(&relay.base).unwrap(),
                api_key: ApiKey::new(&sender.api_key).unwrap(),
                store_api_key: true,
                key_file: None,
                kdf_params: KdfParams::MINIMUM,
                replace_registered_key: false,
            },
            &Password::new(PASSPHRASE).unwrap(),
            Some(copy_key(&keys.organisation)),
        )
        .await
        .unwrap();
        let config = Config::load(state.clone(), Overrides::default()).unwrap();
        let client = |retry| {
            Client::with_retry_policy(config.relay_url.clone(), config.api_key.clone(), retry)
                .unwrap()
        };
        let agent = Agent::new(
            client(RetryPolicy::no_retries()),
            sender.id,
            unseal_key(&config, &Password::new(PASSPHRASE).unwrap()).unwrap(),
            &state,
            AgentPolicy::default(),
        );
        let reports: Reports = Arc::default();
        Self {
            client: client(RetryPolicy::default()),
            me: OrganisationIdentity {
                organisation_id: sender.id,
                public_key: config.load_key_file().unwrap().public_key,
                policy,
            },
            state,
            reports,
            agent: Some(agent),
            stop: None,
            sender,
            _home: home,
        }
    }

    /// Runs the agent as a task, as `securetext agent` does.
    fn spawn_agent(&mut self) {
        let agent = self.agent.take().expect("the agent runs once");
        let sink = self.reports.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(stop);
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            agent
                .run(RunOptions::default(), shutdown, move |notice| {
                    if let AgentNotice::Event(event) = notice {
                        sink.lock().unwrap().push(event.clone());
                    }
                })
                .await;
        });
    }

    async fn send(&self, check: Option<IdentityCheck>) -> Result<sender::send::SendReceipt, Error> {
        let message = OutgoingMessage {
            to: PhoneNumber::parse(PHONE).unwrap(),
            content: Content {
                subject: "From your clinic".into(),
                body: "Your lab results are ready.".into(),
            },
            lifetime_seconds: 3_600,
            identity_check: check,
        };
        self.client.send(&self.me, &self.state, &message).await
    }

    fn reported(&self, matches: impl Fn(&AgentEvent) -> bool) -> bool {
        self.reports.lock().unwrap().iter().any(matches)
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn patient(keys: &Keys) -> Patient {
    Patient {
        key: copy_key(&keys.patient),
        password: "purple elephant 42",
    }
}

fn interceptor(keys: &Keys) -> Patient {
    Patient {
        key: copy_key(&keys.patient_after_reset),
        password: "the interceptor's password",
    }
}

fn date_of_birth(date: &str) -> CheckAnswer {
    CheckAnswer::new(CheckKind::DateOfBirth, Some(date), None).unwrap()
}

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_sqlite() {
                    super::$test(super::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_postgres() {
                    super::$test(super::Backend::Postgres).await;
                }
            }
        )*
    };
}

on_both_backends![
    an_interceptor_without_the_answer_gets_nothing_and_the_patient_still_enrolls,
    without_a_check_the_first_enrollment_is_reported_unverified,
    the_policy_refuses_an_unchecked_first_contact,
    answers_are_limited_per_message,
    a_key_pinned_through_an_unchecked_message_does_not_open_a_checked_one,
    a_right_answer_cannot_be_moved_to_another_key,
];

/// With a check: the interceptor opens the link first and answers wrong; nothing is enrolled,
/// pinned or re-wrapped. The real patient then answers right from the same link, enrolls, and
/// reads the message, wrapped to their key.
async fn an_interceptor_without_the_answer_gets_nothing_and_the_patient_still_enrolls(
    backend: Backend,
) {
    let relay = TestRelay::builder(backend).system_clock().start().await;
    let keys = keys();
    let mut clinic = Organisation::start(&relay, &keys, SendPolicy::default()).await;
    clinic.spawn_agent();
    let check = IdentityCheck::new(Some(BIRTH_DATE), None).unwrap();
    let sent = clinic.send(Some(check)).await.unwrap();
    let link = relay.deliver_link_for(PHONE).await;

    let outcome = interceptor(&keys)
        .enroll_checked(&relay, &link, &date_of_birth("1990-01-01"))
        .await;
    assert_eq!(outcome, CheckOutcome::Failed { attempts_left: 4 });
    assert!(
        matches!(
            Patient::open(&relay, &link).await.patient,
            shared::api::PatientState::New { .. }
        ),
        "a wrong answer enrolls nothing"
    );
    // Enrolling without an answer is refused as well.
    let (status, body) = relay
        .call(
            reqwest::Method::POST,
            "/v1/viewer/enroll",
            None,
            Some(serde_json::json!({"link": link})),
        )
        .await;
    assert_eq!(status, 422, "{body}");

    let outcome = patient(&keys)
        .enroll_checked(&relay, &link, &date_of_birth(BIRTH_DATE))
        .await;
    assert_eq!(outcome, CheckOutcome::Verified);
    let fingerprint = keys.patient.public_key().fingerprint();
    wait_for(Duration::from_secs(10), || async {
        clinic.reported(|event| {
            matches!(event, AgentEvent::Rewrapped { message_id, fingerprint: f,
                identity_verified: true, newly_pinned: true, .. }
                if *message_id == sent.message_id && *f == fingerprint)
        })
    })
    .await
    .expect("the agent re-wraps to the verified key");
    let read = patient(&keys)
        .read_all(&relay, &link, sent.recipient_id)
        .await;
    assert_eq!(
        read[0].1.as_ref().unwrap().body,
        "Your lab results are ready."
    );
    // The agent reports its verdict once the relay answered it.
    wait_for(Duration::from_secs(10), || async {
        clinic.reported(|event| {
            matches!(
                event,
                AgentEvent::IdentityCheckFailed {
                    attempts_left: 4,
                    ..
                }
            )
        })
    })
    .await
    .expect("the agent reports the wrong answer");
    let kinds: Vec<String> = clinic
        .client
        .status(sent.message_id)
        .await
        .unwrap()
        .events
        .iter()
        .map(|event| event.kind.to_string())
        .collect();
    assert!(
        kinds.contains(&"enrollment_check_failed".to_owned()),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"enrollment_verified".to_owned()),
        "{kinds:?}"
    );
    clinic.stop();
    relay.finish().await;
}

/// Without a check, today's behaviour remains (whoever enrolls first is re-wrapped to), but the
/// agent says the first enrollment was unverified; and when the real patient then says "I never
/// set a password", the agent reports it.
async fn without_a_check_the_first_enrollment_is_reported_unverified(backend: Backend) {
    let relay = TestRelay::builder(backend).system_clock().start().await;
    let keys = keys();
    let mut clinic = Organisation::start(&relay, &keys, SendPolicy::default()).await;
    clinic.spawn_agent();
    let sent = clinic.send(None).await.unwrap();
    let link = relay.deliver_link_for(PHONE).await;
    interceptor(&keys).enroll(&relay, &link).await;
    wait_for(Duration::from_secs(10), || async {
        clinic.reported(|event| {
            matches!(event, AgentEvent::Rewrapped { message_id, identity_verified: false,
                newly_pinned: true, .. } if *message_id == sent.message_id)
        })
    })
    .await
    .expect("re-wrapped, as an unverified first enrollment");
    // The real patient, asked for a password they never set, raises the alarm; the agent
    // reports it.
    let (status, body) = relay
        .call(
            reqwest::Method::POST,
            "/v1/viewer/disown",
            None,
            Some(serde_json::json!({ "link": link })),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    wait_for(Duration::from_secs(30), || async {
        clinic.reported(|event| {
            matches!(event, AgentEvent::PasswordDisowned { message_id, .. }
                if *message_id == sent.message_id)
        })
    })
    .await
    .expect("the agent reports the patient's alarm");
    clinic.stop();
    relay.finish().await;
}

/// An organisation that requires a check cannot send a first contact without one.
async fn the_policy_refuses_an_unchecked_first_contact(backend: Backend) {
    let relay = TestRelay::builder(backend).system_clock().start().await;
    let keys = keys();
    let policy = SendPolicy {
        require_identity_check: true,
    };
    let mut clinic = Organisation::start(&relay, &keys, policy).await;
    clinic.spawn_agent();
    let refused = clinic.send(None).await.unwrap_err();
    assert!(
        matches!(&refused, Error::Input(text) if text.contains("identity check")),
        "{refused}"
    );
    let check = IdentityCheck::new(Some(BIRTH_DATE), None).unwrap();
    clinic.send(Some(check)).await.unwrap();
    clinic.stop();
    relay.finish().await;
}

/// Five wrong answers use up the message; a sixth is refused without reaching the agent.
async fn answers_are_limited_per_message(backend: Backend) {
    let relay = TestRelay::builder(backend).system_clock().start().await;
    let keys = keys();
    let mut clinic = Organisation::start(&relay, &keys, SendPolicy::default()).await;
    clinic.spawn_agent();
    let check = IdentityCheck::new(Some(BIRTH_DATE), None).unwrap();
    clinic.send(Some(check)).await.unwrap();
    let link = relay.deliver_link_for(PHONE).await;
    for left in (0..5).rev() {
        let outcome = interceptor(&keys)
            .enroll_checked(&relay, &link, &date_of_birth("2000-02-29"))
            .await;
        assert_eq!(
            outcome,
            CheckOutcome::Failed {
                attempts_left: left
            }
        );
    }
    let outcome = patient(&keys)
        .enroll_checked(&relay, &link, &date_of_birth(BIRTH_DATE))
        .await;
    let CheckOutcome::Refused(status, body) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("check_attempts_exhausted"))
    );
    clinic.stop();
    relay.finish().await;
}

fn copy_key(key: &shared::keys::PrivateKey) -> shared::keys::PrivateKey {
    shared::keys::PrivateKey::from_pkcs8_der(&key.to_pkcs8_der().unwrap()).unwrap()
}

/// A relay that lists a checked message's re-wrap for a key that passed no check (here, the
/// key an interceptor enrolled through another first-contact link of the organisation, one
/// this host did not send): the agent holds it on every pass and pins nothing (before the
/// fix, the first pass pinned it and the second re-wrapped to it).
async fn a_key_pinned_through_an_unchecked_message_does_not_open_a_checked_one(backend: Backend) {
    let relay = TestRelay::builder(backend).system_clock().start().await;
    let keys = keys();
    let mut clinic = Organisation::start(&relay, &keys, SendPolicy::default()).await;
    let agent = clinic.agent.take().unwrap();
    let check = IdentityCheck::new(Some(BIRTH_DATE), None).unwrap();
    let checked = clinic.send(Some(check)).await.unwrap();
    relay.deliver_link_for(PHONE).await;
    relay
        .submit_first_contact(&clinic.sender, PHONE, "sent from elsewhere")
        .await;
    let link = relay.deliver_link_for(PHONE).await;
    interceptor(&keys).enroll(&relay, &link).await;
    let offered = keys.patient_after_reset.public_key().fingerprint();
    for pass in 0..3 {
        let events = agent.run_once().await.unwrap();
        assert!(
            events.contains(&AgentEvent::IdentityCheckPending {
                message_id: checked.message_id,
                recipient_id: checked.recipient_id,
                offered,
            }),
            "pass {pass}: {events:?}"
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, AgentEvent::Rewrapped { .. })),
            "pass {pass}: {events:?}"
        );
    }
    assert!(
        PinStore::new(&clinic.state)
            .get(checked.recipient_id)
            .unwrap()
            .is_none(),
        "nothing was pinned"
    );
    clinic.stop();
    relay.finish().await;
}

/// A relay that, after the real patient confirmed a right answer, lists the attempt with
/// another key (its own): the agent's verdict is a failure, nothing is enrolled or pinned.
async fn a_right_answer_cannot_be_moved_to_another_key(backend: Backend) {
    let relay = TestRelay::builder(backend).system_clock().start().await;
    let keys = keys();
    let mut clinic = Organisation::start(&relay, &keys, SendPolicy::default()).await;
    let agent = clinic.agent.take().unwrap();
    let check = IdentityCheck::new(Some(BIRTH_DATE), None).unwrap();
    let sent = clinic.send(Some(check)).await.unwrap();
    let link = relay.deliver_link_for(PHONE).await;
    // The agent answers; the patient confirms; then the relay swaps the key.
    let store = relay.state().store().clone();
    let progress = || async {
        let mut conn = store.conn().await.unwrap();
        sqlx::query("SELECT progress FROM enrollment_checks")
            .fetch_optional(&mut *conn)
            .await
            .unwrap()
            .map(|row| sqlx::Row::get::<String, _>(&row, "progress"))
    };
    let the_relay = async {
        wait_for(Duration::from_secs(10), || async {
            progress().await.is_some()
        })
        .await
        .expect("the patient starts the check");
        agent.run_once().await.unwrap();
        wait_for(Duration::from_secs(10), || async {
            progress().await.as_deref() == Some("confirmed")
        })
        .await
        .expect("the patient confirms");
        let substitute = keys.patient_after_reset.public_key();
        let mut conn = store.conn().await.unwrap();
        sqlx::query("UPDATE enrollment_checks SET public_key = $1, fingerprint = $2")
            .bind(substitute.spki_der().to_vec())
            .bind(substitute.fingerprint().to_string())
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        agent.run_once().await.unwrap()
    };
    let (real, answer) = (patient(&keys), date_of_birth(BIRTH_DATE));
    let the_patient = real.enroll_checked(&relay, &link, &answer);
    let (events, outcome) = tokio::join!(the_relay, the_patient);
    assert!(
        events.iter().any(
            |e| matches!(e, AgentEvent::IdentityCheckFailed { message_id, .. }
            if *message_id == sent.message_id)
        ),
        "{events:?}"
    );
    assert_eq!(outcome, CheckOutcome::Failed { attempts_left: 4 });
    assert!(
        PinStore::new(&clinic.state)
            .get(sent.recipient_id)
            .unwrap()
            .is_none(),
        "nothing was pinned"
    );
    clinic.stop();
    relay.finish().await;
}
