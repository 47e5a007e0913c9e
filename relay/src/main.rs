//! The `relay` binary: parses the command line and hands over to the library.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use relay::config::{
    ApiKeyCommand, AuditCommand, Cli, Command, OrgCommand, PatientArgs, PatientCommand, Secret,
    ServeArgs, SmsProviderKind, StorageArgs,
};
use relay::sms::SmsProvider;
use relay::sms::console::ConsoleProvider;
use relay::sms::twilio::{DEFAULT_REQUEST_TIMEOUT, TwilioConfig, TwilioProvider};
use relay::state::{AppState, Clock, Settings};
use relay::store::Store;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RELAY_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let store = Store::open(&cli.storage.database_url)
        .await
        .context("opening the database")?;
    match cli.command {
        Command::Serve(args) => serve(store, &cli.storage, *args).await?,
        Command::Migrate => println!("migrations applied"),
        Command::Org(OrgCommand::Create { name }) => {
            println!("{}", relay::admin::create_org(&store, &name).await?);
        }
        Command::Org(OrgCommand::List) => {
            for (id, name, fingerprint) in relay::admin::list_orgs(&store).await? {
                println!(
                    "{id}\t{name}\t{}",
                    fingerprint.as_deref().unwrap_or("(no key registered)")
                );
            }
        }
        Command::ApiKey(ApiKeyCommand::Create { org, label }) => {
            let key = relay::admin::create_api_key(&store, &org, &label).await?;
            eprintln!(
                "API key {} created. It is shown once; store it now.",
                key.id
            );
            println!("{}", key.secret.as_str());
        }
        Command::ApiKey(ApiKeyCommand::Revoke { id }) => {
            relay::admin::revoke_api_key(&store, &id).await?;
            println!("revoked {id}");
        }
        Command::Patient(PatientArgs { command, org }) => {
            let key =
                relay::admin::load_data_key(&cli.storage, data_key_from_environment().as_ref())?;
            upgrade_records(&store, &key).await?;
            let phone = read_phone()?;
            let org = org.as_deref();
            match command {
                PatientCommand::RevokeSessions => {
                    let ended = relay::admin::revoke_sessions(&store, &key, &phone, org).await?;
                    println!("ended {ended} live session(s)");
                }
                PatientCommand::ResetEnrollment => {
                    let reset = relay::admin::reset_enrollment(&store, &key, &phone, org).await?;
                    println!(
                        "{reset} enrollment(s) reset; the patient sets a new password from the \
                         link of the next message sent to them (earlier links cannot)"
                    );
                }
                PatientCommand::ClearLockout => {
                    let cleared = relay::admin::clear_lockout(&store, &key, &phone, org).await?;
                    println!(
                        "lockout cleared for {cleared} patient record(s); enrollment, links and \
                         sessions are unchanged"
                    );
                }
            }
        }
        Command::Audit(AuditCommand::Export { org }) => {
            print!(
                "{}",
                shared::audit::to_json_lines(&relay::admin::audit_events(&store, &org).await?)
            );
        }
        Command::Audit(AuditCommand::Verify { org }) => {
            let events = relay::admin::audit_events(&store, &org).await?;
            shared::audit::verify_chain(&events).context("audit chain does not verify")?;
            println!("audit chain verifies: {} event(s)", events.len());
        }
    }
    Ok(())
}

/// Converts what earlier versions stored and SQL migrations cannot, for want of the data key
/// (see [`relay::store::recipients::upgrade`]).
async fn upgrade_records(store: &Store, key: &shared::at_rest::DataKey) -> anyhow::Result<()> {
    let upgraded = relay::store::recipients::upgrade(store, key)
        .await
        .context("converting the patient records of an earlier version")?;
    if upgraded.sealed > 0 {
        tracing::info!(
            sealed = upgraded.sealed,
            "sealed the password records of earlier enrollments"
        );
    }
    if upgraded.scoped > 0 {
        tracing::info!(
            scoped = upgraded.scoped,
            "gave each earlier patient to the organisation that messaged it first"
        );
    }
    Ok(())
}

async fn serve(store: Store, storage: &StorageArgs, args: ServeArgs) -> anyhow::Result<()> {
    let data_key = relay::admin::load_data_key(storage, data_key_from_environment().as_ref())?;
    upgrade_records(&store, &data_key).await?;
    let public_url = args.public_url.as_str().trim_end_matches('/').to_owned();
    let status_callback = format!(
        "{public_url}{}",
        relay::api::sms_callback::TWILIO_STATUS_PATH
    );
    let limits: relay::limits::Limits = (&args.limits).into();
    let (sms, twilio_auth_token): (Arc<dyn SmsProvider>, _) = match args.sms_provider {
        SmsProviderKind::Console => {
            anyhow::ensure!(
                args.public_url.scheme() != "https",
                "the console SMS provider writes phone numbers and links in clear to {} and \
                 stdout; it is for development only and refused for an https public URL: \
                 choose --sms-provider twilio",
                args.sms_outbox_file.display()
            );
            tracing::warn!(
                outbox = %args.sms_outbox_file.display(),
                "DEVELOPMENT ONLY: the console SMS provider writes phone numbers and links in \
                 clear; no SMS is sent"
            );
            (
                Arc::new(ConsoleProvider::new(args.sms_outbox_file.clone())),
                None,
            )
        }
        SmsProviderKind::Twilio => {
            let auth_token = twilio_auth_token(&args)?;
            let provider = TwilioProvider::new(TwilioConfig {
                base_url: args.twilio_base_url.clone(),
                account_sid: args.twilio_account_sid.clone(),
                auth_token: auth_token.clone(),
                from: args.twilio_from.clone(),
                messaging_service_sid: args.twilio_messaging_service_sid.clone(),
                status_callback: Some(status_callback.parse().context("status callback URL")?),
                request_timeout: limits.sms_timeout.min(DEFAULT_REQUEST_TIMEOUT),
            })
            .context("Twilio configuration")?;
            (Arc::new(provider), Some(auth_token))
        }
    };
    let settings = Settings {
        tls: args.public_url.scheme() == "https",
        public_url,
        viewer_dir: args.viewer_dir.clone(),
        limits,
        trust_forwarded_for: args.trust_forwarded_for,
        twilio_auth_token,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        public_url = %settings.public_url,
        sms = sms.name(),
        database = ?store.backend(),
        "relay serving"
    );
    let state = AppState::new(store, data_key, settings, sms, Clock::System);
    let metrics_listener = match args.metrics_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("listening for metrics on {address}"))?;
            tracing::info!(listen = %listener.local_addr()?, "metrics serving");
            Some(listener)
        }
        None => None,
    };
    relay::run(listener, metrics_listener, state, shutdown_signal()).await?;
    tracing::info!("relay stopped");
    Ok(())
}

/// The Twilio auth token from `RELAY_TWILIO_AUTH_TOKEN`, else from `--twilio-auth-token-file`
/// (surrounding whitespace ignored), else empty (which the Twilio configuration refuses).
fn twilio_auth_token(args: &ServeArgs) -> anyhow::Result<Secret> {
    if let Ok(token) = std::env::var("RELAY_TWILIO_AUTH_TOKEN") {
        return Ok(token.parse()?);
    }
    let Some(file) = &args.twilio_auth_token_file else {
        return Ok(String::new().parse()?);
    };
    let token = std::fs::read_to_string(file)
        .with_context(|| format!("reading the Twilio auth token from {}", file.display()))?;
    Ok(token.trim().parse()?)
}

/// The data key from `RELAY_DATA_KEY`, if set.
fn data_key_from_environment() -> Option<Secret> {
    std::env::var(relay::admin::DATA_KEY_VARIABLE)
        .ok()
        .and_then(|value| value.parse().ok())
}

/// A patient's phone number, from standard input (one line; prompted for on a terminal): a
/// command line is readable by every local user and kept in shell history.
fn read_phone() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    if std::io::stdin().is_terminal() {
        eprint!("Patient's phone number (E.164, e.g. +15551234567): ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the phone number from standard input")?;
    let phone = line.trim();
    anyhow::ensure!(
        !phone.is_empty(),
        "give the patient's phone number on standard input"
    );
    Ok(phone.to_owned())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
