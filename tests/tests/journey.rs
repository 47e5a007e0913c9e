//! The whole journey with the release binaries a deployment runs — `relay serve`, the relay's
//! operator commands, `securetext init/send/agent/keys/status/audit` — and the built viewer in
//! headless Chromium, once on SQLite and once on PostgreSQL:
//!
//! new patient (first contact → enroll → the agent re-wraps → the text shown equals what was
//! sent); a second message inside the live session (no password); a third after locking (with
//! the password); a link-preview GET records nothing; forgotten password (operator reset →
//! enroll again → the agent holds the changed key until approved → readable); remote wipe locks
//! the open page; after lock the browser stores nothing readable; afterwards the database, the
//! relay's logs and the SMS outbox hold no plaintext and no password; the audit export tells the
//! story in order and verifies, and a tampered export does not.
//!
//! Needs `cargo build --release -p relay -p sender` and `trunk build --release` first
//! (scripts/test-all does both).

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use e2e::{Browser, dist_dir, workspace_root};
use rand_core::{OsRng, RngCore};
use relay::store::Backend;
use relay::testkit::{TestDb, wait_until};
use serde_json::Value;

const PASSWORD: &str = "Blue heron at dawn 7";
const NEW_PASSWORD: &str = "Green kettle on stove 9";
const PASSPHRASE: &str = "organisation key passphrase for tests";

fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("SECURETEXT_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target"))
                .join("release")
        });
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release -p relay -p sender` (scripts/test-all does)",
        path.display()
    );
    path
}

/// A child process killed when dropped (also when the test fails).
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Deployment {
    dir: tempfile::TempDir,
    db: TestDb,
    base: String,
    relay: Option<Process>,
    agent: Option<Process>,
}

impl Deployment {
    async fn start(postgres: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = if postgres {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let db = TestDb::new(backend, dir.path()).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut deployment = Self {
            db,
            base: format!("http://127.0.0.1:{port}"),
            dir,
            relay: None,
            agent: None,
        };
        std::fs::write(deployment.path("data.key"), data_key()).unwrap();
        let relay = deployment
            .relay_command()
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--public-url",
                &deployment.base,
            ])
            .arg("--viewer-dir")
            .arg(dist_dir())
            .arg("--sms-outbox-file")
            .arg(deployment.path("sms.jsonl"))
            .env("RELAY_LOG", "trace")
            .env("RELAY_OUTBOX_POLL_MS", "200")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(deployment.path("relay.log")).unwrap())
            .spawn()
            .unwrap();
        deployment.relay = Some(Process(relay));
        deployment.wait_ready().await;
        deployment
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn relay_command(&self) -> Command {
        let mut command = Command::new(binary("relay"));
        command
            .env("RELAY_DATABASE_URL", self.db.url())
            .env("RELAY_DATA_KEY_FILE", self.path("data.key"))
            .stdin(Stdio::null());
        command
    }

    /// A relay operator command with `input` on its standard input (where the patient
    /// commands read the phone number).
    fn operator(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .relay_command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    fn securetext(&self) -> Command {
        let mut command = Command::new(binary("securetext"));
        command
            .env("SECURETEXT_CONFIG_DIR", self.path("sender"))
            .env("SECURETEXT_RELAY_URL", &self.base)
            .env("SECURETEXT_PASSPHRASE", PASSPHRASE)
            .stdin(Stdio::null());
        command
    }

    async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.base);
        wait_until(
            Duration::from_secs(30),
            "the relay to become ready",
            || async {
                let response = reqwest::get(&url).await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await;
    }

    fn sms(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("sms.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits for the `n`-th SMS (1-based) and returns its link.
    async fn link(&self, n: usize) -> String {
        let sms = wait_until(Duration::from_secs(20), &format!("SMS {n}"), || async {
            self.sms().get(n - 1).cloned()
        })
        .await;
        let link = sms["body"]
            .as_str()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned();
        assert!(
            link.contains("/m/#"),
            "the token is in the fragment: {link}"
        );
        link
    }

    /// `securetext send`; returns the message id.
    fn send(&self, phone: &str, subject: &str, body: &str) -> String {
        let mut child = self
            .securetext()
            .args(["--json", "send", "--to", phone, "--subject", subject])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), body.as_bytes()).unwrap();
        drop(child.stdin.take());
        let output = child.wait_with_output().unwrap();
        let result = ok(&output, "securetext send");
        let json: Value = serde_json::from_str(result.lines().last().unwrap()).unwrap();
        json["message"]["message_id"].as_str().unwrap().to_owned()
    }

    async fn finish(mut self) {
        self.agent.take();
        self.relay.take();
        self.db.drop_database().await;
    }
}

fn data_key() -> String {
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    shared::encoding::b64u_encode(key)
}

fn ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn set_password(browser: &Browser, password: &str) {
    browser.wait("#new-password").await;
    browser.fill("#new-password", password).await;
    browser.fill("#confirm-password", password).await;
    browser.click("button[type=submit]").await;
}

async fn unlock(browser: &Browser, password: &str) {
    browser.wait("#password").await;
    browser.fill("#password", password).await;
    browser.click("button[type=submit]").await;
}

async fn lock(browser: &Browser) {
    browser.click(".lock").await;
    browser.wait_text("Messages locked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_journey_on_sqlite() {
    journey(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_journey_on_postgres() {
    journey(true).await;
}

async fn journey(postgres: bool) {
    let mut deployment = Deployment::start(postgres).await;
    let phone = "+15550177001";
    let first = "Your biopsy results are benign. No further treatment is needed.";
    let second = "Please bring your insurance card on Thursday.";
    let third = "Your prescription for amoxicillin is ready for pickup.";

    // Operator: organisation and API key. Sender: key, registration, agent.
    let org = ok(
        &deployment
            .relay_command()
            .args(["org", "create", "--name", "Hillside Clinic"])
            .output()
            .unwrap(),
        "org create",
    );
    let org = org.trim().to_owned();
    let api_key = ok(
        &deployment
            .relay_command()
            .args(["api-key", "create", "--org", &org])
            .output()
            .unwrap(),
        "api-key create",
    );
    ok(
        &deployment
            .securetext()
            .env("SECURETEXT_API_KEY", api_key.trim())
            .args(["init", "--relay", &deployment.base])
            .output()
            .unwrap(),
        "securetext init",
    );
    let agent = deployment
        .securetext()
        .args(["agent", "--poll-ms", "300"])
        .stdout(std::fs::File::create(deployment.path("agent.log")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    deployment.agent = Some(Process(agent));

    // New patient: first contact, enrollment, re-wrap by the agent, the text as sent.
    let first_id = deployment.send(phone, "Biopsy", first);
    let link = deployment.link(1).await;
    let browser = Browser::start("en").await;
    browser.client.goto(&link).await.unwrap();
    set_password(&browser, PASSWORD).await;
    browser.wait_text(first).await;

    // Second message inside the live session: shown without the password.
    deployment.send(phone, "Visit", second);
    let link = deployment.link(2).await;
    browser.client.goto(&link).await.unwrap();
    browser.open_message("Visit", second).await;

    // Third message after locking: the password is needed.
    lock(&browser).await;
    deployment.send(phone, "Pharmacy", third);
    let third_link = deployment.link(3).await;
    browser.client.goto(&third_link).await.unwrap();
    unlock(&browser, PASSWORD).await;
    browser.wait_text(third).await;

    // A link preview (plain GET, no JavaScript) records nothing.
    let preview_id = deployment.send(phone, "Preview", "checking previews");
    let preview_link = deployment.link(4).await;
    let page = reqwest::get(&preview_link).await.unwrap();
    assert_eq!(page.status(), 200);
    let status = ok(
        &deployment
            .securetext()
            .args(["--json", "status", &preview_id])
            .output()
            .unwrap(),
        "securetext status",
    );
    assert!(
        !status.contains("link_opened"),
        "a GET recorded an open: {status}"
    );

    // Forgotten password: reset. A link texted before the reset can no longer set a password
    // (issue 10, part 4); the sender's next message can, once the sender has approved that the
    // number has no key now (its send is held until then); the agent then holds the new key
    // until approved.
    ok(
        &deployment.operator(&["patient", "reset-enrollment"], &format!("{phone}\n")),
        "reset-enrollment",
    );
    browser.client.goto(&third_link).await.unwrap();
    browser.wait_text("Use your newest link").await;
    let mut held = deployment
        .securetext()
        .args(["--json", "send", "--to", phone, "--subject", "Reset"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(held.stdin.as_mut().unwrap(), b"after the reset").unwrap();
    drop(held.stdin.take());
    assert!(
        !held.wait().unwrap().success(),
        "a send to a number that lost its key is held"
    );
    let keys = ok(
        &deployment
            .securetext()
            .args(["--json", "keys", "list"])
            .output()
            .unwrap(),
        "keys list",
    );
    let changed = keys
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|line| {
            line.get("recipient_changes")?.as_array()?.first()?["recipient_id"]
                .as_str()
                .map(str::to_owned)
        })
        .expect("the number's change to \"not enrolled\" waits for approval");
    ok(
        &deployment
            .securetext()
            .args(["keys", "approve", &changed])
            .output()
            .unwrap(),
        "keys approve (no key now)",
    );
    deployment.send(phone, "Reset", "after the reset");
    let reset_link = deployment.link(5).await;
    browser.client.goto(&reset_link).await.unwrap();
    set_password(&browser, NEW_PASSWORD).await;
    browser.wait_text("Your message is being prepared").await;
    let recipient = wait_until(
        Duration::from_secs(20),
        "the agent to report the changed key (securetext keys list)",
        || async {
            let keys = ok(
                &deployment
                    .securetext()
                    .args(["--json", "keys", "list"])
                    .output()
                    .unwrap(),
                "keys list",
            );
            keys.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find_map(pending_recipient)
        },
    )
    .await;
    ok(
        &deployment
            .securetext()
            .args(["keys", "approve", &recipient])
            .output()
            .unwrap(),
        "keys approve",
    );
    browser.open_message("Pharmacy", third).await;

    // Remote wipe: the open page locks itself.
    ok(
        &deployment.operator(&["patient", "revoke-sessions"], &format!("{phone}\n")),
        "revoke-sessions",
    );
    browser.wait_text("Your session was ended").await;
    let dump = browser.storage_dump().await;
    for secret in [
        first,
        second,
        third,
        PASSWORD,
        NEW_PASSWORD,
        "securetext.session",
    ] {
        assert!(!dump.contains(secret), "browser storage holds {secret:?}");
    }
    browser.finish().await;

    // The audit trail of the first message, in order, verified by the sender.
    let export = deployment.path("audit.jsonl");
    ok(
        &deployment
            .securetext()
            .args(["audit", "export", "--out"])
            .arg(&export)
            .output()
            .unwrap(),
        "audit export",
    );
    let events =
        shared::audit::from_json_lines(&std::fs::read_to_string(&export).unwrap()).unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| e.message_id.map(|m| m.to_string()) == Some(first_id.clone()))
        .map(|e| e.kind.as_str())
        .collect();
    // The viewer unlocks right after enrolling; the agent's re-wrap follows; the read receipt
    // comes once the message is shown.
    let expected = [
        "message_created",
        "sms_queued",
        "sms_sent",
        "link_opened",
        "enrolled",
        "unlocked",
        "rewrapped",
        "read",
    ];
    let mut position = 0;
    for kind in &kinds {
        if position < expected.len() && *kind == expected[position] {
            position += 1;
        }
    }
    assert_eq!(
        position,
        expected.len(),
        "audit trail {kinds:?} lacks {expected:?} in order"
    );
    ok(
        &deployment
            .securetext()
            .args(["audit", "verify", "--file"])
            .arg(&export)
            .output()
            .unwrap(),
        "audit verify",
    );
    let text = std::fs::read_to_string(&export).unwrap();
    std::fs::write(&export, text.replacen("\"sms_sent\"", "\"sms_failed\"", 1)).unwrap();
    let tampered = deployment
        .securetext()
        .args(["audit", "verify", "--file"])
        .arg(&export)
        .output()
        .unwrap();
    assert_eq!(
        tampered.status.code(),
        Some(5),
        "a tampered export must fail verification"
    );

    // Afterwards: the database, the relay's logs and the SMS outbox hold nothing readable.
    deployment.agent.take();
    deployment.relay.take();
    let database = deployment.db.dump();
    let logs = std::fs::read(deployment.path("relay.log")).unwrap();
    let outbox = std::fs::read(deployment.path("sms.jsonl")).unwrap();
    let agent_log = std::fs::read(deployment.path("agent.log")).unwrap();
    assert!(!database.is_empty() && !logs.is_empty());
    for (place, bytes) in [
        ("database", &database),
        ("relay log", &logs),
        ("SMS outbox", &outbox),
        ("agent log", &agent_log),
    ] {
        for secret in [first, second, third, PASSWORD, NEW_PASSWORD, PASSPHRASE] {
            assert!(!contains(bytes, secret), "{secret:?} found in the {place}");
        }
    }
    for (place, bytes) in [("database", &database), ("relay log", &logs)] {
        assert!(
            !contains(bytes, phone),
            "the phone number is in the {place} in clear"
        );
    }
    deployment.finish().await;
}

/// The recipient id of a key change waiting for approval, from `keys list --json`.
fn pending_recipient(line: Value) -> Option<String> {
    line.get("pins")?.as_array()?.iter().find_map(|entry| {
        let waiting = !entry.get("pin")?.get("pending")?.is_null();
        waiting.then(|| entry.get("recipient_id")?.as_str().map(str::to_owned))?
    })
}
