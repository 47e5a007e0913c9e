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

/// Every flag of `relay serve` and the storage options, from the command-line definition.
fn flags() -> Vec<(String, Option<String>, Option<String>)> {
    use clap::CommandFactory;
    let cli = relay::config::Cli::command();
    let serve = cli.find_subcommand("serve").expect("relay serve").clone();
    cli.get_arguments()
        .chain(serve.get_arguments())
        .filter_map(|arg| {
            let long = arg.get_long()?;
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            let default = arg
                .get_default_values()
                .first()
                .map(|d| d.to_string_lossy().into_owned());
            Some((format!("--{long}"), env, default))
        })
        .filter(|(long, _, _)| long != "--help" && long != "--version")
        .collect()
}

#[test]
fn the_configuration_tables_are_the_command_line() {
    // Rows of the form  | `--flag` | `ENV` | default | meaning |
    let rows: Vec<Vec<&str>> = API_MD
        .lines()
        .filter(|line| line.starts_with("| `--"))
        .map(|line| line.split('|').map(str::trim).collect())
        .collect();
    let flags = flags();
    for (long, env, default) in &flags {
        let row = rows
            .iter()
            .find(|cells| cells[1] == format!("`{long}`"))
            .unwrap_or_else(|| panic!("{long} is not in docs/API.md's configuration tables"));
        if let Some(env) = env {
            assert_eq!(row[2], format!("`{env}`"), "{long}: environment variable");
        }
        if let Some(default) = default.as_ref().filter(|d| !d.is_empty()) {
            assert!(
                row[3].contains(&format!("`{default}`")),
                "{long}: docs/API.md says the default is {:?}, the relay's is {default:?}",
                row[3]
            );
        }
    }
    for cells in &rows {
        let flag = cells[1].trim_matches('`');
        assert!(
            flags.iter().any(|(long, _, _)| long == flag),
            "docs/API.md documents {flag}, which the relay does not have"
        );
    }
}
