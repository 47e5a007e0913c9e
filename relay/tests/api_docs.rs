//! docs/API.md is prose and examples over the generated OpenAPI document, not a second schema;
//! these checks keep the two from drifting: every route the relay serves has its section (or
//! its row among the operational endpoints) and no section describes a route that does not
//! exist; the error table lists exactly the shared `ErrorCode`s with the statuses the relay
//! sends; the Twilio callback path operators configure is the documented one.

use std::collections::BTreeSet;

use relay::api::sms_callback::TWILIO_STATUS_PATH;
use serde_json::Value;
use shared::api::ErrorCode;

const API_MD: &str = include_str!("../../docs/API.md");
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

fn document() -> Value {
    serde_json::to_value(relay::api::openapi()).unwrap()
}

/// `METHOD /path` of every operation in the generated document.
fn documented_operations() -> BTreeSet<String> {
    let doc = document();
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let method = method.to_ascii_uppercase();
            if METHODS.contains(&method.as_str()) {
                operations.insert(format!("{method} {path}"));
            }
        }
    }
    operations
}

/// `METHOD /path` from API.md: the `### METHOD /path` headings and the rows of the operational
/// endpoints' table whose first cell is `` `METHOD /path` ``.
fn described_operations() -> BTreeSet<String> {
    let is_operation = |text: &str| {
        text.split_once(' ')
            .is_some_and(|(method, path)| METHODS.contains(&method) && path.starts_with('/'))
    };
    let headings = API_MD
        .lines()
        .filter_map(|line| line.strip_prefix("### "))
        .filter(|text| is_operation(text));
    let rows = API_MD
        .lines()
        .filter_map(|line| line.split('|').nth(1))
        .filter_map(|cell| cell.trim().strip_prefix('`')?.strip_suffix('`'))
        .filter(|text| is_operation(text));
    headings.chain(rows).map(str::to_owned).collect()
}

#[test]
fn every_route_has_its_section_and_every_section_its_route() {
    let documented = documented_operations();
    let described = described_operations();
    let undescribed: Vec<_> = documented.difference(&described).collect();
    let phantom: Vec<_> = described.difference(&documented).collect();
    assert!(
        undescribed.is_empty() && phantom.is_empty(),
        "routes without a section in docs/API.md: {undescribed:?}; \
         sections for routes the relay does not serve: {phantom:?}"
    );
}

#[test]
fn the_error_table_is_the_error_code_enum() {
    // Rows of the form  | 409 | `already_enrolled` | … |
    let rows: BTreeSet<(u16, String)> = API_MD
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let status = cells.get(1)?.parse::<u16>().ok()?;
            let code = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((status, code.to_owned()))
        })
        .collect();
    // `Unknown` stands, in a client, for a code newer than the client; the relay never sends it.
    let codes: BTreeSet<(u16, String)> = ErrorCode::ALL
        .iter()
        .filter(|code| **code != ErrorCode::Unknown)
        .map(|code| (code.http_status(), code.as_str().to_owned()))
        .collect();
    assert_eq!(
        rows, codes,
        "docs/API.md's error table differs from shared::api::ErrorCode"
    );
}

#[test]
fn the_twilio_callback_path_is_the_documented_one() {
    let doc = document();
    assert!(
        doc["paths"][TWILIO_STATUS_PATH]["post"].is_object(),
        "{TWILIO_STATUS_PATH} is not in the OpenAPI document"
    );
    assert!(API_MD.contains(&format!("### POST {TWILIO_STATUS_PATH}")));
}
