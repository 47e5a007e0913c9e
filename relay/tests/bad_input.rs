//! Bad input, table-driven, over every endpoint that takes input (issue 13): malformed JSON,
//! invalid UTF-8, wrong content types, wrong types, unknown fields, bodies over the limit, huge
//! headers, bad base64, truncated, oversized and future-version envelopes, another
//! organisation's envelope, bad phone numbers, bad path and query parameters, replayed
//! idempotency keys, missing credentials. Each case must get exactly the 4xx and error code the
//! table says, which its OpenAPI description must list (the test kit's contract check), and
//! must leave every table of the database exactly as it was. Run on SQLite and PostgreSQL.

use relay::store::{Backend, Store};
use relay::testkit::{Patient, Sender, TestRelay, header, keys, seal};
use reqwest::Method;
use serde_json::{Value, json};
use shared::api::VIEWER_REQUEST_HEADER;
use shared::ids::MessageId;
use sqlx::{Column, Row};

const PHONE: &str = "+15557770100";
const PASSWORD: &str = "correct horse battery staple";

/// Who a request authenticates as.
#[derive(Clone, Copy)]
enum Auth {
    None,
    Sender,
    OtherSender,
    Viewer,
}

/// What a request carries.
enum Body {
    None,
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    auth: Auth,
    body: Body,
    extra_header: Option<(&'static str, String)>,
    status: u16,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: impl Into<String>,
    auth: Auth,
    body: Body,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        auth,
        body,
        extra_header: None,
        status,
        code,
    }
}

/// Every row of every table, rendered: two equal snapshots mean nothing was written.
async fn snapshot(store: &Store) -> String {
    let mut conn = store.conn().await.unwrap();
    let tables_query = match store.backend() {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%' ORDER BY name"
        }
        Backend::Postgres => {
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name NOT LIKE '_sqlx%' ORDER BY table_name"
        }
    };
    let tables: Vec<String> = sqlx::query(tables_query)
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get("name").unwrap())
        .collect();
    assert!(tables.len() >= 9, "{tables:?}");
    let mut out = String::new();
    for table in tables {
        let mut rows: Vec<String> = Vec::new();
        for row in sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(&mut *conn)
            .await
            .unwrap()
        {
            let cells: Vec<String> = (0..row.columns().len())
                .map(|i| {
                    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                        format!("{v:?}")
                    } else if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                        format!("{v:?}")
                    } else if let Ok(v) = row.try_get::<Option<Vec<u8>>, _>(i) {
                        format!("{:?}", v.map(hex::encode))
                    } else {
                        format!("<{}>", row.column(i).name())
                    }
                })
                .collect();
            rows.push(cells.join("|"));
        }
        rows.sort();
        out.push_str(&format!("{table}: {}\n", rows.join("\n  ")));
    }
    out
}

/// A relay with two organisations, a first-contact message and its enrolled patient in a live
/// viewer session.
struct World {
    relay: TestRelay,
    clinic: Sender,
    other: Sender,
    message: MessageId,
    link: String,
    cookie: String,
}

async fn world(backend: Backend) -> World {
    let relay = TestRelay::start(backend).await;
    let clinic = relay.registered_organisation("Matrix Clinic").await;
    let other = relay.registered_organisation("Other Pharmacy").await;
    let message = relay.submit_first_contact(&clinic, PHONE, "hi").await;
    let link = relay.deliver_link_for(PHONE).await;
    let patient = Patient {
        key: keys().patient,
        password: PASSWORD,
    };
    patient.enroll(&relay, &link).await;
    let cookie = patient.unlock(&relay, &link).await.cookie;
    World {
        relay,
        clinic,
        other,
        message,
        link,
        cookie,
    }
}

fn envelope_json(world: &World) -> Value {
    let envelope = seal(
        header(world.clinic.id, None, world.relay.now(), 3600),
        "matrix",
        &keys(),
        None,
    );
    serde_json::to_value(envelope).unwrap()
}

fn cases(world: &World) -> Vec<Case> {
    use Auth::*;
    let json_endpoints: [(&str, Method, String, Auth); 8] = [
        (
            "register key",
            Method::PUT,
            "/v1/organisation/key".into(),
            Sender,
        ),
        (
            "lookup",
            Method::POST,
            "/v1/recipients/lookup".into(),
            Sender,
        ),
        ("submit", Method::POST, "/v1/messages".into(), Sender),
        (
            "recipient wrap",
            Method::PUT,
            format!("/v1/messages/{}/recipient-wrap", world.message),
            Sender,
        ),
        ("open", Method::POST, "/v1/viewer/open".into(), None),
        ("enroll", Method::POST, "/v1/viewer/enroll".into(), None),
        ("unlock", Method::POST, "/v1/viewer/unlock".into(), None),
        (
            "unreadable",
            Method::POST,
            format!("/v1/viewer/messages/{}/unreadable", world.message),
            Viewer,
        ),
    ];
    let mut cases = Vec::new();
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(300 * 1024));
    let json = |bytes: &[u8]| Body::Raw("application/json", bytes.to_vec());
    for (name, method, path, auth) in json_endpoints {
        let bodies = [
            (json(b"{,}"), 400, "bad_request"),
            (json(b"\xff\xfe{}"), 400, "bad_request"),
            (Body::Raw("text/plain", b"{}".to_vec()), 400, "bad_request"),
            (json(b"[1, 2]"), 422, "invalid"),
            (Body::Json(json!({ "unexpected": true })), 422, "invalid"),
            (json(huge.as_bytes()), 413, "body_too_large"),
        ];
        for (body, status, code) in bodies {
            cases.push(case(name, method.clone(), &path, auth, body, status, code));
        }
    }

    let envelope = envelope_json(world);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut e = envelope.clone();
        change(&mut e);
        Body::Json(json!({ "to": PHONE, "envelope": e }))
    };
    let submit = |name, body, status, code| {
        case(
            name,
            Method::POST,
            "/v1/messages",
            Sender,
            body,
            status,
            code,
        )
    };
    cases.extend([
        submit(
            "submit: phone number without +",
            Body::Json(json!({ "to": "15557770100", "envelope": envelope })),
            422,
            "invalid",
        ),
        submit(
            "submit: phone number too short",
            Body::Json(json!({ "to": "+1555", "envelope": envelope })),
            422,
            "invalid",
        ),
        submit(
            "submit: phone number as a number",
            Body::Json(json!({ "to": 15557770100u64, "envelope": envelope })),
            422,
            "invalid",
        ),
        submit(
            "submit: bad base64 in the ciphertext",
            with(&|e| e["ciphertext"] = json!("***not base64***")),
            422,
            "invalid",
        ),
        submit(
            "submit: truncated ciphertext",
            with(&|e| {
                let text = e["ciphertext"].as_str().unwrap().to_owned();
                e["ciphertext"] = json!(text[..text.len() / 2]);
            }),
            422,
            "invalid",
        ),
        submit(
            "submit: oversized ciphertext",
            with(&|e| {
                let text = e["ciphertext"].as_str().unwrap().to_owned();
                e["ciphertext"] = json!(text.repeat(40));
            }),
            422,
            "invalid",
        ),
        submit(
            "submit: unknown format version",
            with(&|e| e["header"]["version"] = json!(2)),
            422,
            "invalid",
        ),
        submit(
            "submit: unknown envelope field",
            with(&|e| e["extra"] = json!(1)),
            422,
            "invalid",
        ),
        submit(
            "submit: no wraps",
            with(&|e| e["wraps"] = json!([])),
            422,
            "invalid",
        ),
        Case {
            auth: OtherSender,
            ..submit(
                "submit: another organisation's envelope",
                Body::Json(json!({ "to": PHONE, "envelope": envelope })),
                403,
                "forbidden",
            )
        },
        submit(
            "submit: an idempotency key already used for another message",
            Body::Json(json!({ "to": PHONE, "envelope": envelope, "idempotency_key": "first" })),
            409,
            "idempotency_key_reused",
        ),
        submit(
            "submit: an idempotency key of 300 characters",
            Body::Json(json!({ "to": PHONE, "envelope": envelope, "idempotency_key": "k".repeat(300) })),
            422,
            "invalid",
        ),
        case(
            "submit: no credentials",
            Method::POST,
            "/v1/messages",
            None,
            Body::Json(json!({ "to": PHONE, "envelope": envelope })),
            401,
            "unauthorized",
        ),
        case(
            "lookup: bad phone number",
            Method::POST,
            "/v1/recipients/lookup",
            Sender,
            Body::Json(json!({ "phone": "+1 (555) abc" })),
            422,
            "invalid",
        ),
        case(
            "register key: not a public key",
            Method::PUT,
            "/v1/organisation/key",
            Sender,
            Body::Json(json!({ "public_key": "AAAA" })),
            422,
            "invalid",
        ),
        case(
            "status: id not a UUID",
            Method::GET,
            "/v1/messages/not-a-uuid",
            Sender,
            Body::None,
            422,
            "invalid",
        ),
        case(
            "status: id in upper case",
            Method::GET,
            format!("/v1/messages/{}", world.message.to_string().to_uppercase()),
            Sender,
            Body::None,
            422,
            "invalid",
        ),
        case(
            "revoke: another organisation's message",
            Method::POST,
            format!("/v1/messages/{}/revoke", world.message),
            OtherSender,
            Body::None,
            404,
            "not_found",
        ),
        case(
            "audit: negative cursor",
            Method::GET,
            "/v1/audit?after=-1",
            Sender,
            Body::None,
            422,
            "invalid",
        ),
        case(
            "audit: cursor not a number",
            Method::GET,
            "/v1/audit?after=abc",
            Sender,
            Body::None,
            422,
            "invalid",
        ),
        case(
            "open: unknown link",
            Method::POST,
            "/v1/viewer/open",
            None,
            Body::Json(json!({ "link": "A".repeat(43) })),
            404,
            "not_found",
        ),
        case(
            "open: link of the wrong length",
            Method::POST,
            "/v1/viewer/open",
            None,
            Body::Json(json!({ "link": "abc" })),
            404,
            "not_found",
        ),
        case(
            "unlock: proof not 32 bytes",
            Method::POST,
            "/v1/viewer/unlock",
            None,
            Body::Json(json!({ "link": world.link, "proof": "c2hvcnQ" })),
            422,
            "invalid",
        ),
        case(
            "enroll: parameters below the format's minimum",
            Method::POST,
            "/v1/viewer/enroll",
            None,
            Body::Json(json!({
                "link": world.link,
                "bundle": { "public_key": keys().patient.public_key(), "sealed_private_key": "AAAA" },
                "salt": "AAAAAAAAAAAAAAAAAAAAAA",
                "kdf_params": { "algorithm": "argon2id-v19", "memory_kib": 1024, "iterations": 1, "parallelism": 1 },
                "verifier": "A".repeat(43),
            })),
            422,
            "invalid",
        ),
        case(
            "read receipt without the viewer's header",
            Method::POST,
            format!("/v1/viewer/messages/{}/read", world.message),
            Viewer,
            Body::None,
            403,
            "forbidden",
        ),
        case(
            "viewer messages without a session",
            Method::GET,
            "/v1/viewer/messages",
            None,
            Body::None,
            401,
            "unauthorized",
        ),
        case(
            "Twilio callback when Twilio is not configured",
            Method::POST,
            "/v1/sms/twilio/status",
            None,
            Body::Raw(
                "application/x-www-form-urlencoded",
                b"MessageSid=SM123&MessageStatus=delivered".to_vec(),
            ),
            404,
            "not_found",
        ),
    ]);
    cases.push(Case {
        auth: None,
        extra_header: Some(("authorization", "Bearer not-a-key".into())),
        ..submit(
            "submit: a malformed API key",
            Body::Json(json!({ "to": PHONE, "envelope": envelope })),
            401,
            "unauthorized",
        )
    });
    let mut huge_header = case(
        "a header of 64 KiB",
        Method::GET,
        "/v1/organisation",
        Sender,
        Body::None,
        431,
        "",
    );
    huge_header.extra_header = Some(("x-padding", "x".repeat(64 * 1024)));
    cases.push(huge_header);
    cases
}

async fn run_case(world: &World, case: &Case) -> (u16, Value) {
    let relay = &world.relay;
    let mut request = relay
        .http
        .request(case.method.clone(), relay.url(&case.path));
    match case.auth {
        Auth::None => {}
        Auth::Sender => request = request.bearer_auth(&world.clinic.api_key),
        Auth::OtherSender => request = request.bearer_auth(&world.other.api_key),
        Auth::Viewer => request = request.header("cookie", &world.cookie),
    }
    if let Some((name, value)) = &case.extra_header {
        request = request.header(*name, value);
    }
    if matches!(case.auth, Auth::Viewer) && !case.name.contains("without the viewer's header") {
        request = request.header(VIEWER_REQUEST_HEADER, "1");
    }
    request = match &case.body {
        Body::None => request,
        Body::Json(value) => request.json(value),
        Body::Raw(content_type, bytes) => request
            .header("content-type", *content_type)
            .body(bytes.clone()),
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn every_bad_input_gets_its_4xx_and_writes_nothing(backend: Backend) {
    let world = world(backend).await;
    // The idempotency key the replay case reuses, on a message that exists.
    let first = seal(
        header(world.clinic.id, None, world.relay.now(), 3600),
        "first",
        &keys(),
        None,
    );
    let (status, body) = world
        .relay
        .call(
            Method::POST,
            "/v1/messages",
            Some(&world.clinic.api_key),
            Some(json!({ "to": PHONE, "envelope": first, "idempotency_key": "first" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    world.relay.deliver_sms().await;
    let store = world.relay.state().store();
    let mut failures = Vec::new();
    let cases = cases(&world);
    for case in &cases {
        let before = snapshot(store).await;
        let (status, body) = run_case(&world, case).await;
        let code = body["error"].as_str().unwrap_or("");
        if status != case.status || code != case.code {
            failures.push(format!(
                "{} ({} {}): expected {} {:?}, got {status} {body}",
                case.name, case.method, case.path, case.status, case.code
            ));
            continue;
        }
        if status != 431 {
            let contract = world.relay.contract.clone();
            let (method, path) = (case.method.as_str().to_owned(), case.path.clone());
            let checked =
                std::panic::catch_unwind(move || contract.check(&method, &path, status, &body));
            if let Err(panic) = checked {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "?".into());
                failures.push(format!("{}: not as documented: {why}", case.name));
            }
        }
        let after = snapshot(store).await;
        if before != after {
            failures.push(format!("{}: the database changed", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!("{} bad inputs, each its 4xx, nothing written", cases.len());
    world.relay.finish().await;
}

#[tokio::test]
async fn every_bad_input_gets_its_4xx_and_writes_nothing_on_sqlite() {
    every_bad_input_gets_its_4xx_and_writes_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn every_bad_input_gets_its_4xx_and_writes_nothing_on_postgres() {
    every_bad_input_gets_its_4xx_and_writes_nothing(Backend::Postgres).await;
}
