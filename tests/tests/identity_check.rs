//! Verified first enrollment in the browser (issue 10, part 2): the built viewer in headless
//! Chromium, the real relay and the sender's real agent in one process. The clinic sends a
//! first contact that asks for the patient's date of birth; the patient first answers wrong
//! (nothing is enrolled, the page says so with the answers left), then right, and reads the
//! message, re-wrapped by the agent to the key that answer is bound to. In English and Spanish,
//! with screenshots in `docs/screenshots/<lang>/`.

use std::time::Duration;

use e2e::{Browser, Deployment, workspace_root};
use relay::testkit::wait_for;
use sender::agent::AgentEvent;
use sender::send::IdentityCheck;
use serde_json::json;

const PASSWORD: &str = "Maple syrup 2026!";
const BIRTH_DATE: &str = "1984-03-07";

/// What the page says, per language: the step's heading, a wrong answer, and the answers left
/// after it.
fn texts(lang: &str) -> (&'static str, &'static str, &'static str) {
    match lang {
        "es" => (
            "Confirme que es usted",
            "Eso no coincide",
            "4 respuestas restantes",
        ),
        _ => ("Confirm it's you", "That does not match", "4 answers left"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_enrollment_in_english() {
    journey("en", "+15557820001").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_enrollment_in_spanish() {
    journey("es", "+15557820002").await;
}

/// Sets a date input the way a date picker does (its typed form depends on the locale).
async fn set_date(browser: &Browser, date: &str) {
    browser.wait("#date-of-birth").await;
    browser
        .client
        .execute(
            "document.querySelector('#date-of-birth').value = arguments[0];",
            vec![json!(date)],
        )
        .await
        .unwrap();
}

/// Scrolls the identity-check step into view (it follows the password's explanation).
async fn show_check(browser: &Browser) {
    browser
        .client
        .execute(
            "document.querySelector('fieldset.check').scrollIntoView({block: 'center'});",
            vec![],
        )
        .await
        .unwrap();
}

async fn answer(browser: &Browser, date: &str) {
    set_date(browser, date).await;
    browser.fill("#new-password", PASSWORD).await;
    browser.fill("#confirm-password", PASSWORD).await;
    browser.click("button[type=submit]").await;
}

async fn journey(lang: &str, phone: &str) {
    let deployment = Deployment::start().await.unwrap();
    let browser = Browser::start(lang).await;
    let shots = workspace_root().join("docs/screenshots").join(lang);
    let shot = |name: &str| shots.join(format!("{name}.png"));
    let (heading, wrong, left) = texts(lang);
    let body = format!("[{lang}] Your biopsy results are ready: nothing of concern was found.");
    let check = IdentityCheck::new(Some(BIRTH_DATE), None).unwrap();
    let (id, link) = deployment.send(phone, &body, Some(check)).await.unwrap();

    browser.client.goto(&link).await.unwrap();
    browser.wait("#date-of-birth").await;
    browser.wait_text(heading).await;
    show_check(&browser).await;
    browser.screenshot(&shot("15-confirm-identity")).await;

    // A wrong date: the agent's confirmation tells the page at once; nothing is enrolled.
    answer(&browser, "1990-01-01").await;
    browser.wait_text(wrong).await;
    browser.wait_text(left).await;
    show_check(&browser).await;
    browser.screenshot(&shot("16-identity-wrong")).await;
    // The page knows from the agent's confirmation; the agent's verdict follows.
    wait_for(Duration::from_secs(30), || async {
        deployment.reported(|event| {
            matches!(event,
            AgentEvent::IdentityCheckFailed { message_id, attempts_left: 4, .. }
                if *message_id == id)
        })
    })
    .await
    .expect("the agent records the failed answer");

    // The right date: enrolled, unlocked, re-wrapped to the verified key, read.
    answer(&browser, BIRTH_DATE).await;
    browser.wait_text(&body).await;
    browser
        .screenshot(&shot("17-identity-verified-message"))
        .await;
    // The agent reports the re-wrap once the relay's answer to it arrives, which can be just
    // after the page shows the message.
    wait_for(Duration::from_secs(30), || async {
        deployment.reported(|event| {
            matches!(event,
            AgentEvent::Rewrapped { message_id, identity_verified: true, newly_pinned: true, .. }
                if *message_id == id)
        })
    })
    .await
    .expect("re-wrapped to the verified key");
    browser.finish().await;
    deployment.finish().await;
}
