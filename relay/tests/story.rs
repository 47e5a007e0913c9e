//! One story through every endpoint — success paths and each error path — run against SQLite
//! and against PostgreSQL. The `shared` crate plays the sender and the viewer.

use rand_core::OsRng;
use relay::store::Backend;
use relay::testkit::{Keys, START, TestRelay, header, keys, seal};
use reqwest::Method;
use serde_json::{Value, json};
use shared::audit::{AuditEvent, AuditKind};
use shared::bundle::KeyBundle;
use shared::envelope::Envelope;
use shared::ids::RecipientId;
use shared::kdf::{KdfParams, Password, Salt, derive_password_keys};
use shared::keys::PrivateKey;

const PHONE: &str = "+15551230001";
const PASSWORD: &str = "purple elephant 42";

#[tokio::test]
async fn story_on_sqlite() {
    story(Backend::Sqlite).await;
}

#[tokio::test]
async fn story_on_postgres() {
    story(Backend::Postgres).await;
}

fn error_code(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

async fn audit(relay: &TestRelay, api_key: &str) -> Vec<AuditEvent> {
    let response = relay
        .http
        .get(relay.url("/v1/audit"))
        .bearer_auth(api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    shared::audit::from_json_lines(&response.text().await.unwrap()).unwrap()
}

/// The viewer's enrollment: derive keys, seal the private key, post the bundle.
async fn enroll(
    relay: &TestRelay,
    link: &str,
    patient: &PrivateKey,
    recipient: RecipientId,
) -> (u16, Value) {
    let salt = Salt::random(&mut OsRng);
    let keys = derive_password_keys(
        &Password::new(PASSWORD).unwrap(),
        &salt,
        &KdfParams::MINIMUM,
    )
    .unwrap();
    let bundle = KeyBundle::seal(patient, recipient, &keys.sealing, &mut OsRng).unwrap();
    relay
        .call(
            Method::POST,
            "/v1/viewer/enroll",
            None,
            Some(json!({
                "link": link,
                "bundle": bundle,
                "salt": salt,
                "kdf_params": KdfParams::MINIMUM,
                "verifier": keys.auth.verifier(),
            })),
        )
        .await
}

/// The viewer's unlock: fetch salt and parameters via open, derive, prove.
async fn unlock(relay: &TestRelay, link: &str, password: &str) -> reqwest::Response {
    let (status, opened) = relay
        .call(
            Method::POST,
            "/v1/viewer/open",
            None,
            Some(json!({ "link": link })),
        )
        .await;
    assert_eq!(status, 200, "{opened}");
    assert_eq!(opened["state"], "enrolled");
    let salt: Salt = serde_json::from_value(opened["salt"].clone()).unwrap();
    let params: KdfParams = serde_json::from_value(opened["kdf_params"].clone()).unwrap();
    let keys = derive_password_keys(&Password::new(password).unwrap(), &salt, &params).unwrap();
    relay
        .http
        .post(relay.url("/v1/viewer/unlock"))
        .json(&json!({ "link": link, "proof": keys.auth.to_base64url().as_str() }))
        .send()
        .await
        .unwrap()
}

fn cookie_of(response: &reqwest::Response) -> String {
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    set_cookie.split(';').next().unwrap().to_owned()
}

async fn with_cookie(relay: &TestRelay, method: Method, path: &str, cookie: &str) -> (u16, Value) {
    let response = relay
        .http
        .request(method, relay.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn submit(relay: &TestRelay, api_key: &str, to: &str, envelope: &Envelope) -> (u16, Value) {
    relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(api_key),
            Some(json!({ "to": to, "envelope": envelope })),
        )
        .await
}

async fn story(backend: Backend) {
    let relay = TestRelay::start(backend).await;
    let keys = keys();
    let clinic = relay.organisation("Riverside Clinic").await;
    let other = relay.organisation("Other Pharmacy").await;
    let key = clinic.api_key.as_str();

    sender_authentication(&relay, key).await;
    let first_id = first_contact_submission(&relay, &keys, &clinic, &other).await;
    let link = relay.link_for(PHONE);
    let recipient = viewer_enrollment(&relay, &keys, &link, first_id).await;
    rewrap_and_read(&relay, &keys, key, &link, recipient).await;
    enrolled_send(&relay, &keys, key, &clinic, recipient).await;
    revoke_and_expire(&relay, &keys, key, &clinic, recipient).await;
    request_hygiene(&relay, key).await;

    // The audit log verifies and tells the story in order.
    let events = audit(&relay, key).await;
    shared::audit::verify_chain(&events).unwrap();
    let first: Vec<AuditKind> = events
        .iter()
        .filter(|e| e.message_id == Some(first_id))
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        first,
        [
            AuditKind::MessageCreated,
            AuditKind::SmsQueued,
            AuditKind::SmsSent,
            AuditKind::LinkOpened,
            AuditKind::Enrolled,
            AuditKind::Rewrapped,
            AuditKind::UnlockFailed,
            AuditKind::UnlockFailed,
            AuditKind::UnlockFailed,
            AuditKind::UnlockFailed,
            AuditKind::UnlockFailed,
            AuditKind::Unlocked,
            AuditKind::Read,
            AuditKind::Unlocked,
            AuditKind::Unlocked,
        ]
    );
    // The other organisation's log holds none of this.
    assert!(
        audit(&relay, &other.api_key)
            .await
            .iter()
            .all(|e| e.message_id.is_none())
    );
    relay.finish().await;
}

async fn sender_authentication(relay: &TestRelay, key: &str) {
    let (status, body) = relay
        .call(Method::GET, "/v1/organisation", None, None)
        .await;
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));
    let (status, body) = relay
        .call(Method::GET, "/v1/organisation", Some("not-a-key"), None)
        .await;
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));
    let stranger = shared::token::Token::random(&mut OsRng);
    let (status, _) = relay
        .call(
            Method::GET,
            "/v1/organisation",
            Some(&stranger.to_base64url()),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let (status, body) = relay
        .call(Method::GET, "/v1/organisation", Some(key), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["display_name"], "Riverside Clinic");
    assert!(body["public_key"].is_null());

    // A revoked key stops working at once.
    let spare =
        relay::admin::create_api_key(relay.state().store(), body["id"].as_str().unwrap(), "spare")
            .await
            .unwrap();
    let (status, _) = relay
        .call(Method::GET, "/v1/organisation", Some(&spare.secret), None)
        .await;
    assert_eq!(status, 200);
    relay::admin::revoke_api_key(relay.state().store(), &spare.id)
        .await
        .unwrap();
    let (status, _) = relay
        .call(Method::GET, "/v1/organisation", Some(&spare.secret), None)
        .await;
    assert_eq!(status, 401);
}

async fn first_contact_submission(
    relay: &TestRelay,
    keys: &Keys,
    clinic: &relay::testkit::Sender,
    other: &relay::testkit::Sender,
) -> shared::ids::MessageId {
    let key = clinic.api_key.as_str();
    let envelope = seal(
        header(clinic.id, None, START, 86_400),
        "Your results are ready.",
        keys,
        None,
    );

    // Before the organisation key is registered.
    let (status, body) = submit(relay, key, PHONE, &envelope).await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "organisation_key_missing")
    );

    // Registering the key: bad JSON, wrong types, bad base64, then success.
    let response = relay
        .http
        .put(relay.url("/v1/organisation/key"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "bad_request"
    );
    let (status, body) = relay
        .call(
            Method::PUT,
            "/v1/organisation/key",
            Some(key),
            Some(json!({ "public_key": 42 })),
        )
        .await;
    assert_eq!((status, error_code(&body)), (422, "invalid"));
    let (status, body) = relay
        .call(
            Method::PUT,
            "/v1/organisation/key",
            Some(key),
            Some(json!({ "public_key": "***" })),
        )
        .await;
    assert_eq!((status, error_code(&body)), (422, "invalid"));
    let organisation_key = keys.organisation.public_key();
    let (status, body) = relay
        .call(
            Method::PUT,
            "/v1/organisation/key",
            Some(key),
            Some(json!({ "public_key": organisation_key })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["fingerprint"],
        organisation_key.fingerprint().to_string()
    );
    let (status, _) = relay
        .call(
            Method::PUT,
            "/v1/organisation/key",
            Some(&other.api_key),
            Some(json!({ "public_key": organisation_key })),
        )
        .await;
    assert_eq!(status, 200);

    // Lookup of a patient who is not enrolled; a malformed number.
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/recipients/lookup",
            Some(key),
            Some(json!({ "phone": PHONE })),
        )
        .await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/recipients/lookup",
            Some(key),
            Some(json!({ "phone": "555" })),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (422, Some("phone")));

    let events_before = audit(relay, key).await.len();
    // Bad phone, envelope for another organisation, expired, bad base64, oversized body.
    let (status, body) = submit(relay, key, "5551230001", &envelope).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("to")));
    let (status, body) = submit(relay, &other.api_key, PHONE, &envelope).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"));
    let stale = seal(
        header(clinic.id, None, START - 7200, 3600),
        "old",
        keys,
        None,
    );
    let (status, body) = submit(relay, key, PHONE, &stale).await;
    assert_eq!((status, error_code(&body)), (422, "invalid"));
    let too_long = seal(
        header(clinic.id, None, START, 400 * 86_400),
        "later",
        keys,
        None,
    );
    let (status, _) = submit(relay, key, PHONE, &too_long).await;
    assert_eq!(status, 422);
    let mut json_envelope = serde_json::to_value(&envelope).unwrap();
    json_envelope["ciphertext"] = json!("not base64!");
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(key),
            Some(json!({ "to": PHONE, "envelope": json_envelope })),
        )
        .await;
    assert_eq!((status, error_code(&body)), (422, "invalid"));
    let mut truncated = serde_json::to_value(&envelope).unwrap();
    truncated["ciphertext"] = json!(shared::encoding::b64u_encode([0u8; 100]));
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(key),
            Some(json!({ "to": PHONE, "envelope": truncated })),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (422, Some("envelope")));
    let huge = json!({ "to": PHONE, "envelope": envelope, "padding": "x".repeat(300 * 1024) });
    let (status, body) = relay
        .call(Method::POST, "/v1/messages", Some(key), Some(huge))
        .await;
    assert_eq!((status, error_code(&body)), (413, "body_too_large"));
    // None of those wrote anything.
    assert_eq!(audit(relay, key).await.len(), events_before);
    assert!(relay.sms().is_empty());

    // Accepted, then idempotent replay, then duplicate id.
    let request = json!({ "to": PHONE, "envelope": envelope, "idempotency_key": "order-1" });
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(key),
            Some(request.clone()),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let message_id = envelope.header.message_id;
    assert_eq!(body["message_id"], message_id.to_string());
    assert_eq!(body["status"], "queued");
    let (status, replay) = relay
        .call(Method::POST, "/v1/messages", Some(key), Some(request))
        .await;
    assert_eq!(status, 200);
    assert_eq!(replay["message_id"], body["message_id"]);
    let (status, body) = submit(relay, key, PHONE, &envelope).await;
    assert_eq!((status, error_code(&body)), (409, "duplicate_message"));
    let other_message = seal(header(clinic.id, None, START, 3600), "x", keys, None);
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(key),
            Some(json!({ "to": PHONE, "envelope": other_message, "idempotency_key": "order-1" })),
        )
        .await;
    assert_eq!((status, error_code(&body)), (409, "idempotency_key_reused"));

    // Status: own message, unknown id, malformed id, another organisation's view.
    let path = format!("/v1/messages/{message_id}");
    let (status, body) = relay.call(Method::GET, &path, Some(key), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "active");
    assert_eq!(body["events"].as_array().unwrap().len(), 2);
    let (status, _) = relay
        .call(
            Method::GET,
            &format!(
                "/v1/messages/{}",
                shared::ids::MessageId::random(&mut OsRng)
            ),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = relay
        .call(Method::GET, "/v1/messages/not-a-uuid", Some(key), None)
        .await;
    assert_eq!((status, error_code(&body)), (422, "invalid"));
    let (status, _) = relay
        .call(Method::GET, &path, Some(&other.api_key), None)
        .await;
    assert_eq!(status, 404);

    // The SMS goes out through the outbox: organisation name and link, nothing else.
    relay.deliver_sms().await;
    let sms = relay.sms();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0]["to"], PHONE);
    let text = sms[0]["body"].as_str().unwrap();
    assert!(
        text.starts_with("Riverside Clinic: you have a secure message. Open http://"),
        "{text}"
    );
    assert!(
        text.len() <= 160,
        "one SMS segment: {} characters",
        text.len()
    );
    assert!(!text.contains("results"));
    message_id
}

async fn viewer_enrollment(
    relay: &TestRelay,
    keys: &Keys,
    link: &str,
    message_id: shared::ids::MessageId,
) -> RecipientId {
    // A link preview (plain GET) gets the page and changes nothing.
    let page = relay
        .http
        .get(relay.url(&format!("/m/{link}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<title>SecureText</title>")
    );
    let (_, status_body) = relay
        .call(
            Method::GET,
            &format!("/v1/messages/{message_id}"),
            Some(&relay_key(relay).await),
            None,
        )
        .await;
    assert!(
        status_body["opened_at"].is_null(),
        "a GET must not record an open"
    );

    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/viewer/open",
            None,
            Some(json!({ "link": "unknown" })),
        )
        .await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/viewer/open",
            None,
            Some(json!({ "link": link })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "new");
    assert_eq!(body["organisation_name"], "Riverside Clinic");
    let default: KdfParams = serde_json::from_value(body["kdf_params"].clone()).unwrap();
    assert_eq!(default, KdfParams::DEFAULT);
    let recipient = RecipientId::parse(body["recipient_id"].as_str().unwrap()).unwrap();

    // Unlock before enrollment; weak parameters; then enrollment, then a second one.
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/viewer/unlock",
            None,
            Some(json!({ "link": link, "proof": shared::encoding::b64u_encode([0u8; 32]) })),
        )
        .await;
    assert_eq!((status, error_code(&body)), (409, "not_enrolled"));
    let weak = json!({
        "link": link, "bundle": {"public_key": keys.patient.public_key(), "sealed_private_key": "AAAA"},
        "salt": Salt::random(&mut OsRng), "verifier": shared::encoding::b64u_encode([0u8; 32]),
        "kdf_params": {"algorithm": "argon2id-v19", "memory_kib": 1024, "iterations": 1, "parallelism": 1},
    });
    let (status, body) = relay
        .call(Method::POST, "/v1/viewer/enroll", None, Some(weak))
        .await;
    assert_eq!((status, body["field"].as_str()), (422, Some("kdf_params")));
    let (status, body) = enroll(relay, link, &keys.patient, recipient).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = enroll(relay, link, &keys.patient, recipient).await;
    assert_eq!((status, error_code(&body)), (409, "already_enrolled"));
    recipient
}

async fn relay_key(relay: &TestRelay) -> String {
    // The first organisation's key is not kept by the helpers; make a fresh one for reads.
    let orgs = relay::admin::list_orgs(relay.state().store())
        .await
        .unwrap();
    let clinic = orgs
        .iter()
        .find(|(_, name, _)| name == "Riverside Clinic")
        .unwrap();
    relay::admin::create_api_key(relay.state().store(), &clinic.0.to_string(), "reader")
        .await
        .unwrap()
        .secret
        .to_string()
}

async fn rewrap_and_read(
    relay: &TestRelay,
    keys: &Keys,
    key: &str,
    link: &str,
    recipient: RecipientId,
) {
    // The sender's agent sees the pending re-wrap and uploads the patient's wrap.
    let (status, body) = relay
        .call(Method::GET, "/v1/rewraps", Some(key), None)
        .await;
    assert_eq!(status, 200);
    let pending = body["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0]["recipient_fingerprint"],
        keys.patient.public_key().fingerprint().to_string()
    );
    let envelope: Envelope = serde_json::from_value(pending[0]["envelope"].clone()).unwrap();
    let message_id = envelope.header.message_id;
    let path = format!("/v1/messages/{message_id}/recipient-wrap");
    let wrong = envelope
        .rewrap(
            &keys.organisation,
            keys.patient_after_reset.public_key(),
            &mut OsRng,
        )
        .unwrap();
    let (status, body) = relay
        .call(
            Method::PUT,
            &path,
            Some(key),
            Some(json!({ "wrap": wrong })),
        )
        .await;
    assert_eq!((status, error_code(&body)), (409, "recipient_key_changed"));
    let wrap = envelope
        .rewrap(&keys.organisation, keys.patient.public_key(), &mut OsRng)
        .unwrap();
    let (status, body) = relay
        .call(Method::PUT, &path, Some(key), Some(json!({ "wrap": wrap })))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = relay
        .call(Method::GET, "/v1/rewraps", Some(key), None)
        .await;
    assert!(body["pending"].as_array().unwrap().is_empty());

    // Wrong passwords count down, then lock out; after the lockout the right one works.
    let malformed = relay
        .call(
            Method::POST,
            "/v1/viewer/unlock",
            None,
            Some(json!({ "link": link, "proof": "short" })),
        )
        .await;
    assert_eq!(
        (malformed.0, malformed.1["field"].as_str()),
        (422, Some("proof"))
    );
    for attempts_left in (1..=4).rev() {
        let response = unlock(relay, link, "wrong password").await;
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(error_code(&body), "wrong_password");
        assert_eq!(body["attempts_left"], attempts_left);
    }
    let response = unlock(relay, link, "wrong password").await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "locked_out");
    let response = unlock(relay, link, PASSWORD).await;
    assert_eq!(
        response.status(),
        429,
        "even the right password waits out the lockout"
    );
    relay.advance(body["retry_after"].as_i64().unwrap());
    let response = unlock(relay, link, PASSWORD).await;
    assert_eq!(response.status(), 200);
    let cookie = cookie_of(&response);
    let session: Value = response.json().await.unwrap();
    assert_eq!(session["recipient_id"], recipient.to_string());
    assert!(session["relay_half"].as_str().unwrap().len() == 43);

    // With the session: relay half again, the sealed key, the envelopes; decrypt locally.
    let (status, again) = with_cookie(relay, Method::GET, "/v1/viewer/session", &cookie).await;
    assert_eq!(status, 200);
    assert_eq!(again["relay_half"], session["relay_half"]);
    let (status, bundle) = with_cookie(relay, Method::GET, "/v1/viewer/key", &cookie).await;
    assert_eq!(status, 200);
    let _bundle: KeyBundle = serde_json::from_value(bundle).unwrap();
    let (status, listing) = with_cookie(relay, Method::GET, "/v1/viewer/messages", &cookie).await;
    assert_eq!(status, 200);
    let messages = listing["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["awaiting_key"], false);
    let delivered: Envelope = serde_json::from_value(messages[0]["envelope"].clone()).unwrap();
    let content = delivered.open(&keys.patient, Some(recipient)).unwrap();
    assert_eq!(content.body, "Your results are ready.");

    // Read receipt once (a second is accepted and not recorded again); unknown id; no session.
    let read = format!("/v1/viewer/messages/{message_id}/read");
    assert_eq!(
        with_cookie(relay, Method::POST, &read, &cookie).await.0,
        204
    );
    assert_eq!(
        with_cookie(relay, Method::POST, &read, &cookie).await.0,
        204
    );
    let unknown = format!(
        "/v1/viewer/messages/{}/read",
        shared::ids::MessageId::random(&mut OsRng)
    );
    assert_eq!(
        with_cookie(relay, Method::POST, &unknown, &cookie).await.0,
        404
    );
    let (status, body) = relay
        .call(Method::GET, "/v1/viewer/messages", None, None)
        .await;
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));

    // Logout destroys the relay half: the session no longer answers.
    assert_eq!(
        with_cookie(relay, Method::POST, "/v1/viewer/logout", &cookie)
            .await
            .0,
        204
    );
    assert_eq!(
        with_cookie(relay, Method::GET, "/v1/viewer/session", &cookie)
            .await
            .0,
        401
    );

    // Remote wipe ends a fresh session too; idle sessions time out.
    let cookie = cookie_of(&unlock(relay, link, PASSWORD).await);
    assert_eq!(
        with_cookie(relay, Method::GET, "/v1/viewer/session", &cookie)
            .await
            .0,
        200
    );
    let key_text = relay.data_key.clone();
    let data_key = shared::at_rest::DataKey::from_base64url(&key_text).unwrap();
    assert_eq!(
        relay::admin::revoke_sessions(relay.state().store(), &data_key, PHONE)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        with_cookie(relay, Method::GET, "/v1/viewer/session", &cookie)
            .await
            .0,
        401
    );
    let cookie = cookie_of(&unlock(relay, link, PASSWORD).await);
    relay.advance(301);
    assert_eq!(
        with_cookie(relay, Method::GET, "/v1/viewer/session", &cookie)
            .await
            .0,
        401
    );
}

async fn enrolled_send(
    relay: &TestRelay,
    keys: &Keys,
    key: &str,
    clinic: &relay::testkit::Sender,
    recipient: RecipientId,
) {
    let (status, found) = relay
        .call(
            Method::POST,
            "/v1/recipients/lookup",
            Some(key),
            Some(json!({ "phone": PHONE })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(found["recipient_id"], recipient.to_string());
    assert_eq!(
        found["fingerprint"],
        keys.patient.public_key().fingerprint().to_string()
    );

    let now = relay.now();
    // Wrapped to a key that is not the patient's: refused.
    let stale = seal(
        header(clinic.id, Some(recipient), now, 3600),
        "x",
        keys,
        Some(&keys.patient_after_reset),
    );
    let (status, body) = submit(relay, key, PHONE, &stale).await;
    assert_eq!((status, error_code(&body)), (409, "recipient_key_changed"));
    // Header naming a recipient who is not this phone's patient.
    let mismatch = seal(
        header(clinic.id, Some(RecipientId::random(&mut OsRng)), now, 3600),
        "x",
        keys,
        Some(&keys.patient),
    );
    let (status, _) = submit(relay, key, PHONE, &mismatch).await;
    assert_eq!(status, 422);
    let envelope = seal(
        header(clinic.id, Some(recipient), now, 3600),
        "Second message",
        keys,
        Some(&keys.patient),
    );
    let (status, body) = submit(relay, key, PHONE, &envelope).await;
    assert_eq!(status, 201, "{body}");
    relay.deliver_sms().await;
    assert_eq!(relay.sms().len(), 2);
}

async fn revoke_and_expire(
    relay: &TestRelay,
    keys: &Keys,
    key: &str,
    clinic: &relay::testkit::Sender,
    recipient: RecipientId,
) {
    let now = relay.now();
    let envelope = seal(
        header(clinic.id, Some(recipient), now, 3600),
        "To be revoked",
        keys,
        Some(&keys.patient),
    );
    assert_eq!(submit(relay, key, PHONE, &envelope).await.0, 201);
    relay.deliver_sms().await;
    let link = relay.link_for(PHONE);
    let path = format!("/v1/messages/{}/revoke", envelope.header.message_id);
    let (status, body) = relay.call(Method::POST, &path, Some(key), None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("revoked")));
    let (status, body) = relay.call(Method::POST, &path, Some(key), None).await;
    assert_eq!((status, error_code(&body)), (409, "not_active"));
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/viewer/open",
            None,
            Some(json!({ "link": link })),
        )
        .await;
    assert_eq!((status, error_code(&body)), (410, "message_revoked"));

    let envelope = seal(
        header(clinic.id, Some(recipient), now, 600),
        "Short-lived",
        keys,
        Some(&keys.patient),
    );
    assert_eq!(submit(relay, key, PHONE, &envelope).await.0, 201);
    relay.deliver_sms().await;
    let link = relay.link_for(PHONE);
    relay.advance(601);
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/viewer/open",
            None,
            Some(json!({ "link": link })),
        )
        .await;
    assert_eq!((status, error_code(&body)), (410, "message_expired"));
    relay::jobs::purge_once(relay.state()).await.unwrap();
    let (_, status_body) = relay
        .call(
            Method::GET,
            &format!("/v1/messages/{}", envelope.header.message_id),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status_body["status"], "expired");
    let kinds: Vec<&str> = status_body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.last(), Some(&"expired"));
    // A wrap for an expired message is refused.
    let wrap = envelope
        .rewrap(&keys.organisation, keys.patient.public_key(), &mut OsRng)
        .unwrap();
    let (status, body) = relay
        .call(
            Method::PUT,
            &format!("/v1/messages/{}/recipient-wrap", envelope.header.message_id),
            Some(key),
            Some(json!({ "wrap": wrap })),
        )
        .await;
    assert_eq!((status, error_code(&body)), (410, "message_ended"));
}

async fn request_hygiene(relay: &TestRelay, key: &str) {
    let (status, body) = relay
        .call(Method::GET, "/v1/no-such-thing", Some(key), None)
        .await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let (status, body) = relay
        .call(Method::DELETE, "/v1/messages", Some(key), None)
        .await;
    assert_eq!(status, 405, "{body}");
    let root = relay.http.get(relay.url("/")).send().await.unwrap();
    assert_eq!(root.status(), 200);
    assert!(
        root.text()
            .await
            .unwrap()
            .contains("<title>SecureText</title>")
    );
    let response = relay.http.get(relay.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = relay.http.get(relay.url("/healthz")).send().await.unwrap();
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert!(response.headers().contains_key("x-request-id"));
    let metrics = relay
        .http
        .get(relay.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("securetext_messages_accepted_total 4"),
        "{metrics}"
    );
    let openapi: Value = relay
        .http
        .get(relay.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    let (status, body) = relay
        .call(Method::GET, "/v1/audit?after=-1", Some(key), None)
        .await;
    assert_eq!((status, error_code(&body)), (422, "invalid"));
}
