//! Lockouts that cannot be turned against the patient, and a reset without a race (issue 10,
//! parts 3 and 4). Each test is an attack that worked on the relay before: a link holder locking
//! the patient out, wrong guesses from a carrier address locking out every patient behind it,
//! an IPv6 client escaping the per-address count, an unthrottled and unaudited `open`, an old
//! link enrolling again after `reset-enrollment`, and an operator who could only clear a lockout
//! by resetting the enrollment. Every test runs on SQLite and on PostgreSQL.

use std::process::Stdio;

use rand_core::OsRng;
use relay::limits::Limits;
use relay::store::Backend;
use relay::testkit::{Patient, Sender, TestRelay, keys};
use serde_json::{Value, json};
use shared::api::OpenResponse;
use shared::kdf::{KdfParams, Password, Salt, derive_password_keys};
use shared::token::Token;

const PASSWORD: &str = "correct horse battery staple";
/// The name of the device cookie over plain HTTP (the test relays are not behind TLS).
const DEVICE_COOKIE: &str = "securetext_device";

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
    a_known_device_unlocks_while_the_patient_is_locked_out,
    carrier_address_lockouts_spare_patients_without_failures,
    ipv6_addresses_count_by_64_prefix,
    open_is_throttled_and_audited,
    reset_refuses_enrollment_through_old_links,
    clear_lockout_clears_counters_only,
    a_device_cookie_is_no_key_to_another_patient_nor_after_a_remote_wipe,
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A browser: the client address it comes from (through the trusted proxy) and the device
/// cookie it was given, if any.
#[derive(Debug, Clone)]
struct Browser {
    address: &'static str,
    device: Option<String>,
}

impl Browser {
    fn at(address: &'static str) -> Self {
        Self {
            address,
            device: None,
        }
    }
}

/// A relay behind a trusted proxy, so that each request can name its client address.
async fn relay_with(backend: Backend, limits: Limits) -> TestRelay {
    TestRelay::builder(backend)
        .trust_forwarded_for()
        .limits(limits)
        .start()
        .await
}

/// An enrolled patient at `phone`; returns the link of the first message.
async fn enrolled(relay: &TestRelay, clinic: &Sender, phone: &str) -> String {
    relay.submit_first_contact(clinic, phone, "hello").await;
    let link = relay.deliver_link_for(phone).await;
    let patient = Patient {
        key: keys().patient,
        password: PASSWORD,
    };
    patient.enroll(relay, &link).await;
    link
}

/// `POST /v1/viewer/open` from `address`: status and body.
async fn open(relay: &TestRelay, link: &str, address: &str) -> (u16, Value) {
    let response = relay
        .http
        .post(relay.url("/v1/viewer/open"))
        .header("x-forwarded-for", address)
        .json(&json!({ "link": link }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap();
    relay
        .contract
        .check("POST", "/v1/viewer/open", status, &body);
    (status, body)
}

/// The right proof for the patient behind `link`, as the viewer derives it from `open`'s salt
/// and parameters (opened from an address of its own, so as not to use up a browser's opens).
async fn right_proof(relay: &TestRelay, link: &str) -> String {
    let (status, opened) = open(relay, link, "192.0.2.250").await;
    assert_eq!(status, 200, "{opened}");
    let opened: OpenResponse = serde_json::from_value(opened).unwrap();
    let shared::api::PatientState::Enrolled { kdf_params, salt } = opened.patient else {
        panic!("not enrolled");
    };
    let keys = derive_password_keys(&Password::new(PASSWORD).unwrap(), &salt, &kdf_params).unwrap();
    keys.auth.to_base64url().to_string()
}

/// A wrong proof: 32 random bytes.
fn wrong_proof() -> String {
    Token::random(&mut OsRng).to_base64url().to_string()
}

/// `POST /v1/viewer/unlock` from `browser` with `proof`; keeps a device cookie the relay sets.
async fn unlock(relay: &TestRelay, link: &str, proof: &str, browser: &mut Browser) -> (u16, Value) {
    let mut request = relay
        .http
        .post(relay.url("/v1/viewer/unlock"))
        .header("x-forwarded-for", browser.address)
        .json(&json!({ "link": link, "proof": proof }));
    if let Some(device) = &browser.device {
        request = request.header("cookie", device);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    for set_cookie in response.headers().get_all("set-cookie") {
        let set_cookie = set_cookie.to_str().unwrap();
        if set_cookie.starts_with(&format!("{DEVICE_COOKIE}=")) {
            browser.device = Some(set_cookie.split(';').next().unwrap().to_owned());
        }
    }
    let body = response.json().await.unwrap();
    relay
        .contract
        .check("POST", "/v1/viewer/unlock", status, &body);
    (status, body)
}

/// Wrong proofs from `browser` until one answers `429 locked_out`; returns how many it took.
async fn lock_out(relay: &TestRelay, link: &str, browser: &mut Browser) -> usize {
    for tries in 1..=100 {
        let (status, body) = unlock(relay, link, &wrong_proof(), browser).await;
        if status == 429 {
            assert_eq!(body["error"], "locked_out", "{body}");
            return tries;
        }
        assert_eq!(body["error"], "wrong_password", "{body}");
    }
    panic!("no lockout after 100 wrong proofs");
}

/// The organisation's audit events of one kind.
async fn audited(relay: &TestRelay, clinic: &Sender, kind: &str) -> Vec<shared::audit::AuditEvent> {
    let response = relay
        .http
        .get(relay.url("/v1/audit"))
        .bearer_auth(&clinic.api_key)
        .send()
        .await
        .unwrap();
    let events = shared::audit::from_json_lines(&response.text().await.unwrap()).unwrap();
    shared::audit::verify_chain(&events).unwrap();
    events
        .into_iter()
        .filter(|e| e.kind.as_str() == kind)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The attacks
// ---------------------------------------------------------------------------------------------

/// (a) A link holder locks the patient out with wrong proofs. The patient's own browser, which
/// unlocked before and holds the device cookie, still unlocks with the right password; a fresh
/// browser is still locked out; and the device's own wrong guesses are limited on their own, so
/// a stolen device cookie is no way around the lockout either.
async fn a_known_device_unlocks_while_the_patient_is_locked_out(backend: Backend) {
    let relay = relay_with(backend, Limits::default()).await;
    let clinic = relay.registered_organisation("Device Clinic").await;
    let link = enrolled(&relay, &clinic, "+15557100001").await;
    let proof = right_proof(&relay, &link).await;

    let mut phone = Browser::at("192.0.2.10");
    assert_eq!(unlock(&relay, &link, &proof, &mut phone).await.0, 200);
    let device = phone
        .device
        .clone()
        .expect("a device cookie after a successful unlock");

    let mut attacker = Browser::at("198.51.100.66");
    assert_eq!(lock_out(&relay, &link, &mut attacker).await, 5);
    assert!(
        attacker.device.is_none(),
        "wrong proofs earn no device cookie"
    );
    let (status, body) = unlock(&relay, &link, &proof, &mut Browser::at("192.0.2.11")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("locked_out")),
        "fresh browser"
    );

    let (status, body) = unlock(&relay, &link, &proof, &mut phone).await;
    assert_eq!(
        status, 200,
        "the patient's own browser is locked out: {body}"
    );
    assert_eq!(
        phone.device.as_deref(),
        Some(device.as_str()),
        "the device keeps its token"
    );

    // The device's own wrong guesses lock the device, not only the unknown ones.
    let mut stolen = Browser {
        address: "203.0.113.5",
        device: Some(device),
    };
    assert_eq!(lock_out(&relay, &link, &mut stolen).await, 5);
    let (status, _) = unlock(&relay, &link, &proof, &mut stolen).await;
    assert_eq!(status, 429, "a locked device waits like anyone else");
    relay.finish().await;
}

/// (b) Twenty wrong proofs from one carrier address against patient A lock the address. Patient
/// B, behind the same address and without failures of their own, still unlocks. An attacker
/// behind the address gets one guess at each further patient, not a new series.
async fn carrier_address_lockouts_spare_patients_without_failures(backend: Backend) {
    let limits = Limits {
        unlock_attempts: 1_000,
        ..Limits::default()
    };
    let relay = relay_with(backend, limits).await;
    let clinic = relay.registered_organisation("Carrier Clinic").await;
    let a = enrolled(&relay, &clinic, "+15557200001").await;
    let b = enrolled(&relay, &clinic, "+15557200002").await;
    let c = enrolled(&relay, &clinic, "+15557200003").await;
    let proof_a = right_proof(&relay, &a).await;
    let proof_b = right_proof(&relay, &b).await;
    let proof_c = right_proof(&relay, &c).await;
    const CARRIER: &str = "198.51.100.20";

    let mut attacker = Browser::at(CARRIER);
    assert_eq!(lock_out(&relay, &a, &mut attacker).await, 20);
    let (status, _) = unlock(&relay, &a, &proof_a, &mut Browser::at(CARRIER)).await;
    assert_eq!(status, 429, "A has failures: the address lock applies to A");

    let (status, body) = unlock(&relay, &b, &proof_b, &mut Browser::at(CARRIER)).await;
    assert_eq!(
        status, 200,
        "B never failed, yet the carrier address locks B out: {body}"
    );

    // Spraying: one wrong guess at C is checked (and counted), the next one waits.
    let (status, body) = unlock(&relay, &c, &wrong_proof(), &mut attacker).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("locked_out")));
    let (status, _) = unlock(&relay, &c, &proof_c, &mut attacker).await;
    assert_eq!(
        status, 429,
        "C has a failure now: the address lock applies to C"
    );
    relay.finish().await;
}

/// (c) Wrong proofs from many addresses inside one IPv6 /64 count as one address; another /64
/// is another address; an IPv4-mapped IPv6 address counts as the IPv4 address.
async fn ipv6_addresses_count_by_64_prefix(backend: Backend) {
    let limits = Limits {
        unlock_attempts: 1_000,
        ..Limits::default()
    };
    let relay = relay_with(backend, limits).await;
    let clinic = relay.registered_organisation("Six Clinic").await;
    let link = enrolled(&relay, &clinic, "+15557300001").await;
    const IN_ONE_64: [&str; 20] = [
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
        "2001:db8:1:2::3",
        "2001:db8:1:2::4",
        "2001:db8:1:2::5",
        "2001:db8:1:2::6",
        "2001:db8:1:2::7",
        "2001:db8:1:2::8",
        "2001:db8:1:2::9",
        "2001:db8:1:2::a",
        "2001:db8:1:2:1::b",
        "2001:db8:1:2:2::c",
        "2001:db8:1:2:3::d",
        "2001:db8:1:2:4::e",
        "2001:db8:1:2:5::f",
        "2001:db8:1:2:6:7:8:9",
        "2001:db8:1:2:ffff:ffff:ffff:fff0",
        "2001:db8:1:2:aaaa::1",
        "2001:db8:1:2:bbbb::1",
        "2001:db8:1:2:cccc::1",
    ];
    for (i, address) in IN_ONE_64.into_iter().enumerate() {
        let (status, body) = unlock(&relay, &link, &wrong_proof(), &mut Browser::at(address)).await;
        let expected = if i + 1 == IN_ONE_64.len() { 429 } else { 401 };
        assert_eq!(status, expected, "proof {} from {address}: {body}", i + 1);
    }
    let (status, body) = unlock(
        &relay,
        &link,
        &wrong_proof(),
        &mut Browser::at("2001:db8:1:2::dead"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("locked_out")),
        "same /64"
    );
    let (status, body) = unlock(
        &relay,
        &link,
        &wrong_proof(),
        &mut Browser::at("2001:db8:1:3::1"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("wrong_password")),
        "another /64"
    );

    // IPv4-mapped IPv6 is the IPv4 address.
    for _ in 0..19 {
        let (status, _) = unlock(
            &relay,
            &link,
            &wrong_proof(),
            &mut Browser::at("198.51.100.7"),
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, body) = unlock(
        &relay,
        &link,
        &wrong_proof(),
        &mut Browser::at("::ffff:198.51.100.7"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("locked_out")),
        "mapped"
    );
    relay.finish().await;
}

/// (d) Polling `open` is throttled per link and client address (`429 rate_limited` with
/// `retry_after`), never for another link behind the same address, and every open of the link
/// is in the sender's audit log.
async fn open_is_throttled_and_audited(backend: Backend) {
    let relay = relay_with(backend, Limits::default()).await;
    let clinic = relay.registered_organisation("Open Clinic").await;
    relay
        .submit_first_contact(&clinic, "+15557400001", "hi")
        .await;
    let link = relay.deliver_link_for("+15557400001").await;
    let mut limit = 0;
    let body = loop {
        let (status, body) = open(&relay, &link, "198.51.100.40").await;
        if status != 200 {
            assert_eq!(
                (status, body["error"].as_str()),
                (429, Some("rate_limited")),
                "{body}"
            );
            break body;
        }
        limit += 1;
        assert!(
            limit < 200,
            "200 opens a minute from one address, none refused"
        );
    };
    let retry_after = body["retry_after"].as_i64().unwrap();
    assert!((1..=60).contains(&retry_after), "{body}");
    assert_eq!(
        open(&relay, &link, "198.51.100.41").await.0,
        200,
        "another address"
    );
    // Another patient's link behind the same (shared) address is not throttled.
    relay
        .submit_first_contact(&clinic, "+15557400002", "hi")
        .await;
    let other = relay.deliver_link_for("+15557400002").await;
    assert_eq!(
        open(&relay, &other, "198.51.100.40").await.0,
        200,
        "another link from the throttled address"
    );
    relay.advance(retry_after);
    assert_eq!(
        open(&relay, &link, "198.51.100.40").await.0,
        200,
        "after retry_after"
    );

    let opens = audited(&relay, &clinic, "link_opened").await;
    let answered = limit + 2;
    assert_eq!(
        opens.len(),
        answered + 1,
        "every answered open is audited (one of the other link)"
    );
    assert_eq!(opens.last().unwrap().detail, format!("opens={answered}"));
    relay.finish().await;
}

/// (e) After `reset-enrollment`, enrollment through every existing link is refused with
/// `link_superseded` (and `open` says so, instead of offering to set a password); the link of
/// the sender's next message enrolls.
async fn reset_refuses_enrollment_through_old_links(backend: Backend) {
    let relay = relay_with(backend, Limits::default()).await;
    let clinic = relay.registered_organisation("Reset Clinic").await;
    let phone = "+15557500001";
    let old = enrolled(&relay, &clinic, phone).await;
    relay.reset_enrollment(phone).await;

    let attacker = Patient {
        key: keys().patient,
        password: "attacker's password",
    };
    let (status, body) = open(&relay, &old, "198.51.100.50").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("link_superseded")),
        "{body}"
    );
    let salt = Salt::random(&mut OsRng);
    let derived = derive_password_keys(
        &Password::new(attacker.password).unwrap(),
        &salt,
        &KdfParams::MINIMUM,
    )
    .unwrap();
    let recipient = {
        let mut conn = relay.state().store().conn().await.unwrap();
        let lookup = shared::phone::PhoneNumber::parse(phone)
            .unwrap()
            .lookup(relay.state().data_key(), clinic.id);
        relay::store::recipients::find_by_phone(&mut conn, &lookup)
            .await
            .unwrap()
            .unwrap()
            .id
    };
    let binding = shared::bundle::SealBinding {
        recipient,
        salt,
        kdf_params: KdfParams::MINIMUM,
    };
    let bundle =
        shared::bundle::KeyBundle::seal(&attacker.key, &binding, &derived.sealing, &mut OsRng)
            .unwrap();
    let (status, body) = relay
        .call(
            reqwest::Method::POST,
            "/v1/viewer/enroll",
            None,
            Some(json!({
                "link": old,
                "bundle": bundle,
                "salt": salt,
                "kdf_params": KdfParams::MINIMUM,
                "verifier": derived.auth.verifier(),
            })),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("link_superseded")),
        "{body}"
    );

    // The sender's next message (first contact again: the patient has no key) enrolls.
    relay
        .submit_first_contact(&clinic, phone, "your new link")
        .await;
    let new = relay.deliver_link_for(phone).await;
    assert_ne!(new, old);
    let patient = Patient {
        key: keys().patient,
        password: PASSWORD,
    };
    patient.enroll(&relay, &new).await;
    // Once enrolled again, the old link unlocks like any link of the patient's.
    patient.unlock(&relay, &old).await;
    relay.finish().await;
}

/// (f) `relay patient clear-lockout` (the real binary, phone on standard input) clears the
/// patient's failure counters, is audited, and leaves the enrollment, the links and the sessions
/// alone.
async fn clear_lockout_clears_counters_only(backend: Backend) {
    let relay = relay_with(backend, Limits::default()).await;
    let clinic = relay.registered_organisation("Support Clinic").await;
    let phone = "+15557600001";
    let link = enrolled(&relay, &clinic, phone).await;
    let proof = right_proof(&relay, &link).await;
    let mut phone_browser = Browser::at("192.0.2.60");
    let (status, session) = unlock(&relay, &link, &proof, &mut phone_browser).await;
    assert_eq!(status, 200);
    let cookie = {
        // The session cookie of that unlock is what a live session presents.
        let response = relay
            .http
            .post(relay.url("/v1/viewer/unlock"))
            .header("x-forwarded-for", "192.0.2.61")
            .json(&json!({ "link": link, "proof": proof }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    };
    assert!(session["relay_half"].is_string());
    lock_out(&relay, &link, &mut Browser::at("198.51.100.60")).await;
    let mut fresh = Browser::at("192.0.2.62");
    assert_eq!(unlock(&relay, &link, &proof, &mut fresh).await.0, 429);

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["patient", "clear-lockout"])
        .env("RELAY_DATABASE_URL", relay.db.url())
        .env("RELAY_DATA_KEY", &relay.data_key)
        .env("RELAY_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("relay binary runs");
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        format!("{phone}\n").as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("lockout cleared"), "{stdout}");
    assert!(
        !stdout.contains(phone) && !stderr.contains(phone),
        "no phone number printed"
    );

    // The session lives on, the same password unlocks from a fresh browser through the same
    // link, and the patient was not asked to enroll again.
    let session_status = relay
        .http
        .get(relay.url("/v1/viewer/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(session_status, 200, "clear-lockout ended a session");
    let (status, body) = unlock(&relay, &link, &proof, &mut fresh).await;
    assert_eq!(status, 200, "still locked out after clear-lockout: {body}");
    let cleared = audited(&relay, &clinic, "lockout_cleared").await;
    assert_eq!(cleared.len(), 1);
    assert!(audited(&relay, &clinic, "key_reset").await.is_empty());
    assert!(audited(&relay, &clinic, "session_revoked").await.is_empty());
    relay.finish().await;
}

/// A device cookie counts only for the patient it unlocked, and `relay patient revoke-sessions`
/// (the remote wipe of a lost phone) makes the phone an unknown browser again.
async fn a_device_cookie_is_no_key_to_another_patient_nor_after_a_remote_wipe(backend: Backend) {
    let relay = relay_with(backend, Limits::default()).await;
    let clinic = relay.registered_organisation("Wipe Clinic").await;
    let a = enrolled(&relay, &clinic, "+15557700001").await;
    let b = enrolled(&relay, &clinic, "+15557700002").await;
    let proof_a = right_proof(&relay, &a).await;
    let proof_b = right_proof(&relay, &b).await;
    let mut phone = Browser::at("192.0.2.70");
    assert_eq!(unlock(&relay, &a, &proof_a, &mut phone).await.0, 200);
    let device_of_a = phone.device.clone().unwrap();

    // B locked out: A's device cookie does not pass B's lockout.
    lock_out(&relay, &b, &mut Browser::at("198.51.100.70")).await;
    let mut a_browser_at_b = Browser {
        address: "192.0.2.71",
        device: Some(device_of_a.clone()),
    };
    assert_eq!(
        unlock(&relay, &b, &proof_b, &mut a_browser_at_b).await.0,
        429
    );

    // A locked out; the phone passes until the remote wipe, then waits like any browser.
    lock_out(&relay, &a, &mut Browser::at("198.51.100.71")).await;
    assert_eq!(unlock(&relay, &a, &proof_a, &mut phone).await.0, 200);
    relay::admin::revoke_sessions(
        relay.state().store(),
        relay.state().data_key(),
        "+15557700001",
        None,
    )
    .await
    .unwrap();
    let mut wiped = Browser {
        address: "192.0.2.70",
        device: Some(device_of_a),
    };
    let (status, body) = unlock(&relay, &a, &proof_a, &mut wiped).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("locked_out")),
        "{body}"
    );
    relay.finish().await;
}
