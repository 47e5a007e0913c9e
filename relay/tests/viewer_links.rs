//! The SMS link and the viewer's addresses (issue 12, findings 1 and 5).
//!
//! A link token in the URL path reaches the access log of every TLS proxy, load balancer and
//! CDN in front of the relay; in the fragment it never leaves the phone, because HTTP clients
//! do not send fragments. And every address under `/m/` is the viewer's page — the page
//! replaces its address with `/m/` once it has read the token, so a reload or a back
//! navigation must land on the viewer again, never on the API's JSON 404.

use relay::store::Backend;
use relay::testkit::TestRelay;
use reqwest::{Method, Url};
use serde_json::json;

const PHONE: &str = "+15557780001";

/// Sends a first-contact message to [`PHONE`] and returns the SMS body the patient receives.
async fn texted_body(relay: &TestRelay) -> String {
    let clinic = relay.registered_organisation("Link Clinic").await;
    relay.submit_first_contact(&clinic, PHONE, "hi").await;
    relay.deliver_sms().await;
    let sms = relay.sms();
    sms.last().unwrap()["body"].as_str().unwrap().to_owned()
}

/// The SMS link is `<public URL>/m/#<token>`: what an HTTP client sends — and so what a proxy
/// in front of the relay logs — is `GET /m/`, and the token from the fragment still opens the
/// message.
#[tokio::test]
async fn the_sms_link_carries_the_token_only_in_the_fragment() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let body = texted_body(&relay).await;
    let token = relay.link_for(PHONE);
    let link = body.rsplit(' ').next().unwrap();
    let url = Url::parse(link).unwrap_or_else(|e| panic!("{link:?} is no URL: {e}"));

    assert_eq!(url.fragment(), Some(token.as_str()), "{link}");
    assert_eq!(url.path(), "/m/", "{link}");
    assert_eq!(url.query(), None, "{link}");
    // The request target a proxy's access log records: path and query, never the fragment.
    let request_target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    assert_eq!(request_target, "/m/");
    assert!(!request_target.contains(&token));
    assert_eq!(
        format!("{}/m/#{token}", relay.state().settings().public_url),
        link
    );

    // The page behind the link is the viewer, and the token it reads from the fragment opens
    // the message.
    let page = relay.http.get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<title>SecureText</title>")
    );
    let (status, opened) = relay
        .call(
            Method::POST,
            "/v1/viewer/open",
            None,
            Some(json!({ "link": token })),
        )
        .await;
    assert_eq!(status, 200, "{opened}");
    assert_eq!(opened["state"], "new");
    relay.finish().await;
}

/// `/m/`, the address the viewer leaves in the bar, and any other path under `/m/` answer the
/// viewer's `index.html` with the page's headers — the same as an old `/m/<token>` link —
/// never JSON. Other unknown paths keep the JSON 404.
#[tokio::test]
async fn every_path_under_m_is_the_viewer_page() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let index = std::fs::read_to_string(relay.viewer_dir().join("index.html")).unwrap();
    let get = |path: &str| relay.http.get(relay.url(path)).send();
    let reference = get("/m/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await
        .unwrap();
    assert_eq!(reference.status(), 200);
    let page_headers = |response: &reqwest::Response| {
        [
            "content-type",
            "content-security-policy",
            "cache-control",
            "referrer-policy",
            "x-frame-options",
            "x-content-type-options",
            "cross-origin-opener-policy",
        ]
        .map(|name| {
            let value = response.headers().get(name);
            (name, value.map(|v| v.to_str().unwrap().to_owned()))
        })
    };
    let expected = page_headers(&reference);
    assert_eq!(
        expected[0].1.as_deref(),
        Some("text/html; charset=utf-8"),
        "the page's content type"
    );
    assert_eq!(expected[2].1.as_deref(), Some("no-store"));

    for path in [
        "/m/",
        "/m/?from=sms",
        "/m/not-a-token",
        "/m/some-token/",
        "/m/some/deeper/path",
        "/m//",
    ] {
        let response = get(path).await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        assert_eq!(page_headers(&response), expected, "GET {path}");
        assert_eq!(response.text().await.unwrap(), index, "GET {path}");
    }

    let (status, body) = relay.call(Method::GET, "/v1/nowhere", None, None).await;
    assert_eq!((status, &body["error"]), (404, &json!("not_found")));
    let (status, body) = relay.call(Method::GET, "/nowhere", None, None).await;
    assert_eq!((status, &body["error"]), (404, &json!("not_found")));
    relay.finish().await;
}
