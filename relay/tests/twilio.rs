//! The Twilio provider against a local stand-in for Twilio's Messages endpoint.
//!
//! The stand-in records every request it receives on a channel and answers with a canned
//! status and body, so each test checks both what the relay sent (path, basic auth, form
//! fields) and how it read Twilio's answer.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use relay::sms::twilio::{TwilioConfig, TwilioProvider};
use relay::sms::{OutgoingSms, SmsError, SmsProvider};
use tokio::sync::mpsc;

const ACCOUNT_SID: &str = "AC00000000000000000000000000000001";
const AUTH_TOKEN: &str = "test-auth-token";
const PATIENT: &str = "+15551234567";
const BODY: &str = "Message from Clinic: https://relay.example/m/abc#link-token";

/// One request as the stand-in saw it.
#[derive(Debug)]
struct Captured {
    method: Method,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    fields: Vec<(String, String)>,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
struct StandIn {
    requests: mpsc::UnboundedSender<Captured>,
    status: StatusCode,
    body: &'static str,
}

async fn record(
    State(stand_in): State<StandIn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let captured = Captured {
        method,
        path: uri.path().to_owned(),
        authorization: header(header::AUTHORIZATION),
        content_type: header(header::CONTENT_TYPE),
        fields: url::form_urlencoded::parse(&body).into_owned().collect(),
    };
    stand_in.requests.send(captured).unwrap();
    (
        stand_in.status,
        [(header::CONTENT_TYPE, "application/json")],
        stand_in.body,
    )
}

/// Starts a stand-in answering every request with `status` and `body`.
async fn stand_in(
    status: StatusCode,
    body: &'static str,
) -> (SocketAddr, mpsc::UnboundedReceiver<Captured>) {
    let (requests, received) = mpsc::unbounded_channel();
    let app = Router::new().fallback(record).with_state(StandIn {
        requests,
        status,
        body,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, received)
}

fn config(address: SocketAddr) -> TwilioConfig {
    TwilioConfig {
        base_url: format!("http://{address}").parse().unwrap(),
        account_sid: ACCOUNT_SID.into(),
        auth_token: AUTH_TOKEN.parse().unwrap(),
        from: Some("+15550001111".into()),
        messaging_service_sid: None,
        status_callback: None,
        request_timeout: relay::sms::twilio::DEFAULT_REQUEST_TIMEOUT,
    }
}

fn sms() -> OutgoingSms {
    OutgoingSms {
        to: PATIENT.into(),
        body: BODY.into(),
        reference: "outbox-1".into(),
    }
}

fn expected_authorization() -> String {
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"));
    format!("Basic {credentials}")
}

fn assert_no_secrets(error: &SmsError) {
    let text = error.to_string();
    for secret in [PATIENT, "5551234567", BODY, "link-token", AUTH_TOKEN] {
        assert!(!text.contains(secret), "{secret:?} in {text:?}");
    }
}

#[tokio::test]
async fn sends_with_a_from_number() {
    let (address, mut requests) = stand_in(
        StatusCode::CREATED,
        r#"{"sid":"SM0123456789abcdef","status":"queued"}"#,
    )
    .await;
    let provider = TwilioProvider::new(config(address)).unwrap();

    let accepted = provider.send(&sms()).await.unwrap();
    assert_eq!(accepted.provider_id, "SM0123456789abcdef");

    let request = requests.recv().await.unwrap();
    assert_eq!(request.method, Method::POST);
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    );
    assert_eq!(request.authorization, Some(expected_authorization()));
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(request.field("To"), Some(PATIENT));
    assert_eq!(request.field("From"), Some("+15550001111"));
    assert_eq!(request.field("Body"), Some(BODY));
    assert_eq!(request.field("MessagingServiceSid"), None);
    assert_eq!(request.field("StatusCallback"), None);
    assert_eq!(request.fields.len(), 3, "{:?}", request.fields);
    assert!(requests.try_recv().is_err(), "exactly one request");
}

#[tokio::test]
async fn sends_with_a_messaging_service_and_status_callback() {
    let (address, mut requests) = stand_in(StatusCode::CREATED, r#"{"sid":"SMfeed"}"#).await;
    let provider = TwilioProvider::new(TwilioConfig {
        from: None,
        messaging_service_sid: Some("MG00000000000000000000000000000002".into()),
        status_callback: Some(
            "https://relay.example/v1/sms/twilio/status?x=1"
                .parse()
                .unwrap(),
        ),
        ..config(address)
    })
    .unwrap();

    let accepted = provider.send(&sms()).await.unwrap();
    assert_eq!(accepted.provider_id, "SMfeed");

    let request = requests.recv().await.unwrap();
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    );
    assert_eq!(request.authorization, Some(expected_authorization()));
    assert_eq!(request.field("To"), Some(PATIENT));
    assert_eq!(
        request.field("MessagingServiceSid"),
        Some("MG00000000000000000000000000000002")
    );
    assert_eq!(request.field("From"), None);
    assert_eq!(request.field("Body"), Some(BODY));
    assert_eq!(
        request.field("StatusCallback"),
        Some("https://relay.example/v1/sms/twilio/status?x=1")
    );
    assert_eq!(request.fields.len(), 4, "{:?}", request.fields);
}

#[tokio::test]
async fn a_base_url_path_prefix_is_kept() {
    let (address, mut requests) = stand_in(StatusCode::CREATED, r#"{"sid":"SM1"}"#).await;
    let provider = TwilioProvider::new(TwilioConfig {
        base_url: format!("http://{address}/twilio/").parse().unwrap(),
        ..config(address)
    })
    .unwrap();
    provider.send(&sms()).await.unwrap();
    let request = requests.recv().await.unwrap();
    assert_eq!(
        request.path,
        format!("/twilio/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    );
}

#[tokio::test]
async fn server_error_is_temporary() {
    let (address, mut requests) = stand_in(
        StatusCode::INTERNAL_SERVER_ERROR,
        r#"{"code":20500,"message":"Internal Server Error","status":500}"#,
    )
    .await;
    let provider = TwilioProvider::new(config(address)).unwrap();
    let error = provider.send(&sms()).await.unwrap_err();
    assert!(matches!(error, SmsError::Temporary(_)), "{error}");
    assert!(error.to_string().contains("500"), "{error}");
    assert_no_secrets(&error);
    assert!(requests.recv().await.is_some());
}

#[tokio::test]
async fn rate_limit_is_temporary() {
    let (address, _requests) = stand_in(
        StatusCode::TOO_MANY_REQUESTS,
        r#"{"code":20429,"message":"Too Many Requests","status":429}"#,
    )
    .await;
    let provider = TwilioProvider::new(config(address)).unwrap();
    let error = provider.send(&sms()).await.unwrap_err();
    assert!(matches!(error, SmsError::Temporary(_)), "{error}");
}

#[tokio::test]
async fn invalid_number_is_permanent_with_twilio_code() {
    let (address, mut requests) = stand_in(
        StatusCode::BAD_REQUEST,
        r#"{"code":21211,"message":"Invalid 'To' Phone Number","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#,
    )
    .await;
    let provider = TwilioProvider::new(config(address)).unwrap();
    let error = provider.send(&sms()).await.unwrap_err();
    let SmsError::Permanent(text) = &error else {
        panic!("expected a permanent failure, got {error}");
    };
    assert!(text.contains("21211"), "{text}");
    assert!(text.contains("Invalid 'To' Phone Number"), "{text}");
    assert_no_secrets(&error);
    assert!(requests.recv().await.is_some());
}

#[tokio::test]
async fn twilio_messages_quoting_the_number_are_scrubbed() {
    let (address, _requests) = stand_in(
        StatusCode::BAD_REQUEST,
        r#"{"code":21211,"message":"The 'To' number +15551234567 is not a valid phone number.","status":400}"#,
    )
    .await;
    let provider = TwilioProvider::new(config(address)).unwrap();
    let error = provider.send(&sms()).await.unwrap_err();
    assert!(matches!(error, SmsError::Permanent(_)), "{error}");
    assert!(error.to_string().contains("21211"), "{error}");
    assert!(
        error.to_string().contains("is not a valid phone number"),
        "{error}"
    );
    assert_no_secrets(&error);
}

#[tokio::test]
async fn authentication_failure_is_permanent() {
    let (address, _requests) = stand_in(
        StatusCode::UNAUTHORIZED,
        r#"{"code":20003,"message":"Authenticate","status":401}"#,
    )
    .await;
    let provider = TwilioProvider::new(config(address)).unwrap();
    let error = provider.send(&sms()).await.unwrap_err();
    assert!(matches!(error, SmsError::Permanent(_)), "{error}");
    assert!(error.to_string().contains("20003"), "{error}");
}

#[tokio::test]
async fn success_without_a_sid_is_not_retried() {
    let (address, _requests) = stand_in(StatusCode::CREATED, r#"{"status":"queued"}"#).await;
    let provider = TwilioProvider::new(config(address)).unwrap();
    let error = provider.send(&sms()).await.unwrap_err();
    assert!(matches!(error, SmsError::Permanent(_)), "{error}");
}

#[tokio::test]
async fn connection_refused_is_temporary() {
    // Take a free port and close it again: nothing listens there.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);

    let provider = TwilioProvider::new(config(address)).unwrap();
    let error = provider.send(&sms()).await.unwrap_err();
    assert!(matches!(error, SmsError::Temporary(_)), "{error}");
    assert_no_secrets(&error);
    assert!(!error.to_string().contains(ACCOUNT_SID), "{error}");
}

/// Issue 13: a Twilio that accepts the connection and reads the request but never answers. The
/// provider gives up at its configured request timeout with a temporary error (the outbox
/// retries it), well before the outbox's claim lease ends.
#[tokio::test]
async fn no_answer_is_a_temporary_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (accepted, mut connections) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            // Keep the connection open, unanswered.
            open.push(socket);
            accepted.send(()).unwrap();
        }
    });
    let timeout = std::time::Duration::from_millis(500);
    let provider = TwilioProvider::new(TwilioConfig {
        request_timeout: timeout,
        ..config(address)
    })
    .unwrap();
    let started = std::time::Instant::now();
    let error = tokio::time::timeout(std::time::Duration::from_secs(10), provider.send(&sms()))
        .await
        .expect("the provider gives up by itself")
        .unwrap_err();
    let took = started.elapsed();
    assert!(connections.try_recv().is_ok(), "the stand-in was reached");
    assert!(matches!(error, SmsError::Temporary(_)), "{error}");
    assert!(error.to_string().contains("timed out"), "{error}");
    assert!(
        took >= timeout,
        "gave up after {took:?}, before the timeout"
    );
    assert_no_secrets(&error);
    println!("no answer: temporary failure after {took:?} (timeout {timeout:?})");
}
