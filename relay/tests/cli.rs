//! The `relay` binary as an operator uses it: help text, organisation and API-key commands,
//! audit export and verification, on an embedded SQLite database.

use std::process::Command;

fn relay(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_relay"))
        .current_dir(dir)
        .env(
            "RELAY_DATABASE_URL",
            format!("sqlite://{}", dir.join("relay.sqlite").display()),
        )
        .env("RELAY_LOG", "warn")
        .args(args)
        .output()
        .expect("relay binary runs")
}

/// `relay` with `input` on its standard input (where it reads a patient's phone number).
fn relay_with_input(dir: &std::path::Path, args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .current_dir(dir)
        .env(
            "RELAY_DATABASE_URL",
            format!("sqlite://{}", dir.join("relay.sqlite").display()),
        )
        .env("RELAY_LOG", "warn")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("relay binary runs");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn help_documents_every_serve_option_with_its_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let help = stdout(&relay(dir.path(), &["serve", "--help"]));
    for variable in [
        "RELAY_LISTEN",
        "RELAY_PUBLIC_URL",
        "RELAY_DATABASE_URL",
        "RELAY_DATA_KEY",
        "RELAY_VIEWER_DIR",
        "RELAY_SMS_PROVIDER",
        "RELAY_SMS_OUTBOX_FILE",
        "RELAY_TWILIO_BASE_URL",
        "RELAY_TWILIO_ACCOUNT_SID",
        "RELAY_TWILIO_AUTH_TOKEN_FILE",
        "RELAY_SESSION_IDLE_SECONDS",
        "RELAY_MESSAGE_MAX_LIFETIME_SECONDS",
        "RELAY_UNLOCK_ATTEMPTS",
        "RELAY_SEND_RATE_PER_MINUTE",
        "RELAY_MAX_BODY_BYTES",
    ] {
        assert!(
            help.contains(variable),
            "serve --help does not mention {variable}"
        );
    }
    let top = stdout(&relay(dir.path(), &["--help"]));
    for command in ["serve", "migrate", "org", "api-key", "patient", "audit"] {
        assert!(top.contains(command), "--help does not list {command}");
    }
}

#[test]
fn operator_commands_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let out = stdout(&relay(dir.path(), &["migrate"]));
    assert!(out.contains("migrations applied"));
    let org = stdout(&relay(
        dir.path(),
        &["org", "create", "--name", "Northside Clinic"],
    ));
    let org = org.trim();
    assert_eq!(org.len(), 36, "prints the organisation id: {org}");
    let created = relay(
        dir.path(),
        &["api-key", "create", "--org", org, "--label", "EHR"],
    );
    let key = stdout(&created);
    assert_eq!(key.trim().len(), 43, "prints the API key once");
    let notice = String::from_utf8(created.stderr).unwrap();
    let key_id = notice.split_whitespace().nth(2).unwrap();
    assert!(key_id.starts_with("key_"), "{notice}");
    let listed = stdout(&relay(dir.path(), &["org", "list"]));
    assert!(listed.contains("Northside Clinic") && listed.contains("(no key registered)"));
    stdout(&relay(dir.path(), &["api-key", "revoke", "--id", key_id]));
    let again = relay(dir.path(), &["api-key", "revoke", "--id", key_id]);
    assert!(!again.status.success(), "revoking twice is an error");

    let export = stdout(&relay(dir.path(), &["audit", "export", "--org", org]));
    let events = shared::audit::from_json_lines(&export).unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["api_key_created", "api_key_revoked"]);
    assert!(
        stdout(&relay(dir.path(), &["audit", "verify", "--org", org]))
            .contains("verifies: 2 event(s)")
    );
    assert!(
        !key.trim().is_empty() && !export.contains(key.trim()),
        "the key is never in the audit log"
    );

    let unknown = relay_with_input(
        dir.path(),
        &["patient", "revoke-sessions"],
        "+15550009999\n",
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no patient with this phone number"));
    assert!(
        dir.path().join("relay.sqlite.key").exists(),
        "the data key file is created beside the database"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("relay.sqlite.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the data key file is private to its owner");
    }
}

/// Issue 12, finding 11: the console provider writes phone numbers and links in clear; it is
/// for development and refused for a relay whose public URL is `https` (a deployment).
#[tokio::test]
async fn the_console_sms_provider_is_refused_for_an_https_relay() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .current_dir(dir.path())
        .env(
            "RELAY_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("relay.sqlite").display()),
        )
        .env("RELAY_LOG", "warn")
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--public-url",
            "https://relay.example.org",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Ended also when the test fails, so a relay that does not refuse is not left running.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(child);
    let status = relay::testkit::wait_until(
        std::time::Duration::from_secs(30),
        "relay serve to refuse the console SMS provider behind an https public URL",
        || {
            let exited = child.0.try_wait().unwrap();
            async move { exited }
        },
    )
    .await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("--sms-provider twilio"), "{stderr}");
}

/// Issue 12, finding 11: a process's command line is readable by every local user (`ps`,
/// `/proc/<pid>/cmdline`) and lands in shell history, so neither the data key nor a patient's
/// phone number (PHI) is taken there: the key comes from `RELAY_DATA_KEY` or a file, the phone
/// number from standard input.
#[test]
fn secrets_and_phone_numbers_are_refused_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = shared::at_rest::DataKey::generate_encoded(&mut rand_core::OsRng);
    let on_command_line = relay(dir.path(), &["migrate", "--data-key", key.as_str()]);
    assert!(!on_command_line.status.success(), "--data-key was accepted");
    let phone = relay(
        dir.path(),
        &["patient", "revoke-sessions", "--phone", "+15550009999"],
    );
    assert!(!phone.status.success(), "--phone was accepted");
    let token = relay(
        dir.path(),
        &[
            "serve",
            "--sms-provider",
            "twilio",
            "--twilio-auth-token",
            "abc",
        ],
    );
    assert!(!token.status.success(), "--twilio-auth-token was accepted");
    assert!(
        String::from_utf8_lossy(&token.stderr).contains("unexpected argument"),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );

    // The phone number on standard input; the data key from the environment.
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .current_dir(dir.path())
        .env(
            "RELAY_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("relay.sqlite").display()),
        )
        .env("RELAY_DATA_KEY", key.as_str())
        .env("RELAY_LOG", "warn")
        .args(["patient", "revoke-sessions"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"+1 555 000 9999\n").unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no patient with this phone number"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !dir.path().join("relay.sqlite.key").exists(),
        "RELAY_DATA_KEY was ignored"
    );
}
