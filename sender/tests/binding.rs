//! A relay that swaps a pinned patient for a "new" recipient (THREAT_MODEL.md 6.2), simulated
//! against the real relay by editing the sender's local state: a phone number bound to one
//! recipient id that the relay answers "not enrolled" for is refused (exit code 6) until
//! approved; the agent holds a re-wrap for another recipient than the one bound to the
//! journal record's number, and skips records whose submission was never confirmed.

use relay::store::Backend;
use relay::testkit::{Keys, Patient, TestRelay, keys};
use sender::agent::{Agent, AgentEvent, AgentPolicy};
use sender::client::RetryPolicy;
use sender::config::{ApiKey, Config, Overrides, RelayUrl};
use sender::journal::{Journal, RecordState};
use sender::pins::PinStore;
use sender::send::{
    OrganisationIdentity, OutgoingMessage, PhoneNumber, RecipientTrust, SendPolicy,
};
use sender::setup::{InitRequest, unseal_key};
use sender::state::StateDir;
use sender::{Client, Error};
use shared::envelope::Content;
use shared::ids::RecipientId;
use shared::kdf::{KdfParams, Password};

const PHONE: &str = "+15557770042";
const PASSPHRASE: &str = "organisation passphrase 2026";

fn message() -> OutgoingMessage {
    OutgoingMessage {
        to: PhoneNumber::parse(PHONE).unwrap(),
        content: Content {
            subject: "Clinic".into(),
            body: "Hello".into(),
        },
        lifetime_seconds: 3_600,
        identity_check: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_swaps_are_held() {
    let relay = TestRelay::builder(Backend::Sqlite)
        .system_clock()
        .start()
        .await;
    let relay::testkit::Sender {
        id: organisation_id,
        api_key,
        ..
    } = relay.organisation("Binding Clinic").await;
    let keys = keys();
    let home = tempfile::tempdir().unwrap();
    let state = StateDir::open(home.path().join("securetext")).unwrap();
    sender::setup::init(
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
    let config = Config::load(state.clone(), Overrides::default()).unwrap();
    let client = Client::with_retry_policy(
        config.relay_url.clone(),
        config.api_key.clone(),
        RetryPolicy::no_retries(),
    )
    .unwrap();
    let me = OrganisationIdentity {
        organisation_id,
        public_key: config.load_key_file().unwrap().public_key,
        policy: SendPolicy::default(),
    };
    let pins = PinStore::new(&state);
    let phone = pins.phone_hash(PHONE).unwrap();
    assert_eq!(
        pins.phone_hash(PHONE).unwrap(),
        phone,
        "stable per installation"
    );
    let pins_text = std::fs::read_to_string(state.pins_file()).unwrap();
    assert!(
        !pins_text.contains("5557770042"),
        "the number is never stored"
    );

    // The number was bound to a recipient the relay now says is not enrolled: refused.
    let earlier = RecipientId::from_bytes([9; 16]);
    pins.check_phone(&phone, Some(earlier), None).unwrap();
    let error = client.send(&me, &state, &message()).await.unwrap_err();
    assert!(
        matches!(error, Error::RecipientChangeHeld { recipient_id, offered_recipient: None }
            if recipient_id == earlier),
        "{error:?}"
    );
    assert_eq!(error.exit_code(), sender::ExitCode::KeyChangeHeld);
    assert!(
        Journal::new(&state).list().unwrap().is_empty(),
        "nothing sent"
    );
    let changes = pins.recipient_changes().unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].0, changes[0].1.recipient_id), (earlier, None));
    assert!(pins.has_recipient_change(earlier).unwrap());

    // Approved: the binding is dropped, the next send is a first contact and binds anew.
    let approval = pins.approve_recipient_change(earlier, None).unwrap();
    assert_eq!(approval.approved, None);
    let first = client.send(&me, &state, &message()).await.unwrap();
    assert_eq!(
        first.recipient,
        RecipientTrust::FirstContact {
            identity_check: None
        }
    );
    assert_eq!(
        pins.phone_recipient(&phone).unwrap(),
        Some(first.recipient_id)
    );
    let journal = Journal::new(&state);
    let record = journal.get(first.message_id).unwrap().unwrap();
    assert_eq!(record.phone_hash.as_ref(), Some(&phone));

    let link = relay.deliver_link_for(PHONE).await;
    let patient = Patient {
        key: keys::patient_copy(&keys),
        password: "purple elephant 42",
    };
    assert_eq!(patient.enroll(&relay, &link).await, first.recipient_id);
    let fingerprint = keys.patient.public_key().fingerprint();
    let agent = Agent::new(
        Client::with_retry_policy(
            config.relay_url.clone(),
            config.api_key.clone(),
            RetryPolicy::no_retries(),
        )
        .unwrap(),
        organisation_id,
        unseal_key(&config, &Password::new(PASSPHRASE).unwrap()).unwrap(),
        &state,
        AgentPolicy::default(),
    );

    // A record whose submission answer was lost (no recipient id) is not re-wrapped for
    // whatever recipient the relay names, and raises no permanent alarm.
    journal
        .modify(first.message_id, |r| {
            r.state = RecordState::Submitting;
            r.recipient_id = None;
        })
        .unwrap();
    let events = agent.run_once().await.unwrap();
    assert_eq!(
        events,
        vec![AgentEvent::NotRecorded {
            message_id: first.message_id
        }]
    );
    assert!(
        journal
            .get(first.message_id)
            .unwrap()
            .unwrap()
            .alarm
            .is_none()
    );
    assert!(
        pins.get(first.recipient_id).unwrap().is_none(),
        "not pinned"
    );

    // The journal's number is bound to another recipient than the relay lists: held as a
    // recipient change, not pinned on first use.
    let other_phone = pins.phone_hash("+15550000001").unwrap();
    pins.check_phone(&other_phone, Some(earlier), None).unwrap();
    journal
        .modify(first.message_id, |r| {
            r.state = RecordState::Accepted;
            r.recipient_id = Some(first.recipient_id);
            r.phone_hash = Some(other_phone.clone());
        })
        .unwrap();
    let events = agent.run_once().await.unwrap();
    assert_eq!(
        events,
        vec![AgentEvent::RecipientChangeHeld {
            message_id: first.message_id,
            recipient_id: earlier,
            offered_recipient_id: first.recipient_id,
            offered: fingerprint,
        }]
    );
    assert!(
        pins.get(first.recipient_id).unwrap().is_none(),
        "not pinned"
    );
    assert!(pins.has_recipient_change(earlier).unwrap());

    // Approving a different key fails; approving the offered one pins it and re-wraps.
    assert!(
        pins.approve_recipient_change(earlier, Some(keys.organisation.public_key().fingerprint()))
            .is_err()
    );
    let approval = pins
        .approve_recipient_change(earlier, Some(fingerprint))
        .unwrap();
    assert_eq!(approval.approved, Some(first.recipient_id));
    assert_eq!(
        pins.get(first.recipient_id).unwrap().unwrap().fingerprint,
        fingerprint
    );
    let events = agent.run_once().await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::Rewrapped { message_id, .. }
            if *message_id == first.message_id)),
        "{events:?}"
    );
    relay.finish().await;
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
}
