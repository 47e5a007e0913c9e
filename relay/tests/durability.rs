//! Invariant 3 and the operational promises: accepted messages and their queued SMS survive a
//! restart; SMS survive provider outages (retries with backoff) and are sent once even with
//! several relay instances sending in parallel; the audit chain detects altered records; sends are rate limited;
//! signed delivery reports land in the audit log and unsigned ones are refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay::limits::Limits;
use relay::sms::{Accepted, OutgoingSms, SendFuture, SmsError, SmsProvider};
use relay::store::Backend;
use relay::testkit::{TestRelay, header, keys, seal, wait_until};
use reqwest::Method;
use serde_json::json;
use shared::audit::AuditKind;
use tokio::sync::watch;

const PHONE: &str = "+15550001111";

async fn registered_clinic(relay: &TestRelay) -> relay::testkit::Sender {
    relay.registered_organisation("Lakeside Health").await
}

async fn send(
    relay: &TestRelay,
    clinic: &relay::testkit::Sender,
    body: &str,
) -> shared::ids::MessageId {
    relay.submit_first_contact(clinic, PHONE, body).await
}

#[tokio::test]
async fn restart_keeps_messages_and_sends_queued_sms_sqlite() {
    restart(Backend::Sqlite).await;
}

#[tokio::test]
async fn restart_keeps_messages_and_sends_queued_sms_postgres() {
    restart(Backend::Postgres).await;
}

async fn restart(backend: Backend) {
    let mut relay = TestRelay::start(backend).await;
    let clinic = registered_clinic(&relay).await;
    let ids = [
        send(&relay, &clinic, "one").await,
        send(&relay, &clinic, "two").await,
    ];
    relay.stop().await;
    assert!(
        relay.sms().is_empty(),
        "nothing was sent before the restart"
    );

    relay.boot(Limits::default()).await;
    relay.deliver_sms().await;
    assert_eq!(
        relay.sms().len(),
        2,
        "both queued SMS went out after the restart"
    );
    for id in ids {
        let (status, body) = relay
            .call(
                Method::GET,
                &format!("/v1/messages/{id}"),
                Some(&clinic.api_key),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "active");
    }
    let link = relay.link_for(PHONE);
    let (status, opened) = relay
        .call(
            Method::POST,
            "/v1/viewer/open",
            None,
            Some(json!({ "link": link })),
        )
        .await;
    assert_eq!(status, 200, "{opened}");
    relay.finish().await;
}

/// A provider that fails with a temporary error a given number of times, then accepts.
#[derive(Debug)]
struct Flaky {
    failures_left: AtomicU32,
    sent: AtomicU32,
}

impl SmsProvider for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }

    fn send<'a>(&'a self, sms: &'a OutgoingSms) -> SendFuture<'a> {
        Box::pin(async move {
            if self.failures_left.load(Ordering::SeqCst) > 0 {
                self.failures_left.fetch_sub(1, Ordering::SeqCst);
                return Err(SmsError::Temporary("provider down".into()));
            }
            self.sent.fetch_add(1, Ordering::SeqCst);
            Ok(Accepted {
                provider_id: format!("flaky-{}", sms.reference),
            })
        })
    }
}

#[tokio::test]
async fn provider_outage_is_retried_with_backoff() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let clinic = registered_clinic(&relay).await;
    let id = send(&relay, &clinic, "retry me").await;
    let flaky = Arc::new(Flaky {
        failures_left: AtomicU32::new(2),
        sent: AtomicU32::new(0),
    });
    let instance = relay.instance(flaky.clone()).await;

    let send_due = || relay::jobs::send_due(&instance);
    assert_eq!(send_due().await.unwrap(), 1, "attempt 1 fails");
    assert_eq!(
        send_due().await.unwrap(),
        0,
        "not due again before the backoff"
    );
    relay.advance(relay::jobs::backoff_seconds(1));
    assert_eq!(send_due().await.unwrap(), 1, "attempt 2 fails");
    relay.advance(relay::jobs::backoff_seconds(2));
    assert_eq!(send_due().await.unwrap(), 1, "attempt 3 succeeds");
    assert_eq!(send_due().await.unwrap(), 0);
    assert_eq!(flaky.sent.load(Ordering::SeqCst), 1);

    let kinds = relay.event_kinds(&clinic.api_key, id).await;
    assert_eq!(kinds, ["message_created", "sms_queued", "sms_sent"]);
    relay.finish().await;
}

#[tokio::test]
async fn permanent_failure_is_recorded_once() {
    #[derive(Debug)]
    struct Refusing;
    impl SmsProvider for Refusing {
        fn name(&self) -> &'static str {
            "refusing"
        }
        fn send<'a>(&'a self, _: &'a OutgoingSms) -> SendFuture<'a> {
            Box::pin(async { Err(SmsError::Permanent("invalid number".into())) })
        }
    }
    let relay = TestRelay::start(Backend::Sqlite).await;
    let clinic = registered_clinic(&relay).await;
    let id = send(&relay, &clinic, "never arrives").await;
    let instance = relay.instance(Arc::new(Refusing)).await;
    assert_eq!(relay::jobs::send_due(&instance).await.unwrap(), 1);
    relay.advance(3600);
    assert_eq!(
        relay::jobs::send_due(&instance).await.unwrap(),
        0,
        "a permanent failure is not retried"
    );
    let kinds = relay.event_kinds(&clinic.api_key, id).await;
    assert_eq!(kinds.last().map(String::as_str), Some("sms_failed"));
    relay.finish().await;
}

/// Counts provider calls per outbox reference and per relay instance.
#[derive(Debug)]
struct Counting {
    instance: usize,
    calls: Arc<Mutex<HashMap<String, Vec<usize>>>>,
}

impl SmsProvider for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn send<'a>(&'a self, sms: &'a OutgoingSms) -> SendFuture<'a> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .entry(sms.reference.clone())
                .or_default()
                .push(self.instance);
            // Long enough for the instances' batches to overlap.
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(Accepted {
                provider_id: format!("counting-{}", sms.reference),
            })
        })
    }
}

/// Three relay instances on one PostgreSQL database, each running the outbox worker with 16
/// calls at once, drain a backlog together: each SMS is sent exactly once, by one instance.
#[tokio::test]
async fn several_instances_send_each_sms_once() {
    const BACKLOG: usize = 1500;
    let limits = Limits {
        sms_concurrency: Some(16),
        ..Limits::default()
    };
    let relay = TestRelay::builder(Backend::Postgres)
        .limits(limits)
        .start()
        .await;
    let clinic = registered_clinic(&relay).await;
    let references = relay.queue_sms(&clinic, PHONE, BACKLOG).await;
    let calls = Arc::new(Mutex::new(HashMap::<String, Vec<usize>>::new()));
    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::new();
    for instance in 0..3 {
        let provider = Arc::new(Counting {
            instance,
            calls: calls.clone(),
        });
        let state = relay.instance(provider).await;
        workers.push(tokio::spawn(relay::jobs::run_outbox(
            state,
            stopped.clone(),
        )));
    }
    wait_until(Duration::from_secs(120), "every SMS sent", || async {
        let called = calls.lock().unwrap().len();
        let mut conn = relay.state().store().conn().await.unwrap();
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sms_outbox WHERE status <> 'sent'")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        (called == BACKLOG && pending == 0).then_some(())
    })
    .await;
    stop.send(true).unwrap();
    for worker in workers {
        worker.await.unwrap();
    }
    let calls = std::mem::take(&mut *calls.lock().unwrap());
    let mut shares = [0; 3];
    for reference in &references {
        let by = &calls[reference];
        assert_eq!(by.len(), 1, "{reference} sent by instances {by:?}");
        shares[by[0]] += 1;
    }
    println!("{BACKLOG} SMS sent once each; by instance: {shares:?}");
    relay.finish().await;
}

#[tokio::test]
async fn altered_audit_records_fail_verification() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let relay = TestRelay::start(backend).await;
        let clinic = registered_clinic(&relay).await;
        send(&relay, &clinic, "audited").await;
        relay.deliver_sms().await;
        let org = clinic.id.to_string();
        let events = relay::admin::audit_events(relay.state().store(), &org)
            .await
            .unwrap();
        assert!(events.len() >= 5);
        shared::audit::verify_chain(&events).unwrap();

        // Alter one stored event: shift its time by one second.
        let victim = &events[2];
        let mut altered = victim.clone();
        altered.at += 1;
        sqlx::query("UPDATE audit_events SET event = $1 WHERE organisation_id = $2 AND seq = $3")
            .bind(serde_json::to_string(&altered).unwrap())
            .bind(&org)
            .bind(i64::try_from(victim.seq).unwrap())
            .execute(&mut *relay.state().store().conn().await.unwrap())
            .await
            .unwrap();
        let tampered = relay::admin::audit_events(relay.state().store(), &org)
            .await
            .unwrap();
        assert!(
            shared::audit::verify_chain(&tampered).is_err(),
            "{backend:?}: altered event accepted"
        );

        // Deleting an event breaks the chain as well.
        sqlx::query("DELETE FROM audit_events WHERE organisation_id = $1 AND seq = $2")
            .bind(&org)
            .bind(i64::try_from(victim.seq).unwrap())
            .execute(&mut *relay.state().store().conn().await.unwrap())
            .await
            .unwrap();
        let gapped = relay::admin::audit_events(relay.state().store(), &org)
            .await
            .unwrap();
        assert!(
            shared::audit::verify_chain(&gapped).is_err(),
            "{backend:?}: deleted event unnoticed"
        );
        relay.finish().await;
    }
}

#[tokio::test]
async fn sends_are_rate_limited_per_api_key() {
    let limits = Limits {
        send_rate_per_minute: 2,
        ..Limits::default()
    };
    let relay = TestRelay::builder(Backend::Sqlite)
        .limits(limits)
        .start()
        .await;
    let clinic = registered_clinic(&relay).await;
    send(&relay, &clinic, "1").await;
    send(&relay, &clinic, "2").await;
    let envelope = seal(
        header(clinic.id, None, relay.now(), 86_400),
        "3",
        &keys(),
        None,
    );
    let response = relay
        .http
        .post(relay.url("/v1/messages"))
        .bearer_auth(&clinic.api_key)
        .json(&json!({ "to": PHONE, "envelope": envelope }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    relay.advance(60);
    let (status, _) = relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(&clinic.api_key),
            Some(json!({ "to": PHONE, "envelope": envelope })),
        )
        .await;
    assert_eq!(status, 201, "a new minute, a new allowance");
    relay.finish().await;
}

#[tokio::test]
async fn signed_delivery_reports_are_audited_and_forged_ones_refused() {
    let relay = TestRelay::builder(Backend::Sqlite)
        .twilio_token("twilio-test-auth-token")
        .start()
        .await;
    let clinic = registered_clinic(&relay).await;
    let id = send(&relay, &clinic, "delivered?").await;
    relay.deliver_sms().await;
    let reference = relay.sms()[0]["reference"].as_str().unwrap().to_owned();

    let url = relay.url(relay::api::sms_callback::TWILIO_STATUS_PATH);
    let params = vec![
        ("MessageSid".to_owned(), format!("console-{reference}")),
        ("MessageStatus".to_owned(), "delivered".to_owned()),
    ];
    let post = |signature: String| {
        relay
            .http
            .post(&url)
            .header("x-twilio-signature", signature)
            .form(&params)
            .send()
    };
    let forged = post(relay::sms::twilio::sign("wrong-token", &url, &params))
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let unsigned = relay.http.post(&url).form(&params).send().await.unwrap();
    assert_eq!(unsigned.status(), 403);
    let signed = post(relay::sms::twilio::sign(
        "twilio-test-auth-token",
        &url,
        &params,
    ))
    .await
    .unwrap();
    let repeated = post(relay::sms::twilio::sign(
        "twilio-test-auth-token",
        &url,
        &params,
    ))
    .await
    .unwrap();
    assert_eq!(
        repeated.status(),
        204,
        "Twilio's retries are accepted and change nothing"
    );
    assert_eq!(signed.status(), 204);

    let kinds = relay.event_kinds(&clinic.api_key, id).await;
    assert_eq!(
        kinds,
        [
            "message_created",
            "sms_queued",
            "sms_sent",
            AuditKind::SmsDelivered.as_str()
        ]
    );
    relay.finish().await;
}

/// Issue 12, finding 8: replaying two captured callbacks (a `failed` and a `delivered`, both
/// correctly signed) in turns used to add an audit event per replay. The first final status of
/// an SMS is recorded once; a later, different one is a replay or a regression and is ignored.
#[tokio::test]
async fn replayed_delivery_reports_are_recorded_once() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let relay = TestRelay::builder(backend)
            .twilio_token("twilio-test-auth-token")
            .start()
            .await;
        let clinic = registered_clinic(&relay).await;
        let id = send(&relay, &clinic, "replayed?").await;
        relay.deliver_sms().await;
        let reference = relay.sms()[0]["reference"].as_str().unwrap().to_owned();
        let url = relay.url(relay::api::sms_callback::TWILIO_STATUS_PATH);
        let report = |status: &str| {
            let params = vec![
                ("MessageSid".to_owned(), format!("console-{reference}")),
                ("MessageStatus".to_owned(), status.to_owned()),
            ];
            let signature = relay::sms::twilio::sign("twilio-test-auth-token", &url, &params);
            relay
                .http
                .post(&url)
                .header("x-twilio-signature", signature)
                .form(&params)
                .send()
        };
        for status in ["delivered", "failed", "delivered", "failed", "delivered"] {
            assert_eq!(report(status).await.unwrap().status(), 204, "{status}");
        }
        let kinds = relay.event_kinds(&clinic.api_key, id).await;
        assert_eq!(
            kinds,
            [
                "message_created",
                "sms_queued",
                "sms_sent",
                AuditKind::SmsDelivered.as_str()
            ],
            "{backend:?}"
        );
        relay.finish().await;
    }
}

#[tokio::test]
async fn a_revoked_message_is_never_texted() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let relay = TestRelay::start(backend).await;
        let clinic = registered_clinic(&relay).await;
        let id = send(&relay, &clinic, "sent to the wrong number").await;
        let (status, _) = relay
            .call(
                Method::POST,
                &format!("/v1/messages/{id}/revoke"),
                Some(&clinic.api_key),
                None,
            )
            .await;
        assert_eq!(status, 200);
        relay.deliver_sms().await;
        relay::jobs::purge_once(relay.state()).await.unwrap();
        relay.deliver_sms().await;
        assert!(
            relay.sms().is_empty(),
            "{backend:?}: a revoked message was texted"
        );
        let kinds = relay.event_kinds(&clinic.api_key, id).await;
        assert_eq!(kinds, ["message_created", "sms_queued", "revoked"]);
        relay.finish().await;
    }
}
