//! The relay's side of the identity check (issue 10, part 2): an attempt the patient never
//! finishes (they read the agent's answer, learn from its confirmation whether their guess was
//! right, and stop) is still failed, audited and erased, and its held enrollment never reaches
//! the patient. The agent is played with `shared` directly. On SQLite and PostgreSQL.

use rand_core::OsRng;
use relay::store::Backend;
use relay::testkit::{Patient, TestRelay, header, keys, seal};
use serde_json::{Value, json};
use shared::api::{CheckStarted, EnrollRequest, PatientState, PendingChecks};
use shared::bundle::{KeyBundle, SealBinding};
use shared::identity_check::{CheckAnswer, CheckContext, CheckKind, PatientCheck, answer_attempt};
use shared::kdf::{KdfParams, Password, Salt, derive_password_keys};

const PHONE: &str = "+15557810001";

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn on_sqlite() {
                    super::$test(super::Backend::Sqlite).await;
                }

                #[tokio::test]
                async fn on_postgres() {
                    super::$test(super::Backend::Postgres).await;
                }
            }
        )*
    };
}

on_both_backends![an_unfinished_answer_is_failed_audited_and_erased];

async fn an_unfinished_answer_is_failed_audited_and_erased(backend: Backend) {
    let relay = TestRelay::start(backend).await;
    let clinic = relay.registered_organisation("Riverside Clinic").await;
    let envelope = seal(
        header(clinic.id, None, relay.now(), 86_400),
        "results",
        &keys(),
        None,
    );
    let message_id = envelope.header.message_id;
    let request = json!({ "to": PHONE, "envelope": envelope, "identity_check": "date_of_birth" });
    let (status, answer) = relay
        .call(
            reqwest::Method::POST,
            "/v1/messages",
            Some(&clinic.api_key),
            Some(request),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let link = relay.deliver_link_for(PHONE).await;

    // The guesser enrolls with an answer...
    let opened = Patient::open(&relay, &link).await;
    let PatientState::New {
        identity_check: Some(challenge),
        ..
    } = opened.patient
    else {
        panic!("a new patient with a check: {:?}", opened.patient);
    };
    assert_eq!(
        (challenge.kind, challenge.attempts_left),
        (CheckKind::DateOfBirth, 5)
    );
    let key = keys().patient_after_reset;
    let binding = SealBinding {
        recipient: opened.recipient_id,
        salt: Salt::random(&mut OsRng),
        kdf_params: KdfParams::MINIMUM,
    };
    let derived = derive_password_keys(
        &Password::new("a guesser's password").unwrap(),
        &binding.salt,
        &binding.kdf_params,
    )
    .unwrap();
    let context = CheckContext {
        message_id: &opened.message_id,
        organisation_id: &opened.organisation_id,
    };
    let guess = CheckAnswer::new(CheckKind::DateOfBirth, Some("1990-01-01"), None).unwrap();
    let (_, first) = PatientCheck::start(&guess, &context, OsRng);
    let enroll = EnrollRequest {
        link: link.clone(),
        bundle: KeyBundle::seal(&key, &binding, &derived.sealing, &mut OsRng).unwrap(),
        salt: binding.salt,
        kdf_params: binding.kdf_params,
        verifier: derived.auth.verifier(),
        identity_check: Some(first),
    };
    let (status, started) = relay
        .call(
            reqwest::Method::POST,
            "/v1/viewer/enroll",
            None,
            Some(serde_json::to_value(&enroll).unwrap()),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let started: CheckStarted = serde_json::from_value(started).unwrap();
    assert_eq!(started.attempts_left, 4);

    // ...the agent answers it (with the right date: the guess was wrong)...
    let (status, pending) = relay
        .call(
            reqwest::Method::GET,
            "/v1/enrollment-checks",
            Some(&clinic.api_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{pending}");
    let pending: PendingChecks = serde_json::from_value(pending).unwrap();
    let item = &pending.pending[0];
    assert_eq!(
        (item.attempt_id, item.message_id),
        (started.attempt_id, message_id)
    );
    let truth = CheckAnswer::new(CheckKind::DateOfBirth, Some("1984-03-07"), None).unwrap();
    let (reply, _) = answer_attempt(
        &truth,
        &context,
        &item.patient_message,
        &item.recipient_fingerprint,
        OsRng,
    )
    .unwrap();
    let path = format!("/v1/enrollment-checks/{}/reply", item.attempt_id);
    let body = json!({ "agent_message": reply.message, "agent_confirmation": reply.confirmation });
    let (status, answer) = relay
        .call(
            reqwest::Method::PUT,
            &path,
            Some(&clinic.api_key),
            Some(body),
        )
        .await;
    assert_eq!(status, 204, "{answer}");

    // ...and the guesser, having learnt what it wanted, never confirms. The held enrollment is
    // in the database until the attempt's lifetime passes; then the purge fails and erases it.
    let held = || async {
        let mut conn = relay.state().store().conn().await.unwrap();
        sqlx::query("SELECT progress, CASE WHEN password_record IS NULL THEN 0 ELSE 1 END AS held FROM enrollment_checks")
            .fetch_one(&mut *conn)
            .await
            .map(|row| {
                use sqlx::Row;
                (row.get::<String, _>("progress"), row.get::<i32, _>("held") == 1)
            })
            .unwrap()
    };
    assert_eq!(held().await, ("answered".to_owned(), true));
    relay::jobs::purge_once(relay.state()).await.unwrap();
    assert_eq!(
        held().await,
        ("answered".to_owned(), true),
        "not before its lifetime"
    );
    relay.advance(relay::store::checks::ATTEMPT_LIFETIME_SECONDS + 1);
    relay::jobs::purge_once(relay.state()).await.unwrap();
    assert_eq!(held().await, ("failed".to_owned(), false));

    let (_, status) = relay
        .call(
            reqwest::Method::GET,
            &format!("/v1/messages/{message_id}"),
            Some(&clinic.api_key),
            None,
        )
        .await;
    let failed: Vec<&Value> = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "enrollment_check_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{status}");
    assert_eq!(failed[0]["detail"], "attempts_left=4 reason=abandoned");
    assert!(
        matches!(
            Patient::open(&relay, &link).await.patient,
            PatientState::New { .. }
        ),
        "nothing was enrolled"
    );
    relay.finish().await;
}
