//! The Twilio provider: sends links through Twilio's Messages API and checks its callbacks.
//!
//! # Sending
//! One `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, with HTTP
//! basic authentication (account SID, auth token). Twilio answers `201` with the message
//! resource, whose `sid` (`SM…`) becomes [`Accepted::provider_id`] so delivery status callbacks
//! can be matched to the outbox row. Failures are sorted for the outbox:
//! network errors, timeouts, `408`, `429` and `5xx` are [`SmsError::Temporary`]; any other
//! `4xx` (invalid number, unverified sender, rejected content…) is [`SmsError::Permanent`],
//! because the same request would be refused again. Twilio's error messages can quote the
//! destination number, so error texts carry Twilio's numeric `code` and a message with every
//! digit run that could be a phone number replaced by `[redacted]`.
//!
//! A `2xx` answer without a message sid is reported as permanent: Twilio has most likely queued
//! the SMS, and retrying would text the patient twice.
//!
//! # Status callbacks
//! Twilio signs each webhook request with `X-Twilio-Signature`: base64 (standard alphabet,
//! padded) of HMAC-SHA1, keyed with the auth token, over the full URL Twilio requested
//! (scheme, host, path and query string, exactly as configured) followed by every POST
//! parameter, sorted by name, written as name then value with no separator. [`sign`] computes
//! it and [`verify_signature`] checks it in constant time. Identical name/value pairs count
//! once, as in Twilio's own validators. The relay must verify against its public URL (what
//! Twilio called), not the address a proxy forwarded to. [`parse_status`] then reads
//! the callback's `MessageSid` and `MessageStatus`.

use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac as _};
use reqwest::StatusCode;
use serde::Deserialize;
use sha1::Sha1;
use subtle::ConstantTimeEq as _;

use super::{Accepted, OutgoingSms, SendFuture, SmsError, SmsProvider};
use crate::config::Secret;

/// Whole-request timeout for a call to Twilio, unless [`TwilioConfig::request_timeout`] is
/// shorter. (The outbox bounds every provider call as well; this one reports a Twilio timeout as
/// such.)
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// SMS sent to Twilio at once by default: enough to hide the API's round trip (a few hundred
/// milliseconds from most places), well inside the concurrent requests Twilio accepts per
/// account; a `429` beyond them is a temporary failure, retried.
const CONCURRENCY: usize = 32;
/// Connection set-up timeout (part of the request timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest provider message kept in an error text.
const MAX_MESSAGE_CHARS: usize = 200;

/// Twilio account and sender settings.
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// API base URL: `https://api.twilio.com`, or a stand-in for tests.
    pub base_url: url::Url,
    /// Account SID (`AC…`), the basic-auth user name.
    pub account_sid: String,
    /// Auth token, the basic-auth password. (Webhook signatures are keyed with the same token;
    /// the callback handler checks them with its copy in
    /// [`Settings::twilio_auth_token`](crate::state::Settings::twilio_auth_token).)
    pub auth_token: Secret,
    /// Sending number in E.164 form. Exactly one of this and `messaging_service_sid`.
    pub from: Option<String>,
    /// Messaging service SID (`MG…`). Exactly one of this and `from`.
    pub messaging_service_sid: Option<String>,
    /// Where Twilio posts delivery status updates, if anywhere.
    pub status_callback: Option<url::Url>,
    /// Whole-request timeout, connection set-up included: [`DEFAULT_REQUEST_TIMEOUT`] or less.
    /// A request without an answer by then is a temporary failure.
    pub request_timeout: Duration,
}

/// Why a [`TwilioConfig`] cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TwilioConfigError {
    /// The account SID is empty.
    #[error("Twilio account SID is not set")]
    MissingAccountSid,
    /// The auth token is empty.
    #[error("Twilio auth token is not set")]
    MissingAuthToken,
    /// Neither a sending number nor a messaging service SID is set.
    #[error("set a Twilio sending number or a messaging service SID")]
    MissingSender,
    /// Both a sending number and a messaging service SID are set.
    #[error("set either a Twilio sending number or a messaging service SID, not both")]
    ConflictingSenders,
    /// The base URL cannot have a path (e.g. `mailto:`) or is not HTTP(S).
    #[error("Twilio base URL must be an http:// or https:// URL")]
    InvalidBaseUrl,
    /// The HTTP client could not be built (TLS initialisation).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// How the SMS names its sender.
#[derive(Debug, Clone)]
enum Sender {
    From(String),
    MessagingService(String),
}

/// Sends SMS through Twilio's Messages API.
#[derive(Debug)]
pub struct TwilioProvider {
    client: reqwest::Client,
    messages_url: url::Url,
    account_sid: String,
    auth_token: Secret,
    sender: Sender,
    status_callback: Option<url::Url>,
}

impl TwilioProvider {
    /// Validates the configuration and builds the HTTP client.
    ///
    /// Empty (or blank) `from` / `messaging_service_sid` values count as unset, so an empty
    /// environment variable does not select a sender.
    ///
    /// # Errors
    /// [`TwilioConfigError`] names the setting that is missing or contradictory.
    pub fn new(config: TwilioConfig) -> Result<Self, TwilioConfigError> {
        let account_sid = config.account_sid.trim().to_owned();
        if account_sid.is_empty() {
            return Err(TwilioConfigError::MissingAccountSid);
        }
        if config.auth_token.expose().is_empty() {
            return Err(TwilioConfigError::MissingAuthToken);
        }
        let non_blank =
            |value: Option<String>| value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let sender = match (
            non_blank(config.from),
            non_blank(config.messaging_service_sid),
        ) {
            (Some(from), None) => Sender::From(from),
            (None, Some(service)) => Sender::MessagingService(service),
            (None, None) => return Err(TwilioConfigError::MissingSender),
            (Some(_), Some(_)) => return Err(TwilioConfigError::ConflictingSenders),
        };
        let messages_url = messages_url(&config.base_url, &account_sid)?;
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(config.request_timeout))
            // Twilio does not redirect; never replay credentials to another address.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("securetext-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(TwilioConfigError::Client)?;
        Ok(Self {
            client,
            messages_url,
            account_sid,
            auth_token: config.auth_token,
            sender,
            status_callback: config.status_callback,
        })
    }

    /// The Messages endpoint this provider posts to.
    pub fn messages_url(&self) -> &url::Url {
        &self.messages_url
    }

    async fn deliver(&self, sms: &OutgoingSms) -> Result<Accepted, SmsError> {
        let mut form: Vec<(&str, &str)> = Vec::with_capacity(4);
        form.push(("To", &sms.to));
        match &self.sender {
            Sender::From(from) => form.push(("From", from)),
            Sender::MessagingService(sid) => form.push(("MessagingServiceSid", sid)),
        }
        form.push(("Body", &sms.body));
        if let Some(callback) = &self.status_callback {
            form.push(("StatusCallback", callback.as_str()));
        }

        let response = self
            .client
            .post(self.messages_url.clone())
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(transport_error)?;

        let status = response.status();
        // A body that cannot be read is treated as empty: the status decides.
        let body = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            let sid = serde_json::from_slice::<MessageResource>(&body)
                .ok()
                .and_then(|m| m.sid)
                .map(|sid| sid.trim().to_owned())
                .filter(|sid| !sid.is_empty());
            return match sid {
                Some(provider_id) => Ok(Accepted { provider_id }),
                None => Err(SmsError::Permanent(format!(
                    "Twilio answered {} without a message sid; not retrying, to avoid a \
                     duplicate SMS",
                    status.as_u16()
                ))),
            };
        }
        Err(status_error(status, &body))
    }
}

impl SmsProvider for TwilioProvider {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn concurrency(&self) -> usize {
        CONCURRENCY
    }

    fn send<'a>(&'a self, sms: &'a OutgoingSms) -> SendFuture<'a> {
        Box::pin(async move {
            let result = self.deliver(sms).await;
            match &result {
                Ok(accepted) => tracing::info!(
                    reference = %sms.reference,
                    provider_id = %accepted.provider_id,
                    "SMS accepted by Twilio"
                ),
                Err(error) => tracing::warn!(
                    reference = %sms.reference,
                    temporary = error.is_temporary(),
                    %error,
                    "Twilio SMS failed"
                ),
            }
            result
        })
    }
}

/// `{base}/2010-04-01/Accounts/{sid}/Messages.json`, keeping any path prefix of `base` and
/// percent-encoding the SID as one path segment.
fn messages_url(base: &url::Url, account_sid: &str) -> Result<url::Url, TwilioConfigError> {
    if !matches!(base.scheme(), "http" | "https") {
        return Err(TwilioConfigError::InvalidBaseUrl);
    }
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| TwilioConfigError::InvalidBaseUrl)?
        .pop_if_empty()
        .extend(["2010-04-01", "Accounts", account_sid, "Messages.json"]);
    Ok(url)
}

/// The part of Twilio's message resource we read.
#[derive(Deserialize)]
struct MessageResource {
    sid: Option<String>,
}

/// Twilio's error body: `{"code": 21211, "message": "...", "more_info": "...", "status": 400}`.
#[derive(Deserialize)]
struct ErrorBody {
    code: Option<serde_json::Value>,
    message: Option<String>,
}

/// A failure before any HTTP status arrived: always worth retrying.
fn transport_error(error: reqwest::Error) -> SmsError {
    if error.is_timeout() {
        return SmsError::Temporary("Twilio request timed out".to_owned());
    }
    // The URL holds the account SID; leave it out. The source chain says what went wrong.
    let error = error.without_url();
    let mut text = format!("Twilio request failed: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    SmsError::Temporary(scrub_numbers(&text))
}

/// Sorts a non-success status into temporary or permanent, quoting Twilio's error code and
/// (scrubbed) message when the body has them.
fn status_error(status: StatusCode, body: &[u8]) -> SmsError {
    let mut text = format!("Twilio answered {}", status.as_u16());
    if let Ok(error) = serde_json::from_slice::<ErrorBody>(body) {
        match error.code {
            Some(serde_json::Value::Number(code)) => {
                let _ = write!(text, ", code {code}");
            }
            Some(serde_json::Value::String(code)) if !code.is_empty() => {
                let _ = write!(text, ", code {}", scrub_numbers(&truncate(&code, 16)));
            }
            _ => {}
        }
        if let Some(message) = error.message.filter(|m| !m.trim().is_empty()) {
            let _ = write!(
                text,
                ": {}",
                scrub_numbers(&truncate(message.trim(), MAX_MESSAGE_CHARS))
            );
        }
    }
    let temporary = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        // 1xx/3xx are not something Twilio sends: a stand-in or proxy is misconfigured, which
        // an operator can fix, so keep the SMS queued.
        || !status.is_client_error();
    if temporary {
        SmsError::Temporary(text)
    } else {
        SmsError::Permanent(text)
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Replaces every run of digits (with the `+ - . ( )` and spaces phone numbers are written
/// with) that holds 5 or more digits by `[redacted]`, so no phone number survives. Error codes
/// are quoted separately, so losing a long number in prose costs nothing.
fn scrub_numbers(text: &str) -> String {
    fn flush(out: &mut String, run: &str) {
        let digits = run.chars().filter(char::is_ascii_digit).count();
        if digits >= 5 {
            let start = run.len() - run.trim_start().len();
            let end = run.trim_end().len();
            out.push_str(&run[..start]);
            out.push_str("[redacted]");
            out.push_str(&run[end..]);
        } else {
            out.push_str(run);
        }
    }
    let is_number_char =
        |c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | '(' | ')' | ' ');
    let mut out = String::with_capacity(text.len());
    let mut run_start = None;
    for (i, c) in text.char_indices() {
        match (is_number_char(c), run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(start)) => {
                flush(&mut out, &text[start..i]);
                run_start = None;
                out.push(c);
            }
            (false, None) => out.push(c),
            (true, Some(_)) => {}
        }
    }
    if let Some(start) = run_start {
        flush(&mut out, &text[start..]);
    }
    out
}

/// Computes Twilio's `X-Twilio-Signature` for a request to `url` with form `params`.
///
/// The signed string is `url` followed by each parameter as name then value, sorted by name
/// (then value, for repeated names), identical pairs once. `url` must be exactly what Twilio
/// requested, query string included.
#[must_use]
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    BASE64.encode(mac(auth_token, url, params))
}

/// Checks an `X-Twilio-Signature` header in constant time; see [`sign`].
///
/// Refuses everything when `auth_token` is empty (anyone could sign with an empty key) and any
/// header that is not canonical padded base64 of a 20-byte HMAC-SHA1.
#[must_use]
pub fn verify_signature(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature_header: &str,
) -> bool {
    if auth_token.is_empty() {
        return false;
    }
    let Ok(claimed) = BASE64.decode(signature_header.trim()) else {
        return false;
    };
    let expected = mac(auth_token, url, params);
    // Lengths are public (20 bytes); `ct_eq` on unequal lengths is false.
    bool::from(expected.as_slice().ct_eq(claimed.as_slice()))
}

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac.finalize().into_bytes().to_vec()
}

/// A delivery status update from a Twilio status callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    /// The message's `MessageSid`, as returned in [`Accepted::provider_id`].
    pub provider_id: String,
    /// What happened.
    pub status: DeliveryStatus,
}

/// Where an SMS stands, reduced to what the relay acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Handed to the carrier (`sent`).
    Sent,
    /// The handset received it (`delivered`, or `read` on channels that report reads).
    Delivered,
    /// It will not arrive (`undelivered`, `failed`, `canceled`), with Twilio's `ErrorCode`.
    Failed {
        /// Twilio's error code (e.g. `30003` unreachable handset), if given.
        error_code: Option<String>,
    },
    /// Any other status, lower-cased (`queued`, `accepted`, `scheduled`, `sending`, …): still
    /// in flight inside Twilio, nothing to record.
    Other(String),
}

/// Reads a status callback's form parameters (after [`verify_signature`] accepted them).
///
/// Uses `MessageSid` and `MessageStatus`, falling back to the legacy `SmsSid` / `SmsStatus`;
/// `None` when either is missing or empty.
#[must_use]
pub fn parse_status(params: &[(String, String)]) -> Option<StatusUpdate> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, v)| n == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
    };
    let provider_id = get("MessageSid").or_else(|| get("SmsSid"))?.to_owned();
    let raw = get("MessageStatus").or_else(|| get("SmsStatus"))?;
    let status = match raw.to_ascii_lowercase().as_str() {
        "sent" => DeliveryStatus::Sent,
        "delivered" | "read" => DeliveryStatus::Delivered,
        "undelivered" | "failed" | "canceled" => DeliveryStatus::Failed {
            error_code: get("ErrorCode").map(str::to_owned),
        },
        other => DeliveryStatus::Other(other.to_owned()),
    };
    Some(StatusUpdate {
        provider_id,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The parameters of Twilio's validation example, in the order of the helper libraries'
    /// tests (`twilio-php` `RequestValidatorTest`, `twilio-csharp`), deliberately unsorted.
    fn doc_params(caller: &str) -> Vec<(String, String)> {
        pairs(&[
            ("To", "+18005551212"),
            ("Digits", "1234"),
            ("From", caller),
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", caller),
        ])
    }

    /// Known answers published by Twilio: its helper libraries' request-validator tests use the
    /// caller +14158675309 and expect `RSOYDt4T1cUTdK1PDd93/VVr8B8=`; the security docs'
    /// worked example uses +14158675310 and prints `GvWf1cFY/Q7PnoempGyD5oXAezc=`.
    #[test]
    fn twilio_published_known_answers() {
        assert_eq!(
            sign("12345", DOC_URL, &doc_params("+14158675309")),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert_eq!(
            sign("12345", DOC_URL, &doc_params("+14158675310")),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        );
        assert!(verify_signature(
            "12345",
            DOC_URL,
            &doc_params("+14158675309"),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    /// `twilio-php`'s `testValidateWithArrayAndDuplicates`: `Digits` sent three times, two of
    /// them identical; identical pairs count once.
    #[test]
    fn repeated_parameters_known_answer() {
        let params = pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            sign("12345", DOC_URL, &params),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
    }

    /// The same answer computed directly from the documented steps with `hmac` + `sha1`.
    #[test]
    fn matches_an_independent_computation() {
        let data = format!(
            "{DOC_URL}CallSidCA1234567890ABCDECaller+14158675309Digits1234\
             From+14158675309To+18005551212"
        );
        let mut mac = Hmac::<Sha1>::new_from_slice(b"12345").unwrap();
        mac.update(data.as_bytes());
        let expected = BASE64.encode(mac.finalize().into_bytes());
        assert_eq!(
            sign("12345", DOC_URL, &doc_params("+14158675309")),
            expected
        );
    }

    #[test]
    fn tampering_is_refused() {
        let params = doc_params("+14158675309");
        let good = sign("12345", DOC_URL, &params);
        assert!(verify_signature("12345", DOC_URL, &params, &good));
        assert!(verify_signature(
            "12345",
            DOC_URL,
            &params,
            &format!(" {good} ")
        ));

        // Another token.
        assert!(!verify_signature("54321", DOC_URL, &params, &good));
        // Another URL: scheme, query, path.
        assert!(!verify_signature(
            "12345",
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            &params,
            &good
        ));
        assert!(!verify_signature(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &params,
            &good
        ));
        assert!(!verify_signature(
            "12345",
            "https://mycompany.com/myapp.php",
            &params,
            &good
        ));
        // A changed, added or removed parameter.
        let mut changed = params.clone();
        changed[1].1 = "9999".into();
        assert!(!verify_signature("12345", DOC_URL, &changed, &good));
        let mut added = params.clone();
        added.push(("Extra".into(), "1".into()));
        assert!(!verify_signature("12345", DOC_URL, &added, &good));
        assert!(!verify_signature("12345", DOC_URL, &params[1..], &good));

        // Altered, truncated, unpadded, empty or garbage signatures.
        let mut altered = good.clone().into_bytes();
        altered[0] = if altered[0] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(!verify_signature("12345", DOC_URL, &params, &altered));
        assert!(!verify_signature(
            "12345",
            DOC_URL,
            &params,
            good.trim_end_matches('=')
        ));
        assert!(!verify_signature("12345", DOC_URL, &params, &good[..20]));
        assert!(!verify_signature("12345", DOC_URL, &params, ""));
        assert!(!verify_signature("12345", DOC_URL, &params, "not base64!"));
        assert!(!verify_signature(
            "12345",
            DOC_URL,
            &params,
            &BASE64.encode([0u8; 32])
        ));
    }

    #[test]
    fn parameter_order_does_not_matter() {
        let mut params = doc_params("+14158675309");
        let forward = sign("12345", DOC_URL, &params);
        params.reverse();
        assert_eq!(sign("12345", DOC_URL, &params), forward);
    }

    #[test]
    fn empty_token_refuses_everything() {
        let params = doc_params("+14158675309");
        let signature = sign("", DOC_URL, &params);
        assert!(!verify_signature("", DOC_URL, &params, &signature));
    }

    fn config() -> TwilioConfig {
        TwilioConfig {
            base_url: "https://api.twilio.com".parse().unwrap(),
            account_sid: "AC0123".into(),
            auth_token: "token".parse().unwrap(),
            from: Some("+15550001111".into()),
            messaging_service_sid: None,
            status_callback: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    #[test]
    fn config_validation() {
        let provider = TwilioProvider::new(config()).unwrap();
        assert_eq!(provider.name(), "twilio");
        assert_eq!(
            provider.messages_url().as_str(),
            "https://api.twilio.com/2010-04-01/Accounts/AC0123/Messages.json"
        );
        assert!(!format!("{provider:?}").contains("token\""));

        let err = |c: TwilioConfig| TwilioProvider::new(c).unwrap_err();
        assert!(matches!(
            err(TwilioConfig {
                account_sid: " ".into(),
                ..config()
            }),
            TwilioConfigError::MissingAccountSid
        ));
        assert!(matches!(
            err(TwilioConfig {
                auth_token: Secret::default(),
                ..config()
            }),
            TwilioConfigError::MissingAuthToken
        ));
        assert!(matches!(
            err(TwilioConfig {
                from: None,
                ..config()
            }),
            TwilioConfigError::MissingSender
        ));
        assert!(matches!(
            err(TwilioConfig {
                from: Some(String::new()),
                messaging_service_sid: Some("  ".into()),
                ..config()
            }),
            TwilioConfigError::MissingSender
        ));
        assert!(matches!(
            err(TwilioConfig {
                messaging_service_sid: Some("MG1".into()),
                ..config()
            }),
            TwilioConfigError::ConflictingSenders
        ));
        assert!(matches!(
            err(TwilioConfig {
                base_url: "mailto:ops@example.com".parse().unwrap(),
                ..config()
            }),
            TwilioConfigError::InvalidBaseUrl
        ));
        assert!(
            TwilioProvider::new(TwilioConfig {
                from: None,
                messaging_service_sid: Some("MG1".into()),
                ..config()
            })
            .is_ok()
        );
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let provider = TwilioProvider::new(TwilioConfig {
            auth_token: "sup3r-s3cret-t0ken".parse().unwrap(),
            ..config()
        })
        .unwrap();
        let debug = format!("{provider:?} {:?}", config());
        assert!(!debug.contains("sup3r-s3cret-t0ken"), "{debug}");
    }

    #[test]
    fn messages_url_keeps_a_path_prefix_and_encodes_the_sid() {
        let base: url::Url = "http://127.0.0.1:9/stand-in/?x=1".parse().unwrap();
        assert_eq!(
            messages_url(&base, "AC/1").unwrap().as_str(),
            "http://127.0.0.1:9/stand-in/2010-04-01/Accounts/AC%2F1/Messages.json"
        );
        let base: url::Url = "http://127.0.0.1:9".parse().unwrap();
        assert_eq!(
            messages_url(&base, "AC1").unwrap().as_str(),
            "http://127.0.0.1:9/2010-04-01/Accounts/AC1/Messages.json"
        );
    }

    #[test]
    fn status_errors_are_classified() {
        let body = br#"{"code":21211,"message":"The 'To' number +15551234567 is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#;
        let error = status_error(StatusCode::BAD_REQUEST, body);
        assert!(!error.is_temporary());
        let text = error.to_string();
        assert!(text.contains("code 21211"), "{text}");
        assert!(text.contains("is not a valid phone number"), "{text}");
        assert!(!text.contains("5551234567"), "{text}");
        assert!(!text.contains("1234567"), "{text}");

        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::MOVED_PERMANENTLY,
        ] {
            assert!(status_error(status, b"").is_temporary(), "{status}");
        }
        for status in [
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
        ] {
            assert!(
                !status_error(status, b"not json").is_temporary(),
                "{status}"
            );
        }
        assert_eq!(
            status_error(StatusCode::NOT_FOUND, b"<html>").to_string(),
            "permanent SMS failure: Twilio answered 404"
        );
    }

    #[test]
    fn scrub_numbers_hides_phone_numbers_only() {
        assert_eq!(
            scrub_numbers("The 'To' number +15551234567 is not valid."),
            "The 'To' number [redacted] is not valid."
        );
        assert_eq!(
            scrub_numbers("call +1 (555) 123-4567 now"),
            "call [redacted] now"
        );
        assert_eq!(scrub_numbers("+447700900123"), "[redacted]");
        assert_eq!(
            scrub_numbers("HTTP 400 on 2 of 3 tries"),
            "HTTP 400 on 2 of 3 tries"
        );
    }

    #[test]
    fn truncate_is_char_safe() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 2), "hi");
    }

    #[test]
    fn parse_status_maps_twilio_statuses() {
        let callback = |status: &str, code: Option<&str>| {
            let mut params = pairs(&[
                ("AccountSid", "AC1"),
                ("MessageSid", "SM123"),
                ("MessageStatus", status),
                ("To", "+15551234567"),
            ]);
            if let Some(code) = code {
                params.push(("ErrorCode".into(), code.into()));
            }
            parse_status(&params).unwrap()
        };
        assert_eq!(
            callback("delivered", None),
            StatusUpdate {
                provider_id: "SM123".into(),
                status: DeliveryStatus::Delivered
            }
        );
        assert_eq!(callback("read", None).status, DeliveryStatus::Delivered);
        assert_eq!(callback("sent", None).status, DeliveryStatus::Sent);
        assert_eq!(callback("Sent", None).status, DeliveryStatus::Sent);
        assert_eq!(
            callback("undelivered", Some("30003")).status,
            DeliveryStatus::Failed {
                error_code: Some("30003".into())
            }
        );
        assert_eq!(
            callback("failed", Some("30007")).status,
            DeliveryStatus::Failed {
                error_code: Some("30007".into())
            }
        );
        assert_eq!(
            callback("failed", Some("")).status,
            DeliveryStatus::Failed { error_code: None }
        );
        assert_eq!(
            callback("canceled", None).status,
            DeliveryStatus::Failed { error_code: None }
        );
        for status in ["queued", "accepted", "scheduled", "sending"] {
            assert_eq!(
                callback(status, None).status,
                DeliveryStatus::Other(status.into())
            );
        }
    }

    #[test]
    fn parse_status_legacy_names_and_missing_fields() {
        let legacy = pairs(&[("SmsSid", "SM9"), ("SmsStatus", "delivered")]);
        assert_eq!(
            parse_status(&legacy),
            Some(StatusUpdate {
                provider_id: "SM9".into(),
                status: DeliveryStatus::Delivered
            })
        );
        assert_eq!(parse_status(&pairs(&[("MessageSid", "SM1")])), None);
        assert_eq!(parse_status(&pairs(&[("MessageStatus", "sent")])), None);
        assert_eq!(
            parse_status(&pairs(&[("MessageSid", ""), ("MessageStatus", "sent")])),
            None
        );
        assert_eq!(parse_status(&[]), None);
    }
}
