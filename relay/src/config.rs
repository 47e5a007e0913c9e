//! Command line and environment configuration of the relay binary.
//!
//! Every option is a flag and a `RELAY_*` environment variable; `relay --help` lists them.
//! Secrets (the data key, the Twilio auth token) are held in [`Secret`], whose `Debug` is
//! redacted, so the configuration can be logged at start-up.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::limits::Limits;

/// A string that must never be printed.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// The secret's value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "[unset]"
        } else {
            "[redacted]"
        })
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// The SecureText relay: stores only ciphertext, texts patients a link, serves the viewer.
#[derive(Debug, Parser)]
#[command(name = "relay", version, about, propagate_version = true)]
pub struct Cli {
    /// Storage options shared by every command.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Database and data-key options.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Database URL: `sqlite://FILE` (embedded, single machine) or `postgres://…` (several
    /// relays). SQLite files are created on first use and run in WAL mode.
    #[arg(
        long,
        env = "RELAY_DATABASE_URL",
        default_value = "sqlite://relay.sqlite",
        global = true
    )]
    pub database_url: String,

    /// File holding the data key that encrypts phone numbers, queued SMS and session halves at
    /// rest (43 characters of base64url), when `RELAY_DATA_KEY` does not hold the key itself.
    /// One of the two is required with PostgreSQL; with SQLite the default is a key file beside
    /// the database, created on first start with owner-only permissions. There is no flag for
    /// the key itself: a command line is readable by every local user.
    #[arg(long, env = "RELAY_DATA_KEY_FILE", global = true)]
    pub data_key_file: Option<PathBuf>,
}

/// The relay's commands: the server and the operator's tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server and the background jobs (SMS outbox, purge).
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit (`serve` also applies them at start-up).
    Migrate,
    /// Manage sending organisations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage sender API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Manage patients: remote wipe, enrollment reset and clearing a lockout.
    Patient(PatientArgs),
    /// Export or verify an organisation's audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// Organisation commands.
#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organisation; prints its id.
    Create {
        /// Name shown to patients in the SMS ("Message from NAME").
        #[arg(long)]
        name: String,
    },
    /// List organisations.
    List,
}

/// API-key commands.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key for an organisation; the key is printed once and stored only as a hash.
    Create {
        /// Organisation id.
        #[arg(long)]
        org: String,
        /// A label to recognise the key by (e.g. "EHR integration").
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke an API key by its id.
    Revoke {
        /// API key id (as printed by `create`).
        #[arg(long)]
        id: String,
    },
}

/// A patient command and whose patient it concerns.
#[derive(Debug, Args)]
pub struct PatientArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PatientCommand,
    /// Only this organisation's patient with the number. Without it, the command applies to the
    /// number's patient at each organisation (a patient of two organisations is two patient
    /// records, each with its own password, sessions and counters).
    #[arg(long, global = true)]
    pub org: Option<String>,
}

/// Patient commands.
#[derive(Debug, Subcommand)]
pub enum PatientCommand {
    /// End every session of the patient (remote wipe of a lost phone).
    /// The patient's phone number is read from standard input, never from the command line
    /// (which every local user can read, and shell history keeps).
    RevokeSessions,
    /// Forget the patient's enrollment (forgotten password): they enroll again from the link of
    /// a message sent after the reset (links texted before it can no longer set a password),
    /// and senders re-wrap live messages after approving the new key.
    /// The patient's phone number is read from standard input.
    ResetEnrollment,
    /// Clear the patient's wrong-password counters and lockouts (a patient locked out by
    /// someone else's guesses); the enrollment, links and sessions stay as they are.
    /// The patient's phone number is read from standard input.
    ClearLockout,
}

/// Audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the organisation's audit log as JSON lines.
    Export {
        /// Organisation id.
        #[arg(long)]
        org: String,
    },
    /// Verify the organisation's audit hash chain.
    Verify {
        /// Organisation id.
        #[arg(long)]
        org: String,
    },
}

/// Which SMS provider delivers links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SmsProviderKind {
    /// Print each SMS and append it to the outbox file, phone numbers and links in clear
    /// (development, tests, demos only; refused for an `https` public URL).
    Console,
    /// Twilio's Messages API.
    Twilio,
}

/// Options of `relay serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "RELAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Public base URL of this relay, used in SMS links. `https://` turns on `Secure` cookies
    /// and HSTS (TLS is expected to terminate at a proxy in front of the relay).
    #[arg(
        long,
        env = "RELAY_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub public_url: url::Url,

    /// Address of a second listener serving only `GET /metrics` (Prometheus), for an internal
    /// network or loopback; without it metrics are not served. The API listener never answers
    /// them.
    #[arg(long, env = "RELAY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Directory of the built viewer (`trunk build --release` output).
    #[arg(long, env = "RELAY_VIEWER_DIR", default_value = "dist")]
    pub viewer_dir: PathBuf,

    /// Set when a reverse proxy (TLS termination, load balancer) is the only way in: the client
    /// address used to throttle unlock attempts is then the last `X-Forwarded-For` entry.
    /// Without it, every patient behind the proxy would share the proxy's address.
    #[arg(long, env = "RELAY_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// SMS provider.
    #[arg(
        long,
        env = "RELAY_SMS_PROVIDER",
        value_enum,
        default_value = "console"
    )]
    pub sms_provider: SmsProviderKind,

    /// Console provider: file the SMS are appended to (one JSON object per line).
    #[arg(
        long,
        env = "RELAY_SMS_OUTBOX_FILE",
        default_value = "sms-outbox.jsonl"
    )]
    pub sms_outbox_file: PathBuf,

    /// Twilio: API base URL (change only for testing against a stand-in).
    #[arg(
        long,
        env = "RELAY_TWILIO_BASE_URL",
        default_value = "https://api.twilio.com"
    )]
    pub twilio_base_url: url::Url,

    /// Twilio: account SID.
    #[arg(long, env = "RELAY_TWILIO_ACCOUNT_SID", default_value = "")]
    pub twilio_account_sid: String,

    /// Twilio: file holding the auth token (which also verifies status callbacks), unless the
    /// environment variable `RELAY_TWILIO_AUTH_TOKEN` holds the token itself. There is no flag
    /// for the token: a command line is readable by every local user.
    #[arg(long, env = "RELAY_TWILIO_AUTH_TOKEN_FILE")]
    pub twilio_auth_token_file: Option<PathBuf>,

    /// Twilio: sending number (E.164). Either this or a messaging service SID.
    #[arg(long, env = "RELAY_TWILIO_FROM")]
    pub twilio_from: Option<String>,

    /// Twilio: messaging service SID (instead of a sending number).
    #[arg(long, env = "RELAY_TWILIO_MESSAGING_SERVICE_SID")]
    pub twilio_messaging_service_sid: Option<String>,

    /// Lifetimes and limits.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Lifetimes and limits as flags; the defaults shown are [`Limits::DEFAULT`].
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Viewer sessions end after this long, whatever the activity (seconds).
    #[arg(long, env = "RELAY_SESSION_MAX_SECONDS", default_value_t = D.session_max.as_secs())]
    pub session_max_seconds: u64,

    /// Viewer sessions end after this long without a request (seconds); the viewer locks itself
    /// after the same time.
    #[arg(long, env = "RELAY_SESSION_IDLE_SECONDS", default_value_t = D.session_idle.as_secs())]
    pub session_idle_seconds: u64,

    /// Longest message lifetime a sender may ask for (seconds).
    #[arg(
        long,
        env = "RELAY_MESSAGE_MAX_LIFETIME_SECONDS",
        default_value_t = D.message_max_lifetime.as_secs()
    )]
    pub message_max_lifetime_seconds: u64,

    /// Failed unlocks per patient before the first lockout.
    #[arg(long, env = "RELAY_UNLOCK_ATTEMPTS", default_value_t = D.unlock_attempts)]
    pub unlock_attempts: u32,

    /// First lockout (seconds); each further lockout doubles it, up to a day.
    #[arg(long, env = "RELAY_LOCKOUT_SECONDS", default_value_t = D.first_lockout.as_secs())]
    pub lockout_seconds: u64,

    /// Failed unlocks from one client address (any patient) before it is locked out.
    #[arg(
        long,
        env = "RELAY_ADDRESS_UNLOCK_ATTEMPTS",
        default_value_t = D.address_unlock_attempts
    )]
    pub address_unlock_attempts: u32,

    /// Opens of one link one client address may make per minute.
    #[arg(long, env = "RELAY_OPEN_RATE_PER_MINUTE", default_value_t = D.open_rate_per_minute)]
    pub open_rate_per_minute: u32,

    /// Messages one API key may submit per minute.
    #[arg(long, env = "RELAY_SEND_RATE_PER_MINUTE", default_value_t = D.send_rate_per_minute)]
    pub send_rate_per_minute: u32,

    /// Largest request body accepted (bytes).
    #[arg(long, env = "RELAY_MAX_BODY_BYTES", default_value_t = D.max_body_bytes)]
    pub max_body_bytes: usize,

    /// Close a connection that has not sent a complete request head this long after connecting
    /// or after its previous request (seconds).
    #[arg(
        long,
        env = "RELAY_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = D.header_read_timeout.as_secs()
    )]
    pub header_read_timeout_seconds: u64,

    /// Answer `408 request_timeout` to a request not complete this long after its head, such as
    /// one whose body stalls (seconds).
    #[arg(
        long,
        env = "RELAY_REQUEST_TIMEOUT_SECONDS",
        default_value_t = D.request_timeout.as_secs()
    )]
    pub request_timeout_seconds: u64,

    /// Connections served at once; more wait in the listen backlog. Keep it below the open-files
    /// limit (`ulimit -n`) less the database pool.
    #[arg(long, env = "RELAY_MAX_CONNECTIONS", default_value_t = D.max_connections)]
    pub max_connections: usize,

    /// How often the SMS outbox is polled when idle (milliseconds).
    #[arg(long, env = "RELAY_OUTBOX_POLL_MS", default_value_t = millis(D.outbox_poll))]
    pub outbox_poll_ms: u64,

    /// How long a claimed SMS is reserved for the instance sending it; after a crash, another
    /// instance (or the restarted one) sends it once this has passed (seconds).
    #[arg(
        long,
        env = "RELAY_OUTBOX_LEASE_SECONDS",
        default_value_t = D.outbox_lease.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub outbox_lease_seconds: u64,

    /// Attempts to deliver an SMS before it is marked failed.
    #[arg(long, env = "RELAY_SMS_MAX_ATTEMPTS", default_value_t = D.sms_max_attempts)]
    pub sms_max_attempts: u32,

    /// SMS handed to the provider at once by this relay instance (1 to 1024); by default the
    /// provider's own: 1 for the console, 32 for Twilio.
    #[arg(
        long,
        env = "RELAY_SMS_CONCURRENCY",
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    pub sms_concurrency: Option<u16>,

    /// Longest a provider call may take before the attempt counts as a temporary failure and is
    /// retried (seconds, 1 to 30: at most half the 60-second claim lease).
    #[arg(
        long,
        env = "RELAY_SMS_TIMEOUT_SECONDS",
        default_value_t = D.sms_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=30)
    )]
    pub sms_timeout_seconds: u64,

    /// How often expired and revoked ciphertext is purged (seconds).
    #[arg(
        long,
        env = "RELAY_PURGE_INTERVAL_SECONDS",
        default_value_t = D.purge_interval.as_secs()
    )]
    pub purge_interval_seconds: u64,
}

const D: Limits = Limits::DEFAULT;

const fn millis(duration: Duration) -> u64 {
    // Durations of the defaults are far below u64::MAX milliseconds.
    duration.as_millis() as u64
}

impl From<&LimitArgs> for Limits {
    fn from(args: &LimitArgs) -> Self {
        Self {
            session_max: Duration::from_secs(args.session_max_seconds),
            session_idle: Duration::from_secs(args.session_idle_seconds),
            message_max_lifetime: Duration::from_secs(args.message_max_lifetime_seconds),
            unlock_attempts: args.unlock_attempts,
            first_lockout: Duration::from_secs(args.lockout_seconds),
            address_unlock_attempts: args.address_unlock_attempts,
            open_rate_per_minute: args.open_rate_per_minute,
            send_rate_per_minute: args.send_rate_per_minute,
            max_body_bytes: args.max_body_bytes,
            header_read_timeout: Duration::from_secs(args.header_read_timeout_seconds),
            request_timeout: Duration::from_secs(args.request_timeout_seconds),
            max_connections: args.max_connections,
            outbox_poll: Duration::from_millis(args.outbox_poll_ms),
            outbox_lease: Duration::from_secs(args.outbox_lease_seconds),
            sms_max_attempts: args.sms_max_attempts,
            sms_concurrency: args.sms_concurrency.map(usize::from),
            sms_timeout: Duration::from_secs(args.sms_timeout_seconds),
            purge_interval: Duration::from_secs(args.purge_interval_seconds),
            ..Limits::DEFAULT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret: Secret = "data-key-secret-value".parse().unwrap();
        let printed = format!("{secret:?}");
        assert!(!printed.contains("secret-value"), "{printed}");
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let Command::Serve(args) = Cli::parse_from(["relay", "serve"]).command else {
            panic!("serve");
        };
        let limits = Limits::from(&args.limits);
        let defaults = Limits::DEFAULT;
        assert_eq!(format!("{limits:?}"), format!("{defaults:?}"));
    }
}
