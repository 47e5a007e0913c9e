//! The `securetext` binary against the real relay (SQLite): set-up, sending from standard input,
//! status, keys, audit export and verification, and the documented exit codes. Also the
//! agent's back-off while the relay is unreachable.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay::store::Backend;
use relay::testkit::{TestRelay, keys, wait_for};
use sender::Client;
use sender::agent::{Agent, AgentNotice, AgentPolicy, RunOptions};
use sender::client::RetryPolicy;
use sender::config::{ApiKey, RelayUrl};
use sender::organisation_key::OrganisationKey;
use sender::state::StateDir;
use serde_json::Value;
use shared::ids::OrganisationId;

const PHONE: &str = "+15557770002";
const BODY: &str = "Your prescription refill is ready for pickup.";
const PASSPHRASE: &str = "pharmacy passphrase 2026";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Runs the binary with a clean environment plus `env`, feeding `stdin`.
async fn securetext(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let stdin = stdin.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_securetext"))
            .args(&args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let output = child.wait_with_output().unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_on_sqlite() {
    let relay = TestRelay::builder(Backend::Sqlite)
        .system_clock()
        .start()
        .await;
    let relay::testkit::Sender {
        id: organisation_id,
        api_key,
        ..
    } = relay.organisation("Hillside Pharmacy").await;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("securetext");
    let dir_text = dir.display().to_string();
    let base_env = [
        ("SECURETEXT_CONFIG_DIR", dir_text.as_str()),
        ("SECURETEXT_PASSPHRASE", PASSPHRASE),
    ];
    let no_secrets = |run: &Run| {
        for text in [&run.stdout, &run.stderr] {
            assert!(!text.contains(&api_key), "API key printed");
            assert!(!text.contains(PASSPHRASE), "passphrase printed");
            assert!(!text.contains(BODY), "message text printed");
        }
    };

    let help = securetext(&["--help"], &[], None).await;
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("Exit codes:"), "{}", help.stdout);
    let usage = securetext(&["send"], &base_env, None).await;
    assert_eq!(usage.code, 1, "{}", usage.stderr);

    // init: generates the key, seals it with the passphrase, registers it.
    let mut env = base_env.to_vec();
    env.push(("SECURETEXT_API_KEY", &api_key));
    let init = securetext(&["--json", "init", "--relay", &relay.base], &env, None).await;
    assert_eq!(init.code, 0, "{}{}", init.stdout, init.stderr);
    no_secrets(&init);
    let outcome = init.json();
    assert_eq!(
        outcome["init"]["organisation_id"],
        organisation_id.to_string()
    );
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("organisation-key.json")), 0o600);
        assert_eq!(mode(&dir.join("config.json")), 0o600);
    }
    let again = securetext(&["init", "--relay", &relay.base], &env, None).await;
    assert_eq!(again.code, 4, "an existing key file is never overwritten");

    // send from standard input; the API key now comes from config.json.
    let sent = securetext(
        &[
            "--json",
            "send",
            "--to",
            PHONE,
            "--subject",
            "Pharmacy",
            "--expires",
            "1h",
        ],
        &base_env,
        Some(BODY),
    )
    .await;
    assert_eq!(sent.code, 0, "{}{}", sent.stdout, sent.stderr);
    no_secrets(&sent);
    let message_id = sent.json()["message"]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sent.json()["message"]["recipient"]["kind"], "first_contact");

    let human = securetext(&["status", &message_id], &base_env, None).await;
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(human.stdout.contains("message_created"), "{}", human.stdout);
    let status = securetext(&["--json", "status", &message_id], &base_env, None).await;
    assert_eq!(status.json()["status"]["status"], "active");

    let listed = securetext(&["--json", "keys", "list"], &base_env, None).await;
    assert_eq!(listed.code, 0);
    assert_eq!(listed.json()["pins"], Value::Array(vec![]));

    // Bad input and refusals map to their documented exit codes.
    let bad_phone = securetext(&["send", "--to", "5551234"], &base_env, Some(BODY)).await;
    assert_eq!(bad_phone.code, 1, "{}", bad_phone.stderr);
    let unknown = securetext(
        &["status", "00000000-0000-4000-8000-000000000000"],
        &base_env,
        None,
    )
    .await;
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("not_found"), "{}", unknown.stderr);
    let wrong = securetext(
        &["agent"],
        &[
            ("SECURETEXT_CONFIG_DIR", dir_text.as_str()),
            ("SECURETEXT_PASSPHRASE", "not the passphrase at all"),
        ],
        None,
    )
    .await;
    assert_eq!(wrong.code, 4, "{}", wrong.stderr);
    let down = securetext(
        &["--relay", "http://127.0.0.1:9", "status", &message_id],
        &base_env,
        None,
    )
    .await;
    assert_eq!(down.code, 3, "{}", down.stderr);

    // Audit: export, verify, then a tampered copy fails with exit code 5.
    let export = dir.join("audit.jsonl");
    let export_text = export.display().to_string();
    let exported = securetext(&["audit", "export", "--out", &export_text], &base_env, None).await;
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    let verified = securetext(
        &["--json", "audit", "verify", "--file", &export_text],
        &base_env,
        None,
    )
    .await;
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    assert!(verified.json()["verified"]["events"].as_u64().unwrap() >= 4);
    let text = std::fs::read_to_string(&export).unwrap();
    let tampered = dir.join("tampered.jsonl");
    std::fs::write(
        &tampered,
        text.replacen("message_created", "sms_delivered", 1),
    )
    .unwrap();
    let failed = securetext(
        &["audit", "verify", "--file", &tampered.display().to_string()],
        &base_env,
        None,
    )
    .await;
    assert_eq!(failed.code, 5, "{}", failed.stderr);
    let online = securetext(&["audit", "verify"], &base_env, None).await;
    assert_eq!(online.code, 0, "{}", online.stderr);

    // Revoke, then revoking again is refused by the relay.
    let revoked = securetext(&["revoke", &message_id], &base_env, None).await;
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    let twice = securetext(&["--json", "revoke", &message_id], &base_env, None).await;
    assert_eq!(twice.code, 2);
    assert_eq!(twice.json()["relay_code"], "not_active");
    relay.finish().await;
}

/// While the relay is unreachable, the agent's passes fail and it waits longer each time, up
/// to its maximum; it still stops promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_backs_off_while_relay_is_down() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let home = tempfile::tempdir().unwrap();
    let state = StateDir::open(home.path().join("s")).unwrap();
    let client = Client::with_retry_policy(
        RelayUrl::parse(&format!("http://{address}")).unwrap(),
        ApiKey::new("unused-api-key").unwrap(),
        RetryPolicy::no_retries(),
    )
    .unwrap();
    let agent = Agent::new(
        client,
        OrganisationId::from_bytes([9; 16]),
        OrganisationKey::new(keys().organisation).unwrap(),
        &state,
        AgentPolicy::default(),
    );
    let waits: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let sink = waits.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        agent
            .run(
                RunOptions {
                    poll: Duration::from_millis(20),
                    max_backoff: Duration::from_millis(80),
                    remind_every: Duration::from_secs(60),
                    ..RunOptions::default()
                },
                async move {
                    let _ = stopped.await;
                },
                move |notice| {
                    if let AgentNotice::PassFailed { retry_in, error } = notice {
                        assert_eq!(error.exit_code(), sender::ExitCode::RelayUnreachable);
                        sink.lock().unwrap().push(retry_in);
                    }
                },
            )
            .await;
    });
    wait_for(Duration::from_secs(10), || async {
        waits.lock().unwrap().len() >= 4
    })
    .await
    .expect("four failed passes");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the agent stops promptly")
        .unwrap();
    let waits = waits.lock().unwrap();
    let ms: Vec<u128> = waits.iter().take(4).map(Duration::as_millis).collect();
    assert_eq!(ms, [40, 80, 80, 80]);
}
