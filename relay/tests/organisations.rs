//! Patients belong to an organisation (issue 10, part 1). Each test is an attack that worked on
//! the relay before: one organisation's lookup answering for another's patient (and pinning the
//! key an interceptor enrolled through the other's link), a session opened through one
//! organisation's link listing every organisation's messages, and one password opening a
//! patient's messages from every organisation. A last test carries a patient stored before
//! migration 0008 over to the organisation that messaged it first. Every test runs on SQLite
//! and on PostgreSQL.

use relay::store::Backend;
use relay::testkit::{Patient, Sender, TestRelay, keys};
use serde_json::{Value, json};
use shared::api::PatientState;
use shared::ids::MessageId;

const PHONE: &str = "+15557800001";
/// A number nobody ever texted.
const UNKNOWN: &str = "+15557800999";

/// For each attack `async fn attack(backend: Backend)`, a module `attack` with the tests
/// `on_sqlite` and `on_postgres`.
macro_rules! attacks {
    ($($attack:ident),* $(,)?) => {
        $(
            mod $attack {
                #[tokio::test]
                async fn on_sqlite() {
                    super::$attack(super::Backend::Sqlite).await;
                }

                #[tokio::test]
                async fn on_postgres() {
                    super::$attack(super::Backend::Postgres).await;
                }
            }
        )*
    };
}

attacks![
    lookup_answers_only_for_the_callers_own_patients,
    an_interceptor_at_one_organisation_gets_nothing_from_another,
    a_session_lists_only_its_organisations_messages,
    a_patient_stored_before_0008_stays_with_its_first_organisation,
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn patient() -> Patient {
    Patient {
        key: keys().patient,
        password: "the patient's clinic password",
    }
}

/// Someone else who holds one of the patient's links.
fn interceptor() -> Patient {
    Patient {
        key: keys().patient_after_reset,
        password: "the interceptor's password",
    }
}

/// A first-contact message from `sender` to `phone`; its id and the link texted for it.
async fn first_contact(relay: &TestRelay, sender: &Sender, body: &str) -> (MessageId, String) {
    let id = relay.submit_first_contact(sender, PHONE, body).await;
    (id, relay.deliver_link_for(PHONE).await)
}

/// `POST /v1/recipients/lookup` as `sender`.
async fn lookup(relay: &TestRelay, sender: &Sender, phone: &str) -> (u16, Value) {
    relay
        .call(
            reqwest::Method::POST,
            "/v1/recipients/lookup",
            Some(&sender.api_key),
            Some(json!({ "phone": phone })),
        )
        .await
}

/// The messages awaiting `sender`'s re-wrap (`GET /v1/rewraps`): (message id, fingerprint of
/// the key the relay asks to re-wrap to).
async fn rewraps(relay: &TestRelay, sender: &Sender) -> Vec<(String, String)> {
    let (status, body) = relay
        .call(
            reqwest::Method::GET,
            "/v1/rewraps",
            Some(&sender.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["message_id"].as_str().unwrap().to_owned(),
                p["recipient_fingerprint"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The ids of the messages a session unlocked through `link` lists.
async fn listed(relay: &TestRelay, who: &Patient, link: &str) -> Vec<MessageId> {
    let session = who.unlock(relay, link).await;
    let (status, body) = {
        let response = relay
            .http
            .get(relay.url("/v1/viewer/messages"))
            .header("cookie", &session.cookie)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200, "{body}");
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| serde_json::from_value(m["message_id"].clone()).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Attacks
// ---------------------------------------------------------------------------------------------

/// A pharmacy's API key learned whether a number was a clinic's enrolled patient, when it
/// enrolled and its key. Now its lookup answers exactly as for a number nobody texted.
async fn lookup_answers_only_for_the_callers_own_patients(backend: Backend) {
    let relay = TestRelay::start(backend).await;
    let clinic = relay
        .registered_organisation("Behavioural Health Clinic")
        .await;
    let pharmacy = relay.registered_organisation("Corner Pharmacy").await;
    let (_, link) = first_contact(&relay, &clinic, "your appointment").await;
    patient().enroll(&relay, &link).await;

    let (status, own) = lookup(&relay, &clinic, PHONE).await;
    assert_eq!(status, 200, "{own}");
    let other = lookup(&relay, &pharmacy, PHONE).await;
    let unknown = lookup(&relay, &pharmacy, UNKNOWN).await;
    assert_eq!(other.0, 404, "{}", other.1);
    assert_eq!(
        other, unknown,
        "another organisation's patient reads as an unknown number"
    );
    relay.finish().await;
}

/// Whoever opened a clinic's first-contact link first enrolled their own key, and every other
/// organisation's lookup then returned that key (their senders pinned it on first use). Now the
/// interceptor's key stays the clinic's problem: the pharmacy's first contact creates a patient
/// of its own, the real patient enrolls there, and the pharmacy is asked to re-wrap to the real
/// patient's key only.
async fn an_interceptor_at_one_organisation_gets_nothing_from_another(backend: Backend) {
    let relay = TestRelay::start(backend).await;
    let clinic = relay.registered_organisation("Clinic").await;
    let pharmacy = relay.registered_organisation("Pharmacy").await;
    let (_, intercepted) = first_contact(&relay, &clinic, "clinic news").await;
    interceptor().enroll(&relay, &intercepted).await;

    let (status, body) = lookup(&relay, &pharmacy, PHONE).await;
    assert_eq!(
        status, 404,
        "the pharmacy saw the interceptor's key: {body}"
    );
    let (prescription, link) = first_contact(&relay, &pharmacy, "your prescription").await;
    let opened = Patient::open(&relay, &link).await;
    assert!(
        matches!(opened.patient, PatientState::New { .. }),
        "the pharmacy's link offers the interceptor's enrollment: {:?}",
        opened.patient
    );
    patient().enroll(&relay, &link).await;
    let real = keys().patient.public_key().fingerprint().to_string();
    assert_eq!(
        rewraps(&relay, &pharmacy).await,
        vec![(prescription.to_string(), real)]
    );
    // The interceptor's password opens nothing of the pharmacy's.
    let (status, body) = relay
        .call(
            reqwest::Method::POST,
            "/v1/viewer/unlock",
            None,
            Some(json!({
                "link": link,
                "proof": interceptor_proof(&relay, &link).await,
            })),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    relay.finish().await;
}

/// The interceptor's proof for the patient behind `link`, derived from `open`'s salt.
async fn interceptor_proof(relay: &TestRelay, link: &str) -> String {
    let opened = Patient::open(relay, link).await;
    let PatientState::Enrolled { kdf_params, salt } = opened.patient else {
        panic!("not enrolled");
    };
    let password = shared::kdf::Password::new(interceptor().password).unwrap();
    shared::kdf::derive_password_keys(&password, &salt, &kdf_params)
        .unwrap()
        .auth
        .to_base64url()
        .to_string()
}

/// A session opened through one organisation's link listed every organisation's messages, and
/// one password opened them all. Now the same number is two patients with two passwords, and
/// each session lists its own organisation's messages only.
async fn a_session_lists_only_its_organisations_messages(backend: Backend) {
    let relay = TestRelay::start(backend).await;
    let clinic = relay.registered_organisation("Clinic").await;
    let pharmacy = relay.registered_organisation("Pharmacy").await;
    let (clinic_message, clinic_link) = first_contact(&relay, &clinic, "clinic").await;
    let (pharmacy_message, pharmacy_link) = first_contact(&relay, &pharmacy, "pharmacy").await;
    let at_clinic = patient();
    let at_pharmacy = Patient {
        key: keys().patient,
        password: "the patient's pharmacy password",
    };
    let clinic_patient = at_clinic.enroll(&relay, &clinic_link).await;
    let pharmacy_patient = at_pharmacy.enroll(&relay, &pharmacy_link).await;
    assert_ne!(clinic_patient, pharmacy_patient);

    assert_eq!(
        listed(&relay, &at_clinic, &clinic_link).await,
        vec![clinic_message]
    );
    assert_eq!(
        listed(&relay, &at_pharmacy, &pharmacy_link).await,
        vec![pharmacy_message]
    );
    relay.finish().await;
}

/// A patient stored before migration 0008 belonged to no organisation, and its lookup hash was
/// the number's alone. The start after the upgrade gives it to the organisation that messaged it
/// first; another organisation's earlier message stays readable through its own link, in a
/// session that lists only that organisation's messages, and that organisation's lookup finds
/// nothing, so its next message goes to a patient of its own.
async fn a_patient_stored_before_0008_stays_with_its_first_organisation(backend: Backend) {
    let mut relay = TestRelay::start(backend).await;
    let clinic = relay.registered_organisation("Clinic").await;
    let pharmacy = relay.registered_organisation("Pharmacy").await;
    let (clinic_message, clinic_link) = first_contact(&relay, &clinic, "clinic").await;
    let recipient = patient().enroll(&relay, &clinic_link).await;
    relay.advance(10);
    let (pharmacy_message, pharmacy_link) = first_contact(&relay, &pharmacy, "pharmacy").await;
    // The rows as the relay wrote them before 0008: one patient for the number, shared by both
    // organisations' messages, indexed by the number alone.
    let legacy_lookup = relay.state().data_key().lookup("phone", PHONE.as_bytes());
    {
        let mut tx = relay.state().store().begin().await.unwrap();
        let pharmacy_own: String =
            sqlx::query_scalar("SELECT recipient_id FROM messages WHERE id = $1")
                .bind(pharmacy_message.to_string())
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        sqlx::query("UPDATE messages SET recipient_id = $1 WHERE id = $2")
            .bind(recipient.to_string())
            .bind(pharmacy_message.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("DELETE FROM recipients WHERE id = $1")
            .bind(pharmacy_own)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE recipients SET organisation_id = NULL, phone_lookup = $1 WHERE id = $2",
        )
        .bind(legacy_lookup.to_vec())
        .bind(recipient.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(
        lookup(&relay, &clinic, PHONE).await.0,
        404,
        "set-up: still scoped"
    );

    relay.stop().await;
    relay.boot(relay::limits::Limits::default()).await;
    let (status, found) = lookup(&relay, &clinic, PHONE).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["recipient_id"], json!(recipient));
    assert_eq!(lookup(&relay, &pharmacy, PHONE).await.0, 404);
    assert_eq!(
        listed(&relay, &patient(), &clinic_link).await,
        vec![clinic_message]
    );
    assert_eq!(
        listed(&relay, &patient(), &pharmacy_link).await,
        vec![pharmacy_message],
        "the pharmacy's earlier message stays readable through its own link"
    );
    // The pharmacy's next message goes to a patient of its own, not yet enrolled.
    let (_, next) = first_contact(&relay, &pharmacy, "pharmacy again").await;
    assert!(matches!(
        Patient::open(&relay, &next).await.patient,
        PatientState::New { .. }
    ));
    relay.finish().await;
}
