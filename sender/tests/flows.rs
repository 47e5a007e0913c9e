//! The sender tooling against the real relay on loopback, on SQLite and on PostgreSQL:
//! set-up, first contact, enrollment and the agent's re-wrap (its long-poll answers the
//! enrollment), a send to an enrolled and pinned recipient, a changed key held until approved,
//! revocation, and audit export verification (and a tampered export failing).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay::store::Backend;
use relay::testkit::{Keys, Patient, TestRelay, keys, wait_for, wait_until};
use sender::agent::{Agent, AgentEvent, AgentNotice, AgentPolicy, RunOptions};
use sender::audit::{AnchorStore, verify_events, verify_log};
use sender::client::{MessageStatus, RetryPolicy, SubmitStatus};
use sender::config::{ApiKey, Config, Overrides, RelayUrl};
use sender::journal::Journal;
use sender::pins::PinStore;
use sender::send::{
    OrganisationIdentity, OutgoingMessage, PhoneNumber, RecipientTrust, SendPolicy,
};
use sender::setup::{InitRequest, unseal_key};
use sender::state::StateDir;
use sender::{Client, Error};
use shared::envelope::Content;
use shared::ids::MessageId;
use shared::kdf::{KdfParams, Password};

const PHONE: &str = "+15557770001";
const PASSPHRASE: &str = "organisation passphrase 2026";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_flows_on_sqlite() {
    flows(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_flows_on_postgres() {
    flows(Backend::Postgres).await;
}

fn message(body: &str) -> OutgoingMessage {
    OutgoingMessage {
        to: PhoneNumber::parse(PHONE).unwrap(),
        content: Content {
            subject: "From your clinic".into(),
            body: body.into(),
        },
        lifetime_seconds: 3_600,
        identity_check: None,
    }
}

/// What the agent task reported, for assertions.
type Reports = Arc<Mutex<Vec<AgentEvent>>>;

fn reported(reports: &Reports, matches: impl Fn(&AgentEvent) -> bool) -> bool {
    reports.lock().unwrap().iter().any(matches)
}

fn rewrapped(
    id: MessageId,
    fingerprint: shared::keys::Fingerprint,
) -> impl Fn(&AgentEvent) -> bool {
    move |event| {
        matches!(event, AgentEvent::Rewrapped { message_id, fingerprint: f, .. }
            if *message_id == id && *f == fingerprint)
    }
}

async fn flows(backend: Backend) {
    let relay = TestRelay::builder(backend).system_clock().start().await;
    let relay::testkit::Sender {
        id: organisation_id,
        api_key,
        ..
    } = relay.organisation("Riverside Clinic").await;
    let keys = keys();
    let home = tempfile::tempdir().unwrap();
    let state = StateDir::open(home.path().join("securetext")).unwrap();

    // Set-up: the key file is written owner-only, the key registered.
    let outcome = sender::setup::init(
        &state,
        InitRequest {
            relay_url: RelayUrl::parse(&relay.base).unwrap(),
            api_key: ApiKey::new(&api_key).unwrap(),
            store_api_key: true,
            key_file: None,
            kdf_params: KdfParams::MINIMUM,
            replace_registered_key: false,
        },
        &Password::new(PASSPHRASE).unwrap(),
        Some(keys::organisation_copy(&keys)),
    )
    .await
    .unwrap();
    assert_eq!(outcome.organisation_id, organisation_id);
    assert_eq!(
        outcome.fingerprint,
        keys.organisation.public_key().fingerprint()
    );
    let config = Config::load(state.clone(), Overrides::default()).unwrap();
    key_file_is_protected(&config, &keys);
    let client = Client::with_retry_policy(
        config.relay_url.clone(),
        config.api_key.clone(),
        RetryPolicy::default(),
    )
    .unwrap();
    let registered = client.organisation().await.unwrap();
    assert_eq!(
        registered.public_key.as_ref(),
        Some(keys.organisation.public_key())
    );
    let me = OrganisationIdentity {
        organisation_id,
        public_key: config.load_key_file().unwrap().public_key,
        policy: SendPolicy::default(),
    };

    // First contact: the patient is unknown, so the message is sealed to the organisation only.
    let first = client
        .send(&me, &state, &message("Your lab results are ready."))
        .await
        .unwrap();
    assert_eq!(
        first.recipient,
        RecipientTrust::FirstContact {
            identity_check: None
        }
    );
    assert_eq!(first.status, SubmitStatus::Queued);

    // The agent runs as a task with the key unsealed from the key file.
    let agent_key = unseal_key(&config, &Password::new(PASSPHRASE).unwrap()).unwrap();
    let agent = Agent::new(
        Client::with_retry_policy(
            config.relay_url.clone(),
            config.api_key.clone(),
            RetryPolicy::no_retries(),
        )
        .unwrap(),
        organisation_id,
        agent_key,
        &state,
        AgentPolicy::default(),
    );
    let reports: Reports = Arc::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sink = reports.clone();
    let agent_task = tokio::spawn(async move {
        agent
            .run(
                RunOptions::default(),
                async move {
                    let _ = stopped.await;
                },
                move |notice| {
                    if let AgentNotice::Event(event) = notice {
                        sink.lock().unwrap().push(event.clone());
                    }
                },
            )
            .await;
    });

    // The agent's requests wait at the relay (long-polls for an enrollment and for an identity
    // check, not polls); the patient enrolls; the waiting request answers and the agent
    // re-wraps.
    let link = relay.deliver_link_for(PHONE).await;
    let changes = relay.state().changes();
    wait_for(Duration::from_secs(10), || async { changes.waiting() == 2 })
        .await
        .expect("the agent's long-poll waits");
    let patient = Patient {
        key: keys::patient_copy(&keys),
        password: "purple elephant 42",
    };
    let recipient = patient.enroll(&relay, &link).await;
    assert_eq!(recipient, first.recipient_id);
    let fingerprint = keys.patient.public_key().fingerprint();
    let took = wait_for(Duration::from_secs(10), || async {
        reported(&reports, rewrapped(first.message_id, fingerprint))
    })
    .await
    .expect("the agent re-wraps the first-contact message");
    eprintln!("re-wrap observed {took:?} after the enrollment was accepted");
    assert!(reported(&reports, |e| matches!(
        e,
        AgentEvent::Rewrapped {
            newly_pinned: true,
            ..
        }
    )));
    let read = patient.read_all(&relay, &link, recipient).await;
    assert_eq!(read.len(), 1);
    assert_eq!(
        read[0].1.as_ref().unwrap().body,
        "Your lab results are ready."
    );

    // Send to the enrolled recipient: sealed to the pinned key directly, no re-wrap needed.
    let second = client
        .send(
            &me,
            &state,
            &message("Please call us about your appointment."),
        )
        .await
        .unwrap();
    assert_eq!(
        second.recipient,
        RecipientTrust::Pinned { fingerprint },
        "the agent pinned the key at first use"
    );
    let read = patient.read_all(&relay, &link, recipient).await;
    let bodies: Vec<_> = read
        .iter()
        .map(|(_, c)| c.as_ref().unwrap().body.clone())
        .collect();
    assert!(bodies.contains(&"Please call us about your appointment.".to_owned()));
    let status = client.status(second.message_id).await.unwrap();
    assert_eq!(status.status, MessageStatus::Active);
    assert_eq!(status.recipient_id, recipient);
    assert!(!status.events.is_empty());

    changed_key_is_held(
        &relay,
        &client,
        &me,
        &state,
        &keys,
        &reports,
        [first.message_id, second.message_id],
    )
    .await;

    // Revocation.
    client.revoke(first.message_id).await.unwrap();
    assert_eq!(
        client.status(first.message_id).await.unwrap().status,
        MessageStatus::Revoked
    );
    let error = client.revoke(first.message_id).await.unwrap_err();
    assert!(
        matches!(&error, Error::Relay(e) if e.status == 409 && e.code == sender::ErrorCode::NotActive),
        "{error}"
    );

    // The agent stops cleanly and promptly.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), agent_task)
        .await
        .expect("the agent stops within 5 s")
        .unwrap();

    audit_export_verifies(&client, &state, organisation_id).await;
    relay.finish().await;
}

/// The key file is owner-only, holds no private key in the clear, and opens only with the
/// passphrase.
fn key_file_is_protected(config: &Config, keys: &Keys) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&config.key_file), 0o600);
    assert_eq!(mode(config.state.path()), 0o700);
    assert_eq!(mode(&config.state.config_file()), 0o600);
    let text = std::fs::read_to_string(&config.key_file).unwrap();
    let der = keys.organisation.to_pkcs8_der().unwrap();
    // Any 32-byte window of the PKCS#8 (the private values) would show up in base64url.
    for window in der.chunks_exact(48).skip(1) {
        let encoded = shared::encoding::b64u_encode(window);
        assert!(
            !text.contains(&encoded[..32]),
            "key file holds clear key material"
        );
    }
    assert!(matches!(
        unseal_key(config, &Password::new("not the passphrase").unwrap()),
        Err(Error::WrongPassphrase)
    ));
    let opened = unseal_key(config, &Password::new(PASSPHRASE).unwrap()).unwrap();
    assert_eq!(opened.public_key(), keys.organisation.public_key());
}

/// The patient forgets the password: the operator resets. The links texted before the reset
/// no longer enroll (issue 10, part 4), so the sender sends a new message, which `send` holds
/// until the number's change to "no key" is approved; the patient enrolls a new key through
/// that message's link. The agent holds the re-wraps and `send` refuses until the key change is
/// approved; then every live message is re-wrapped to the new key.
#[allow(clippy::too_many_arguments)]
async fn changed_key_is_held(
    relay: &TestRelay,
    client: &Client,
    me: &OrganisationIdentity,
    state: &StateDir,
    keys: &Keys,
    reports: &Reports,
    [first, second]: [MessageId; 2],
) {
    relay.reset_enrollment(PHONE).await;
    let error = client
        .send(me, state, &message("After the reset."))
        .await
        .unwrap_err();
    let Error::RecipientChangeHeld {
        recipient_id: bound,
        offered_recipient: None,
    } = error
    else {
        panic!("{error}");
    };
    PinStore::new(state)
        .approve_recipient_change(bound, None)
        .unwrap();
    let after_reset = client
        .send(me, state, &message("After the reset."))
        .await
        .unwrap();
    let link = &link_of(relay, after_reset.message_id).await;
    let messages = [first, second, after_reset.message_id];
    let patient = Patient {
        key: keys::patient_after_reset_copy(keys),
        password: "a new password 43",
    };
    let recipient = patient.enroll(relay, link).await;
    assert_eq!(recipient, bound);
    let old = keys.patient.public_key().fingerprint();
    let new = keys.patient_after_reset.public_key().fingerprint();

    let held = |id: MessageId| {
        move |event: &AgentEvent| {
            matches!(event, AgentEvent::KeyChangeHeld { message_id, pinned, offered, .. }
                if *message_id == id && *pinned == old && *offered == new)
        }
    };
    wait_for(Duration::from_secs(10), || async {
        messages.iter().all(|id| reported(reports, held(*id)))
    })
    .await
    .expect("the agent reports every message as held");
    let pins = PinStore::new(state);
    let pin = pins.get(recipient).unwrap().unwrap();
    assert_eq!(pin.fingerprint, old);
    assert_eq!(pin.pending.unwrap().fingerprint, new);
    // Still held after further passes: nothing is wrapped to the new key.
    let pending = client.pending_rewraps().await.unwrap();
    assert_eq!(pending.len(), 3);
    assert!(!reported(reports, rewrapped(messages[0], new)));
    let read = patient.read_all(relay, link, recipient).await;
    assert!(read.iter().all(|(_, content)| content.is_none()));
    // Sending refuses the unapproved key, and sends nothing.
    let error = client
        .send(me, state, &message("Must not be sent."))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::KeyChangeHeld { pinned, offered, .. } if pinned == old && offered == new),
        "{error}"
    );
    assert_eq!(error.exit_code(), sender::ExitCode::KeyChangeHeld);

    // Approving a different fingerprint does nothing; approving the checked one releases them.
    assert!(pins.approve(recipient, Some(old)).is_err());
    pins.approve(recipient, Some(new)).unwrap();
    wait_for(Duration::from_secs(10), || async {
        messages
            .iter()
            .all(|id| reported(reports, rewrapped(*id, new)))
    })
    .await
    .expect("every message is re-wrapped after approval");
    let read = patient.read_all(relay, link, recipient).await;
    assert_eq!(read.len(), 3);
    assert!(read.iter().all(|(_, content)| content.is_some()));
    // Each message was unwrapped once per key: the journal holds one wrap per key.
    let journal = Journal::new(state);
    let record = journal.get(messages[0]).unwrap().unwrap();
    assert_eq!(record.wraps.len(), 2);
    assert!(record.wraps.iter().all(|w| w.uploaded));
}

/// The link texted for `message`. SMS carry no message id, so the links texted to [`PHONE`] are
/// opened, newest first, until one leads to `message` (SMS of earlier messages may be written
/// after it by the relay's outbox worker, and links texted before a reset answer `409`).
async fn link_of(relay: &TestRelay, message: MessageId) -> String {
    wait_until(
        Duration::from_secs(10),
        "the SMS of the message",
        || async {
            relay.deliver_sms().await;
            for sms in relay.sms().iter().rev().filter(|s| s["to"] == PHONE) {
                let token = sms["body"].as_str()?.rsplit('#').next()?.to_owned();
                let opened = relay
                    .http
                    .post(relay.url("/v1/viewer/open"))
                    .json(&serde_json::json!({ "link": token }))
                    .send()
                    .await
                    .ok()?;
                if opened.status() == 200 {
                    let body: serde_json::Value = opened.json().await.ok()?;
                    if body["message_id"] == message.to_string() {
                        return Some(token);
                    }
                }
            }
            None
        },
    )
    .await
}

/// The export verifies locally, a tampered one fails, and a rewritten history is caught by the
/// anchor of the previous verification.
async fn audit_export_verifies(
    client: &Client,
    state: &StateDir,
    organisation: shared::ids::OrganisationId,
) {
    let events = client.audit_export().await.unwrap();
    assert!(events.len() >= 8, "{} events", events.len());
    verify_events(&events, organisation, None).unwrap();
    let text = shared::audit::to_json_lines(&events);
    let anchors = AnchorStore::new(state);
    let (_, verified) = verify_log(&text, organisation, anchors.load().unwrap().as_ref()).unwrap();
    assert_eq!(verified.events, events.len());
    anchors.advance(&events).unwrap();

    // A tampered export: one event's time changed.
    let line = text.lines().nth(1).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
    value["at"] = (value["at"].as_i64().unwrap() + 1).into();
    let tampered = text.replacen(line, &value.to_string(), 1);
    let error = verify_log(&tampered, organisation, None).unwrap_err();
    assert_eq!(error.exit_code(), sender::ExitCode::VerificationFailed);
    // The same export verifies again against the stored anchor; a shortened one does not.
    let anchor = anchors.load().unwrap().unwrap();
    verify_log(&text, organisation, Some(&anchor)).unwrap();
    let shortened = shared::audit::to_json_lines(&events[..events.len() - 1]);
    assert!(verify_log(&shortened, organisation, Some(&anchor)).is_err());
}

/// Copies of the vector keys (private keys are deliberately not `Clone`).
mod keys {
    use shared::keys::PrivateKey;

    fn copy(key: &PrivateKey) -> PrivateKey {
        PrivateKey::from_pkcs8_der(&key.to_pkcs8_der().unwrap()).unwrap()
    }

    pub fn organisation_copy(keys: &super::Keys) -> PrivateKey {
        copy(&keys.organisation)
    }

    pub fn patient_copy(keys: &super::Keys) -> PrivateKey {
        copy(&keys.patient)
    }

    pub fn patient_after_reset_copy(keys: &super::Keys) -> PrivateKey {
        copy(&keys.patient_after_reset)
    }
}
