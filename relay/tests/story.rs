//! One story through every endpoint — success paths and each error path — run against SQLite
//! and against PostgreSQL. The `shared` crate plays the sender and the viewer.
//!
//! The story is told in chapters, and each chapter is its own test on each backend
//! (`<chapter>::on_sqlite`, `<chapter>::on_postgres`) with its own relay, so a failure in one
//! chapter hides none of the others. A chapter reaches its starting point through a [`Scene`]:
//! setup steps that build on each other (organisations, their keys, a first-contact message,
//! the opened link, the enrolled patient, the re-wrap), each made of plain success-path calls
//! checked only for their status codes. What a chapter proves, it asserts itself.

use rand_core::OsRng;
use relay::store::Backend;
use relay::testkit::{Keys, START, Sender, TestRelay, header, keys, seal};
use reqwest::Method;
use serde_json::{Value, json};
use shared::audit::{AuditEvent, AuditKind};
use shared::bundle::{KeyBundle, SealBinding};
use shared::envelope::Envelope;
use shared::ids::{MessageId, RecipientId};
use shared::kdf::{KdfParams, Password, Salt, derive_password_keys};
use shared::keys::PrivateKey;

const PHONE: &str = "+15551230001";
const PASSWORD: &str = "purple elephant 42";
const FIRST_CONTACT_TEXT: &str = "Your results are ready.";

/// For each chapter `async fn chapter(backend: Backend)`, a module `chapter` with the tests
/// `on_sqlite` and `on_postgres`.
macro_rules! chapters {
    ($($chapter:ident),* $(,)?) => {
        $(
            mod $chapter {
                #[tokio::test]
                async fn on_sqlite() {
                    super::$chapter(super::Backend::Sqlite).await;
                }

                #[tokio::test]
                async fn on_postgres() {
                    super::$chapter(super::Backend::Postgres).await;
                }
            }
        )*
    };
}

chapters![
    sender_authentication,
    organisation_key_registration,
    first_contact_refusals,
    first_contact_submission,
    viewer_enrollment,
    rewrap,
    wrong_passwords_lock_out,
    session_reads_and_decrypts,
    sessions_end,
    enrolled_send,
    revoke,
    expiry,
    request_hygiene,
    accepted_messages_metric,
    audit_log_tells_the_story_in_order,
    unreadable_reports,
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

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
    let binding = SealBinding {
        recipient,
        salt,
        kdf_params: KdfParams::MINIMUM,
    };
    let bundle = KeyBundle::seal(patient, &binding, &keys.sealing, &mut OsRng).unwrap();
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
        .header(shared::api::VIEWER_REQUEST_HEADER, "1")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `POST /v1/viewer/messages/{id}/unreadable` with the session `cookie` and a JSON `body`,
/// with or without the viewer's request header.
async fn report_unreadable(
    relay: &TestRelay,
    cookie: &str,
    id: MessageId,
    body: &Value,
    viewer_header: bool,
) -> (u16, Value) {
    let mut request = relay
        .http
        .post(relay.url(&format!("/v1/viewer/messages/{id}/unreadable")))
        .header("cookie", cookie)
        .json(body);
    if viewer_header {
        request = request.header(shared::api::VIEWER_REQUEST_HEADER, "1");
    }
    let response = request.send().await.unwrap();
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

/// An unlock with a well-formed proof of zeros.
async fn zero_proof_unlock(relay: &TestRelay, link: &str) -> (u16, Value) {
    relay
        .call(
            Method::POST,
            "/v1/viewer/unlock",
            None,
            Some(json!({ "link": link, "proof": shared::encoding::b64u_encode([0u8; 32]) })),
        )
        .await
}

/// An enrollment with KDF parameters below the minimum.
async fn weak_enroll(relay: &TestRelay, link: &str, patient: &PrivateKey) -> (u16, Value) {
    let weak = json!({
        "link": link, "bundle": {"public_key": patient.public_key(), "sealed_private_key": "AAAA"},
        "salt": Salt::random(&mut OsRng), "verifier": shared::encoding::b64u_encode([0u8; 32]),
        "kdf_params": {"algorithm": "argon2id-v19", "memory_kib": 1024, "iterations": 1, "parallelism": 1},
    });
    relay
        .call(Method::POST, "/v1/viewer/enroll", None, Some(weak))
        .await
}

async fn open(relay: &TestRelay, link: &str) -> (u16, Value) {
    relay
        .call(
            Method::POST,
            "/v1/viewer/open",
            None,
            Some(json!({ "link": link })),
        )
        .await
}

// ---------------------------------------------------------------------------------------------
// Scenes: where chapters start
// ---------------------------------------------------------------------------------------------

/// A relay and the state of the story so far. Each `with_*` step first takes the steps before
/// it (once: a step already taken is not repeated), so `Scene::new(b).await.with_rewrapped()`
/// is a relay where the first-contact message has been sent, opened, enrolled and re-wrapped.
/// The steps check status codes only.
struct Scene {
    relay: TestRelay,
    keys: Keys,
    /// The sending organisation, "Riverside Clinic".
    clinic: Sender,
    /// An organisation with nothing to do with the patient, "Other Pharmacy".
    other: Sender,
    org_keys: bool,
    /// The first-contact envelope, sent to [`PHONE`].
    first: Option<Envelope>,
    /// The link of the first-contact SMS.
    link: Option<String>,
    /// The patient, as the open of the link names them.
    recipient: Option<RecipientId>,
    enrolled: bool,
    rewrapped: bool,
}

impl Scene {
    /// A fresh relay with two organisations (no organisation keys yet).
    async fn new(backend: Backend) -> Self {
        let relay = TestRelay::start(backend).await;
        let clinic = relay.organisation("Riverside Clinic").await;
        let other = relay.organisation("Other Pharmacy").await;
        Self {
            relay,
            keys: keys(),
            clinic,
            other,
            org_keys: false,
            first: None,
            link: None,
            recipient: None,
            enrolled: false,
            rewrapped: false,
        }
    }

    /// Both organisations have registered the organisation public key.
    async fn with_org_key(mut self) -> Self {
        if !self.org_keys {
            let public_key = self.keys.organisation.public_key();
            for api_key in [&self.clinic.api_key, &self.other.api_key] {
                let (status, body) = self
                    .relay
                    .call(
                        Method::PUT,
                        "/v1/organisation/key",
                        Some(api_key),
                        Some(json!({ "public_key": public_key })),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
            }
            self.org_keys = true;
        }
        self
    }

    /// The clinic has sent a first-contact message to [`PHONE`]; its SMS went out and the
    /// link is known.
    async fn with_first_contact(self) -> Self {
        let mut scene = self.with_org_key().await;
        if scene.first.is_none() {
            let envelope = seal(
                header(scene.clinic.id, None, scene.relay.now(), 86_400),
                FIRST_CONTACT_TEXT,
                &scene.keys,
                None,
            );
            let (status, body) = submit(&scene.relay, scene.key(), PHONE, &envelope).await;
            assert_eq!(status, 201, "{body}");
            scene.relay.deliver_sms().await;
            scene.link = Some(scene.relay.link_for(PHONE));
            scene.first = Some(envelope);
        }
        scene
    }

    /// The patient has opened the link (the relay named the recipient).
    async fn with_link_opened(self) -> Self {
        let mut scene = self.with_first_contact().await;
        if scene.recipient.is_none() {
            let (status, body) = open(&scene.relay, scene.link()).await;
            assert_eq!(status, 200, "{body}");
            scene.recipient =
                Some(RecipientId::parse(body["recipient_id"].as_str().unwrap()).unwrap());
        }
        scene
    }

    /// The patient has enrolled with [`PASSWORD`] and `keys.patient`.
    async fn with_enrolled_patient(self) -> Self {
        let mut scene = self.with_link_opened().await;
        if !scene.enrolled {
            let (status, body) = enroll(
                &scene.relay,
                scene.link(),
                &scene.keys.patient,
                scene.recipient(),
            )
            .await;
            assert_eq!(status, 201, "{body}");
            scene.enrolled = true;
        }
        scene
    }

    /// The clinic's agent has re-wrapped the first-contact message to the patient's key.
    async fn with_rewrapped(self) -> Self {
        let mut scene = self.with_enrolled_patient().await;
        if !scene.rewrapped {
            let first = scene.first();
            let wrap = first
                .rewrap(
                    &scene.keys.organisation,
                    scene.keys.patient.public_key(),
                    &mut OsRng,
                )
                .unwrap();
            let path = format!("/v1/messages/{}/recipient-wrap", first.header.message_id);
            let (status, body) = scene
                .relay
                .call(
                    Method::PUT,
                    &path,
                    Some(scene.key()),
                    Some(json!({ "wrap": wrap })),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            scene.rewrapped = true;
        }
        scene
    }

    /// The clinic's API key.
    fn key(&self) -> &str {
        &self.clinic.api_key
    }

    fn first(&self) -> &Envelope {
        self.first.as_ref().expect("a scene with_first_contact")
    }

    fn first_id(&self) -> MessageId {
        self.first().header.message_id
    }

    fn link(&self) -> &str {
        self.link.as_deref().expect("a scene with_first_contact")
    }

    fn recipient(&self) -> RecipientId {
        self.recipient.expect("a scene with_link_opened")
    }

    /// Unlocks the first-contact link with `password`.
    async fn unlock(&self, password: &str) -> reqwest::Response {
        unlock(&self.relay, self.link(), password).await
    }

    /// Unlocks with [`PASSWORD`]: the session cookie and the session body.
    async fn session(&self) -> (String, Value) {
        let response = self.unlock(PASSWORD).await;
        assert_eq!(response.status(), 200);
        let cookie = cookie_of(&response);
        (cookie, response.json().await.unwrap())
    }

    /// A message wrapped to the enrolled patient, accepted and its SMS sent: the envelope and
    /// the link of its SMS.
    async fn send_enrolled(&self, text: &str, lifetime: i64) -> (Envelope, String) {
        let envelope = seal(
            header(
                self.clinic.id,
                Some(self.recipient()),
                self.relay.now(),
                lifetime,
            ),
            text,
            &self.keys,
            Some(&self.keys.patient),
        );
        let (status, body) = submit(&self.relay, self.key(), PHONE, &envelope).await;
        assert_eq!(status, 201, "{body}");
        self.relay.deliver_sms().await;
        (envelope, self.relay.link_for(PHONE))
    }

    async fn finish(self) {
        self.relay.finish().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Chapters
// ---------------------------------------------------------------------------------------------

/// The sender API needs a valid, unrevoked API key: none, garbage and an unknown token are
/// 401; the clinic's key shows its organisation (no key registered yet); a revoked key stops
/// working at once.
async fn sender_authentication(backend: Backend) {
    let scene = Scene::new(backend).await;
    let relay = &scene.relay;
    let key = scene.key();

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
    scene.finish().await;
}

/// No message is accepted before the organisation key is registered; registering it refuses
/// bad JSON (400), wrong types and bad base64 (422), then answers the key's fingerprint; a
/// second organisation may register the same key.
async fn organisation_key_registration(backend: Backend) {
    let scene = Scene::new(backend).await;
    let relay = &scene.relay;
    let keys = &scene.keys;
    let key = scene.key();
    let envelope = seal(
        header(scene.clinic.id, None, START, 86_400),
        FIRST_CONTACT_TEXT,
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
            Some(&scene.other.api_key),
            Some(json!({ "public_key": organisation_key })),
        )
        .await;
    assert_eq!(status, 200);
    scene.finish().await;
}

/// Before enrollment a lookup finds nobody (404) and a malformed number is refused; a bad
/// phone number, an envelope for another organisation, an expired or too long-lived envelope,
/// bad base64, a truncated envelope and an oversized body are each refused with their status
/// and code — and none of them writes an audit event or sends an SMS.
async fn first_contact_refusals(backend: Backend) {
    let scene = Scene::new(backend).await.with_org_key().await;
    let relay = &scene.relay;
    let keys = &scene.keys;
    let key = scene.key();
    let clinic = &scene.clinic;
    let envelope = seal(
        header(clinic.id, None, START, 86_400),
        FIRST_CONTACT_TEXT,
        keys,
        None,
    );

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
    let (status, body) = submit(relay, &scene.other.api_key, PHONE, &envelope).await;
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
    scene.finish().await;
}

/// A first-contact message is accepted (201, queued); a retry with the same idempotency key
/// gets the original answer (200), a resubmission is a duplicate and a reused idempotency key
/// is refused (409). Its status shows it active with two events (the retries recorded
/// nothing); an unknown id is 404, a malformed one 422, and another organisation cannot see
/// it. Its SMS carries the organisation name and the link, nothing else, in one segment.
async fn first_contact_submission(backend: Backend) {
    let scene = Scene::new(backend).await.with_org_key().await;
    let relay = &scene.relay;
    let keys = &scene.keys;
    let key = scene.key();
    let clinic = &scene.clinic;
    let envelope = seal(
        header(clinic.id, None, START, 86_400),
        FIRST_CONTACT_TEXT,
        keys,
        None,
    );

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
            &format!("/v1/messages/{}", MessageId::random(&mut OsRng)),
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
        .call(Method::GET, &path, Some(&scene.other.api_key), None)
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
    scene.finish().await;
}

/// A link preview (plain GET of the page) gets the page with its security headers and records
/// no open. Opening an unknown link is 404; the real link opens as `new`, names the clinic,
/// the default KDF parameters and the recipient. Unlocking before enrollment is 409, weak KDF
/// parameters are refused, enrollment succeeds once and a second one is 409.
async fn viewer_enrollment(backend: Backend) {
    let scene = Scene::new(backend).await.with_first_contact().await;
    let relay = &scene.relay;
    let keys = &scene.keys;
    let link = scene.link();
    let message_id = scene.first_id();

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
            Some(scene.key()),
            None,
        )
        .await;
    assert!(
        status_body["opened_at"].is_null(),
        "a GET must not record an open"
    );

    let (status, body) = open(relay, "unknown").await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let (status, body) = open(relay, link).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "new");
    assert_eq!(body["organisation_name"], "Riverside Clinic");
    let default: KdfParams = serde_json::from_value(body["kdf_params"].clone()).unwrap();
    assert_eq!(default, KdfParams::DEFAULT);
    let recipient = RecipientId::parse(body["recipient_id"].as_str().unwrap()).unwrap();

    // Unlock before enrollment; weak parameters; then enrollment, then a second one.
    let (status, body) = zero_proof_unlock(relay, link).await;
    assert_eq!((status, error_code(&body)), (409, "not_enrolled"));
    let (status, body) = weak_enroll(relay, link, &keys.patient).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("kdf_params")));
    let (status, body) = enroll(relay, link, &keys.patient, recipient).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = enroll(relay, link, &keys.patient, recipient).await;
    assert_eq!((status, error_code(&body)), (409, "already_enrolled"));
    scene.finish().await;
}

/// After enrollment the clinic's agent sees exactly one pending re-wrap, for the patient's
/// key; a wrap to another key is refused (409), the right wrap is accepted, and nothing is
/// pending any more.
async fn rewrap(backend: Backend) {
    let scene = Scene::new(backend).await.with_enrolled_patient().await;
    let relay = &scene.relay;
    let keys = &scene.keys;
    let key = scene.key();

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
    scene.finish().await;
}

/// A malformed proof is 422; wrong passwords count down the attempts left, then lock out
/// (429 with Retry-After); during the lockout even the right password waits; after it, the
/// right password opens a session (HttpOnly, SameSite=Strict cookie) for the recipient, with
/// the relay half of the key.
async fn wrong_passwords_lock_out(backend: Backend) {
    let scene = Scene::new(backend).await.with_enrolled_patient().await;
    let relay = &scene.relay;
    let link = scene.link();

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
        let response = scene.unlock("wrong password").await;
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(error_code(&body), "wrong_password");
        assert_eq!(body["attempts_left"], attempts_left);
    }
    let response = scene.unlock("wrong password").await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "locked_out");
    let response = scene.unlock(PASSWORD).await;
    assert_eq!(
        response.status(),
        429,
        "even the right password waits out the lockout"
    );
    relay.advance(body["retry_after"].as_i64().unwrap());
    let response = scene.unlock(PASSWORD).await;
    assert_eq!(response.status(), 200);
    let _cookie = cookie_of(&response);
    let session: Value = response.json().await.unwrap();
    assert_eq!(session["recipient_id"], scene.recipient().to_string());
    assert!(session["relay_half"].as_str().unwrap().len() == 43);

    // The audit names the failures since the last success or lockout, and the total of wrong
    // guesses against this password, which neither a lockout nor a success restarts.
    let response = scene.unlock("wrong again").await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["attempts_left"], 4, "the success reset the count");
    let details: Vec<String> = audit(relay, scene.key())
        .await
        .into_iter()
        .filter(|e| e.kind == AuditKind::UnlockFailed)
        .map(|e| e.detail)
        .collect();
    assert_eq!(
        details,
        [
            "failures=1 total=1",
            "failures=2 total=2",
            "failures=3 total=3",
            "failures=4 total=4",
            "failures=5 total=5",
            "failures=1 total=6",
        ]
    );
    scene.finish().await;
}

/// With a session the viewer gets the relay half again, its sealed key and the re-wrapped
/// envelope, which it decrypts locally. A read receipt is accepted (twice, idempotently), an
/// unknown message is 404, and without a session the messages are 401.
async fn session_reads_and_decrypts(backend: Backend) {
    let scene = Scene::new(backend).await.with_rewrapped().await;
    let relay = &scene.relay;
    let keys = &scene.keys;
    let recipient = scene.recipient();
    let message_id = scene.first_id();
    let (cookie, session) = scene.session().await;

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
    assert_eq!(content.body, FIRST_CONTACT_TEXT);

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
    let unknown = format!("/v1/viewer/messages/{}/read", MessageId::random(&mut OsRng));
    assert_eq!(
        with_cookie(relay, Method::POST, &unknown, &cookie).await.0,
        404
    );
    let (status, body) = relay
        .call(Method::GET, "/v1/viewer/messages", None, None)
        .await;
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));
    scene.finish().await;
}

/// Sessions end: logout destroys the relay half (the session answers 401), a remote wipe
/// ends the live session (exactly one), and an idle session times out after 300 seconds.
async fn sessions_end(backend: Backend) {
    let scene = Scene::new(backend).await.with_enrolled_patient().await;
    let relay = &scene.relay;
    let (cookie, _) = scene.session().await;

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
    let cookie = cookie_of(&scene.unlock(PASSWORD).await);
    assert_eq!(
        with_cookie(relay, Method::GET, "/v1/viewer/session", &cookie)
            .await
            .0,
        200
    );
    let key_text = relay.data_key.clone();
    let data_key = shared::at_rest::DataKey::from_base64url(&key_text).unwrap();
    assert_eq!(
        relay::admin::revoke_sessions(relay.state().store(), &data_key, PHONE, None)
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
    let cookie = cookie_of(&scene.unlock(PASSWORD).await);
    relay.advance(301);
    assert_eq!(
        with_cookie(relay, Method::GET, "/v1/viewer/session", &cookie)
            .await
            .0,
        401
    );
    scene.finish().await;
}

/// Once the patient is enrolled, a lookup names them and their key's fingerprint; an
/// envelope wrapped to another key is refused (409), one naming another recipient is 422, and
/// one wrapped to the patient is accepted and its SMS sent (the second SMS, after first
/// contact).
async fn enrolled_send(backend: Backend) {
    let scene = Scene::new(backend).await.with_enrolled_patient().await;
    let relay = &scene.relay;
    let keys = &scene.keys;
    let key = scene.key();
    let clinic = &scene.clinic;
    let recipient = scene.recipient();

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
    // The scene sent one SMS (first contact); the refusals sent none.
    assert_eq!(relay.sms().len(), 2);
    scene.finish().await;
}

/// A revoked message answers `revoked`; revoking it again is 409 `not_active`, and its link
/// opens to 410 `message_revoked`.
async fn revoke(backend: Backend) {
    let scene = Scene::new(backend).await.with_enrolled_patient().await;
    let relay = &scene.relay;
    let key = scene.key();
    let (envelope, link) = scene.send_enrolled("To be revoked", 3600).await;

    let path = format!("/v1/messages/{}/revoke", envelope.header.message_id);
    let (status, body) = relay.call(Method::POST, &path, Some(key), None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("revoked")));
    let (status, body) = relay.call(Method::POST, &path, Some(key), None).await;
    assert_eq!((status, error_code(&body)), (409, "not_active"));
    let (status, body) = open(relay, &link).await;
    assert_eq!((status, error_code(&body)), (410, "message_revoked"));
    scene.finish().await;
}

/// An expired message's link opens to 410 `message_expired`; the purge marks it `expired`
/// (its last event), and a wrap for it is refused with 410 `message_ended`.
async fn expiry(backend: Backend) {
    let scene = Scene::new(backend).await.with_enrolled_patient().await;
    let relay = &scene.relay;
    let keys = &scene.keys;
    let key = scene.key();
    let (envelope, link) = scene.send_enrolled("Short-lived", 600).await;

    relay.advance(601);
    let (status, body) = open(relay, &link).await;
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
    scene.finish().await;
}

/// Unknown routes are a JSON 404 and wrong methods 405; the viewer page is served at `/`;
/// `/readyz` and `/healthz` answer, with `nosniff` and a request id; the OpenAPI document is
/// OpenAPI 3; a malformed audit cursor is 422.
async fn request_hygiene(backend: Backend) {
    let scene = Scene::new(backend).await;
    let relay = &scene.relay;
    let key = scene.key();

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
    scene.finish().await;
}

/// `/metrics`, on the metrics listener, counts accepted messages, and only those: four accepted (the story's count:
/// first contact and three messages to the enrolled patient), while an idempotent retry, a
/// duplicate and a refused submission add nothing.
async fn accepted_messages_metric(backend: Backend) {
    let scene = Scene::new(backend).await.with_enrolled_patient().await;
    let relay = &scene.relay;
    let keys = &scene.keys;
    let key = scene.key();

    // The scene accepted one (first contact). The second, with an idempotency key, is retried
    // once; then a duplicate and a refusal.
    let envelope = seal(
        header(scene.clinic.id, Some(scene.recipient()), relay.now(), 3600),
        "Second message",
        keys,
        Some(&keys.patient),
    );
    let request = json!({ "to": PHONE, "envelope": envelope, "idempotency_key": "order-2" });
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(key),
            Some(request.clone()),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = relay
        .call(Method::POST, "/v1/messages", Some(key), Some(request))
        .await;
    assert_eq!(status, 200);
    assert_eq!(submit(relay, key, PHONE, &envelope).await.0, 409);
    assert_eq!(submit(relay, key, "555", &envelope).await.0, 422);
    // Two more.
    scene.send_enrolled("To be revoked", 3600).await;
    scene.send_enrolled("Short-lived", 600).await;

    let metrics = relay
        .http
        .get(relay.metrics_url("/metrics"))
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
    // Metrics are served on their own listener only (issue 12, finding 11): the public API
    // listener does not answer them.
    let (status, body) = relay.call(Method::GET, "/metrics", None, None).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    scene.finish().await;
}

/// The audit log tells the story in order. The whole story is played through the scenes —
/// including the refused steps (a resubmission, the other organisation's attempts, a second
/// enrollment, a wrap to the wrong key, a malformed proof, wrong passwords into a lockout, the
/// right password during it, a second read receipt) and, on other messages, an enrolled send,
/// a revocation and an expiry — and then: the chain verifies; the first message's events are
/// exactly created, queued, sent, opened, enrolled, re-wrapped, five failed unlocks, unlocked,
/// read, unlocked, unlocked; and the other organisation's log holds none of this.
async fn audit_log_tells_the_story_in_order(backend: Backend) {
    let scene = Scene::new(backend).await.with_first_contact().await;
    let first_id = scene.first_id();
    {
        let relay = &scene.relay;
        let key = scene.key();
        // Refused: a resubmission; the other organisation's submission and status read.
        assert_eq!(submit(relay, key, PHONE, scene.first()).await.0, 409);
        let other = &scene.other.api_key;
        assert_eq!(submit(relay, other, PHONE, scene.first()).await.0, 403);
        let path = format!("/v1/messages/{first_id}");
        assert_eq!(
            relay.call(Method::GET, &path, Some(other), None).await.0,
            404
        );
        // A link preview.
        let page = relay
            .http
            .get(relay.url(&format!("/m/{}", scene.link())))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
    }
    let scene = scene.with_link_opened().await;
    {
        let relay = &scene.relay;
        // Refused: an unlock before enrollment; enrollment with weak parameters.
        assert_eq!(zero_proof_unlock(relay, scene.link()).await.0, 409);
        let weak = weak_enroll(relay, scene.link(), &scene.keys.patient).await;
        assert_eq!(weak.0, 422);
    }
    let scene = scene.with_enrolled_patient().await;
    {
        let (relay, keys) = (&scene.relay, &scene.keys);
        // Refused: a second enrollment; a wrap to the wrong key.
        let (status, _) = enroll(relay, scene.link(), &keys.patient, scene.recipient()).await;
        assert_eq!(status, 409);
        let wrong = scene
            .first()
            .rewrap(
                &keys.organisation,
                keys.patient_after_reset.public_key(),
                &mut OsRng,
            )
            .unwrap();
        let path = format!("/v1/messages/{first_id}/recipient-wrap");
        let (status, _) = relay
            .call(
                Method::PUT,
                &path,
                Some(scene.key()),
                Some(json!({ "wrap": wrong })),
            )
            .await;
        assert_eq!(status, 409);
    }
    let scene = scene.with_rewrapped().await;
    let relay = &scene.relay;
    let key = scene.key();

    // A malformed proof, wrong passwords into a lockout, the right one during and after it.
    let (status, _) = relay
        .call(
            Method::POST,
            "/v1/viewer/unlock",
            None,
            Some(json!({ "link": scene.link(), "proof": "short" })),
        )
        .await;
    assert_eq!(status, 422);
    for expected in [401, 401, 401, 401] {
        assert_eq!(scene.unlock("wrong password").await.status(), expected);
    }
    let locked_out = scene.unlock("wrong password").await;
    assert_eq!(locked_out.status(), 429);
    let locked_out: Value = locked_out.json().await.unwrap();
    assert_eq!(scene.unlock(PASSWORD).await.status(), 429);
    relay.advance(locked_out["retry_after"].as_i64().unwrap());
    // The session's reads; a read receipt (twice), log out; a session wiped remotely; a
    // session left to time out.
    let (cookie, _) = scene.session().await;
    for path in [
        "/v1/viewer/session",
        "/v1/viewer/key",
        "/v1/viewer/messages",
    ] {
        assert_eq!(with_cookie(relay, Method::GET, path, &cookie).await.0, 200);
    }
    let read = format!("/v1/viewer/messages/{first_id}/read");
    for _ in 0..2 {
        assert_eq!(
            with_cookie(relay, Method::POST, &read, &cookie).await.0,
            204
        );
    }
    let logout = with_cookie(relay, Method::POST, "/v1/viewer/logout", &cookie).await;
    assert_eq!(logout.0, 204);
    let _wiped = scene.session().await;
    let data_key = shared::at_rest::DataKey::from_base64url(&relay.data_key).unwrap();
    relay::admin::revoke_sessions(relay.state().store(), &data_key, PHONE, None)
        .await
        .unwrap();
    let _idle = scene.session().await;
    relay.advance(301);

    // The rest of the story happens to other messages.
    scene.send_enrolled("Second message", 3600).await;
    let (revoked, _) = scene.send_enrolled("To be revoked", 3600).await;
    let path = format!("/v1/messages/{}/revoke", revoked.header.message_id);
    assert_eq!(
        relay.call(Method::POST, &path, Some(key), None).await.0,
        200
    );
    scene.send_enrolled("Short-lived", 600).await;
    relay.advance(601);
    relay::jobs::purge_once(relay.state()).await.unwrap();

    // The audit log verifies and tells the story in order.
    let events = audit(relay, key).await;
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
            // Every open is audited, and the viewer opens the link before each unlock.
            AuditKind::LinkOpened,
            AuditKind::UnlockFailed,
            AuditKind::LinkOpened,
            AuditKind::UnlockFailed,
            AuditKind::LinkOpened,
            AuditKind::UnlockFailed,
            AuditKind::LinkOpened,
            AuditKind::UnlockFailed,
            AuditKind::LinkOpened,
            AuditKind::UnlockFailed,
            AuditKind::LinkOpened,
            AuditKind::LinkOpened,
            AuditKind::Unlocked,
            AuditKind::Read,
            AuditKind::LinkOpened,
            AuditKind::Unlocked,
            AuditKind::LinkOpened,
            AuditKind::Unlocked,
        ]
    );
    // The other organisation's log holds none of this.
    assert!(
        audit(relay, &scene.other.api_key)
            .await
            .iter()
            .all(|e| e.message_id.is_none())
    );
    scene.finish().await;
}

/// A message the viewer could not open safely is reported by the patient's session and
/// recorded for the sender as `open_failed` with the reason, once per message and session: a
/// repeated report adds nothing, a new session's report is recorded again. Reports need the
/// viewer's request header, a live session and a message of this patient that was delivered to
/// the patient's current key and is still live; the reason is one of the documented codes.
async fn unreadable_reports(backend: Backend) {
    let scene = Scene::new(backend).await.with_enrolled_patient().await;
    let first_id = scene.first_id();
    let decryption_failed = json!({ "reason": "decryption_failed" });
    let (cookie, _) = scene.session().await;
    {
        // Not yet wrapped to the patient's key: nothing was delivered that could fail.
        let relay = &scene.relay;
        let (status, body) =
            report_unreadable(relay, &cookie, first_id, &decryption_failed, true).await;
        assert_eq!((status, error_code(&body)), (409, "awaiting_key"));
    }
    let scene = scene.with_rewrapped().await;
    let relay = &scene.relay;
    let key = scene.key();
    let open_failed = |events: &[AuditEvent]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.kind.as_str() == "open_failed" && e.message_id == Some(first_id))
            .map(|e| e.detail.clone())
            .collect()
    };

    // Refused: without the viewer's header, without a session, an unknown reason, an unknown
    // message or a malformed id.
    let (status, body) =
        report_unreadable(relay, &cookie, first_id, &decryption_failed, false).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"));
    let (status, body) = report_unreadable(
        relay,
        "securetext_session=AAAA",
        first_id,
        &decryption_failed,
        true,
    )
    .await;
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));
    let (status, body) = report_unreadable(
        relay,
        &cookie,
        first_id,
        &json!({ "reason": "it looked odd" }),
        true,
    )
    .await;
    assert_eq!((status, error_code(&body)), (422, "invalid"));
    let unknown = MessageId::random(&mut OsRng);
    let (status, body) = report_unreadable(relay, &cookie, unknown, &decryption_failed, true).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let response = relay
        .http
        .post(relay.url("/v1/viewer/messages/not-an-id/unreadable"))
        .header("cookie", &cookie)
        .header(shared::api::VIEWER_REQUEST_HEADER, "1")
        .json(&decryption_failed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert!(open_failed(&audit(relay, key).await).is_empty());

    // Recorded once per session, with the reason.
    for _ in 0..3 {
        let (status, body) =
            report_unreadable(relay, &cookie, first_id, &decryption_failed, true).await;
        assert_eq!(status, 204, "{body}");
    }
    assert_eq!(
        open_failed(&audit(relay, key).await),
        ["reason=decryption_failed"]
    );
    let (second_session, _) = scene.session().await;
    let wrong_message = json!({ "reason": "wrong_message" });
    for _ in 0..2 {
        let (status, body) =
            report_unreadable(relay, &second_session, first_id, &wrong_message, true).await;
        assert_eq!(status, 204, "{body}");
    }
    let events = audit(relay, key).await;
    shared::audit::verify_chain(&events).unwrap();
    assert_eq!(
        open_failed(&events),
        ["reason=decryption_failed", "reason=wrong_message"]
    );
    let recorded = events
        .iter()
        .find(|e| e.kind.as_str() == "open_failed")
        .unwrap();
    assert_eq!(recorded.recipient_id, Some(scene.recipient()));

    // A message that has ended can no longer be reported.
    let (revoked, _) = scene.send_enrolled("To be revoked", 3600).await;
    let revoked = revoked.header.message_id;
    let path = format!("/v1/messages/{revoked}/revoke");
    assert_eq!(
        relay.call(Method::POST, &path, Some(key), None).await.0,
        200
    );
    let (status, body) =
        report_unreadable(relay, &second_session, revoked, &decryption_failed, true).await;
    assert_eq!((status, error_code(&body)), (410, "message_ended"));
    // The other organisation's log holds none of this.
    assert!(
        audit(relay, &scene.other.api_key)
            .await
            .iter()
            .all(|e| e.kind.as_str() != "open_failed")
    );
    scene.finish().await;
}
