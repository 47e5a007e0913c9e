//! `securetext`: the sender's command-line tool (see `sender/README.md`).
//!
//! Output: results on stdout (human-readable, or one JSON document per result with `--json`),
//! progress and diagnostics on stderr. Message text, passphrases and API keys are never printed.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode as ProcessExit;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use sender::agent::{Agent, AgentEvent, AgentNotice, AgentPolicy, RunOptions};
use sender::audit::{AnchorStore, verify_log};
use sender::client::{Client, RetryPolicy};
use sender::config::{ApiKey, Config, Overrides, RelayUrl};
use sender::pins::PinStore;
use sender::send::{
    IdentityCheck, OrganisationIdentity, OutgoingMessage, PhoneNumber, RecipientTrust, SendPolicy,
};
use sender::setup::{InitRequest, new_passphrase, unseal_key};
use sender::state::{StateDir, unix_now, write_private};
use sender::{Error, ExitCode};
use serde_json::json;
use shared::api::LongPoll;
use shared::audit::AuditKind;
use shared::envelope::Content;
use shared::identity_check::EnrollmentCode;
use shared::ids::{MessageId, RecipientId};
use shared::kdf::{KdfParams, Password};
use shared::keys::Fingerprint;
use zeroize::Zeroizing;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  usage error, invalid input or local configuration problem
  2  the relay refused the request (4xx)
  3  the relay is unreachable or kept failing (network, 5xx, 429) - retrying later may work
  4  organisation key problem: key file missing or unreadable, wrong passphrase, permissions
  5  verification failed: audit log altered or rewritten, inconsistent relay answer, agent alarm
  6  the recipient's key changed and waits for `securetext keys approve`

Environment:
  SECURETEXT_RELAY_URL, SECURETEXT_API_KEY, SECURETEXT_CONFIG_DIR, SECURETEXT_KEY_FILE
  SECURETEXT_PASSPHRASE  passphrase of the organisation key (for services; otherwise prompted)";

/// Send end-to-end encrypted messages through a SecureText relay.
#[derive(Debug, Parser)]
#[command(name = "securetext", version, after_help = EXIT_CODES)]
struct Cli {
    /// State directory (config, key file, pins, journal). Default: the platform's config
    /// directory + `securetext`.
    #[arg(long, env = "SECURETEXT_CONFIG_DIR", global = true)]
    config_dir: Option<PathBuf>,
    /// Relay base URL (https, or http on loopback).
    #[arg(long = "relay", env = "SECURETEXT_RELAY_URL", global = true)]
    relay_url: Option<String>,
    /// Relay API key. Prefer the environment variable: arguments are visible to other users.
    #[arg(
        long,
        env = "SECURETEXT_API_KEY",
        hide_env_values = true,
        global = true
    )]
    api_key: Option<String>,
    /// Organisation key file, if not in the state directory.
    #[arg(long, env = "SECURETEXT_KEY_FILE", global = true)]
    key_file: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the organisation key, store it sealed with a passphrase, register it.
    Init(InitArgs),
    /// Encrypt and send a message (text from --file or standard input).
    Send(SendArgs),
    /// Run the re-wrap agent until Ctrl-C or SIGTERM.
    Agent(AgentArgs),
    /// Pinned recipient keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show a message's status and trail.
    Status {
        /// Message id.
        id: MessageId,
    },
    /// Withdraw a message.
    Revoke {
        /// Message id.
        id: MessageId,
    },
    /// The organisation's audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Show or set the organisation's sending rules.
    Policy {
        /// Refuse to send a first contact (a patient not enrolled yet) without `--verify`.
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        require_identity_check: Option<bool>,
    },
}

fn on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("use on or off".into()),
    }
}

/// The identity check `--verify` asks for, and the enrollment code it generated (to hand to the
/// patient), if any.
fn identity_check(
    verify: &[String],
) -> Result<Option<(IdentityCheck, Option<EnrollmentCode>)>, Error> {
    if verify.is_empty() {
        return Ok(None);
    }
    let mut date_of_birth = None;
    let mut code = None;
    for item in verify {
        match item.split_once('=') {
            Some(("dob", date)) if date_of_birth.is_none() => date_of_birth = Some(date),
            None if item == "code" && code.is_none() => {
                code = Some(EnrollmentCode::generate(&mut rand_core::OsRng));
            }
            _ => {
                return Err(Error::Input(format!(
                    "--verify {item:?}: use dob=YYYY-MM-DD or code, each at most once"
                )));
            }
        }
    }
    let check = IdentityCheck::new(date_of_birth, code.as_ref().map(EnrollmentCode::as_str))?;
    Ok(Some((check, code)))
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Do not store the API key in config.json (give it through SECURETEXT_API_KEY each time).
    #[arg(long)]
    no_store_api_key: bool,
    /// Replace a public key the relay already has for this organisation.
    #[arg(long)]
    replace_registered_key: bool,
}

#[derive(Debug, Args)]
struct SendArgs {
    /// Recipient phone number, E.164 (e.g. +15551234567).
    #[arg(long)]
    to: String,
    /// Read the message body from this file instead of standard input.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Subject line shown above the message.
    #[arg(long, default_value = "")]
    subject: String,
    /// Lifetime: e.g. 7d, 12h, 30m.
    #[arg(long, default_value = "7d")]
    expires: String,
    /// Ask a patient who is not enrolled yet to confirm who they are before the agent trusts
    /// their key: `dob=YYYY-MM-DD` (their date of birth) or `code` (prints a one-time code to
    /// give the patient in person, on paper or by phone). Repeat for both.
    #[arg(long = "verify", value_name = "dob=YYYY-MM-DD|code")]
    verify: Vec<String>,
}

#[derive(Debug, Args)]
struct AgentArgs {
    /// Approve changed recipient keys automatically (each approval is reported). This gives
    /// up the protection of pinning against a relay that substitutes keys.
    #[arg(long)]
    auto_approve_key_changes: bool,
    /// Also re-wrap messages not sent from this host (unknown to its journal).
    #[arg(long)]
    accept_unrecorded: bool,
    /// Seconds each request asks the relay to wait for an enrollment before answering that
    /// there is nothing to do (a long-poll; 0 polls instead).
    #[arg(long, default_value_t = LongPoll::MAX_WAIT_SECONDS,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(LongPoll::MAX_WAIT_SECONDS)))]
    wait_seconds: u32,
    /// Least milliseconds between two requests that found nothing (the back-off starts here).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    poll_ms: u64,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List pinned recipient keys and changes waiting for approval.
    List,
    /// Approve a recipient's changed key (after checking it with the patient).
    Approve {
        /// Recipient id.
        id: RecipientId,
        /// Approve only if the pending key has exactly this fingerprint.
        #[arg(long, value_parser = Fingerprint::parse)]
        fingerprint: Option<Fingerprint>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Download the whole log as JSON lines.
    Export {
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify the hash chain locally (from --file, or freshly downloaded), and that it still
    /// contains the last event verified before.
    Verify {
        /// A JSON-lines export to verify instead of downloading one.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// Prints results as text or JSON.
#[derive(Debug, Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    fn progress(self, text: &str) {
        if !self.json {
            eprintln!("{text}");
        }
    }

    fn result(self, human: &str, value: serde_json::Value) {
        if self.json {
            println!("{value}");
        } else {
            println!("{human}");
        }
    }
}

fn main() -> ProcessExit {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ProcessExit::from(if error.use_stderr() {
                ExitCode::Usage.code()
            } else {
                ExitCode::Ok.code()
            });
        }
    };
    let output = Output { json: cli.json };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("securetext: cannot start: {error}");
            return ProcessExit::from(ExitCode::Usage.code());
        }
    };
    match runtime.block_on(run(cli, output)) {
        Ok(code) => ProcessExit::from(code.code()),
        Err(error) => {
            let code = error
                .downcast_ref::<Error>()
                .map_or(ExitCode::Usage, Error::exit_code);
            if output.json {
                let relay = error.downcast_ref::<Error>().and_then(|e| match e {
                    Error::Relay(relay) => Some(relay),
                    _ => None,
                });
                println!(
                    "{}",
                    json!({
                        "ok": false,
                        "exit_code": code.code(),
                        "error": format!("{error:#}"),
                        "relay_status": relay.map(|r| r.status),
                        "relay_code": relay.map(|r| r.code.as_str()),
                        "field": relay.and_then(|r| r.field.as_deref()),
                        "retry_after": relay.and_then(|r| r.retry_after),
                    })
                );
            } else {
                eprintln!("securetext: {error:#}");
            }
            ProcessExit::from(code.code())
        }
    }
}

async fn run(cli: Cli, output: Output) -> anyhow::Result<ExitCode> {
    let state_path = match &cli.config_dir {
        Some(path) => path.clone(),
        None => StateDir::default_path()?,
    };
    let state = StateDir::open(state_path)?;
    let overrides = Overrides {
        relay_url: cli.relay_url.as_deref().map(RelayUrl::parse).transpose()?,
        api_key: cli.api_key.as_deref().map(ApiKey::new).transpose()?,
        key_file: cli.key_file.clone(),
    };
    match cli.command {
        Command::Init(args) => init(&state, overrides, args, output).await,
        Command::Send(args) => send(state, overrides, args, output).await,
        Command::Agent(args) => agent(state, overrides, args, output).await,
        Command::Keys(command) => keys(&state, command, output),
        Command::Status { id } => status(state, overrides, id, output).await,
        Command::Revoke { id } => {
            let config = Config::load(state, overrides)?;
            client(&config)?.revoke(id).await?;
            output.result(
                &format!("Revoked message {id}."),
                json!({ "ok": true, "message_id": id, "status": "revoked" }),
            );
            Ok(ExitCode::Ok)
        }
        Command::Audit(command) => audit(state, overrides, command, output).await,
        Command::Policy {
            require_identity_check,
        } => {
            if let Some(require) = require_identity_check {
                Config::set_policy(
                    &state,
                    SendPolicy {
                        require_identity_check: require,
                    },
                )?;
            }
            let config = Config::load(state, overrides)?;
            let require = config.policy.require_identity_check;
            output.result(
                &format!(
                    "Identity check for every first contact: {}",
                    if require { "required" } else { "optional" }
                ),
                json!({ "ok": true, "require_identity_check": require }),
            );
            Ok(ExitCode::Ok)
        }
    }
}

fn client(config: &Config) -> Result<Client, Error> {
    Client::new(config.relay_url.clone(), config.api_key.clone())
}

/// The passphrase from `SECURETEXT_PASSPHRASE`, or typed at the terminal (twice if `confirm`).
fn passphrase(confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    if let Ok(text) = std::env::var("SECURETEXT_PASSPHRASE") {
        return Ok(Zeroizing::new(text));
    }
    let first = Zeroizing::new(
        rpassword::prompt_password("Passphrase for the organisation key: ").map_err(|e| {
            Error::Config(format!(
                "cannot read a passphrase from the terminal ({e}); set SECURETEXT_PASSPHRASE"
            ))
        })?,
    );
    if confirm {
        let second = Zeroizing::new(
            rpassword::prompt_password("Repeat the passphrase: ")
                .map_err(|e| Error::Config(format!("cannot read the passphrase: {e}")))?,
        );
        if *first != *second {
            return Err(Error::Input("the two passphrases differ".into()).into());
        }
    }
    Ok(first)
}

async fn init(
    state: &StateDir,
    overrides: Overrides,
    args: InitArgs,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let relay_url = overrides
        .relay_url
        .ok_or_else(|| Error::Input("init needs --relay URL".into()))?;
    let api_key = overrides
        .api_key
        .ok_or_else(|| Error::Input("init needs --api-key KEY (or SECURETEXT_API_KEY)".into()))?;
    let typed = passphrase(true)?;
    let passphrase = new_passphrase(&typed)?;
    output.progress("Generating the organisation's RSA-3072 key and sealing it…");
    let outcome = sender::setup::init(
        state,
        InitRequest {
            relay_url,
            api_key,
            store_api_key: !args.no_store_api_key,
            key_file: overrides.key_file,
            kdf_params: KdfParams::DEFAULT,
            replace_registered_key: args.replace_registered_key,
        },
        &passphrase,
        None,
    )
    .await?;
    output.result(
        &format!(
            "Organisation {} ({}) is set up.\nKey file: {}\nKey fingerprint: {}\n\
             Keep the passphrase safe: without it the key file is useless.",
            outcome.display_name,
            outcome.organisation_id,
            outcome.key_file.display(),
            outcome.fingerprint
        ),
        json!({ "ok": true, "init": outcome }),
    );
    Ok(ExitCode::Ok)
}

/// Reads the message body from a file or standard input, as UTF-8.
fn read_body(file: Option<&Path>, output: Output) -> anyhow::Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new(Vec::new());
    match file {
        Some(path) => {
            let mut handle = std::fs::File::open(path).map_err(|e| Error::Io {
                path: path.to_owned(),
                source: e,
            })?;
            handle.read_to_end(&mut bytes).map_err(|e| Error::Io {
                path: path.to_owned(),
                source: e,
            })?;
        }
        None => {
            let mut stdin = std::io::stdin();
            if stdin.is_terminal() {
                output.progress("Type the message, then Ctrl-D on a new line:");
            }
            stdin
                .read_to_end(&mut bytes)
                .context("reading the message from standard input")?;
        }
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::Input("the message is not UTF-8 text".into()))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(Error::Input("the message is empty".into()).into());
    }
    Ok(Zeroizing::new(text.to_owned()))
}

async fn send(
    state: StateDir,
    overrides: Overrides,
    args: SendArgs,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(state.clone(), overrides)?;
    let key_file = config.load_key_file()?;
    let to = PhoneNumber::parse(&args.to)?;
    let lifetime_seconds = sender::send::parse_lifetime(&args.expires)?;
    let body = read_body(args.file.as_deref(), output)?;
    let (identity_check, code) = identity_check(&args.verify)?.unzip();
    let message = OutgoingMessage {
        to,
        content: Content {
            subject: args.subject,
            body: body.to_string(),
        },
        lifetime_seconds,
        identity_check,
    };
    output.progress("Looking up the recipient, sealing and submitting…");
    let identity = OrganisationIdentity {
        organisation_id: config.organisation_id,
        public_key: key_file.public_key.clone(),
        policy: config.policy,
    };
    let receipt = client(&config)?.send(&identity, &state, &message).await?;
    let code = code.flatten();
    let trust = match receipt.recipient {
        RecipientTrust::FirstContact {
            identity_check: None,
        } => "not enrolled yet: first contact, UNVERIFIED (whoever opens the link first chooses \
              the password and the key; add --verify to ask the patient to confirm who they \
              are); the agent re-wraps the message once the patient enrolls"
            .to_owned(),
        RecipientTrust::FirstContact {
            identity_check: Some(kind),
        } => format!(
            "not enrolled yet: first contact with an identity check ({}); the agent re-wraps the \
             message only to a key whose enrollment answered it{}",
            kind.as_str(),
            code.as_ref().map_or(String::new(), |code| format!(
                "\nEnrollment code for the patient (give it in person, on paper or by phone, \
                 never by SMS): {}",
                code.as_str()
            ))
        ),
        RecipientTrust::PinnedNow { fingerprint } => {
            format!("enrolled; key {fingerprint} pinned now (first use)")
        }
        RecipientTrust::Pinned { fingerprint } => format!("enrolled; pinned key {fingerprint}"),
    };
    output.result(
        &format!(
            "Message {} {} for recipient {}\nRecipient: {trust}\nExpires: {}",
            receipt.message_id,
            receipt.status.as_str(),
            receipt.recipient_id,
            utc(receipt.expires_at)
        ),
        json!({ "ok": true, "message": receipt,
                "enrollment_code": code.as_ref().map(EnrollmentCode::as_str) }),
    );
    Ok(ExitCode::Ok)
}

async fn agent(
    state: StateDir,
    overrides: Overrides,
    args: AgentArgs,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(state.clone(), overrides)?;
    let typed = passphrase(false)?;
    let key = unseal_key(&config, &Password::new(&typed)?)?;
    drop(typed);
    let client = Client::with_retry_policy(
        config.relay_url.clone(),
        config.api_key.clone(),
        RetryPolicy {
            request_timeout: Duration::from_secs(15),
            ..RetryPolicy::no_retries()
        },
    )?;
    let policy = AgentPolicy {
        auto_approve_key_changes: args.auto_approve_key_changes,
        accept_unrecorded: args.accept_unrecorded,
    };
    let agent = Agent::new(client, config.organisation_id, key, &state, policy);
    output.progress(&format!(
        "Agent running for organisation {} against {} ({}{}). Ctrl-C to stop.",
        config.organisation_id,
        config.relay_url,
        if args.wait_seconds > 0 {
            format!("waiting up to {} s for each enrollment", args.wait_seconds)
        } else {
            format!("polling every {} ms", args.poll_ms)
        },
        if args.auto_approve_key_changes {
            "; changed keys are approved AUTOMATICALLY"
        } else {
            ""
        }
    ));
    let options = RunOptions {
        wait: Duration::from_secs(u64::from(args.wait_seconds)),
        poll: Duration::from_millis(args.poll_ms),
        ..RunOptions::default()
    };
    agent
        .run(options, shutdown_signal(), |notice| report(notice, output))
        .await;
    output.progress("Agent stopped.");
    Ok(ExitCode::Ok)
}

/// Completes on Ctrl-C or (Unix) SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn report(notice: AgentNotice<'_>, output: Output) {
    let stamp = utc(unix_now());
    let (human, value) = match notice {
        AgentNotice::Event(event) => (describe(event), json!(event)),
        AgentNotice::PassFailed { error, retry_in } => (
            format!(
                "relay pass failed: {error}; retrying in {} ms",
                retry_in.as_millis()
            ),
            json!({ "event": "pass_failed", "error": error.to_string(),
                    "retry_in_ms": u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX) }),
        ),
        AgentNotice::Recovered => (
            "relay reachable again".to_owned(),
            json!({ "event": "recovered" }),
        ),
    };
    if output.json {
        let mut value = value;
        value["at"] = json!(stamp);
        println!("{value}");
    } else {
        eprintln!("[{stamp}] {human}");
    }
    let _ = std::io::stdout().flush();
}

fn describe(event: &AgentEvent) -> String {
    match event {
        AgentEvent::Rewrapped {
            message_id,
            recipient_id,
            fingerprint,
            newly_pinned,
            identity_verified,
        } => format!(
            "re-wrapped message {message_id} for recipient {recipient_id} (key {fingerprint}{})",
            match (*newly_pinned, *identity_verified) {
                (true, true) => ", pinned now, identity verified",
                (true, false) => {
                    ", pinned now: UNVERIFIED first enrollment (no identity check; whoever \
                     opened the link first chose this key)"
                }
                (false, true) => ", identity verified",
                (false, false) => "",
            }
        ),
        AgentEvent::IdentityVerified {
            message_id,
            recipient_id,
            fingerprint,
        } => format!(
            "identity check of message {message_id} passed: recipient {recipient_id} enrolled \
             key {fingerprint}"
        ),
        AgentEvent::IdentityCheckFailed {
            message_id,
            recipient_id,
            attempts_left,
            reason,
        } => format!(
            "identity check of message {message_id} FAILED for recipient {recipient_id}: \
             {reason}; {attempts_left} answers left{}",
            if *attempts_left == 0 {
                " (send the patient a new message to let them enroll)"
            } else {
                ""
            }
        ),
        AgentEvent::PasswordDisowned {
            message_id,
            recipient_id,
            at,
        } => format!(
            "ALARM recipient {recipient_id} says they never set a password (message \
             {message_id}, {}): someone else may have enrolled with their link. Call the patient \
             on a number you already know, then `relay patient reset-enrollment` and send a new \
             message with --verify",
            utc(*at)
        ),
        AgentEvent::IdentityCheckPending {
            message_id,
            recipient_id,
            offered,
        } => format!(
            "HELD message {message_id}: recipient {recipient_id} enrolled key {offered} without \
             passing the message's identity check; it is not re-wrapped to that key"
        ),
        AgentEvent::KeyChangeHeld {
            message_id,
            recipient_id,
            pinned,
            offered,
        } => format!(
            "HELD message {message_id}: recipient {recipient_id} has a new key {offered} \
             (pinned {pinned}). Verify with the patient, then run \
             `securetext keys approve {recipient_id} --fingerprint {offered}`"
        ),
        AgentEvent::RecipientChangeHeld {
            message_id,
            recipient_id,
            offered_recipient_id,
            offered,
        } => format!(
            "HELD message {message_id}: the patient's number was bound to recipient \
             {recipient_id}, the relay now lists recipient {offered_recipient_id} (key \
             {offered}). Verify with the patient, then run \
             `securetext keys approve {recipient_id} --fingerprint {offered}`"
        ),
        AgentEvent::KeyChangeAutoApproved {
            recipient_id,
            previous,
            approved,
        } => format!(
            "AUTO-APPROVED new key {approved} for recipient {recipient_id} (was {previous})"
        ),
        AgentEvent::NotRecorded { message_id } => format!(
            "not re-wrapping message {message_id}: this host has no record of sending it \
             (run the agent where it was sent, or pass --accept-unrecorded)"
        ),
        AgentEvent::Alarm { message_id, reason } => {
            format!("ALARM message {message_id}: {reason}; it will not be re-wrapped")
        }
        AgentEvent::Ended { message_id } => {
            format!("message {message_id} was revoked or expired meanwhile")
        }
        AgentEvent::Deferred { message_id, reason } => {
            format!("message {message_id} deferred: {reason}")
        }
    }
}

fn keys(state: &StateDir, command: KeysCommand, output: Output) -> anyhow::Result<ExitCode> {
    let pins = PinStore::new(state);
    match command {
        KeysCommand::List => {
            let list = pins.list()?;
            let changes = pins.recipient_changes()?;
            let mut human = String::new();
            if list.is_empty() && changes.is_empty() {
                human.push_str("No recipient keys pinned yet.");
            }
            for (id, pin) in &list {
                human.push_str(&format!(
                    "{id}  {}  pinned {}",
                    pin.fingerprint,
                    utc(pin.pinned_at)
                ));
                if let Some(pending) = pin.pending {
                    human.push_str(&format!(
                        "\n    CHANGED: new key {} waiting for approval since {}",
                        pending.fingerprint,
                        utc(pending.first_seen)
                    ));
                }
                human.push('\n');
            }
            for (id, change) in &changes {
                let offered = match change.recipient_id {
                    Some(new) => format!("recipient {new}"),
                    None => "\"not enrolled\"".to_owned(),
                };
                human.push_str(&format!(
                    "{id}  CHANGED RECIPIENT: the relay gives this patient's number {offered}{} \
                     waiting for approval since {}\n",
                    change
                        .fingerprint
                        .map(|f| format!(" (key {f})"))
                        .unwrap_or_default(),
                    utc(change.first_seen)
                ));
            }
            let value: Vec<_> = list
                .iter()
                .map(|(id, pin)| json!({ "recipient_id": id, "pin": pin }))
                .collect();
            let change_values: Vec<_> = changes
                .iter()
                .map(|(id, change)| json!({ "recipient_id": id, "pending": change }))
                .collect();
            output.result(
                human.trim_end(),
                json!({ "ok": true, "pins": value, "recipient_changes": change_values }),
            );
        }
        KeysCommand::Approve { id, fingerprint } if pins.has_recipient_change(id)? => {
            let approval = pins.approve_recipient_change(id, fingerprint)?;
            let now = match approval.approved {
                Some(new) => format!("recipient {new}"),
                None => "no recipient (the next send is a first contact)".to_owned(),
            };
            output.result(
                &format!(
                    "Approved: the patient's number, bound to recipient {id}, now maps to {now}{}.",
                    approval
                        .fingerprint
                        .map(|f| format!("; key {f} pinned"))
                        .unwrap_or_default()
                ),
                json!({ "ok": true, "recipient_id": id, "approved_recipient_id": approval.approved,
                        "approved": approval.fingerprint }),
            );
        }
        KeysCommand::Approve { id, fingerprint } => {
            let approval = pins.approve(id, fingerprint)?;
            output.result(
                &format!(
                    "Approved key {} for recipient {id} (was {}). The agent re-wraps its \
                     waiting messages at its next poll.",
                    approval.approved, approval.previous
                ),
                json!({ "ok": true, "recipient_id": id, "approved": approval.approved,
                        "previous": approval.previous }),
            );
        }
    }
    Ok(ExitCode::Ok)
}

async fn status(
    state: StateDir,
    overrides: Overrides,
    id: MessageId,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(state, overrides)?;
    let status = client(&config)?.status(id).await?;
    let mut human = format!(
        "Message {}: {:?}\nRecipient: {}\nCreated: {}\nExpires: {}\nOpened: {}\nRead: {}\nTrail:",
        status.message_id,
        status.status,
        status.recipient_id,
        utc(status.created_at),
        utc(status.expires_at),
        status.opened_at.map_or("not yet".to_owned(), utc),
        status.read_at.map_or("not yet".to_owned(), utc),
    );
    for event in &status.events {
        human.push_str(&format!("\n  {}  {}", utc(event.at), event.kind));
        if event.kind == AuditKind::PasswordDisowned {
            human.push_str(
                "  <- the patient says they never set a password: someone else may have \
                 enrolled with their link. Contact the patient by phone, then \
                 `relay patient reset-enrollment` and send a new message with --verify",
            );
        }
    }
    output.result(&human, json!({ "ok": true, "status": status }));
    Ok(ExitCode::Ok)
}

async fn audit(
    state: StateDir,
    overrides: Overrides,
    command: AuditCommand,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(state.clone(), overrides)?;
    match command {
        AuditCommand::Export { out } => {
            output.progress("Downloading the audit log…");
            let events = client(&config)?.audit_export().await?;
            let text = shared::audit::to_json_lines(&events);
            sender::audit::verify_events(&events, config.organisation_id, None)?;
            match &out {
                Some(path) => {
                    write_private(path, text.as_bytes())?;
                    output.result(
                        &format!(
                            "Wrote {} events to {} (hash chain verified).",
                            events.len(),
                            path.display()
                        ),
                        json!({ "ok": true, "events": events.len(), "file": path }),
                    );
                }
                None => {
                    print!("{text}");
                    output.progress(&format!("{} events (hash chain verified).", events.len()));
                }
            }
        }
        AuditCommand::Verify { file } => {
            let text = match &file {
                // An export holds no secrets and may have been shared: any readable file will do.
                Some(path) => std::fs::read_to_string(path).map_err(|e| Error::Io {
                    path: path.clone(),
                    source: e,
                })?,
                None => {
                    output.progress("Downloading the audit log…");
                    let events = client(&config)?.audit_export().await?;
                    shared::audit::to_json_lines(&events)
                }
            };
            let anchors = AnchorStore::new(&state);
            let anchor = anchors.load()?;
            let (events, verified) = verify_log(&text, config.organisation_id, anchor.as_ref())?;
            anchors.advance(&events)?;
            output.result(
                &format!(
                    "Audit log verified: {} events, last seq {}{}.",
                    verified.events,
                    verified.last_seq.map_or("-".to_owned(), |s| s.to_string()),
                    verified.anchored_at.map_or(String::new(), |seq| format!(
                        ", consistent with the event {seq} verified earlier"
                    ))
                ),
                json!({ "ok": true, "verified": verified }),
            );
        }
    }
    Ok(ExitCode::Ok)
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian; no time-zone database).
fn utc(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_000_000), "2026-11-18 11:06:40 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
