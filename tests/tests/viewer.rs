//! The built viewer (`dist/`, release build) in headless Chromium at 390×844, against the real
//! relay on a loopback port, in English and in Spanish: first contact, a password the strength
//! estimator refuses, enrollment, re-wrap,
//! reading, re-open within the session, lock, unlock, wrong password, lockout, remote wipe,
//! a link of the older path form, reload, leaving the page (which ends the session), revoked,
//! expired, unknown link, network error and unsupported browser. Links are opened as texted:
//! `/m/#<token>`. After each lock the browser's storage is dumped and searched for plaintext
//! and key material; the console must show no Content-Security-Policy violation. Screenshots of
//! every screen go to `docs/screenshots/<lang>/`. Then, playing a relay (or an attacker) that
//! writes to the store: a tampered message becomes a notice in its place, reported once; what a
//! message shows comes from its authenticated header; an envelope on screen is not
//! decrypted again; and a relay that serves cheaper KDF parameters gets no proof.

use std::time::Duration;

use e2e::{Browser, dist_dir, workspace_root};
use rand_core::OsRng;
use relay::store::Backend;
use relay::testkit::{Patient, Sender, TestRelay, header, wait_until};
use serde_json::{Value, json};
use shared::envelope::{Content, Envelope};
use shared::ids::{MessageId, RecipientId};
use shared::keys::PrivateKey;

const PASSWORD: &str = "Maple syrup 2026!";

/// The relay serving the built viewer, with one clinic that has registered its key.
struct Relay {
    kit: TestRelay,
    clinic: Sender,
    org_key: PrivateKey,
}

/// `relay serve`'s defaults, except generous address and send limits (many attempts from one
/// test address are expected).
fn limits() -> relay::limits::Limits {
    relay::limits::Limits {
        address_unlock_attempts: 1000,
        send_rate_per_minute: 1000,
        ..relay::limits::Limits::DEFAULT
    }
}

/// Submits a wrong password and waits for the error that names `attempts_left` (or the lockout).
async fn wrong_password(browser: &Browser, expected: &str) -> String {
    browser.fill("#password", "not my password").await;
    browser.click("button[type=submit]").await;
    wait_until(
        Duration::from_secs(30),
        &format!("an error containing {expected:?}"),
        || async {
            let error = browser
                .client
                .find(fantoccini::Locator::Css(".error"))
                .await
                .ok()?;
            let text = error.text().await.ok()?;
            text.contains(expected).then_some(text)
        },
    )
    .await
}

impl Relay {
    /// A SQLite relay serving `dist/`, on a manual clock that starts at the real time (the
    /// browser compares expiry with its own clock).
    async fn start() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let kit = TestRelay::builder(Backend::Sqlite)
            .limits(limits())
            .clock_at(i64::try_from(now).unwrap())
            .viewer_dir(dist_dir())
            .start()
            .await;
        let clinic = kit.organisation("Riverside Clinic").await;
        let relay = Self {
            kit,
            clinic,
            org_key: relay::testkit::keys().organisation,
        };
        let (status, _) = relay
            .api(
                reqwest::Method::PUT,
                "/v1/organisation/key",
                Some(json!({ "public_key": relay.org_key.public_key() })),
            )
            .await;
        assert_eq!(status, 200);
        relay
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.kit
            .call(method, path, Some(&self.clinic.api_key), body)
            .await
    }

    /// Sends a message as the sender tooling does and returns its id and SMS link.
    async fn send(
        &self,
        phone: &str,
        subject: &str,
        body: &str,
        lifetime: i64,
    ) -> (MessageId, String) {
        let (status, found) = self
            .api(
                reqwest::Method::POST,
                "/v1/recipients/lookup",
                Some(json!({ "phone": phone })),
            )
            .await;
        let recipient = (status == 200).then(|| {
            let key: shared::keys::PublicKey =
                serde_json::from_value(found["public_key"].clone()).unwrap();
            (
                RecipientId::parse(found["recipient_id"].as_str().unwrap()).unwrap(),
                key,
            )
        });
        let header = header(
            self.clinic.id,
            recipient.as_ref().map(|(id, _)| *id),
            self.kit.now(),
            lifetime,
        );
        let content = Content {
            subject: subject.into(),
            body: body.into(),
        };
        let envelope = Envelope::seal(
            header,
            &content,
            self.org_key.public_key(),
            recipient.as_ref().map(|(_, k)| k),
            &mut OsRng,
        )
        .unwrap();
        let (status, answer) = self
            .api(
                reqwest::Method::POST,
                "/v1/messages",
                Some(json!({ "to": phone, "envelope": envelope })),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
        self.kit.deliver_sms().await;
        let link = self.kit.sms_link_for(phone);
        assert!(
            link.starts_with(&format!("{}/m/#", self.kit.base)),
            "the token is in the fragment: {link}"
        );
        (header.message_id, link)
    }

    /// The sender's agent: re-wrap every pending message.
    async fn rewrap_pending(&self) -> usize {
        let (_, pending) = self.api(reqwest::Method::GET, "/v1/rewraps", None).await;
        let pending = pending["pending"].as_array().unwrap().clone();
        for item in &pending {
            let envelope: Envelope = serde_json::from_value(item["envelope"].clone()).unwrap();
            let key: shared::keys::PublicKey =
                serde_json::from_value(item["recipient_public_key"].clone()).unwrap();
            let wrap = envelope.rewrap(&self.org_key, &key, &mut OsRng).unwrap();
            let path = format!("/v1/messages/{}/recipient-wrap", envelope.header.message_id);
            let (status, _) = self
                .api(reqwest::Method::PUT, &path, Some(json!({ "wrap": wrap })))
                .await;
            assert_eq!(status, 200);
        }
        pending.len()
    }

    /// A first-contact message to `phone`, the patient enrolled for it as the viewer enrolls
    /// (at the minimum KDF cost, with [`PASSWORD`]) and the message re-wrapped by the agent.
    async fn enrolled_patient(&self, phone: &str, subject: &str, body: &str) -> MessageId {
        let (id, _) = self.send(phone, subject, body, 86_400).await;
        let token = self.kit.link_for(phone);
        let patient = Patient {
            key: relay::testkit::keys().patient,
            password: PASSWORD,
        };
        // At the viewer's parameters: it refuses to unlock anything cheaper.
        patient
            .enroll_with(&self.kit, &token, shared::kdf::KdfParams::DEFAULT)
            .await;
        assert_eq!(self.rewrap_pending().await, 1);
        id
    }

    /// Rewrites the stored envelope of message `id`, as a malicious relay or anyone with write
    /// access to its database (and its row keys) could.
    async fn rewrite_envelope(&self, id: MessageId, change: impl FnOnce(&mut Envelope)) {
        let mut conn = self.kit.state().store().conn().await.unwrap();
        let stored = relay::store::messages::get(&mut conn, id)
            .await
            .unwrap()
            .unwrap();
        let mut envelope = stored.envelope.unwrap();
        change(&mut envelope);
        relay::store::messages::set_envelope(
            &mut conn,
            id,
            &envelope,
            stored.recipient_wrap.expect("wrapped to the patient"),
        )
        .await
        .unwrap();
    }

    /// Sets a time column of message `id` in the store (what the relay lists, not what the
    /// envelope's header says).
    async fn set_time(&self, id: MessageId, column: &str, value: i64) {
        let mut conn = self.kit.state().store().conn().await.unwrap();
        sqlx::query(&format!("UPDATE messages SET {column} = $1 WHERE id = $2"))
            .bind(value)
            .bind(id.to_string())
            .execute(&mut *conn)
            .await
            .unwrap();
    }

    /// The `detail` of each `open_failed` event of message `id`, as its sender sees them.
    async fn open_failures(&self, id: MessageId) -> Vec<String> {
        let (status, body) = self
            .api(reqwest::Method::GET, &format!("/v1/messages/{id}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "open_failed")
            .map(|e| e["detail"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Unlocks with [`PASSWORD`] from `link` and waits for `body`.
async fn unlock_and_read(browser: &Browser, link: &str, body: &str) {
    browser.client.goto(link).await.unwrap();
    browser.fill("#password", PASSWORD).await;
    browser.click("button[type=submit]").await;
    browser.wait_text(body).await;
}

/// The notices shown in place of messages that did not open.
async fn notices(browser: &Browser) -> Vec<String> {
    let mut texts = Vec::new();
    for notice in browser
        .client
        .find_all(fantoccini::Locator::Css("[role=alert].unreadable"))
        .await
        .unwrap()
    {
        texts.push(notice.text().await.unwrap());
    }
    texts
}

fn assert_nothing_readable(dump: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !dump.contains(secret),
            "browser storage holds {secret:?}: {dump}"
        );
    }
}

fn texts(lang: &str) -> (&'static str, &'static str, &'static str, &'static str) {
    match lang {
        "es" => (
            "Cree su contraseña",
            "Su mensaje se está preparando",
            "Escriba su contraseña",
            "Mensajes bloqueados",
        ),
        _ => (
            "Create your password",
            "Your message is being prepared",
            "Enter your password",
            "Messages locked",
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_journey_in_english() {
    journey("en", "+15550100001").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_journey_in_spanish() {
    journey("es", "+15550100002").await;
}

async fn journey(lang: &str, phone: &str) {
    let relay = Relay::start().await;
    let browser = Browser::start(lang).await;
    let shots = workspace_root().join("docs/screenshots").join(lang);
    let shot = |name: &str| shots.join(format!("{name}.png"));
    let (choose, preparing, unlock, locked) = texts(lang);
    let first_body =
        format!("[{lang}] Your lab results are ready: all values are within the normal range.");
    let second_body = format!("[{lang}] Reminder: your appointment is on Tuesday at 10:30.");

    // First contact: the patient chooses a password; the page waits for the re-wrap.
    let (_, link) = relay.send(phone, "Lab results", &first_body, 86_400).await;
    browser.client.goto(&link).await.unwrap();
    browser.wait("#new-password").await;
    browser.wait_text(choose).await;
    assert_eq!(
        browser.client.current_url().await.unwrap().path(),
        "/m/",
        "the link token is removed from the address bar"
    );
    browser.screenshot(&shot("01-choose-password")).await;

    // A password the estimator (zxcvbn, in its worker) calls weak: the meter says so and
    // enrollment refuses it, in the patient's language.
    let (weak_label, refused) = match lang {
        "es" => ("Débil", "demasiado fácil de adivinar"),
        _ => ("Weak", "too easy to guess"),
    };
    browser.fill("#new-password", "Riverside2026").await;
    let meter = wait_until(Duration::from_secs(60), "the meter's estimate", || async {
        let text = browser
            .client
            .find(fantoccini::Locator::Id("strength"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.starts_with(weak_label).then_some(text)
    })
    .await;
    assert!(meter.starts_with(weak_label), "{meter}");
    browser.screenshot(&shot("01b-weak-password")).await;
    browser.fill("#confirm-password", "Riverside2026").await;
    browser.click("button[type=submit]").await;
    browser.wait_text(refused).await;
    assert_eq!(relay.rewrap_pending().await, 0, "nothing was enrolled");

    browser.fill("#new-password", PASSWORD).await;
    browser.fill("#confirm-password", PASSWORD).await;
    browser.click("button[type=submit]").await;
    browser.wait_text(preparing).await;
    browser.screenshot(&shot("02-preparing")).await;

    // The sender's agent re-wraps; the open page shows the message.
    assert_eq!(relay.rewrap_pending().await, 1);
    let text = browser.wait_text(&first_body).await;
    assert!(text.contains("Riverside Clinic"));
    browser.screenshot(&shot("03-message")).await;

    // A second message inside the live session opens without the password.
    let (_, second_link) = relay.send(phone, "Appointment", &second_body, 86_400).await;
    browser.client.goto(&second_link).await.unwrap();
    browser.open_message("Appointment", &second_body).await;
    let text = browser.main_text().await;
    assert!(text.contains("Lab results"), "the other message is listed");
    browser.screenshot(&shot("04-message-list")).await;

    // Lock: nothing readable is left in the browser.
    browser.click(".lock").await;
    browser.wait_text(locked).await;
    browser.screenshot(&shot("05-locked")).await;
    let dump = browser.storage_dump().await;
    assert_nothing_readable(
        &dump,
        &[
            &first_body,
            &second_body,
            PASSWORD,
            "securetext.session",
            "securetext_session=",
        ],
    );

    // Unlock with the password; a wrong one first.
    browser.client.goto(&second_link).await.unwrap();
    browser.wait("#password").await;
    browser.wait_text(unlock).await;
    browser.screenshot(&shot("06-unlock")).await;
    let text = wrong_password(&browser, "4").await;
    assert!(
        text.contains(if lang == "es" {
            "Contraseña incorrecta"
        } else {
            "Wrong password"
        }),
        "{text}"
    );
    browser.screenshot(&shot("07-wrong-password")).await;
    assert_eq!(
        browser
            .wait("#password")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some(""),
        "the field is cleared"
    );
    browser.fill("#password", PASSWORD).await;
    browser.click("button[type=submit]").await;
    browser.wait_text(&second_body).await;

    // Lockout after repeated wrong passwords; the right one works once it has passed.
    browser.click(".lock").await;
    browser.wait_text(locked).await;
    browser.client.goto(&second_link).await.unwrap();
    browser.wait("#password").await;
    for left in ["4", "3", "2", "1"] {
        wrong_password(&browser, left).await;
    }
    wrong_password(
        &browser,
        if lang == "es" {
            "Demasiados intentos"
        } else {
            "Too many attempts"
        },
    )
    .await;
    browser.screenshot(&shot("08-locked-out")).await;
    relay.kit.advance(61);
    browser.fill("#password", PASSWORD).await;
    browser.click("button[type=submit]").await;
    browser.wait_text(&second_body).await;

    // Remote wipe: the operator ends the patient's sessions; the open page locks itself.
    let data_key_phone = phone.to_owned();
    let ended = revoke_sessions(&relay, &data_key_phone).await;
    assert_eq!(ended, 1);
    browser
        .wait_text(if lang == "es" {
            "Su sesión fue cerrada"
        } else {
            "Your session was ended"
        })
        .await;
    browser.screenshot(&shot("09-session-ended")).await;
    let dump = browser.storage_dump().await;
    assert_nothing_readable(
        &dump,
        &[&first_body, &second_body, PASSWORD, "securetext.session"],
    );

    // A link of the older path form (`/m/<token>`) still works, and its token leaves the
    // address bar too.
    let path_link = second_link.replacen("/m/#", "/m/", 1);
    browser.client.goto(&path_link).await.unwrap();
    browser.wait("#password").await;
    assert_eq!(
        browser.client.current_url().await.unwrap().as_str(),
        format!("{}/m/", relay.kit.base)
    );
    browser.fill("#password", PASSWORD).await;
    browser.click("button[type=submit]").await;
    browser.wait_text(&second_body).await;

    // Reload: the page re-opens the live session and shows the messages again — not the
    // relay's JSON, and without the password.
    browser.client.refresh().await.unwrap();
    browser.open_message("Appointment", &second_body).await;
    let text = browser.main_text().await;
    assert!(
        !text.contains("not_found") && !text.contains("{\""),
        "{text}"
    );
    assert!(
        text.contains("Lab results"),
        "both messages are back: {text}"
    );
    let cookie = session_cookie(&browser).await;
    assert_eq!(
        session_status(&relay, &cookie).await,
        200,
        "the session survives a reload"
    );

    // Leaving the page for another (not a reload) ends the session on the relay; coming back
    // finds the locked page.
    browser
        .client
        .goto("data:text/html,<title>Elsewhere</title><p>Elsewhere</p>")
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(30),
        "the relay to end the session the page left",
        || async { (session_status(&relay, &cookie).await == 401).then_some(()) },
    )
    .await;
    browser.client.back().await.unwrap();
    browser.wait_text(locked).await;
    let dump = browser.storage_dump().await;
    assert_nothing_readable(
        &dump,
        &[&first_body, &second_body, PASSWORD, "securetext.session"],
    );

    // Revoked, expired and unknown links each get their own page.
    let (revoked_id, revoked_link) = relay
        .send(phone, "Withdrawn", "[revoked] text", 86_400)
        .await;
    let (status, _) = relay
        .api(
            reqwest::Method::POST,
            &format!("/v1/messages/{revoked_id}/revoke"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    browser.client.goto(&revoked_link).await.unwrap();
    browser
        .wait_text(if lang == "es" {
            "Mensaje retirado"
        } else {
            "Message withdrawn"
        })
        .await;
    browser.screenshot(&shot("10-revoked")).await;
    let (_, expiring_link) = relay.send(phone, "Short", "[expired] text", 600).await;
    relay.kit.advance(601);
    browser.client.goto(&expiring_link).await.unwrap();
    browser
        .wait_text(if lang == "es" {
            "Mensaje vencido"
        } else {
            "Message expired"
        })
        .await;
    browser.screenshot(&shot("11-expired")).await;
    browser
        .client
        .goto(&format!("{}/m/#not-a-real-link", relay.kit.base))
        .await
        .unwrap();
    browser
        .wait_text(if lang == "es" {
            "Enlace no reconocido"
        } else {
            "Link not recognised"
        })
        .await;
    browser.screenshot(&shot("12-unknown-link")).await;

    // Network failure while unlocking.
    browser.client.goto(&second_link).await.unwrap();
    browser.wait("#password").await;
    browser.devtools("Network.enable", json!({})).await;
    browser
        .devtools("Network.emulateNetworkConditions", json!({ "offline": true, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1 }))
        .await;
    browser.fill("#password", PASSWORD).await;
    browser.click("button[type=submit]").await;
    browser
        .wait_text(if lang == "es" {
            "Sin conexión"
        } else {
            "No connection"
        })
        .await;
    browser.screenshot(&shot("13-network-error")).await;
    browser
        .devtools("Network.emulateNetworkConditions", json!({ "offline": false, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1 }))
        .await;

    // No Content-Security-Policy violation at any point.
    let console = browser.console().await;
    let violations: Vec<&String> = console
        .iter()
        .filter(|m| m.contains("Content Security Policy") || m.contains("Refused to"))
        .collect();
    assert!(violations.is_empty(), "CSP violations: {violations:#?}");

    // A browser without WebAssembly gets the unsupported page.
    browser
        .devtools("Page.addScriptToEvaluateOnNewDocument", json!({ "source": "Object.defineProperty(window, 'WebAssembly', { value: undefined });" }))
        .await;
    browser.client.goto(&second_link).await.unwrap();
    browser
        .wait_text(if lang == "es" {
            "Navegador no compatible"
        } else {
            "Browser not supported"
        })
        .await;
    browser.screenshot(&shot("14-unsupported-browser")).await;
    browser.finish().await;
}

/// The value of the session cookie the browser holds.
async fn session_cookie(browser: &Browser) -> String {
    let cookies = browser.devtools("Network.getAllCookies", json!({})).await;
    cookies["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == relay::api::viewer::SESSION_COOKIE)
        .and_then(|c| c["value"].as_str())
        .unwrap_or_else(|| panic!("no session cookie: {cookies}"))
        .to_owned()
}

/// What the relay answers `GET /v1/viewer/session` with this session cookie.
async fn session_status(relay: &Relay, cookie: &str) -> u16 {
    relay
        .kit
        .http
        .get(relay.kit.url("/v1/viewer/session"))
        .header(
            reqwest::header::COOKIE,
            format!("{}={cookie}", relay::api::viewer::SESSION_COOKIE),
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn revoke_sessions(relay: &Relay, phone: &str) -> u64 {
    relay::admin::revoke_sessions(
        relay.kit.state().store(),
        relay.kit.state().data_key(),
        phone,
        None,
    )
    .await
    .unwrap()
}

/// A stored ciphertext with one bit flipped: the messages that open are shown and, in place of
/// the altered one, an alert says it could not be opened safely and whom to contact; the sender
/// sees `open_failed` once. Then the message on screen is altered too: it stays as it opened,
/// because the page does not decrypt an envelope again at each refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_message_is_a_notice_in_its_place() {
    let relay = Relay::start().await;
    let phone = "+15550100003";
    let welcome = "[tamper] Welcome to secure messages from Riverside Clinic.";
    let kept_body = "[tamper] Your appointment is on Friday at 9:00.";
    let later_body = "[tamper] Your prescription is ready for collection.";
    relay.enrolled_patient(phone, "Welcome", welcome).await;
    let (tampered, _) = relay
        .send(phone, "Lab results", "[tamper] altered text", 86_400)
        .await;
    let (kept, kept_link) = relay.send(phone, "Appointment", kept_body, 86_400).await;
    relay
        .rewrite_envelope(tampered, |e| e.ciphertext[40] ^= 0x08)
        .await;

    let browser = Browser::start("en").await;
    unlock_and_read(&browser, &kept_link, kept_body).await;
    browser.wait("[role=alert].unreadable").await;
    let text = browser.main_text().await;
    assert!(
        text.contains("Welcome"),
        "the other messages still show: {text}"
    );
    let shown = notices(&browser).await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(
        shown[0].contains("could not be opened safely")
            && shown[0].contains("contact the sender")
            && shown[0].contains("Riverside Clinic"),
        "{shown:?}"
    );
    browser
        .screenshot(&workspace_root().join("docs/screenshots/en/message-not-opened.png"))
        .await;
    let failures = wait_until(
        Duration::from_secs(30),
        "the sender to see open_failed",
        || async {
            let failures = relay.open_failures(tampered).await;
            (!failures.is_empty()).then_some(failures)
        },
    )
    .await;
    assert_eq!(failures, ["reason=decryption_failed"]);

    // The message on screen is altered after it opened; a new message arrives. Once the page
    // shows the new one (it refreshed), the altered one still shows as it opened: it was not
    // decrypted again.
    relay
        .rewrite_envelope(kept, |e| e.ciphertext[40] ^= 0x08)
        .await;
    relay.send(phone, "Prescription", later_body, 86_400).await;
    browser.wait_text("Prescription").await;
    let text = browser.main_text().await;
    assert!(text.contains(kept_body), "{text}");
    assert_eq!(notices(&browser).await.len(), 1);
    assert!(relay.open_failures(kept).await.is_empty());
    assert_eq!(
        relay.open_failures(tampered).await.len(),
        1,
        "reported once"
    );
    browser.finish().await;
}

/// A relay that lies in its list: dates it changed, an expiry it extended past the header's,
/// and one message's envelope filed under another message's id. The page shows the header's
/// dates, leaves out the message whose header has expired, shows a notice for the moved
/// envelope (reported as `wrong_message`), and labels the sender's name as the relay's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_message_shows_comes_from_its_authenticated_header() {
    let relay = Relay::start().await;
    let phone = "+15550100004";
    let dated_body = "[header] Your check-up is booked.";
    relay
        .enrolled_patient(phone, "Welcome", "[header] Welcome.")
        .await;
    // Sent two hours ago by the relay's clock (so its header expired an hour ago), then listed
    // by the relay as live for another day.
    relay.kit.advance(-7200);
    let (expired, _) = relay
        .send(phone, "Old news", "[header] expired text", 3600)
        .await;
    relay.kit.advance(7200);
    relay
        .set_time(expired, "expires_at", relay.kit.now() + 86_400)
        .await;
    let (referral, _) = relay
        .send(phone, "Referral", "[header] Your referral.", 86_400)
        .await;
    let (invoice, _) = relay
        .send(phone, "Invoice", "[header] invoice text", 86_400)
        .await;
    let (dated, dated_link) = relay.send(phone, "Check-up", dated_body, 86_400).await;
    // The relay's own records of the dated message: sent in 1970, available until 2100.
    relay.set_time(dated, "created_at", 86_400).await;
    relay.set_time(dated, "expires_at", 4_102_444_800).await;
    // The invoice's row now holds the referral's envelope.
    let mut moved = None;
    relay
        .rewrite_envelope(referral, |e| moved = Some(e.clone()))
        .await;
    relay
        .rewrite_envelope(invoice, |e| *e = moved.take().unwrap())
        .await;

    let browser = Browser::start("en").await;
    unlock_and_read(&browser, &dated_link, dated_body).await;
    browser.wait("[role=alert].unreadable").await;
    let text = browser.main_text().await;
    for claim in ["1970", "2100"] {
        assert!(
            !text.contains(claim),
            "the relay's date {claim} shows: {text}"
        );
    }
    assert!(
        !text.contains("Old news"),
        "an expired header shows: {text}"
    );
    assert_eq!(text.matches("Referral").count(), 1, "{text}");
    assert!(!text.contains("Invoice"), "{text}");
    assert_eq!(notices(&browser).await.len(), 1);
    assert!(
        text.contains("From (name registered with this service): Riverside Clinic"),
        "{text}"
    );
    let failures = wait_until(
        Duration::from_secs(30),
        "the sender to see open_failed",
        || async {
            let failures = relay.open_failures(invoice).await;
            (!failures.is_empty()).then_some(failures)
        },
    )
    .await;
    assert_eq!(failures, ["reason=wrong_message"]);
    assert!(relay.open_failures(expired).await.is_empty());
    browser.finish().await;
}

#[tokio::test]
async fn a_relay_that_serves_cheaper_parameters_gets_no_proof() {
    let relay = Relay::start().await;
    let phone = "+15550100005";
    let (message, link) = relay
        .send(phone, "Results", "[cheap] never shown", 86_400)
        .await;
    // Stored at the format's minimum, which the relay serves at open as it would serve any
    // cheaper parameters it chose (issue 12, finding 7).
    let patient = Patient {
        key: relay::testkit::keys().patient,
        password: PASSWORD,
    };
    let token = relay.kit.link_for(phone);
    patient
        .enroll_with(&relay.kit, &token, shared::kdf::KdfParams::MINIMUM)
        .await;

    let browser = Browser::start("en").await;
    browser.client.goto(&link).await.unwrap();
    browser.fill("#password", PASSWORD).await;
    browser.click("button[type=submit]").await;
    let notice = browser.wait_text("unsafe security settings").await;
    assert!(notice.contains("contact the sender"), "{notice}");
    // The password was not used: no proof reached the relay, right or wrong.
    let kinds = relay.kit.event_kinds(&relay.clinic.api_key, message).await;
    for kind in ["unlocked", "unlock_failed"] {
        assert!(!kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
    browser.finish().await;
}
