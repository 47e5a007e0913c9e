//! The viewer's session cookie (issue 12, finding 10): over TLS it is a `__Host-` cookie (only
//! this origin, `Secure`, `Path=/`) that lives no longer than the browser session (no
//! `Max-Age`); a cookie of the same name planted beside it (by a sibling subdomain or an
//! injected header) cannot hide the real one; and a cookie-authenticated POST must carry the
//! viewer's request header, which no cross-site form can send. The device cookie is `Secure`,
//! `HttpOnly`, `SameSite=Strict` and scoped to the unlock endpoint.

use rand_core::OsRng;
use relay::store::Backend;
use relay::testkit::{Patient, TestRelay, keys};
use shared::api::VIEWER_REQUEST_HEADER;

const PHONE: &str = "+15557770001";

/// A relay with an enrolled patient; returns the patient and the link.
async fn enrolled(relay: &TestRelay) -> (Patient, String) {
    let clinic = relay.registered_organisation("Cookie Clinic").await;
    relay.submit_first_contact(&clinic, PHONE, "hi").await;
    let link = relay.deliver_link_for(PHONE).await;
    let patient = Patient {
        key: keys().patient,
        password: "correct horse battery staple",
    };
    patient.enroll(relay, &link).await;
    (patient, link)
}

async fn session_status(relay: &TestRelay, cookies: &[&str]) -> u16 {
    let mut request = relay.http.get(relay.url("/v1/viewer/session"));
    for cookie in cookies {
        request = request.header("cookie", *cookie);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn over_tls_the_session_cookie_is_host_only_and_ends_with_the_browser() {
    let relay = TestRelay::builder(Backend::Sqlite)
        .behind_tls()
        .start()
        .await;
    let (patient, link) = enrolled(&relay).await;
    let session = patient.unlock(&relay, &link).await;
    let set_cookie = session.set_cookie.to_ascii_lowercase();
    assert!(
        set_cookie.starts_with("__host-securetext_session="),
        "{set_cookie}"
    );
    for attribute in ["; secure", "; path=/;", "; httponly", "; samesite=strict"] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }
    assert!(!set_cookie.contains("max-age"), "{set_cookie}");
    assert!(!set_cookie.contains("domain"), "{set_cookie}");
    assert_eq!(session_status(&relay, &[&session.cookie]).await, 200);
    relay.finish().await;
}

/// The device cookie (issue 10, part 3): `__Secure-` under TLS, `HttpOnly`, `SameSite=Strict`,
/// sent only to the unlock endpoint, 90 days; its value is only a random token.
#[tokio::test]
async fn over_tls_the_device_cookie_is_secure_and_sent_only_to_unlock() {
    let relay = TestRelay::builder(Backend::Sqlite)
        .behind_tls()
        .start()
        .await;
    let (patient, link) = enrolled(&relay).await;
    let session = patient.unlock(&relay, &link).await;
    let device = session.set_device_cookie.expect("a device cookie");
    let lower = device.to_ascii_lowercase();
    assert!(lower.starts_with("__secure-securetext_device="), "{device}");
    for attribute in [
        "; secure",
        "; path=/v1/viewer/unlock",
        "; httponly",
        "; samesite=strict",
        "; max-age=7776000",
    ] {
        assert!(lower.contains(attribute), "{attribute}: {device}");
    }
    assert!(!lower.contains("domain"), "{device}");
    let value = device.split(';').next().unwrap().split_once('=').unwrap().1;
    assert!(
        shared::token::Token::from_base64url(value).is_ok(),
        "{device}"
    );
    relay.finish().await;
}

#[tokio::test]
async fn a_planted_cookie_of_the_same_name_does_not_hide_the_real_one() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let (patient, link) = enrolled(&relay).await;
    let session = patient.unlock(&relay, &link).await;
    let (name, _) = session.cookie.split_once('=').unwrap();
    let planted = format!(
        "{name}={}",
        shared::token::Token::random(&mut OsRng)
            .to_base64url()
            .as_str()
    );
    let garbage = format!("{name}=not-a-token");
    // Planted first in the same header, and in a header of its own.
    let both = format!("{planted}; {garbage}; {}", session.cookie);
    assert_eq!(session_status(&relay, &[&both]).await, 200);
    assert_eq!(
        session_status(&relay, &[&planted, &session.cookie]).await,
        200
    );
    assert_eq!(session_status(&relay, &[&planted]).await, 401);
    relay.finish().await;
}

#[tokio::test]
async fn a_cookie_authenticated_post_needs_the_viewer_header() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let (patient, link) = enrolled(&relay).await;
    let session = patient.unlock(&relay, &link).await;
    let logout = || {
        relay
            .http
            .post(relay.url("/v1/viewer/logout"))
            .header("cookie", &session.cookie)
    };
    // What a cross-site form could send: the cookie, no custom header.
    let forged = logout().send().await.unwrap();
    assert_eq!(forged.status(), 403);
    let body: serde_json::Value = forged.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    assert_eq!(
        session_status(&relay, &[&session.cookie]).await,
        200,
        "a forged logout ended the session"
    );
    let real = logout()
        .header(VIEWER_REQUEST_HEADER, "1")
        .send()
        .await
        .unwrap();
    assert_eq!(real.status(), 204);
    assert_eq!(session_status(&relay, &[&session.cookie]).await, 401);
    relay.finish().await;
}
